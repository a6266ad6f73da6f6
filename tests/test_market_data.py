import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from PIL import Image

import deformgan_ops as D
from deformgan import pose as P
from deformgan.data import market as M

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "data", "market")
if not os.path.isdir(SHARED):
    SHARED = "/work/shared/data/market"
requires_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared Market-1501 annotation files absent")


@requires_shared
@pytest.mark.parametrize("name", ["market-annotation-train.csv", "market-annotation-test.csv"])
def test_real_annotation_files_parse_and_round_trip_byte_for_byte(name, tmp_path):
    path = os.path.join(SHARED, name)
    ann = M.read_annotations(path)
    assert len(ann) == {"market-annotation-train.csv": 12936, "market-annotation-test.csv": 19732}[name]
    kp = next(iter(ann.values()))
    assert kp.shape == (18, 2) and kp.dtype == torch.float32
    out = tmp_path / "rt.csv"
    M.write_annotations(str(out), ann)
    assert out.read_bytes() == open(path, "rb").read()


@requires_shared
def test_annotation_values_are_x_y():
    ann = M.read_annotations(os.path.join(SHARED, "market-annotation-train.csv"))
    kp = ann["0224_c6s1_055726_02.jpg"]  # y = [8, 23, ...], x = [39, 37, ...]
    assert kp[0].tolist() == [39.0, 8.0] and kp[1].tolist() == [37.0, 23.0]


@requires_shared
def test_pair_rule_on_real_train_annotations():
    ann = M.read_annotations(os.path.join(SHARED, "market-annotation-train.csv"))
    pairs = M.standard_pairs(ann)
    kept = [n for n, kp in ann.items() if M.is_valid_for_pairs(n, kp)]
    by_id = Counter(M.person_id(n) for n in kept)
    assert len(pairs) == sum(c * (c - 1) for c in by_id.values())
    assert len(set(pairs)) == len(pairs)  # every permutation once
    for a, b in pairs:
        assert a != b and M.person_id(a) == M.person_id(b)
        assert M.is_valid_for_pairs(a, ann[a]) and M.is_valid_for_pairs(b, ann[b])
    assert len(pairs) == 263632  # the count of the public Deformable GAN train pairs


@requires_shared
def test_every_real_test_pair_satisfies_the_rule():
    ann = M.read_annotations(os.path.join(SHARED, "market-annotation-test.csv"))
    pairs = M.read_pairs(os.path.join(SHARED, "market-pairs-test.csv"), ann)
    assert len(pairs) == 12000
    for a, b in pairs:
        assert a != b and M.person_id(a) == M.person_id(b)
        assert M.is_valid_for_pairs(a, ann[a]) and M.is_valid_for_pairs(b, ann[b])
    sampled = M.standard_pairs(ann, sample=12000, seed=3)
    assert len(sampled) == 12000 and set(sampled) <= set(M.standard_pairs(ann))


def test_distractors_and_missing_torso_are_excluded():
    kp = torch.zeros(18, 2) + 5
    assert M.is_valid_for_pairs("0001_c1s1_000001_00.jpg", kp)
    assert not M.is_valid_for_pairs("0000_c1s1_000001_00.jpg", kp)
    assert not M.is_valid_for_pairs("-1_c1s1_000001_00.jpg", kp)
    kp[P.J["l_hip"]] = -1
    assert not M.is_valid_for_pairs("0001_c1s1_000001_00.jpg", kp)


def test_pairs_cli(tmp_path):
    ann = {f"{pid:04d}_c1s1_{i:06d}_00.jpg": torch.rand(18, 2) * 50 for pid in (1, 2) for i in range(3)}
    ann_path = tmp_path / "ann.csv"
    M.write_annotations(str(ann_path), ann)
    out = tmp_path / "pairs.csv"
    subprocess.run([sys.executable, "-m", "deformgan.pairs", str(ann_path), "--out", str(out)], check=True, cwd=ROOT)
    pairs = M.read_pairs(str(out))
    assert len(pairs) == 12
    subprocess.run([sys.executable, "-m", "deformgan.pairs", str(ann_path), "--out", str(out), "--sample", "5",
                    "--seed", "1"], check=True, cwd=ROOT)
    assert len(M.read_pairs(str(out))) == 5


