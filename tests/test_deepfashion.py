"""DeepFashion at 256x256 end to end: the converter on In-shop-shaped trees these tests
make, the data layer reading its output, training, evaluation and generation on it."""
import errno
import json
import os
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import pose as P
from deformgan.data import deepfashion as DF
from deformgan.data.layout import DatasetLayout
from deformgan.data.market import MarketPoseDataset, identity, read_annotations, read_pairs
from deformgan.data.synthetic import make_fashion_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- names, sizes, split
@pytest.mark.parametrize("path, name", [
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "fashionMENDenimid0000008001_1front.jpg"),
    ("img/WOMEN/Blouses_Shirts/id_00006190/02_1_front.jpg", "fashionWOMENBlouses_Shirtsid0000619002_1front.jpg"),
    ("WOMEN/Dresses/id_00000002/04_7_additional.jpg", "fashionWOMENDressesid0000000204_7additional.jpg"),
])
def test_field_names(path, name):
    assert DF.field_name(path) == name
    assert identity(name) == "id" + re.search(r"id_(\d{8})", path).group(1)


@pytest.mark.parametrize("bad", ["img/MEN/Denim/01_1_front.jpg", "img/MEN/Denim/id_80/01_1_front.jpg",
                                 "img/MEN/Denim/id_00000080/front.jpg", "img/MEN/Denim/id_00000080/x/01_1_front.jpg"])
def test_paths_outside_the_layout_are_refused(bad):
    with pytest.raises(DF.LayoutError, match="expected img/<GENDER>"):
        DF.field_name(bad)


def test_market_names_keep_their_person_id():
    assert identity("0002_c1s1_000451_03.jpg") == "0002"


def test_images_are_padded_to_256_never_cropped():
    same = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(DF.to_field_size(same)), np.asarray(same))
    tall = Image.new("RGB", (200, 300), (10, 20, 30))  # W 200, H 300
    out = np.asarray(DF.to_field_size(tall))
    nw = round(200 * 256 / 300)  # 171 columns of content, centred
    left = (256 - nw) // 2
    assert out.shape == (256, 256, 3)
    assert (out[:, :left] == 255).all() and (out[:, left + nw:] == 255).all()
    assert (np.abs(out[:, left + 2:left + nw - 2].astype(int) - [10, 20, 30]) <= 1).all()


def test_the_split_by_item_never_splits_an_item():
    names = [f"fashionMENDenimid{i:08d}{k:02d}_1front.jpg" for i in range(30) for k in range(3)]
    split = DF.split_by_item(names, 0.2)
    for item in {identity(n) for n in names}:
        assert len({split[n] for n in names if identity(n) == item}) == 1
    test_items = {identity(n) for n in names if split[n] == "test"}
    assert len(test_items) == 6  # 20 % of 30
    by_crc = sorted({identity(n) for n in names}, key=lambda i: (zlib.crc32(i.encode()), i))
    assert test_items == set(by_crc[:6])
    assert set(DF.split_by_item(names[:6], 0.01).values()) == {"train", "test"}  # at least one test item


# ---------------------------------------------------------------- the converter
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("inshop")
    keypoints = make_fashion_tree(str(root), items=6, images_per_item=3, seed=4, progress=False)
    (root / "img" / "MEN" / "Denim" / "id_00000099").mkdir(parents=True)
    (root / "img" / "MEN" / "Denim" / "id_00000099" / "01_1_front.jpg").write_bytes(b"not a jpeg")
    (root / "img" / "MEN" / "stray.jpg").write_bytes(b"x")
    return str(root), keypoints


def expected_pairs(ann):
    """The field's rule, computed here: same item id (from the name), a != b, torso joints present."""
    ok = [n for n, kp in ann.items() if all(kp[j, 0] >= 0 and kp[j, 1] >= 0 for j in P.TORSO_JOINTS)]
    return {(a, b) for a in ok for b in ok if a != b and re.search(r"id\d{8}", a)[0] == re.search(r"id\d{8}", b)[0]}


