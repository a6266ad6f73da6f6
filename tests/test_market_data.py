import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

import deformgan_ops as D
from deformgan import pose as P
from deformgan.data import market as M
from helpers import MARKET_DATA_ABSENT, SHARED_MARKET as SHARED, market_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
requires_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason=MARKET_DATA_ABSENT)


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
    ann = M.read_annotations(market_file("market-annotation-train.csv"))
    kp = ann["0224_c6s1_055726_02.jpg"]  # y = [8, 23, ...], x = [39, 37, ...]
    assert kp[0].tolist() == [39.0, 8.0] and kp[1].tolist() == [37.0, 23.0]


@requires_shared
def test_pair_rule_on_real_train_annotations():
    ann = M.read_annotations(market_file("market-annotation-train.csv"))
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
    ann = M.read_annotations(market_file("market-annotation-test.csv"))
    pairs = M.read_pairs(market_file("market-pairs-test.csv"), ann)
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


# ------------------------------------------- files and the dataset's constructor, by hand
ROW = lambda name, ys, xs: f"{name}: {json.dumps(ys)}: {json.dumps(xs)}"  # noqa: E731


def test_read_annotations_line_by_line_against_hand_written_answers(tmp_path):
    """The reader's contract spelled out: CRLF or LF, blank lines skipped (not the end
    of the file), names stripped, (x, y) pairs in file order, negative coordinates read
    as -1, line numbers counted from the header (line 1)."""
    ys, xs = list(range(100, 118)), list(range(18))
    ys[4], xs[7] = -1, -5
    text = (M.ANNOTATION_HEADER + "\r\n" + ROW(" b.jpg ", ys, xs) + "\r\n\r\n   \n"
            + ROW("a.jpg", xs, ys) + "\n")
    path = tmp_path / "ann.csv"
    path.write_bytes(text.encode())
    ann = M.read_annotations(str(path))
    assert list(ann) == ["b.jpg", "a.jpg"]
    b = ann["b.jpg"]
    assert b.dtype == torch.float32 and b.shape == (18, 2)
    want = torch.tensor([[x, y] for x, y in zip(xs, ys)], dtype=torch.float32)
    want[4] = -1
    want[7] = -1  # x = -5: missing, so both coordinates -1
    assert torch.equal(b, want)
    assert ann["a.jpg"][5].tolist() == [105.0, 5.0] and ann["a.jpg"][7].tolist() == [-1.0, -1.0]
    assert ann["a.jpg"][4].tolist() == [-1.0, -1.0]
    # the line numbers of errors after the blank lines
    path.write_bytes((text + "c.jpg: [1]: [2]\n").encode())
    with pytest.raises(M.AnnotationError) as err:
        M.read_annotations(str(path))
    assert str(err.value) == f"{path}:6: keypoints_y must be a list of 18 integers, got '[1]'"


