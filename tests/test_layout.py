"""deformgan.data.layout: which files of a dataset folder each command finds, in which
order, the messages when something is missing, and the synthetic sets' cache folders
(made on first use: the makers are replaced by recording fakes here; the real ones run
in the training and DeepFashion tests)."""
import os

import pytest

from deformgan.data import layout as L


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()
    return str(path)


def test_images_folder_market_first_then_deepfashion_else_the_market_name(tmp_path):
    lay = L.DatasetLayout(str(tmp_path))
    assert lay.images("train") == str(tmp_path / "bounding_box_train") and not lay.has_images("train")
    (tmp_path / "test").mkdir()
    assert lay.images("test") == str(tmp_path / "test") and lay.has_images("test")
    (tmp_path / "bounding_box_test").mkdir()
    assert lay.images("test") == str(tmp_path / "bounding_box_test")
    _touch(tmp_path / "train")  # a file of that name is not an image folder
    assert lay.images("train") == str(tmp_path / "bounding_box_train") and not lay.has_images("train")


def test_annotations_and_pairs_in_their_order_of_names(tmp_path):
    lay = L.DatasetLayout(str(tmp_path))
    assert lay.annotations("train") is None and lay.pairs("test") is None
    fashion = _touch(tmp_path / "fasion-annotation-train.csv")
    assert lay.annotations("train") == fashion and lay.annotations("test") is None
    market = _touch(tmp_path / "market-annotation-train.csv")
    assert lay.annotations("train") == market
    ours = _touch(tmp_path / "annotations-train.csv")
    assert lay.annotations("train") == ours and lay.require_annotations("train") == ours
    assert lay.pairs("test") is None
    p3 = _touch(tmp_path / "fasion-pairs-test.csv")
    assert lay.pairs("test") == p3
    p2 = _touch(tmp_path / "market-pairs-test.csv")
    assert lay.pairs("test") == p2
    p1 = _touch(tmp_path / "pairs-test.csv")
    assert lay.pairs("test") == p1 and lay.pairs("train") is None