def test_prepare_writes_the_field_layout_names_split_keypoints_and_pairs(tree, tmp_path, capsys):
    root, keypoints = tree
    out = tmp_path / "df"
    summary = DF.prepare(root, str(out), annotations=keypoints, test_fraction=0.34, progress=False)
    known = read_annotations(keypoints)
    seen = {}
    for split in ("train", "test"):
        files = sorted(os.listdir(out / split))
        assert files and all(f.startswith("fashion") and f.endswith(".jpg") for f in files)
        for f in files:
            seen[f] = split
            with Image.open(out / split / f) as im:
                assert im.size == (256, 256)
        ann = read_annotations(str(out / f"annotations-{split}.csv"))
        assert set(ann) == set(files)
        for n, kp in ann.items():
            assert torch.equal(kp, known[n])
        pairs = read_pairs(str(out / f"pairs-{split}.csv"))
        assert set(pairs) == expected_pairs(ann) and len(pairs) == len(set(pairs)) > 0
    assert set(seen) == set(known)  # every good image, none of the bad ones
    items = {}
    for n, s in seen.items():
        items.setdefault(identity(n), set()).add(s)
    assert all(len(v) == 1 for v in items.values()) and {"train", "test"} == {s for v in items.values() for s in v}
    # the release's 256x256 JPEGs are copied byte for byte
    src = os.path.join(root, "img", "MEN")
    rel = next(os.path.join(dp, f) for dp, _, fs in os.walk(src) for f in fs if f.startswith("01_1"))
    name = DF.field_name(os.path.relpath(rel, root))
    assert (out / seen[name] / name).read_bytes() == open(rel, "rb").read()
    # problems are named, on stderr and in DEEPFASHION.json
    err = capsys.readouterr().err
    assert "id_00000099/01_1_front.jpg" in err and "stray.jpg" in err
    saved = json.loads((out / "DEEPFASHION.json").read_text())
    assert saved == summary and "unreadable" in saved["problems"] and "not_in_layout" in saved["problems"]
    assert saved["train"]["images"] + saved["test"]["images"] == len(known)
    # the data layer reads the folder like a Market one
    layout = DatasetLayout(str(out))
    assert layout.images("test") == str(out / "test") and layout.pairs("train") == str(out / "pairs-train.csv")
    ds = MarketPoseDataset(str(out), layout.annotations("train"), layout.pairs("train"), split="train",
                           height=256, width=256)
    item = ds[0]
    assert item["source_image"].shape == (3, 256, 256) and item["source_heatmaps"].shape == (18, 256, 256)


def test_prepare_is_resumable(tree, tmp_path):
    root, keypoints = tree
    out = tmp_path / "df"
    DF.prepare(root, str(out), annotations=keypoints, progress=False)
    first = sorted((out / "train").iterdir())
    kept, removed = first[0], first[1]
    stamp = kept.stat().st_mtime_ns
    removed.unlink()
    DF.prepare(root, str(out), annotations=keypoints, progress=False)
    assert kept.stat().st_mtime_ns == stamp and removed.exists()
    assert not [p for p in out.rglob("*.part")]


def test_prepare_follows_the_split_lists(tree, tmp_path, capsys):
    root, keypoints = tree
    names = sorted(read_annotations(keypoints))
    train_list, test_list = tmp_path / "train.lst", tmp_path / "test.lst"
    first = next(os.path.relpath(os.path.join(dp, f), root) for dp, _, fs in sorted(os.walk(os.path.join(root, "img")))
                 for f in sorted(fs) if "id_000000" in dp and "id_00000099" not in dp)
    train_list.write_text("\n".join(names[3:]) + "\n")
    test_list.write_text(first + "\nfashionMENDenimid1234567801_1front.jpg\n")  # a release path, a missing name
    out = tmp_path / "lists"
    summary = DF.prepare(root, str(out), str(train_list), str(test_list), annotations=keypoints, progress=False)
    assert sorted(os.listdir(out / "test")) == [DF.field_name(first)]
    assert sorted(os.listdir(out / "train")) == names[3:]
    assert summary["problems"]["listed_but_missing"] == ["fashionMENDenimid1234567801_1front.jpg"]
    assert "listed but not in the tree: fashionMENDenimid1234567801_1front.jpg" in capsys.readouterr().err


def test_prepare_detects_keypoints_with_yolo_when_none_are_given(tmp_path):
    root = tmp_path / "tree"
    make_fashion_tree(str(root), items=2, images_per_item=2, seed=1, progress=False)
    out = tmp_path / "df"
    DF.prepare(str(root), str(out), weights="yolo11n-pose.yaml", test_fraction=0.5, progress=False)
    for split in ("train", "test"):  # random weights: a row per image, whatever it found
        ann = read_annotations(str(out / f"annotations-{split}.csv"))
        assert set(ann) == set(os.listdir(out / split)) and (out / f"pairs-{split}.csv").exists()