def test_read_annotations_refusals_word_for_word(tmp_path):
    path = tmp_path / "ann.csv"
    ok = json.dumps([1] * 18)
    cases = [
        (M.ANNOTATION_HEADER + " \n", f"{path}:1: header must be {M.ANNOTATION_HEADER!r}, got "
                                      f"{M.ANNOTATION_HEADER + ' '!r}"),
        ("", f"{path}:1: header must be {M.ANNOTATION_HEADER!r}, got ''"),
        (M.ANNOTATION_HEADER + "\na.jpg: " + ok + "\n",
         f"{path}:2: expected 'name: [y...]: [x...]' (3 fields separated by ':'), got 2 fields: "
         + repr("a.jpg: " + ok)),
        (M.ANNOTATION_HEADER + "\na.jpg: " + ok + ": " + ok + ": " + ok + "\n",
         f"{path}:2: expected 'name: [y...]: [x...]' (3 fields separated by ':'), got 4 fields: "
         + repr(("a.jpg: " + ok + ": " + ok + ": " + ok)[:80])),
        (M.ANNOTATION_HEADER + "\na.jpg: " + ok + ": [1]\n",
         f"{path}:2: keypoints_x must be a list of 18 integers, got '[1]'"),
        (M.ANNOTATION_HEADER + "\na/b.jpg: " + ok + ": " + ok + "\n",
         f"{path}:2: image name 'a/b.jpg' cannot be used: it contains a path separator (names are plain "
         "file names inside the image folder)"),
        (M.ANNOTATION_HEADER + "X\n", f"{path}:1: header must be {M.ANNOTATION_HEADER!r}, got "
                                       f"{M.ANNOTATION_HEADER + 'X'!r}"),
        # a line's trailing blanks and characters are kept: quoted as they are, never stripped away
        (M.ANNOTATION_HEADER + "\na.jpg: " + ok + "  \n",
         f"{path}:2: expected 'name: [y...]: [x...]' (3 fields separated by ':'), got 2 fields: "
         + repr("a.jpg: " + ok + "  ")),
        (M.ANNOTATION_HEADER + "\na.jpg: " + ok + ": " + ok + "X\n",
         f"{path}:2: keypoints_x is not a JSON list (Extra data): " + repr(ok + "X")),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(M.AnnotationError) as err:
            M.read_annotations(str(path))
        assert str(err.value) == message


def test_write_annotations_header_once_append_and_overwrite(tmp_path):
    kp = torch.arange(36, dtype=torch.float32).reshape(18, 2) + 0.4  # rounds down
    line_a = ROW("a.jpg", list(range(1, 36, 2)), list(range(0, 36, 2)))
    line_b = ROW("b.jpg", list(range(2, 37, 2)), list(range(1, 36, 2)))
    path = tmp_path / "new.csv"
    M.write_annotations(str(path), {"a.jpg": kp}, append=True)  # a new file: header first
    assert path.read_text() == f"{M.ANNOTATION_HEADER}\n{line_a}\n"
    M.write_annotations(str(path), {"b.jpg": kp + 1}, append=True)  # appended, no second header
    assert path.read_text() == f"{M.ANNOTATION_HEADER}\n{line_a}\n{line_b}\n"
    M.write_annotations(str(path), {"b.jpg": kp + 1})  # no append: the file is replaced
    assert path.read_text() == f"{M.ANNOTATION_HEADER}\n{line_b}\n"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    M.write_annotations(str(empty), {"a.jpg": kp}, append=True)  # an empty file gets the header
    assert empty.read_text() == f"{M.ANNOTATION_HEADER}\n{line_a}\n"
    assert "\r" not in empty.read_bytes().decode()
    M.write_annotations(str(empty), {})  # nothing to write: just the header
    assert empty.read_text() == f"{M.ANNOTATION_HEADER}\n"


def test_read_pairs_line_by_line_and_refusals_word_for_word(tmp_path):
    ann = {n: torch.ones(18, 2) for n in ("a.jpg", "b.jpg", "c.jpg")}
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"from,to\r\n a.jpg , b.jpg\r\n\r\n \nb.jpg,c.jpg\n")
    assert M.read_pairs(str(path)) == [("a.jpg", "b.jpg"), ("b.jpg", "c.jpg")]
    assert M.read_pairs(str(path), ann) == [("a.jpg", "b.jpg"), ("b.jpg", "c.jpg")]
    assert M.read_pairs(str(path), ann, on_missing="skip") == [("a.jpg", "b.jpg"), ("b.jpg", "c.jpg")]
    with pytest.raises(ValueError) as err:
        M.read_pairs(str(path), ann, on_missing="drop")
    assert str(err.value) == "on_missing must be 'raise' or 'skip', got 'drop'"
    cases = [
        ("from,to \n", f"{path}:1: header must be 'from,to', got 'from,to '"),
        ("from,toX\n", f"{path}:1: header must be 'from,to', got 'from,toX'"),
        ("from,to\n" + "a" * 90 + ".jpg\n", f"{path}:2: expected 'from,to', got {'a' * 80!r}"),  # 80 quoted
        ("", f"{path}:1: header must be 'from,to', got ''"),
        ("from,to\na.jpg,b.jpg,c.jpg\n", f"{path}:2: expected 'from,to', got 'a.jpg,b.jpg,c.jpg'"),
        ("from,to\n,b.jpg\n", f"{path}:2: expected 'from,to', got ',b.jpg'"),
        ("from,to\na.jpg, \n", f"{path}:2: expected 'from,to', got 'a.jpg, '"),
        ("from,to\na.jpg,b.jpg\nx:y.jpg,b.jpg\n", f"{path}:3: image name 'x:y.jpg' cannot be used: it contains "
                                                  "':' (the annotation file's field separator)"),
        ("from,to\na.jpg,x:y.jpg\n", f"{path}:2: image name 'x:y.jpg' cannot be used: it contains "
                                     "':' (the annotation file's field separator)"),
        ("from,to\nd.jpg,a.jpg\n", f"{path}:2: pair (d.jpg, a.jpg) names 'd.jpg', which has no annotation"),
        ("from,to\na.jpg,b.jpg\n\na.jpg,d.jpg\n", f"{path}:4: pair (a.jpg, d.jpg) names 'd.jpg', which has no "
                                                  "annotation"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(M.AnnotationError) as err:
            M.read_pairs(str(path), ann)
        assert str(err.value) == message
    path.write_text("from,to\nd.jpg,a.jpg\na.jpg,b.jpg\nb.jpg,e.jpg\nd.jpg,e.jpg\nc.jpg,a.jpg\n")
    with pytest.warns(RuntimeWarning) as rec:
        assert M.read_pairs(str(path), ann, on_missing="skip") == [("a.jpg", "b.jpg"), ("c.jpg", "a.jpg")]
    assert [str(w.message) for w in rec] == [f"{path}: skipped 3 pairs naming images without annotation"]
    assert len(M.read_pairs(str(path))) == 5  # no annotations given: nothing to check against
    path.write_text("from,to\na.jpg,b.jpgX\n")
    assert M.read_pairs(str(path)) == [("a.jpg", "b.jpgX")]  # only the line break is cut off


def test_standard_pairs_by_hand(tmp_path):
    """Ordered pairs of the same identity in annotation order, the filter applied, and
    a seeded sample drawn only when it is smaller than the whole."""
    whole = torch.full((18, 2), 5.0)
    no_hip = whole.clone()
    no_hip[P.J["r_hip"]] = -1
    ann = {"0002_c1_a.jpg": whole, "0001_c1_a.jpg": whole, "0002_c2_b.jpg": whole, "0001_c2_b.jpg": no_hip,
           "0000_c1_x.jpg": whole, "0000_c2_y.jpg": whole, "0001_c3_c.jpg": whole, "0002_c3_c.jpg": whole,
           "0003_c1_a.jpg": whole}
    pairs = M.standard_pairs(ann)
    assert pairs == [("0002_c1_a.jpg", "0002_c2_b.jpg"), ("0002_c1_a.jpg", "0002_c3_c.jpg"),
                     ("0002_c2_b.jpg", "0002_c1_a.jpg"), ("0002_c2_b.jpg", "0002_c3_c.jpg"),
                     ("0002_c3_c.jpg", "0002_c1_a.jpg"), ("0002_c3_c.jpg", "0002_c2_b.jpg"),
                     ("0001_c1_a.jpg", "0001_c3_c.jpg"), ("0001_c3_c.jpg", "0001_c1_a.jpg")]
    assert M.standard_pairs(ann, sample=8) == pairs and M.standard_pairs(ann, sample=100) == pairs
    import random
    for seed in (0, 5):
        want = random.Random(seed).sample(pairs, 3)  # the documented draw: random.Random(seed).sample
        assert M.standard_pairs(ann, sample=3, seed=seed) == want
    assert M.standard_pairs(ann, sample=7) == random.Random(0).sample(pairs, 7)


def test_dataset_constructor_reads_files_checks_names_and_keeps_its_settings(tmp_path):
    root = tmp_path / "market"
    with pytest.raises(ValueError) as err:
        M.MarketPoseDataset(str(root), {}, [], split="val")
    assert str(err.value) == "split must be 'train' or 'test', got 'val'"
    with pytest.raises(FileNotFoundError) as err:
        M.MarketPoseDataset(str(root), {}, [], split="test")
    assert str(err.value) == f"image folder not found: {root / 'bounding_box_test'}"
    (root / "bounding_box_test").mkdir(parents=True)
    g = np.random.default_rng(1)
    for name in ("a.png", "b.png", "c.png"):
        _png(root / "bounding_box_test" / name, g.integers(0, 256, (6, 4, 3), dtype=np.uint8))
    ann = {n: torch.tensor([[1.0 + (j + i) % 3, 1.0 + j % 5] for j in range(18)])
           for i, n in enumerate(("a.png", "b.png", "c.png"))}
    M.write_annotations(str(root / "ann.csv"), ann)
    M.write_pairs(str(root / "pairs.csv"), [("a.png", "b.png"), ("d.png", "a.png"), ("c.png", "a.png")])
    with pytest.raises(M.AnnotationError, match=r"pairs.csv:3: pair \(d.png, a.png\) names 'd.png'"):
        M.MarketPoseDataset(str(root), str(root / "ann.csv"), str(root / "pairs.csv"), split="test")
    with pytest.warns(RuntimeWarning, match="skipped 1 pairs"):
        ds = M.MarketPoseDataset(str(root), str(root / "ann.csv"), str(root / "pairs.csv"), split="test",
                                 on_missing="skip", height=6, width=4)
    assert ds.root == str(root) and ds.image_dir == str(root / "bounding_box_test")
    assert ds.pairs == [("a.png", "b.png"), ("c.png", "a.png")] and len(ds) == 2
    assert list(ds.annotations) == ["a.png", "b.png", "c.png"] and torch.equal(ds.annotations["c.png"], ann["c.png"])
    assert (ds.flip, ds.heatmaps, ds.sigma, ds.height, ds.width) == (0.0, True, 6.0, 6, 4)
    item = ds[1]
    assert (item["source_name"], item["target_name"]) == ("c.png", "a.png")
    heat = D.keypoint_heatmaps(torch.stack([ann["c.png"], ann["a.png"]]), 6, 4, 6.0)
    assert torch.equal(item["source_heatmaps"], heat[0]) and torch.equal(item["target_heatmaps"], heat[1])
    assert set(item) == {"source_image", "target_image", "source_keypoints", "target_keypoints", "source_name",
                         "target_name", "source_heatmaps", "target_heatmaps"}
    item["source_keypoints"][0, 0] = 99.0  # an item's poses are copies: the annotations are untouched
    assert ds.annotations["c.png"][0, 0] == ann["c.png"][0, 0]
    # pairs given as a list: names checked, missing ones refused or skipped with the count
    pairs = [("a.png", "b.png"), ("a.png", "d.png"), ("e.png", "c.png"), ("c.png", "b.png")]
    with pytest.raises(M.AnnotationError) as err:
        M.MarketPoseDataset(str(root), ann, pairs, split="test")
    assert str(err.value) == "pair names 'd.png', which has no annotation"
    with pytest.warns(RuntimeWarning) as rec:
        ds = M.MarketPoseDataset(str(root), ann, iter(pairs), split="test", on_missing="skip", sigma=2.5,
                                 heatmaps=True, height=6, width=4)
    assert [str(w.message) for w in rec] == ["skipped 2 pairs naming images without annotation"]
    assert ds.pairs == [("a.png", "b.png"), ("c.png", "b.png")] and ds.sigma == 2.5
    assert torch.equal(ds[1]["target_heatmaps"], D.keypoint_heatmaps(ann["b.png"][None], 6, 4, 2.5)[0])
    with pytest.raises(M.AnnotationError) as err:
        M.MarketPoseDataset(str(root), ann, [("a.png", "x,y.png")], split="test", on_missing="skip")
    assert str(err.value).startswith("pair image name 'x,y.png' cannot be used")
    default = M.MarketPoseDataset(str(root), ann, [], split="test")
    assert (default.flip, default.heatmaps, default.sigma, default.height, default.width) == (0.0, True, 6.0, 128, 64)


def test_dataset_flip_draws_from_its_seeded_generator(tmp_path):
    """flip p: a pair is flipped when the dataset's own ``random.Random(seed)`` draws
    below p (one draw per item); flip 1 always, flipped images are mirrored columns and
    the poses are flipped with the image width."""
    import random
    root = tmp_path / "market"
    (root / "bounding_box_train").mkdir(parents=True)
    g = np.random.default_rng(2)
    for name in ("a.png", "b.png"):
        _png(root / "bounding_box_train" / name, g.integers(0, 256, (6, 4, 3), dtype=np.uint8))
    ann = {n: torch.tensor([[float(j % 4), float(j % 6)] for j in range(18)]) for n in ("a.png", "b.png")}
    ann["b.png"][2] = torch.tensor([3.0, 1.0])
    ds = M.MarketPoseDataset(str(root), ann, [("a.png", "b.png")] * 20, flip=0.5, heatmaps=True, height=6, width=4,
                             seed=11)
    draws = random.Random(11)
    plain_src = M.load_image(str(root / "bounding_box_train" / "a.png"))
    plain_tgt = M.load_image(str(root / "bounding_box_train" / "b.png"))
    flips = []
    for i in range(20):
        item = ds[i]
        flipped = draws.random() < 0.5
        flips.append(flipped)
        src = plain_src.flip(-1) if flipped else plain_src
        tgt = plain_tgt.flip(-1) if flipped else plain_tgt
        kp_b = P.flip_keypoints(ann["b.png"], 4) if flipped else ann["b.png"]
        assert torch.equal(item["source_image"], src) and torch.equal(item["target_image"], tgt)
        assert torch.equal(item["target_keypoints"], kp_b)
        assert torch.equal(item["target_heatmaps"], D.keypoint_heatmaps(kp_b[None], 6, 4, 6.0)[0])
    assert 0 < sum(flips) < 20
    always = M.MarketPoseDataset(str(root), ann, [("a.png", "b.png")], flip=1.0, heatmaps=False, height=6, width=4)
    item = always[0]
    assert torch.equal(item["source_image"], plain_src.flip(-1)) and "source_heatmaps" not in item
    assert torch.equal(item["target_image"], plain_tgt.flip(-1))
    assert torch.equal(item["target_keypoints"], P.flip_keypoints(ann["b.png"], 4))
    assert torch.equal(item["source_keypoints"], P.flip_keypoints(ann["a.png"], 4))


def test_to_uint8_by_hand():
    x = torch.tensor([[-3.0, -1.0, -0.5, 0.0], [0.25, 0.5, 1.0, 7.0]], dtype=torch.float64, requires_grad=True)
    out = M.to_uint8(x)
    # (x + 1) * 127.5 rounded half to even: -0.5 -> 63.75 -> 64, 0 -> 127.5 -> 128, 0.25 -> 159.375 -> 159
    assert out.dtype == torch.uint8 and out.tolist() == [[0, 0, 64, 128], [159, 191, 255, 255]]
    assert M.to_uint8(x.detach().to(torch.bfloat16)[:, 1:]).tolist() == [[0, 64, 128], [191, 255, 255]]
    assert M.to_uint8(torch.empty(0, 3)).shape == (0, 3)


def test_a_csv_that_is_not_utf8_is_an_annotation_error_naming_the_file(tmp_path):
    ann = tmp_path / "a.csv"
    ann.write_bytes(b"name:keypoints_y:keypoints_x\n0001_c1s1_000001_00\xe9.jpg: [1]: [2]\n")
    with pytest.raises(M.AnnotationError) as err:
        M.read_annotations(str(ann))
    assert str(err.value).startswith(f"{ann}: not UTF-8 text (byte b'\\xe9' at offset ")
    pairs = tmp_path / "p.csv"
    pairs.write_bytes(b"from,to\na\xff.jpg,b.jpg\n")
    with pytest.raises(M.AnnotationError, match="not UTF-8 text"):
        M.read_pairs(str(pairs))


def test_a_tensor_size_or_sigma_is_refused_saying_so():
    import deformgan_ops as D
    with pytest.raises(ValueError, match=r"sigma must be a Python or numpy number, not a tensor \(pass float\(sigma\)\)"):
        D.keypoint_heatmaps(torch.zeros(1, 1, 2), 4, 4, torch.tensor(6.0))
    with pytest.raises(ValueError, match=r"height must be a Python or numpy int, not a tensor"):
        D.keypoint_heatmaps(torch.zeros(1, 1, 2), torch.tensor(4), 4, 6.0)
