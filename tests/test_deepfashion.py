"""DeepFashion at 256x256 end to end: the converter on In-shop-shaped trees these tests
make, the data layer reading its output, training, evaluation and generation on it."""
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