def test_cli_exit_codes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "deformgan.data.deepfashion", str(empty), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no images in the In-shop layout" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "deformgan.data.deepfashion", str(empty), "--out", str(tmp_path / "o"),
                           "--train-list", "x.lst"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "both --train-list and --test-list" in proc.stderr


# ---------------------------------------------------------------- training, evaluation, generation
def test_a_256x256_checkpoint_trains_evaluates_and_generates(tree, tmp_path):
    from deformgan import checkpoint as C
    from deformgan import train as T
    from deformgan.evaluate import evaluate
    from deformgan.generate import Reposer

    root, keypoints = tree
    data = tmp_path / "df"
    DF.prepare(root, str(data), annotations=keypoints, test_fraction=0.34, progress=False)
    cfg, _ = T.build_config(["--preset", "fashion-dsc", "--data", str(data), "--out", str(tmp_path / "run"),
                             "--width-mult", "0.0625", "--steps", "2", "--sample-every", "2"])
    assert cfg.image_size == (256, 256) and cfg.batch_size == 2 and cfg.nn_kernel == 5
    T.train(cfg, progress=False)
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    G = C.build_generator(C.load(ckpt))
    assert G.levels == 7 and (tmp_path / "run" / "samples" / "step_000002.png").exists()
    r = evaluate(ckpt, str(data), out=str(tmp_path / "eval"), batch_size=2, max_pairs=3, inception_weights=None,
                 alexnet_weights=None, lpips_weights=None, pose_weights=None, progress=False)
    assert r["dataset"] == "deepfashion" and r["image_size"] == [256, 256] and 0 < r["ssim"] <= 1
    name = sorted(os.listdir(data / "test"))[0]
    ann = read_annotations(str(data / "annotations-test.csv"))
    out = Reposer(ckpt).generate(str(data / "test" / name), ann[name], source_keypoints=ann[name])
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8


# ---------------------------------------------------------------- each function by hand
LAYOUT_HELP = "expected img/<GENDER>/<Category>/id_XXXXXXXX/NN_V_view.jpg"


def test_field_name_separators_extensions_and_message():
    from helpers import assert_refused
    for path, name in [("img\\MEN\\Denim\\id_00000080\\01_1_front.jpg", "fashionMENDenimid0000008001_1front.jpg"),
                       ("/img//MEN/Denim/id_00000080/01_1_front.PNG", "fashionMENDenimid0000008001_1front.jpg"),
                       ("MEN/Denim/id_00000080/12_3_back.jpeg", "fashionMENDenimid0000008012_3back.jpg")]:
        assert DF.field_name(path) == name, path
    for bad in ("img/MEN/Denim/01_1_front.jpg", "img/MEN/Denim/id_0000080/01_1_front.jpg",
                "img/MEN/Denim/id_00000080/01_1_front.gif", "img/MEN/Denim/id_00000080/01-1-front.jpg"):
        assert_refused(DF.LayoutError, f"{bad}: {LAYOUT_HELP}", DF.field_name, bad)