# ---------------------------------------------------------------- bad data
def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("line,msg", [
    ("a.jpg: [1, 2]: [3, 4]", "list of 18 integers"),
    ("a.jpg: [1, 2, 3]", "3 fields"),
    ("a.jpg: [1, 2, x]: [3]", "not a JSON list"),
    (": " + str([1] * 18) + ": " + str([1] * 18), "empty image name"),
])
def test_malformed_annotation_line_names_file_and_line(tmp_path, line, msg):
    good = "b.jpg: " + str([1] * 18) + ": " + str([2] * 18)
    path = _write(tmp_path / "ann.csv", f"{M.ANNOTATION_HEADER}\n{good}\n{line}\n")
    with pytest.raises(M.AnnotationError, match=rf"ann.csv:3: .*{msg}"):
        M.read_annotations(path)


def test_bad_headers_and_duplicates(tmp_path):
    with pytest.raises(M.AnnotationError, match="ann.csv:1: header"):
        M.read_annotations(_write(tmp_path / "ann.csv", "name,y,x\n"))
    row = "b.jpg: " + str([1] * 18) + ": " + str([2] * 18)
    with pytest.raises(M.AnnotationError, match="ann.csv:3: image 'b.jpg' is annotated twice"):
        M.read_annotations(_write(tmp_path / "ann.csv", f"{M.ANNOTATION_HEADER}\n{row}\n{row}\n"))
    with pytest.raises(M.AnnotationError, match="pairs.csv:2: expected 'from,to'"):
        M.read_pairs(_write(tmp_path / "pairs.csv", "from,to\na.jpg\n"))


def test_pair_naming_an_unannotated_image(tmp_path):
    ann = {"0001_c1s1_000001_00.jpg": torch.ones(18, 2)}
    path = _write(tmp_path / "pairs.csv", "from,to\n0001_c1s1_000001_00.jpg,0001_c2s1_000002_00.jpg\n")
    with pytest.raises(M.AnnotationError, match=r"pairs.csv:2: .*'0001_c2s1_000002_00.jpg', which has no annotation"):
        M.read_pairs(path, ann)
    with pytest.warns(RuntimeWarning, match="skipped 1 pairs"):
        assert M.read_pairs(path, ann, on_missing="skip") == []


# ---------------------------------------------------------------- dataset
@pytest.fixture(scope="module")
def tiny_market(tmp_path_factory):
    from deformgan.data.synthetic import make_dataset
    root = tmp_path_factory.mktemp("market")
    make_dataset(str(root), ids=5, images_per_id=3, seed=7, progress=False)
    return str(root)


def test_dataset_items(tiny_market):
    ds = M.MarketPoseDataset(tiny_market, os.path.join(tiny_market, "annotations-train.csv"),
                             os.path.join(tiny_market, "pairs-train.csv"))
    assert len(ds) == 4 * 3 * 2
    it = ds[0]
    assert it["source_image"].shape == (3, 128, 64) and it["target_image"].shape == (3, 128, 64)
    assert it["source_image"].min() >= -1 and it["source_image"].max() <= 1
    assert it["source_keypoints"].shape == (18, 2) and it["target_heatmaps"].shape == (18, 128, 64)
    kp = it["source_keypoints"]
    j = int(torch.nonzero(P.present(kp))[0])
    x, y = kp[j].long().tolist()
    assert it["source_heatmaps"][j, y, x].item() == pytest.approx(1.0)
    torch.testing.assert_close(it["source_heatmaps"], D.keypoint_heatmaps(kp[None], 128, 64, 6.0)[0])
    raw = np.array(Image.open(os.path.join(tiny_market, "bounding_box_train", it["source_name"])))
    torch.testing.assert_close(it["source_image"], torch.from_numpy(raw).permute(2, 0, 1).float() / 127.5 - 1)


def test_dataset_flip_swaps_joints(tiny_market):
    kw = dict(root=tiny_market, annotations=os.path.join(tiny_market, "annotations-train.csv"),
              pairs=os.path.join(tiny_market, "pairs-train.csv"))
    plain = M.MarketPoseDataset(**kw)[0]
    flipped = M.MarketPoseDataset(**kw, flip=1.0)[0]
    torch.testing.assert_close(flipped["source_image"], plain["source_image"].flip(-1))
    torch.testing.assert_close(flipped["target_keypoints"], P.flip_keypoints(plain["target_keypoints"], 64))
    r, l = P.J["r_shoulder"], P.J["l_shoulder"]
    assert flipped["source_keypoints"][l, 0].item() == 63 - plain["source_keypoints"][r, 0].item()