def test_refusals_word_for_word(tmp_path):
    lay = L.DatasetLayout(str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        lay.require_annotations("test")
    assert str(err.value) == (f"no test annotations in {tmp_path} (annotations-test.csv or market-annotation-test.csv "
                              "or fasion-annotation-test.csv); make them with python -m deformgan.keypoints, or pass "
                              "--annotations")
    for call in (lay.images, lay.annotations, lay.pairs, lay.has_images, lay.require_annotations):
        with pytest.raises(ValueError) as err:
            call("val")
        assert str(err.value) == "split must be one of ('train', 'test'), got 'val'"
    with pytest.raises(FileNotFoundError) as err:
        L.discover(str(tmp_path / "none"))
    assert str(err.value) == f"--data folder not found: {tmp_path / 'none'}"
    _touch(tmp_path / "file")
    with pytest.raises(FileNotFoundError):
        L.discover(str(tmp_path / "file"))
    assert L.discover(str(tmp_path)) == L.DatasetLayout(str(tmp_path))


def test_cache_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFORMGAN_CACHE", str(tmp_path / "cache"))
    assert L.default_cache() == str(tmp_path / "cache")
    assert L.synthetic_root(7, 3) == str(tmp_path / "cache" / "synthetic-7x3-seed0")
    monkeypatch.delenv("DEFORMGAN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert L.default_cache() == str(tmp_path / "home" / ".cache" / "deformgan")


def test_ensure_synthetic_makes_the_set_once(tmp_path, monkeypatch, capsys):
    from deformgan.data import synthetic
    monkeypatch.setenv("DEFORMGAN_CACHE", str(tmp_path))
    calls = []

    def fake_make(root, ids, images_per_id, seed):
        calls.append((root, ids, images_per_id, seed))
        _touch(os.path.join(root, "SYNTHETIC.json"))

    monkeypatch.setattr(synthetic, "make_dataset", fake_make)
    root = str(tmp_path / "synthetic-5x4-seed0")
    assert L.ensure_synthetic(5, 4, make=False) == root and calls == [] and not os.path.exists(root)
    _touch(os.path.join(root, "bounding_box_train", "half.jpg"))  # a make cut short: no SYNTHETIC.json yet
    assert L.ensure_synthetic(5, 4) == root
    assert calls == [(f"{root}.tmp-{os.getpid()}", 5, 4, 0)]  # made aside, then renamed into place
    assert os.listdir(root) == ["SYNTHETIC.json"]  # the half-made set was replaced
    assert capsys.readouterr().err == f"[deformgan] making the synthetic demo set in {root}\n"
    assert L.ensure_synthetic(5, 4) == root and len(calls) == 1  # made: not again
    assert capsys.readouterr().err == ""


def test_ensure_synthetic_fashion_makes_the_tree_and_converts_it_once(tmp_path, monkeypatch, capsys):
    from deformgan.data import deepfashion, synthetic
    monkeypatch.setenv("DEFORMGAN_CACHE", str(tmp_path))
    calls = []

    def fake_tree(tree, items, images_per_item, seed):
        calls.append(("tree", tree, items, images_per_item, seed))
        return {"keypoints": "of the tree"}

    def fake_prepare(tree, root, annotations, test_fraction, progress):
        calls.append(("prepare", tree, root, annotations, test_fraction))
        _touch(os.path.join(root, "DEEPFASHION.json"))

    monkeypatch.setattr(synthetic, "make_fashion_tree", fake_tree)
    monkeypatch.setattr(deepfashion, "prepare", fake_prepare)
    root = str(tmp_path / "synthetic-fashion-6x2-seed0")
    tree = str(tmp_path / "synthetic-fashion-tree-6x2-seed0")
    assert L.ensure_synthetic_fashion(6, 2, make=False) == root and calls == []
    os.makedirs(root)  # a conversion cut short: no DEEPFASHION.json yet
    assert L.ensure_synthetic_fashion(6, 2) == root
    # made in temporaries of this process, the set renamed into place (the half-made one replaced)
    tmp_tree, tmp_root = f"{tree}.tmp-{os.getpid()}", f"{root}.tmp-{os.getpid()}"
    assert calls == [("tree", tmp_tree, 6, 2, 0), ("prepare", tmp_tree, tmp_root, {"keypoints": "of the tree"}, 0.2)]
    assert os.path.isfile(os.path.join(root, "DEEPFASHION.json")) and not os.path.exists(tmp_root)
    assert capsys.readouterr().err == f"[deformgan] making the synthetic DeepFashion-shaped demo set in {root}\n"
    assert L.ensure_synthetic_fashion(6, 2) == root and len(calls) == 2


def test_three_first_runs_at_once_on_an_empty_cache_all_read_a_whole_set(tmp_path):
    """Three processes make the synthetic set at once: each returns a complete set (its
    annotation file readable, every image there), and one set is left, no temporary."""
    import subprocess
    import sys
    code = ("import os, sys\n"
            "from deformgan.data import layout as L\n"
            "from deformgan.data.market import read_annotations\n"
            "root = L.ensure_synthetic(4, 2)\n"
            "ann = read_annotations(os.path.join(root, 'annotations-train.csv'))\n"
            "assert all(os.path.isfile(os.path.join(root, 'bounding_box_train', n)) for n in ann)\n"
            "print(len(ann))\n")
    env = dict(os.environ, DEFORMGAN_CACHE=str(tmp_path))
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(3)]
    outs = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in runs]
    assert all(code == 0 for code, _, _ in outs), outs
    assert len({out for _, out, _ in outs}) == 1 and int(outs[0][1]) > 0
    assert sorted(os.listdir(tmp_path)) == ["synthetic-4x2-seed0"]