def _touch(path, data=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_scan_lists_the_image_files_with_and_without_the_img_folder(tmp_path):
    root = tmp_path / "with"
    for rel in ("img/MEN/Denim/id_00000001/02_1_back.JPEG", "img/MEN/Denim/id_00000001/01_1_front.jpg",
                "img/MEN/Denim/id_00000001/03_1_side.Png", "img/MEN/Denim/id_00000001/notes.txt",
                "img/WOMEN/Dresses/id_00000002/01_1_front.jpeg", "outside.jpg"):
        _touch(root / rel)
    assert DF.scan(str(root)) == ["img/MEN/Denim/id_00000001/01_1_front.jpg",
                                  "img/MEN/Denim/id_00000001/02_1_back.JPEG",
                                  "img/MEN/Denim/id_00000001/03_1_side.Png",
                                  "img/WOMEN/Dresses/id_00000002/01_1_front.jpeg"]
    bare = tmp_path / "bare"
    _touch(bare / "MEN/Denim/id_00000001/01_1_front.jpg")
    _touch(bare / "MEN/Denim/id_00000001/01_1_front.gif")
    assert DF.scan(str(bare)) == ["MEN/Denim/id_00000001/01_1_front.jpg"]


def test_to_field_size_modes_wide_thin_and_large_images():
    grey = Image.fromarray(np.full((256, 256), 77, dtype=np.uint8))  # mode L
    out = DF.to_field_size(grey)
    assert out.mode == "RGB" and (np.asarray(out) == 77).all()
    rgba = Image.new("RGBA", (256, 256), (1, 2, 3, 40))
    assert DF.to_field_size(rgba).mode == "RGB" and (np.asarray(DF.to_field_size(rgba)) == [1, 2, 3]).all()
    wide = np.asarray(DF.to_field_size(Image.new("RGB", (300, 100), (200, 30, 60))))  # 85 rows, from row 85
    assert wide.shape == (256, 256, 3)
    assert (wide[:85] == 255).all() and (wide[170:] == 255).all()
    assert (np.abs(wide[87:168].astype(int) - [200, 30, 60]) <= 1).all()
    thin = np.asarray(DF.to_field_size(Image.new("RGB", (1000, 1), (0, 0, 0))))  # one row, never zero
    assert (thin[127] < 128).all() and (np.delete(thin, 127, axis=0) == 255).all()
    tall = np.asarray(DF.to_field_size(Image.new("RGB", (1, 1000), (0, 0, 0))))  # one column
    assert (tall[:, 127] < 128).all() and (np.delete(tall, 127, axis=1) == 255).all()
    big = Image.fromarray(np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    expect = big.resize((256, 256), Image.BICUBIC, reducing_gap=None)  # the documented filter, no padding
    assert np.array_equal(np.asarray(DF.to_field_size(big)), np.asarray(expect))


def test_read_list_strips_skips_blanks_and_converts_release_paths(tmp_path):
    path = tmp_path / "train.lst"
    path.write_text("  fashionWOMENDressesid0000000204_7additional.jpg  \n\n"
                    " img/MEN/Denim/id_00000080/01_1_front.jpg\n\t\n")
    assert DF.read_list(str(path)) == ["fashionWOMENDressesid0000000204_7additional.jpg",
                                       "fashionMENDenimid0000008001_1front.jpg"]


def test_split_by_item_edge_counts():
    def n_test_items(n_items, fraction):
        names = [f"fashionMENDenimid{i:08d}01_1front.jpg" for i in range(n_items)]
        split = DF.split_by_item(iter(names), fraction)  # any iterable
        return sum(v == "test" for v in split.values())

    assert n_test_items(1, 0.4) == 0 and n_test_items(1, 0.6) == 1  # one item: no clamping
    assert n_test_items(2, 0.99) == 1 and n_test_items(2, 0.01) == 1  # two: one on each side
    assert n_test_items(10, 0.01) == 1 and n_test_items(10, 0.99) == 9  # at least one on each side
    assert n_test_items(10, 0.25) == 2 and n_test_items(10, 0.35) == 4  # round half to even, then 3.5 -> 4
    assert DF.split_by_item([], 0.5) == {}


def _jpeg_bytes(image, quality=95):
    import io
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_write_image_copies_only_the_releases_own_256_rgb_jpegs(tmp_path):
    rng = np.random.default_rng(2)
    rgb = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    cases = {"same.jpg": (rgb, "JPEG"), "png.png": (rgb, "PNG"),
             "grey.jpg": (rgb.convert("L"), "JPEG"), "small.jpg": (rgb.resize((128, 192)), "JPEG")}
    for name, (im, fmt) in cases.items():
        im.save(tmp_path / name, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
        dst = tmp_path / ("out-" + name)
        dst.write_bytes(b"an older file")
        DF._write_image(str(tmp_path / name), str(dst))
        with Image.open(tmp_path / name) as src:
            expect = (tmp_path / name).read_bytes() if name == "same.jpg" else _jpeg_bytes(DF.to_field_size(src))
        assert dst.read_bytes() == expect, name
    assert not list(tmp_path.glob("*.part"))


# ---------------------------------------------------------------- prepare on hand-made trees
def _mini_tree(root, items=4, per_item=2, size=(32, 64)):
    """Small images (W x H = ``size``) of ``items`` clothing items; their names and release paths."""
    rng = np.random.default_rng(7)
    rels = {}
    for i in range(1, items + 1):
        for k in range(1, per_item + 1):
            rel = f"img/{'MEN' if i % 2 else 'WOMEN'}/Tees/id_{i:08d}/{k:02d}_1_front.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / rel)
            rels[DF.field_name(rel)] = rel
    return rels


def _pose(dx=0):
    kp = torch.tensor([[128, 40], [128, 70], [100, 70], [95, 110], [92, 150], [156, 70], [160, 110], [164, 150],
                       [110, 150], [108, 200], [106, 240], [146, 150], [148, 200], [150, 240], [120, 35],
                       [136, 35], [112, 38], [144, 38]], dtype=torch.float32)
    kp[:, 0] += dx
    return kp


def test_prepare_refusals_word_for_word(tmp_path):
    from helpers import assert_refused
    missing = tmp_path / "nope"
    assert_refused(FileNotFoundError, f"In-shop folder not found: {missing}", DF.prepare, str(missing),
                   str(tmp_path / "o"), progress=False)
    (tmp_path / "empty" / "img").mkdir(parents=True)
    _touch(tmp_path / "empty" / "img" / "stray.jpg")
    assert_refused(FileNotFoundError, f"no images in the In-shop layout under {tmp_path / 'empty'} "
                   "(img/<GENDER>/<Category>/id_X/...)", DF.prepare, str(tmp_path / "empty"), str(tmp_path / "o"),
                   progress=False)
    for lists in (("a.lst", None), (None, "b.lst")):
        assert_refused(ValueError, "give both --train-list and --test-list, or neither", DF.prepare,
                       str(tmp_path / "empty"), str(tmp_path / "o"), *lists, progress=False)


def test_prepare_summary_lists_and_missing_keypoints(tmp_path, capsys):
    from deformgan.data.market import write_annotations
    root = tmp_path / "tree"
    rels = _mini_tree(root)
    names = sorted(rels)  # MEN items 1 and 3, then WOMEN 2 and 4: two images each
    ann = {n: _pose(i) for i, n in enumerate(names) if n != names[1]}  # one image without keypoints
    ann_path = tmp_path / "kp.csv"
    write_annotations(str(ann_path), ann)
    train, test = tmp_path / "train.lst", tmp_path / "test.lst"
    train.write_text("\n".join(names[:6]) + "\n")
    test.write_text("\n".join([names[5], rels[names[6]], names[7]]) + "\n")  # names[5] in both lists
    out = tmp_path / "out"
    summary = DF.prepare(str(root), str(out), str(train), str(test), annotations=str(ann_path), progress=False)
    assert summary == {
        "source": str(root), "size": [256, 256],
        "size_rule": "256x256 kept as is; else longer side resized to 256 (bicubic), white padding",
        "split_rule": "lists train.lst / test.lst", "keypoints": str(ann_path),
        "train": {"images": 5, "annotated": 4, "pairs": 2, "items": 3},  # item 1 and 2: one image with a pose
        "test": {"images": 2, "annotated": 2, "pairs": 2, "items": 1},
        "problems": {"in_both_lists": [names[5]]}}
    assert json.loads((out / "DEEPFASHION.json").read_text()) == summary
    assert sorted(os.listdir(out / "train")) == names[:5] and sorted(os.listdir(out / "test")) == names[6:]
    assert set(read_annotations(str(out / "annotations-train.csv"))) == set(names[:5]) - {names[1]}
    assert read_pairs(str(out / "pairs-test.csv")) == [(names[6], names[7]), (names[7], names[6])]
    err = capsys.readouterr().err
    assert f"[deformgan.data.deepfashion] in both lists (left out): {names[5]}\n" in err
    assert (f"[deformgan.data.deepfashion] 1 train images have no keypoints in {ann_path} (left out of the pairs), "
            f"e.g. {names[1]}\n") in err
    assert "test images have no keypoints" not in err


def test_prepare_split_by_item_unreadable_and_detected_keypoints(tmp_path, monkeypatch, capsys):
    from deformgan import keypoints as K
    from deformgan.data.market import write_annotations
    root = tmp_path / "tree"
    rels = _mini_tree(root)
    bad_rel = "img/MEN/Tees/id_00000009/01_1_front.jpg"
    _touch(root / bad_rel, b"not a jpeg")
    calls = []

    def extract(images_dir, out, weights, device, progress, model):  # YOLO's place: a pose per image found
        calls.append((images_dir, out, weights, device, progress, model))
        write_annotations(out, {n: _pose() for n in sorted(os.listdir(images_dir))})

    monkeypatch.setattr(K, "extract", extract)
    monkeypatch.setattr(K, "load_pose_model", lambda weights, flag: ("model", weights, flag))
    out = tmp_path / "out"
    summary = DF.prepare(str(root), str(out), test_fraction=0.25, weights="w.pt", device="cpu", progress=False)
    model = ("model", "w.pt", "--weights")  # loaded once, before the conversion
    assert calls == [(str(out / s), str(out / f"annotations-{s}.csv"), "w.pt", "cpu", False, model)
                     for s in ("train", "test")]
    assert summary["split_rule"] == "by clothing item: first 0.25 of the item ids in CRC-32 order are test"
    assert summary["keypoints"] == "detected (w.pt)"
    bad = DF.field_name(bad_rel)
    split = DF.split_by_item(list(rels) + [bad], 0.25)
    for s in ("train", "test"):
        kept = sorted(n for n in rels if split[n] == s)
        assert sorted(os.listdir(out / s)) == kept
        assert summary[s] == {"images": len(kept), "annotated": len(kept), "pairs": len(kept),
                              "items": len(kept) // 2}
    (problem,) = summary["problems"]["unreadable"]
    assert problem.startswith(f"{bad_rel}: ") and list(summary["problems"]) == ["unreadable"]
    assert f"[deformgan.data.deepfashion] cannot read {problem} (left out)" in capsys.readouterr().err


def test_prepare_shows_progress_by_default_and_counts_finished_images(tmp_path, capsys):
    root = tmp_path / "tree"
    rels = _mini_tree(root, items=2)
    kp = tmp_path / "kp.csv"
    from deformgan.data.market import write_annotations
    write_annotations(str(kp), {n: _pose() for n in rels})
    DF.prepare(str(root), str(tmp_path / "out"), annotations=str(kp))
    err = capsys.readouterr().err
    assert "deepfashion images: 100%" in err and "4/4" in err and "img/s" in err
    os.remove(next((tmp_path / "out" / "train").iterdir()))
    DF.prepare(str(root), str(tmp_path / "out"), annotations=str(kp))
    assert "deepfashion images:  75%|" in capsys.readouterr().err  # resumed: 3 of 4 already there


def test_main_passes_its_arguments_and_reports(tmp_path, monkeypatch, capsys):
    seen = []

    def prepare(*args):
        seen.append(args)
        return {"train": {"images": 3}, "test": {"images": 1}, "problems": {"a": [1, 2], "b": [3]}}

    monkeypatch.setattr(DF, "prepare", prepare)
    assert DF.main(["R", "--out", "O"]) == 0
    assert DF.main(["R", "--out", "O", "--train-list", "tr", "--test-list", "te", "--test-fraction", "0.3",
                    "--annotations", "a.csv", "--weights", "w.pt", "--device", "cuda:1"]) == 0
    assert seen == [("R", "O", None, None, None, 0.1, "yolo11n-pose.pt", None),
                    ("R", "O", "tr", "te", "a.csv", 0.3, "w.pt", "cuda:1")]
    assert capsys.readouterr().err == (
        "[deformgan.data.deepfashion] wrote O: train {'images': 3}, test {'images': 1}; 3 problems "
        "(DEEPFASHION.json)\n") * 2
    for exc in (FileNotFoundError("In-shop folder not found: R"), ValueError("give both")):
        def failing(*args, exc=exc):
            raise exc
        monkeypatch.setattr(DF, "prepare", failing)
        assert DF.main(["R", "--out", "O"]) == 2
        assert capsys.readouterr().err == f"[deformgan.data.deepfashion] error: {exc}\n"
    for fraction in ("0", "1"):
        with pytest.raises(SystemExit) as e:
            DF.main(["R", "--out", "O", "--test-fraction", fraction])
        assert e.value.code == 2
    with pytest.raises(SystemExit):
        DF.main(["R"])  # --out is required


def test_main_help_and_required_arguments(capsys):
    from helpers import help_text, usage_error
    text = help_text(DF.main, capsys)
    assert text.startswith("usage: python -m deformgan.data.deepfashion [-h] --out OUT")
    assert DF.__doc__.strip() in text  # the module's description, its line breaks kept
    flat = " ".join(text.split())
    for option in ("root the In-shop release folder (holding img/)",
                   "--train-list TRAIN_LIST the field's train split file (one name per line)",
                   "--test-list TEST_LIST the field's test split file",
                   "--test-fraction TEST_FRACTION without lists: the fraction of clothing items held out for test",
                   "--annotations ANNOTATIONS keypoints of the images (annotation CSV with the field's names); "
                   "default: detect them with YOLO pose",
                   "--weights WEIGHTS YOLO pose weights for the detection"):
        assert option in flat, option
    assert usage_error(DF.main, [], capsys) == ("python -m deformgan.data.deepfashion: error: the following "
                                                "arguments are required: root, --out")


def test_prepare_defaults_quiet_no_detections_and_summary_file(tmp_path, monkeypatch, capsys):
    from deformgan import keypoints as K
    root = tmp_path / "tree"
    _mini_tree(root, items=12, per_item=2)
    calls = []
    monkeypatch.setattr(K, "extract", lambda folder, out, weights, device, progress, model: calls.append(weights))
    monkeypatch.setattr(K, "load_pose_model", lambda weights, flag: None)
    out = tmp_path / "out"
    summary = DF.prepare(str(root), str(out), progress=False)  # the extraction wrote no annotation file
    assert calls == ["yolo11n-pose.pt"] * 2 and summary["keypoints"] == "detected (yolo11n-pose.pt)"
    assert summary["split_rule"] == "by clothing item: first 0.1 of the item ids in CRC-32 order are test"
    assert summary["test"]["items"] == 1 and summary["train"]["items"] == 11  # round(1.2)
    assert summary["train"]["annotated"] == summary["train"]["pairs"] == 0
    assert read_pairs(str(out / "pairs-train.csv")) == []
    assert (out / "DEEPFASHION.json").read_text() == json.dumps(summary, indent=1)
    assert capsys.readouterr().err == ""  # progress=False: no bar, and no problem to report


# ---------------------------------------------------------------- the output folder, with real faults
def _annotations_for(rels, path):
    from deformgan.data.market import write_annotations
    write_annotations(str(path), {n: _pose() for n in rels})
    return str(path)


def test_a_rerun_with_another_split_leaves_no_image_in_both_splits(tmp_path):
    root = tmp_path / "tree"
    rels = _mini_tree(root, items=6)
    ann = _annotations_for(rels, tmp_path / "a.csv")
    out = tmp_path / "out"
    DF.prepare(str(root), str(out), annotations=ann, test_fraction=0.2, progress=False)
    summary = DF.prepare(str(root), str(out), annotations=ann, test_fraction=0.5, progress=False)
    train, test = set(os.listdir(out / "train")), set(os.listdir(out / "test"))
    assert not train & test and train | test == set(rels)
    assert summary["test"]["images"] == len(test) and summary["problems"]["removed_from_an_earlier_split"]


def test_a_write_failure_is_reported_as_one_naming_the_path_and_leaves_no_part_file(tmp_path, monkeypatch, capsys):
    root = tmp_path / "tree"
    rels = _mini_tree(root)
    ann = _annotations_for(rels, tmp_path / "a.csv")
    out = tmp_path / "out"

    def full(self, fp, format=None, **params):
        with open(fp, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Image.Image, "save", full)
    code = DF.main([str(root), "--out", str(out), "--annotations", ann])
    err = capsys.readouterr().err
    assert code == 2 and "[deformgan.data.deepfashion] error: cannot write " in err and "the disk is full" in err
    assert "cannot read" not in err
    assert not [p for p in out.rglob("*.part")]


def test_the_converter_refuses_to_write_into_its_input_and_a_held_folder(tmp_path):
    from test_train_outputs import _hold_lock_in_a_child
    root = tmp_path / "tree"
    rels = _mini_tree(root)
    ann = _annotations_for(rels, tmp_path / "a.csv")
    with pytest.raises(ValueError, match="is the In-shop folder itself"):
        DF.prepare(str(root), str(root), annotations=ann, progress=False)
    out = tmp_path / "out"
    child = _hold_lock_in_a_child(out)
    try:
        from deformgan.outputs import OutputBusy
        with pytest.raises(OutputBusy, match=f"another run is writing to {out}: pid {child.pid}"):
            DF.prepare(str(root), str(out), annotations=ann, progress=False)
    finally:
        child.stdin.close()
        child.wait(timeout=60)