def test_dataset_bad_images(tiny_market, tmp_path):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(tiny_market, root)
    ds = M.MarketPoseDataset(str(root), str(root / "annotations-train.csv"), str(root / "pairs-train.csv"))
    a, b = ds.pairs[0]
    saved = (root / "bounding_box_train" / a).read_bytes()
    os.remove(root / "bounding_box_train" / a)
    with pytest.raises(FileNotFoundError, match=a):
        ds[0]
    (root / "bounding_box_train" / a).write_bytes(saved)
    (root / "bounding_box_train" / b).write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=f"cannot read image .*{b}"):
        ds.check_images()
    with pytest.warns(RuntimeWarning, match="dropped"):
        dropped = ds.check_images(on_error="skip")
    assert dropped > 0 and all(b not in p for p in ds.pairs) and any(a in p for p in ds.pairs)


def test_render(tiny_market):
    from deformgan.geometry import render
    ann = M.read_annotations(os.path.join(tiny_market, "annotations-train.csv"))
    kps = torch.stack(list(ann.values()))
    levels = (0, 1, 2, 3)
    g = render(kps[:4], kps[4:8], (128, 64), levels=levels)
    assert g.source_heatmaps.shape == (4, 18, 128, 64) and g.theta.shape == (4, 10, 2, 3)
    assert [g.masks[lv].shape[-2:] for lv in levels] == [(128, 64), (64, 32), (32, 16), (16, 8)]
    disabled = ~g.valid
    assert (g.masks[0].sum((-1, -2))[disabled] == 0).all()
    assert torch.equal(g.source_heatmaps, D.keypoint_heatmaps(kps[:4], 128, 64, 6.0))
    # passing the previous result back reuses its buffers and gives the same values
    buffers = [g.source_heatmaps.data_ptr(), g.target_heatmaps.data_ptr(), g.masks[2].data_ptr()]
    g2 = render(kps[4:8], kps[:4], (128, 64), levels=levels, out=g)
    assert [g2.source_heatmaps.data_ptr(), g2.target_heatmaps.data_ptr(), g2.masks[2].data_ptr()] == buffers
    fresh = render(kps[4:8], kps[:4], (128, 64), levels=levels)
    for key in ("source_heatmaps", "target_heatmaps", "theta", "valid"):
        assert torch.equal(getattr(g2, key), getattr(fresh, key))
    assert all(torch.equal(g2.masks[lv], fresh.masks[lv]) for lv in levels)
    g3 = render(kps[:3], kps[3:6], (128, 64), levels=(0,), out=g2)  # other batch size: new buffers
    assert g3.source_heatmaps.shape == (3, 18, 128, 64) and g3.masks[0].shape == (3, 10, 128, 64)
    glob_ = render(kps[:4], kps[4:8], (128, 64), warp="global", levels=levels)
    assert glob_.theta.shape == (4, 1, 2, 3) and glob_.masks[3].shape == (4, 1, 16, 8)
    none = render(kps[:4], kps[4:8], (128, 64), warp="none")
    assert none.theta is None and none.masks == {}
    with pytest.raises(ValueError, match="warp must be one of"):
        render(kps[:4], kps[4:8], (128, 64), warp="affine")


# ---------------------------------------------------------------- keypoint extraction
def test_keypoint_extraction_end_to_end_with_a_random_yolo(tiny_market, tmp_path):
    pytest.importorskip("ultralytics")
    import shutil
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(os.listdir(os.path.join(tiny_market, "bounding_box_train")))[:3]:
        shutil.copy(os.path.join(tiny_market, "bounding_box_train", name), images / name)
    (images / "broken.jpg").write_bytes(b"\x00\x01 not an image")
    out = tmp_path / "ann.csv"
    cmd = [sys.executable, "-m", "deformgan.keypoints", str(images), "--out", str(out),
           "--weights", "yolo11n-pose.yaml", "--device", "cpu", "--batch-size", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cannot read broken.jpg" in proc.stderr and "1 unreadable: broken.jpg" in proc.stderr
    ann = M.read_annotations(str(out))
    assert len(ann) == 3 and all(kp.shape == (18, 2) for kp in ann.values())
    # resumable: a second run writes nothing new
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0 and "wrote 0 images" in proc.stderr and "3 already there" in proc.stderr
    assert len(M.read_annotations(str(out))) == 3


def test_render_against_independent_computations(tiny_market):
    """Mutants of deformgan/geometry.py that survived the first mutation run: sigma
    passed on, float64 keypoints rendered in float32, the global masks as 0/1 floats of
    the fitted affine's validity, the level affines' dtype and translation, and error
    messages that name the argument."""
    from deformgan.geometry import render
    ann = M.read_annotations(os.path.join(tiny_market, "annotations-train.csv"))
    kps = torch.stack(list(ann.values()))
    src, tgt = kps[:3], kps[3:6]
    g = render(src, tgt, (128, 64), sigma=2.5, levels=(0, 1))
    assert torch.equal(g.source_heatmaps, D.keypoint_heatmaps(src, 128, 64, 2.5))
    assert torch.equal(g.target_heatmaps, D.keypoint_heatmaps(tgt, 128, 64, 2.5))
    g64 = render(src.double(), tgt.double(), (128, 64), sigma=2.5, levels=(0, 1))
    for key in ("source_heatmaps", "target_heatmaps", "theta"):
        assert getattr(g64, key).dtype == torch.float32 and torch.equal(getattr(g64, key), getattr(g, key)), key
    theta = g.affines_at(1, torch.float64)
    assert theta.dtype == torch.float64
    torch.testing.assert_close(theta[..., 2], g.theta[..., 2].double() / 2)
    torch.testing.assert_close(theta[..., :2], g.theta[..., :2].double())
    glob = render(src, tgt, (128, 64), warp="global", levels=(0, 2))
    want = P.global_affine(src, tgt)[1].float()[:, None, None, None]
    assert glob.masks[2].dtype == torch.float32 and torch.equal(glob.masks[2], want.expand(3, 1, 32, 16))
    with pytest.raises(ValueError, match="source_keypoints must have shape"):
        render(src[:, :17], tgt, (128, 64))
    with pytest.raises(ValueError, match="target_keypoints must have shape"):
        render(src, tgt[:, :17], (128, 64))
    with pytest.raises(ValueError, match=r"source_keypoints \[3, 18, 2\] and target_keypoints \[2, 18, 2\]"):
        render(src, tgt[:2], (128, 64))


def _png(path, array):
    Image.fromarray(array).save(path)


def test_read_image_checks_the_size_and_reads_grey_as_rgb(tmp_path):
    """Survivors of the first mutation run of data/market.py: the size check and its
    message, a grey image converted to three channels."""
    grey = tmp_path / "grey.png"
    _png(grey, np.full((6, 5), 50, np.uint8))
    arr = M.read_image_uint8(str(grey), 6, 5)
    assert arr.dtype == np.uint8 and arr.shape == (6, 5, 3) and (arr == 50).all()
    img = M.load_image(str(grey), 6, 5)
    assert img.shape == (3, 6, 5) and torch.allclose(img, torch.full((3, 6, 5), 50 / 127.5 - 1))
    for read in (M.read_image_uint8, M.load_image):
        with pytest.raises(ValueError) as err:
            read(str(grey), 8, 5)
        assert str(err.value) == f"image {grey} is 6x5, expected 8x5"
    assert M.read_image_uint8(str(grey)).shape == (6, 5, 3)  # no size given: any size


def test_dataset_items_check_images_and_flip_probability_zero(tmp_path):
    root = tmp_path / "market"
    (root / "bounding_box_train").mkdir(parents=True)
    g = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        _png(root / "bounding_box_train" / name, g.integers(0, 256, (6, 4, 3), dtype=np.uint8))
    _png(root / "bounding_box_train" / "c.png", g.integers(0, 256, (8, 4, 3), dtype=np.uint8))  # wrong size
    ann = {n: torch.tensor([[1.0 + j % 3, 1.0 + j % 5] for j in range(18)]) for n in ("a.png", "b.png", "c.png")}
    pairs = [("a.png", "b.png"), ("b.png", "c.png"), ("c.png", "a.png"), ("b.png", "a.png")]
    ds = M.MarketPoseDataset(str(root), ann, pairs, heatmaps=False, height=6, width=4, seed=0)
    for index in (1, 2):  # the wrong-size image as target, then as source
        with pytest.raises(ValueError, match="c.png is 8x4, expected 6x4"):
            ds[index]
    with pytest.raises(ValueError, match="c.png is 8x4, expected 6x4"):
        ds.check_images()
    state = ds.rng.getstate()
    item = ds[0]
    assert ds.rng.getstate() == state  # flip 0: no random draw
    assert item["source_name"] == "a.png" and item["target_name"] == "b.png"
    assert torch.equal(item["source_image"], M.load_image(str(root / "bounding_box_train" / "a.png")))
    assert torch.equal(item["target_keypoints"], ann["b.png"])
    with pytest.warns(RuntimeWarning, match="dropped 2 pairs using 1 missing or unreadable images"):
        assert ds.check_images(on_error="skip") == 2
    assert ds.pairs == [("a.png", "b.png"), ("b.png", "a.png")]
    assert ds.check_images(on_error="skip") == 0


def test_names_identities_and_annotation_values_against_hand_written_answers(tmp_path):
    """Survivors of the second mutation run of data/market.py that change an answer or a
    message: the DeepFashion item id, image names with an X, JSON booleans refused as
    joint coordinates, the quoted excerpt of a bad line, missing joints written as -1."""
    assert M.identity("fashionMENDenimid0000008001_1front.jpg") == "id00000080"
    assert M.identity("img/fashionWOMENDressesid0000123405_2side.jpg") == "id00001234"
    assert M.identity("0002_c1s1_000451_03.jpg") == "0002"
    assert M.check_image_name("X_c1s1_X.jpg") == "X_c1s1_X.jpg"
    with pytest.raises(M.AnnotationError) as err:
        M.check_image_name(" a.jpg")
    assert str(err.value) == "image name ' a.jpg' cannot be used: it contains leading or trailing white space"
    header = "name:keypoints_y:keypoints_x\n"
    ok = json.dumps(list(range(18)))
    for bad, message in (
            ("[" + "true, " * 17 + "true]", "keypoints_y must be a list of 18 integers, got '[true, true"),
            ("[" + "1, " * 40, "keypoints_y is not a JSON list (Expecting value): '[" + "1, " * 19 + "1,'"),
            ("[" + "12, " * 30 + "1]", "keypoints_y must be a list of 18 integers, got '[" + "12, " * 19 + "12,'")):
        path = tmp_path / "a.csv"
        path.write_text(header + f"a.jpg: {bad}: {ok}\n")
        with pytest.raises(M.AnnotationError) as err:
            M.read_annotations(str(path))
        assert message in str(err.value), (message, str(err.value))
    kp = torch.arange(36, dtype=torch.float32).reshape(18, 2)
    kp[3] = torch.tensor([-3.0, 7.0])  # missing: a negative coordinate
    kp[5] = torch.tensor([4.0, float("nan")])  # missing: not finite
    path = tmp_path / "b.csv"
    M.write_annotations(str(path), {"a.jpg": kp})
    line = path.read_text().splitlines()[1]
    ys, xs = json.loads(line.split(":")[1]), json.loads(line.split(":")[2])
    assert xs[3] == ys[3] == -1 and xs[5] == ys[5] == -1 and xs[4] == 8 and ys[4] == 9


@pytest.mark.parametrize("name,reason", [
    ("a/b.jpg", "a path separator (names are plain file names inside the image folder)"),
    ("a\\b.jpg", "a path separator (names are plain file names inside the image folder)"),
    (".", "a relative folder"),
    ("..", "a relative folder"),
    ("a:b.jpg", "':' (the annotation file's field separator)"),
    ("a,b.jpg", "',' (the pairs file's field separator)"),
    ("a\nb.jpg", "a line break or NUL"),
    ("a\x00b.jpg", "a line break or NUL"),
])
def test_check_image_name_refusals_say_exactly_why(name, reason):
    with pytest.raises(M.AnnotationError) as err:
        M.check_image_name(name, "pair image name")
    assert str(err.value) == f"pair image name {name!r} cannot be used: it contains {reason}"
    assert M.check_image_name("X.X") == "X.X"
