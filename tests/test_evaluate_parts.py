"""deformgan/evaluate.py's parts, one by one, on hand-made folders, with recording
stand-ins for the scorer, the networks, the checkpoint and the generator (the scores
themselves are checked against scikit-image / numpy in tests/test_evaluate_folders.py
and tests/test_scoring.py): pairing, panels and sizes, keypoints, reports, FID
reference, the output files, tables, both modes' bookkeeping, the CLI."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import evaluate as E
from deformgan.data.market import to_uint8, write_annotations
from deformgan.scoring import Networks
from deformgan.viz import grid, pose_image
from helpers import assert_refused

H, W = 6, 4


def save(path, value=0, size=(H, W), seed=None):
    """An RGB image of ``size`` (H, W), PNG data under any name: flat ``value`` or, with ``seed``, random; returns
    the array written."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = (np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8) if seed is not None
           else np.full((*size, 3), value, np.uint8))
    Image.fromarray(arr).save(path, format="PNG")  # lossless whatever the name says
    return arr


def pose(x=1.0, y=1.0):
    kp = torch.full((18, 2), -1.0)
    kp[0] = torch.tensor([x, y])
    kp[1] = torch.tensor([x + 1, y + 2])
    return kp


# ---------------------------------------------------------------- data and pairing
def test_resolve_data_given_configured_or_synthetic(monkeypatch):
    from deformgan.data import layout
    made = []
    monkeypatch.setattr(layout, "ensure_synthetic", lambda ids, per: made.append(("market", ids, per)) or "/m")
    monkeypatch.setattr(layout, "ensure_synthetic_fashion", lambda ids, per: made.append(("fashion", ids, per))
                        or "/f")
    cfg = {"data": "/cfg", "synthetic": "market", "synthetic_ids": 7, "synthetic_images_per_id": 3}
    assert E.resolve_data({"config": cfg}, "/given") == "/given"
    assert E.resolve_data({"config": cfg}, None) == "/cfg" and made == []
    assert E.resolve_data({"config": dict(cfg, data=None)}, None) == "/m"
    assert E.resolve_data({"config": dict(cfg, data="", synthetic="fashion")}, "") == "/f"
    assert made == [("market", 7, 3), ("fashion", 7, 3)]


def test_pairing_problems_lists_only_the_non_empty_in_order():
    p = E.Pairing([])
    assert p.problems() == {}
    p = E.Pairing([], unpaired_generated=["u"], missing_generated=["m"], missing_real=["r"], ambiguous=["a"],
                  unreadable=["x"])
    assert list(p.problems().items()) == [("unpaired_generated", ["u"]), ("missing_generated", ["m"]),
                                          ("missing_real", ["r"]), ("ambiguous", ["a"]), ("unreadable", ["x"])]
    assert E.Pairing([], missing_real=["r"]).problems() == {"missing_real": ["r"]}
    p.unreadable.append("y")  # filled while reading: the same list
    assert p.problems()["unreadable"] == ["x", "y"]


def test_real_folder_is_the_folder_or_its_test_images(tmp_path):
    assert_refused(FileNotFoundError, f"--real: no such folder {tmp_path / 'no'}", E.real_folder,
                   str(tmp_path / "no"))
    save(tmp_path / "flat" / "a.jpg")
    assert E.real_folder(str(tmp_path / "flat")) == str(tmp_path / "flat")
    save(tmp_path / "root" / "bounding_box_test" / "a.jpg")
    assert E.real_folder(str(tmp_path / "root")) == str(tmp_path / "root" / "bounding_box_test")
    save(tmp_path / "root" / "b.png")  # images directly inside: the folder itself
    assert E.real_folder(str(tmp_path / "root")) == str(tmp_path / "root")
    (tmp_path / "empty").mkdir()
    assert E.real_folder(str(tmp_path / "empty")) == str(tmp_path / "empty")


def test_pair_by_name_exact_then_by_stem(tmp_path):
    real, gen = tmp_path / "real", tmp_path / "gen"
    for n in ("a.jpg", "b.jpg", "b.png", "c.jpg", "e.jpg"):
        save(real / n)
    for n in ("a.jpg", "b.png", "c.png", "b.bmp", "d.png", "e.jpg"):
        save(gen / n)
    (gen / "notes.txt").write_text("not an image")
    p = E.pair_by_name(str(gen), str(real))
    assert [(os.path.basename(i.generated), i.target, i.source) for i in p.items] == [
        ("a.jpg", "a.jpg", None), ("b.png", "b.png", None), ("c.png", "c.jpg", None), ("e.jpg", "e.jpg", None)]
    assert p.items[0].generated == str(gen / "a.jpg")
    assert p.ambiguous == ["b.bmp (real: b.jpg, b.png)"] and p.unpaired_generated == ["d.png"]
    assert p.missing_generated == p.missing_real == p.unreadable == []


def test_pair_names_the_fields_conventions_in_order():
    assert E.pair_names("a.jpg", "b.png") == [
        "a___b", "a___b.png", "a.jpg___b", "a.jpg___b.png",
        "a___b_vis", "a___b.png_vis", "a.jpg___b_vis", "a.jpg___b.png_vis"]
    assert E.pair_names("a", "b") == ["a___b", "a___b_vis"]
    assert E.pair_names("x.y.jpg", "b") == ["x.y___b", "x.y.jpg___b", "x.y___b_vis", "x.y.jpg___b_vis"]


def test_pair_by_pairs_found_missing_ambiguous_and_unpaired(tmp_path):
    real, gen = tmp_path / "real", tmp_path / "gen"
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        save(real / n)
    for n in ("a___b.png", "b.jpg___c.jpg.png", "a___c.png", "a___c_vis.jpg", "b___x.png", "zzz.png",
              "c___a_vis.png"):
        save(gen / n)
    pairs = [("a.jpg", "b.jpg"), ("b.jpg", "c.jpg"), ("c.jpg", "b.jpg"), ("a.jpg", "c.jpg"), ("b.jpg", "x.jpg"),
             ("c.jpg", "a.jpg")]
    p = E.pair_by_pairs(str(gen), str(real), pairs)
    assert [(i.generated, i.target, i.source) for i in p.items] == [
        (str(gen / "a___b.png"), "b.jpg", "a.jpg"), (str(gen / "b.jpg___c.jpg.png"), "c.jpg", "b.jpg"),
        (str(gen / "c___a_vis.png"), "a.jpg", "c.jpg")]
    assert p.missing_generated == ["c.jpg,b.jpg"]
    assert p.ambiguous == ["a.jpg,c.jpg (a___c.png, a___c_vis.jpg)"]
    assert p.missing_real == ["x.jpg"]
    assert p.unpaired_generated == ["zzz.png"]  # the ambiguous and target-less files were claimed
    assert E.pair_by_pairs(str(gen), str(real), []).unpaired_generated == sorted(os.listdir(gen))


# ---------------------------------------------------------------- generated images
def test_read_generated_panels_sizes_and_resizing(tmp_path):
    img = save(tmp_path / "g.png", seed=1)
    assert np.array_equal(E.read_generated(str(tmp_path / "g.png"), (H, W)), img)
    strip = save(tmp_path / "s.png", size=(H, 3 * W), seed=2)  # three panels
    for k, cols in ((0, slice(0, W)), (1, slice(W, 2 * W)), (2, slice(2 * W, 3 * W)), (-1, slice(2 * W, 3 * W)),
                    (-3, slice(0, W))):
        assert np.array_equal(E.read_generated(str(tmp_path / "s.png"), (H, W), k), strip[:, cols]), k
    for k in (3, -4):
        assert_refused(E.EvaluationError, f"--strip-panel {k}: {tmp_path / 's.png'} has 3 panels (valid: -3..2)",
                       E.read_generated, str(tmp_path / "s.png"), (H, W), k)
    # panels of twice the size: a size mismatch, resized (bicubic) only when asked
    big = save(tmp_path / "b.png", size=(2 * H, 6 * W), seed=3)
    assert_refused(E.EvaluationError, f"{tmp_path / 'b.png'}: generated image is 8x12 (WxH), the real targets are "
                   "4x6; give --resize to resize it (bicubic) to 4x6", E.read_generated, str(tmp_path / "b.png"),
                   (H, W), 1)
    want = np.asarray(Image.fromarray(big[:, 2 * W:4 * W]).resize((W, H), Image.BICUBIC))
    out = E.read_generated(str(tmp_path / "b.png"), (H, W), 1, resize=True)
    assert out.dtype == np.uint8 and np.array_equal(out, want)
    assert np.array_equal(E.read_generated(str(tmp_path / "g.png"), (H // 2, W // 2), resize=True),
                          np.asarray(Image.fromarray(img).resize((W // 2, H // 2), Image.BICUBIC)))
    assert_refused(E.EvaluationError, f"{tmp_path / 'g.png'}: generated image is 4x6 (WxH), the real targets are "
                   "4x5; give --resize to resize it (bicubic) to 4x5", E.read_generated, str(tmp_path / "g.png"),
                   (5, 4))

    def not_a_strip(size, panel_width):
        name = f"n{size[1]}x{size[0]}.png"
        save(tmp_path / name, size=size)
        assert_refused(E.EvaluationError, f"{tmp_path / name}: a {size[1]}x{size[0]} image is not a strip of "
                       f"{W}:{H} panels (width must be a multiple of {panel_width})", E.read_generated,
                       str(tmp_path / name), (H, W), 0)

    not_a_strip((H, 10), "4")  # 2.5 panels
    not_a_strip((H, 5), "4")  # one panel, a pixel too wide
    # one panel is a strip; panels of one pixel; a panel half a pixel off (an odd height) is accepted
    assert np.array_equal(E.read_generated(str(tmp_path / "g.png"), (H, W), 0), img)
    three = save(tmp_path / "three.png", size=(2, 3), seed=4)  # panels 2x1 of a 4x2 target
    assert np.array_equal(E.read_generated(str(tmp_path / "three.png"), (4, 2), 1, resize=True),
                          np.asarray(Image.fromarray(three[:, 1:2]).resize((2, 4), Image.BICUBIC)))
    odd = save(tmp_path / "odd.png", size=(3, 2), seed=5)  # 1.5 pixels wide at the 4x2 target's ratio
    assert np.array_equal(E.read_generated(str(tmp_path / "odd.png"), (4, 2), 0, resize=True),
                          np.asarray(Image.fromarray(odd).resize((2, 4), Image.BICUBIC)))
    not_a_strip((H, 9), "4")  # 2.25 panels
    not_a_strip((H, 1), "4")  # less than one panel
    not_a_strip((5, 10), "3.33333")  # 3 panels of 3.33 pixels
    (tmp_path / "t.png").write_text("text")
    with pytest.raises(ValueError, match="^cannot read image"):
        E.read_generated(str(tmp_path / "t.png"), (H, W))


def test_keypoints_for_items_in_order_or_names_the_missing():
    items = [E.Item("g", n) for n in ("b", "a", "b")]
    assert E._keypoints_for(items, None, "ann.csv") is None
    ann = {"a": pose(1), "b": pose(2), "c": pose(3)}
    assert torch.equal(E._keypoints_for(items, ann, "ann.csv"), torch.stack([pose(2), pose(1), pose(2)]))
    eleven = [E.Item("g", f"m{i}") for i in range(11)] + items
    assert_refused(E.EvaluationError, "11 target image(s) have no row in ann.csv: " +
                   ", ".join(f"m{i}" for i in range(10)) + " ...", E._keypoints_for, eleven, ann, "ann.csv")
    assert_refused(E.EvaluationError, "10 target image(s) have no row in x: " +
                   ", ".join(f"m{i}" for i in range(1, 11)), E._keypoints_for, eleven[1:], ann, "x")


def test_report_names_each_problem_and_strict_refuses(capsys):
    p = E.Pairing([], unpaired_generated=["u1", "u2"], missing_real=[f"r{i}" for i in range(21)],
                  unreadable=[f"x{i}" for i in range(20)])
    E._report(p, strict=False)
    assert capsys.readouterr().err == (
        "[deformgan.evaluate] warning: 2 generated file(s) with no real target / pair, left out: u1, u2\n"
        "[deformgan.evaluate] warning: 21 real target(s) missing, left out: " + ", ".join(f"r{i}" for i in range(20))
        + " ... (all 21 in metrics.json)\n"
        "[deformgan.evaluate] warning: 20 unreadable file(s), left out: " + ", ".join(f"x{i}" for i in range(20))
        + "\n")
    q = E.Pairing([], missing_generated=["a,b"], ambiguous=["c,d (e, f)"])
    assert_refused(E.EvaluationError, "--strict: the pairing above is incomplete", E._report, q, True)
    assert capsys.readouterr().err == (
        "[deformgan.evaluate] error: 1 pair(s) with no generated file, left out: a,b\n"
        "[deformgan.evaluate] error: 1 ambiguous match(es), left out: c,d (e, f)\n")
    E._report(E.Pairing([]), strict=True)  # nothing to report: no error
    assert capsys.readouterr().err == ""


def test_fid_statistics_only_with_inception_and_a_reference(tmp_path, monkeypatch):
    asked = []

    def reference_statistics(folder, nets, batch_size, cache, progress):
        asked.append((folder, nets, batch_size, cache, progress))
        return "mu", "sigma", 17, True

    monkeypatch.setattr(E, "reference_statistics", reference_statistics)
    result = {}
    nets = Networks(torch.device("cpu"))
    assert E._fid_statistics(nets, str(tmp_path), "c", 4, False, result) is None
    nets.inception = object()
    assert E._fid_statistics(nets, None, "c", 4, False, result) is None
    assert asked == [] and result == {}
    assert_refused(FileNotFoundError, f"--fid-reference: no such folder {tmp_path / 'no'}", E._fid_statistics, nets,
                   str(tmp_path / "no"), "c", 4, False, result)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ref").mkdir()
    assert E._fid_statistics(nets, "ref", "cache", 5, True, result) == ("mu", "sigma")
    assert asked == [("ref", nets, 5, "cache", True)]
    assert result == {"fid_reference": str(tmp_path / "ref"), "fid_reference_images": 17,
                      "fid_reference_cached": True}


def test_default_fid_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DEFORMGAN_CACHE", str(tmp_path))
    assert E.default_fid_cache() == str(tmp_path / "fid")


def test_write_outputs(tmp_path):
    result = {"name": "r", "pairs": 2, "ssim": 0.5}
    rows = [[Image.new("RGB", (W, H), (1, 2, 3)), Image.new("RGB", (W, H), (4, 5, 6))]]
    E._write_outputs(str(tmp_path / "o" / "p"), result, rows, ["generated", "target"])
    assert json.loads((tmp_path / "o" / "p" / "metrics.json").read_text()) == result
    assert (tmp_path / "o" / "p" / "metrics.md").read_text() == E.markdown_table([result])
    want = grid(rows, titles=["generated", "target"])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "p" / "examples.png")), np.asarray(want))
    E._write_outputs(str(tmp_path / "q"), result, [], ["generated", "target"])
    assert sorted(os.listdir(tmp_path / "q")) == ["metrics.json", "metrics.md"]


# ---------------------------------------------------------------- tables
def test_markdown_table_columns_labels_published_and_skipped():
    runs = [{"name": "mine", "pairs": 12, "ssim": 0.12345, "psnr": 20, "skipped": {"FID": "no weights"}},
            {"variant": "parts", "step": 9, "l1": 0.5, "ssim": "n/a", "skipped": {"PCKh": "disabled"}},
            {"name": "", "variant": "none", "step": 3}]
    assert E.markdown_table(runs) == (
        "| model | pairs | SSIM | L1 | PSNR |\n"
        "|---|---|---|---|---|\n"
        "| mine | 12 | 0.123 | - | 20.000 |\n"
        "| parts @ 9 | - | - | 0.500 | - |\n"
        "| none @ 3 | - | - | - | - |\n"
        "\n"
        "- FID skipped: no weights\n"
        "- PCKh skipped: disabled\n")
    published = [("paper", {"is": 3.1, "ssim": 0.3})]
    assert E.markdown_table(runs[:1], names=["renamed"], published=published) == (
        "| model | pairs | SSIM | PSNR | IS |\n"
        "|---|---|---|---|---|\n"
        "| renamed | 12 | 0.123 | 20.000 | - |\n"
        "| paper (published) | - | 0.300 | - | 3.100 |\n"
        "\n"
        "- FID skipped: no weights\n")
    every = {k: i / 10 for i, (k, _) in enumerate(E.METRIC_COLUMNS)}
    assert E.markdown_table([dict(every, name="x", pairs=1)]).splitlines()[0] == (
        "| model | pairs | SSIM | mask-SSIM | L1 | mask-L1 | PSNR | LPIPS | IS | mask-IS | FID | PCKh |")
    assert E.markdown_table([]) == "| model | pairs |  |\n|---|---|\n"


def test_compare_reads_runs_and_adds_their_datasets_published_rows(tmp_path):
    def run(name, dataset, **scores):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(dict(name=name, pairs=3, dataset=dataset,
                                                                      **scores)))
        return str(tmp_path / name)

    a, b = run("a", "market", ssim=0.3), run("b", "market", ssim=0.4, is_=1)
    text = E.compare([a, str(tmp_path / "b" / "metrics.json")])
    head = "Published rows: as printed in the papers (docs/method.md: metrics); '-' = not reported.\n\n"
    assert text == "Dataset: market. " + head + E.markdown_table(
        [json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ab"], published=E.PUBLISHED["market"])
    c = run("c", "deepfashion", ssim=0.7)
    both = [(f"{label}, {d}", v) for d in ("market", "deepfashion") for label, v in E.PUBLISHED[d]]
    runs = [json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ac"]
    assert E.compare([a, c]) == ("Dataset: unknown (published rows of both benchmarks). " + head +
                                 E.markdown_table(runs, published=both))
    d = run("d", None, ssim=0.1)
    assert E.compare([d]).startswith("Dataset: unknown (published rows of both benchmarks). ")
    assert E.compare([d, a]).startswith("Dataset: market. ")  # a run of unknown size does not decide
    assert E.compare([a, c], "deepfashion") == ("Dataset: deepfashion. " + head +
                                                E.markdown_table(runs, published=E.PUBLISHED["deepfashion"]))
    assert "| PATN (CVPR 2019) (published) | - | 0.773 |" in E.compare([c])
    assert_refused(FileNotFoundError, f"--compare: no metrics.json in {tmp_path / 'zz'}", E.compare,
                   [str(tmp_path / "zz")])
    (tmp_path / "e").mkdir()
    assert_refused(FileNotFoundError, f"--compare: no metrics.json in {tmp_path / 'e'}", E.compare,
                   [str(tmp_path / "e")])
    (tmp_path / "e" / "metrics.json").write_text("{")
    with pytest.raises(E.EvaluationError, match=f"^--compare: {tmp_path / 'e' / 'metrics.json'} is not valid JSON "
                                                r"\(Expecting property name"):
        E.compare([str(tmp_path / "e")])


# ---------------------------------------------------------------- folder mode
class Scorer:
    """Records each batch; its result says what it saw."""

    made = []

    def __init__(self, nets):
        self.nets, self.batches = nets, []
        Scorer.made.append(self)

    def add(self, generated, target, target_keypoints=None):
        self.batches.append((generated.clone(), target.clone(),
                             None if target_keypoints is None else target_keypoints.clone()))

    def result(self, fid):
        return {"pairs": sum(len(b[0]) for b in self.batches), "ssim": 0.25, "fid_given": fid}


@pytest.fixture
def stand_ins(monkeypatch):
    Scorer.made = []
    built = []

    def build_networks(device, *weights):
        built.append((device, *weights))
        return Networks(torch.device(device), skipped={"IS/FID": "disabled"})

    monkeypatch.setattr(E, "Scorer", Scorer)
    monkeypatch.setattr(E, "build_networks", build_networks)
    return built


def folders(tmp_path, n=5):
    """real/r0..r{n-1}.jpg (PNG data) and gen/r*.png of other values; annotations."""
    real, gen = {}, {}
    for i in range(n):
        real[f"r{i}.jpg"] = save(tmp_path / "real" / f"r{i}.jpg", seed=i)
        gen[f"r{i}.jpg"] = save(tmp_path / "gen" / f"r{i}.png", seed=100 + i)
    write_annotations(str(tmp_path / "ann.csv"), {f"r{i}.jpg": pose(i % 3, i % 4) for i in range(n)})
    return real, gen


def test_folder_mode_pairs_batches_and_bookkeeping(tmp_path, stand_ins, capsys):
    real, gen = folders(tmp_path)
    out = str(tmp_path / "out")
    r = E.evaluate_folder(str(tmp_path / "gen"), str(tmp_path / "real"), out, str(tmp_path / "ann.csv"),
                          batch_size=2, progress=False, device="cpu", examples=3)
    assert stand_ins == [("cpu", "imagenet", "imagenet", None, "yolo11n-pose.pt", False)]
    s = Scorer.made[-1]
    assert [len(b[0]) for b in s.batches] == [2, 2, 1]
    names = [f"r{i}.jpg" for i in range(5)]
    g = torch.cat([b[0] for b in s.batches])
    t = torch.cat([b[1] for b in s.batches])
    k = torch.cat([b[2] for b in s.batches])
    assert g.dtype == t.dtype == torch.uint8 and g.shape == (5, 3, H, W) and g.is_contiguous()
    assert torch.equal(g, torch.from_numpy(np.stack([gen[n] for n in names])).permute(0, 3, 1, 2))
    assert torch.equal(t, torch.from_numpy(np.stack([real[n] for n in names])).permute(0, 3, 1, 2))
    assert torch.equal(k, torch.stack([pose(i % 3, i % 4) for i in range(5)]))
    assert r == {"name": "out", "mode": "folder", "generated": str(tmp_path / "gen"), "real": str(tmp_path / "real"),
                 "annotations": str(tmp_path / "ann.csv"), "pairs_file": None, "strip_panel": None, "resize": False,
                 "image_size": [H, W], "dataset": None, "pairs": 5, "ssim": 0.25, "fid_given": None, "pairing": {}}
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == r
    rows = [[pose_image(pose(i % 3, i % 4), H, W), Image.fromarray(gen[n]), Image.fromarray(real[n])]
            for i, n in enumerate(names[:3])]
    want = grid(rows, titles=["target pose", "generated", "target"])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "examples.png")), np.asarray(want))
    assert capsys.readouterr().err == ""  # nothing to report, no progress bar
    assert Scorer.made[-1].nets.skipped == {"IS/FID": "disabled"}  # the networks built
    write_annotations(str(tmp_path / "ann.csv"), {"r0.jpg": pose()})
    assert_refused(E.EvaluationError, f"4 target image(s) have no row in {tmp_path / 'ann.csv'}: r1.jpg, r2.jpg, "
                   "r3.jpg, r4.jpg", E.evaluate_folder, str(tmp_path / "gen"), str(tmp_path / "real"), out,
                   str(tmp_path / "ann.csv"), progress=False)


def test_folder_mode_defaults_progress_and_examples(tmp_path, stand_ins, capsys, monkeypatch):
    import io
    folders(tmp_path, 10)
    E.evaluate_folder(str(tmp_path / "gen"), str(tmp_path / "real"), str(tmp_path / "o"))
    err = capsys.readouterr().err
    assert "evaluate: 100%" in err and "1/1" in err and "batch/s" in err
    with Image.open(tmp_path / "o" / "examples.png") as im:
        assert im.size[1] == 12 + 8 * (H + 2) + 2  # eight example rows

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    E.evaluate_folder(str(tmp_path / "gen"), str(tmp_path / "real"), str(tmp_path / "o"), progress=False)
    assert __import__("sys").stderr.getvalue() == ""  # no bar, even on a terminal


def test_folder_mode_pairs_file_sources_unreadable_and_max_pairs(tmp_path, stand_ins, capsys):
    real, _ = folders(tmp_path, 4)
    gen = tmp_path / "g2"
    gen.mkdir()
    made = {}
    for a, b in (("r0.jpg", "r1.jpg"), ("r2.jpg", "r3.jpg"), ("gone.jpg", "r0.jpg"), ("r1.jpg", "r2.jpg")):
        made[(a, b)] = save(gen / f"{a[:-4]}___{b[:-4]}.png", seed=len(made))
    (gen / "r1___r2.png").write_text("not a picture")  # unreadable: left out, named
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("from,to\nr1.jpg,r2.jpg\nr0.jpg,r1.jpg\nr2.jpg,r3.jpg\ngone.jpg,r0.jpg\nr3.jpg,r0.jpg\n")
    r = E.evaluate_folder(str(gen), str(tmp_path / "real"), str(tmp_path / "o"), pairs=str(pairs), batch_size=3,
                          progress=False, name="named", examples=8)
    s = Scorer.made[-1]
    assert [len(b[0]) for b in s.batches] == [2, 1] and s.batches[0][2] is None  # no annotations: no keypoints
    order = [("r0.jpg", "r1.jpg"), ("r2.jpg", "r3.jpg"), ("gone.jpg", "r0.jpg")]  # the unreadable first left out
    g = torch.cat([b[0] for b in s.batches])
    t = torch.cat([b[1] for b in s.batches])
    assert torch.equal(g, torch.from_numpy(np.stack([made[p] for p in order])).permute(0, 3, 1, 2))
    assert torch.equal(t, torch.from_numpy(np.stack([real[b] for _, b in order])).permute(0, 3, 1, 2))
    E.evaluate_folder(str(gen), str(tmp_path / "real"), str(tmp_path / "o"), pairs=str(pairs), batch_size=1,
                      progress=False)  # a batch with nothing readable, then the others
    assert [len(b[0]) for b in Scorer.made[-1].batches] == [1, 1, 1]
    assert r["pairing"] == {"missing_generated": ["r3.jpg,r0.jpg"], "unreadable": ["r1___r2.png"]}
    assert r["name"] == "named" and r["pairs_file"] == str(pairs) and r["pairs"] == 3
    err = capsys.readouterr().err
    assert "warning: 1 pair(s) with no generated file, left out: r3.jpg,r0.jpg\n" in err
    assert "warning: 1 unreadable file(s), left out: r1___r2.png\n" in err
    white = Image.new("RGB", (W, H), (255, 255, 255))  # the source "gone.jpg" is not in the real folder
    rows = [[Image.fromarray(real[a]) if a in real else white, Image.fromarray(made[(a, b)]),
             Image.fromarray(real[b])] for a, b in order]
    want = grid(rows, titles=["source", "generated", "target"])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "examples.png")), np.asarray(want))
    E.evaluate_folder(str(gen), str(tmp_path / "real"), str(tmp_path / "o"), pairs=str(pairs), max_pairs=3,
                      progress=False)
    assert [len(b[0]) for b in Scorer.made[-1].batches] == [2]  # 16 a batch by default
    with pytest.raises(E.EvaluationError, match=r"^--strict: the pairing above is incomplete$"):
        E.evaluate_folder(str(gen), str(tmp_path / "real"), str(tmp_path / "o"), pairs=str(pairs), strict=True,
                          progress=False)


def test_folder_mode_real_only_sizes_and_refusals(tmp_path, stand_ins, capsys):
    real, _ = folders(tmp_path, 3)
    r = E.evaluate_folder(None, str(tmp_path / "real"), str(tmp_path / "o"), real_only=True, progress=False,
                          strip_panel=1)  # the real images are not strips: --strip-panel does not apply
    s = Scorer.made[-1]
    assert torch.equal(s.batches[0][0], s.batches[0][1]) and r["mode"] == "real" and r["pairs"] == 3
    assert torch.equal(s.batches[0][1], torch.from_numpy(np.stack([real[f"r{i}.jpg"] for i in range(3)]))
                       .permute(0, 3, 1, 2))
    pairs = tmp_path / "p.csv"
    pairs.write_text("from,to\nr0.jpg,r2.jpg\nr1.jpg,r2.jpg\nr0.jpg,zz.jpg\nr2.jpg,r1.jpg\n")
    r = E.evaluate_folder(None, str(tmp_path / "real"), str(tmp_path / "o"), pairs=str(pairs), real_only=True,
                          progress=False)
    assert torch.equal(Scorer.made[-1].batches[0][1], torch.from_numpy(np.stack([real["r2.jpg"], real["r1.jpg"]]))
                       .permute(0, 3, 1, 2))  # each target once
    assert r["pairing"] == {"missing_real": ["zz.jpg"]}
    capsys.readouterr()
    assert_refused(FileNotFoundError, f"--generated: no such folder {tmp_path / 'no'}", E.evaluate_folder,
                   str(tmp_path / "no"), str(tmp_path / "real"), str(tmp_path / "o"), progress=False)
    assert_refused(FileNotFoundError, "--generated: no such folder None", E.evaluate_folder, None,
                   str(tmp_path / "real"), str(tmp_path / "o"), progress=False)
    (tmp_path / "empty").mkdir()
    assert_refused(E.EvaluationError, f"nothing to score: no generated image in {tmp_path / 'empty'} pairs with a "
                   f"real image in {tmp_path / 'real'} by file name", E.evaluate_folder, str(tmp_path / "empty"),
                   str(tmp_path / "real"), str(tmp_path / "o"), progress=False)
    assert_refused(E.EvaluationError, f"nothing to score: no generated image in {tmp_path / 'empty'} pairs with a "
                   f"real image in {tmp_path / 'real'} by the pairs of {pairs}", E.evaluate_folder,
                   str(tmp_path / "empty"), str(tmp_path / "real"), str(tmp_path / "o"), pairs=str(pairs),
                   progress=False)
    assert "4 pair(s) with no generated file" in capsys.readouterr().err  # reported before the refusal
    bad = tmp_path / "bad"
    bad.mkdir()
    for n in real:
        (bad / n.replace(".jpg", ".png")).write_text("x")
    assert_refused(E.EvaluationError, "nothing to score: every generated image was unreadable", E.evaluate_folder,
                   str(bad), str(tmp_path / "real"), str(tmp_path / "o"), progress=False)
    save(tmp_path / "real" / "r1.jpg", size=(H + 1, W))
    assert_refused(E.EvaluationError, f"real images of two sizes: r0.jpg is {W}x{H}, r1.jpg is {W}x{H + 1} (WxH); "
                   "the dataset's images share one resolution", E.evaluate_folder, str(tmp_path / "gen"),
                   str(tmp_path / "real"), str(tmp_path / "o"), progress=False)
    save(tmp_path / "real" / "r1.jpg", seed=1)
    save(tmp_path / "gen" / "r2.png", size=(H, W + 1))
    with pytest.raises(E.EvaluationError, match="generated image is 5x6 .WxH., the real targets are 4x6"):
        E.evaluate_folder(str(tmp_path / "gen"), str(tmp_path / "real"), str(tmp_path / "o"), progress=False)
    r = E.evaluate_folder(str(tmp_path / "gen"), str(tmp_path / "real"), str(tmp_path / "o"), resize=True,
                          strip_panel=None, progress=False)
    assert r["resize"] is True and r["pairs"] == 3
    wide = tmp_path / "wide"
    for n in real:
        save(wide / n.replace(".jpg", ".png"), size=(H, 2 * W), seed=7)
    r = E.evaluate_folder(str(wide), str(tmp_path / "real"), str(tmp_path / "o"), strip_panel=-1, progress=False)
    assert r["strip_panel"] == -1 and torch.equal(Scorer.made[-1].batches[0][0][0],
                                                  torch.from_numpy(save(wide / "x.png", size=(H, 2 * W), seed=7)
                                                                   [:, W:]).permute(2, 0, 1))


def test_folder_mode_networks_fid_and_market_size(tmp_path, stand_ins, monkeypatch):
    for i in range(2):
        save(tmp_path / "real" / f"r{i}.jpg", seed=i, size=(128, 64))
        save(tmp_path / "gen" / f"r{i}.jpg", seed=i, size=(128, 64))
    (tmp_path / "ref").mkdir()
    seen = []

    def fid_statistics(nets, reference, cache, batch_size, progress, result):
        seen.append((reference, cache, batch_size, progress))
        result["fid_reference_images"] = 3  # written into the result returned
        return "stats"

    monkeypatch.setattr(E, "_fid_statistics", fid_statistics)
    monkeypatch.setenv("DEFORMGAN_CACHE", str(tmp_path / "c"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = E.evaluate_folder(str(tmp_path / "gen"), str(tmp_path / "real"), str(tmp_path / "o"),
                          fid_reference=str(tmp_path / "ref"), batch_size=7, inception_weights="i.pt",
                          alexnet_weights="a.pt", lpips_weights="l.pth", pose_weights="p.pt",
                          allow_random_networks=True, progress=False)
    assert stand_ins == [("cpu", "i.pt", "a.pt", "l.pth", "p.pt", True)]
    assert seen == [(str(tmp_path / "ref"), str(tmp_path / "c" / "fid"), 7, False)]
    assert r["fid_given"] == "stats" and r["dataset"] == "market" and r["image_size"] == [128, 64]
    assert r["fid_reference_images"] == 3
    E.evaluate_folder(str(tmp_path / "gen"), str(tmp_path / "real"), str(tmp_path / "o"), fid_cache="mine",
                      progress=True)
    assert seen[-1] == (None, "mine", 16, True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    E.evaluate_folder(str(tmp_path / "gen"), str(tmp_path / "real"), str(tmp_path / "o"), progress=False)
    assert stand_ins[-1][0] == "cuda"


# ---------------------------------------------------------------- checkpoint mode
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from deformgan.data.synthetic import make_dataset
    root = tmp_path_factory.mktemp("evalparts") / "data"
    make_dataset(str(root), ids=4, images_per_id=3, seed=3, test_fraction=0.5, test_pairs=5, progress=False)
    return root


def test_checkpoint_mode_writes_every_pair_and_scores_them(data, tmp_path, stand_ins, monkeypatch, capsys):
    from deformgan import checkpoint as ckpt_io
    from deformgan.data.market import MarketPoseDataset, read_annotations, read_pairs
    calls = []

    class Generator:
        image_size = (128, 64)

        def __call__(self, x, skp, tkp):
            assert not torch.is_grad_enabled()
            calls.append((x.clone(), skp.clone(), tkp.clone()))
            return -x  # a negative of the source

    loaded = []
    monkeypatch.setattr(ckpt_io, "load", lambda path, expect_variant=None: loaded.append((path, expect_variant)) or
                        {"config": {"data": str(data), "variant": "parts"}, "step": 42})
    def build_generator(ckpt, dev):
        assert ckpt["step"] == 42 and dev == torch.device("cpu")  # the checkpoint loaded, on the device asked
        return Generator()

    monkeypatch.setattr(ckpt_io, "build_generator", build_generator)
    monkeypatch.setenv("DEFORMGAN_CACHE", str(tmp_path / "cache"))
    fids = []

    def fid_statistics(nets, ref, cache, bs, progress, result):
        fids.append((ref, cache, bs, nets, progress))
        result["fid_reference"] = ref  # written into the result returned
        return "stats"

    monkeypatch.setattr(E, "_fid_statistics", fid_statistics)
    out = tmp_path / "run"
    r = E.evaluate("ck.pt", out=str(out), batch_size=2, device="cpu", progress=False, variant="parts", examples=1)
    assert loaded == [("ck.pt", "parts")]
    assert stand_ins == [(torch.device("cpu"), "imagenet", "imagenet", None, "yolo11n-pose.pt", False)]
    assert Scorer.made[-1].nets.skipped == {"IS/FID": "disabled"}  # the networks built are the scorer's
    assert fids[0][3] is Scorer.made[-1].nets and fids[0][4] is False  # and the FID statistics'
    ann = read_annotations(str(data / "annotations-test.csv"))
    pairs = read_pairs(str(data / "pairs-test.csv"))
    assert (out / "pairs.csv").read_text() == (data / "pairs-test.csv").read_text()
    ds = MarketPoseDataset(str(data), ann, pairs, split="test", heatmaps=False)
    assert [len(c[0]) for c in calls] == [2, 2, 1]
    src = torch.cat([c[0] for c in calls])
    assert torch.equal(src, torch.stack([ds[i]["source_image"] for i in range(5)]))
    assert torch.equal(torch.cat([c[2] for c in calls]), torch.stack([ds[i]["target_keypoints"] for i in range(5)]))
    s = Scorer.made[-1]
    assert torch.equal(torch.cat([b[0] for b in s.batches]), to_uint8(-src))
    assert torch.equal(torch.cat([b[1] for b in s.batches]), to_uint8(torch.stack([ds[i]["target_image"]
                                                                                  for i in range(5)])))
    assert torch.equal(torch.cat([b[2] for b in s.batches]), torch.stack([ds[i]["target_keypoints"]
                                                                          for i in range(5)]))
    for i, (a, b) in enumerate(pairs):
        written = np.asarray(Image.open(out / "generated" / f"{a[:-4]}___{b[:-4]}.png"))
        assert np.array_equal(written, to_uint8(-ds[i]["source_image"]).permute(1, 2, 0).numpy())
    assert sorted(os.listdir(out / "generated")) == sorted(f"{a[:-4]}___{b[:-4]}.png" for a, b in pairs)
    assert r == {"name": "parts @ 42", "mode": "checkpoint", "checkpoint": "ck.pt", "variant": "parts", "step": 42,
                 "data": str(data), "generated": str(out / "generated"), "real": str(data / "bounding_box_test"),
                 "annotations": str(data / "annotations-test.csv"), "pairs_file": str(out / "pairs.csv"),
                 "image_size": [128, 64], "dataset": "market", "pairs": 5, "ssim": 0.25, "fid_given": "stats",
                 "fid_reference": str(data / "bounding_box_train")}
    assert [f[:3] for f in fids] == [(str(data / "bounding_box_train"), str(tmp_path / "cache" / "fid"), 2)]
    it = ds[0]
    want = grid([[Image.fromarray(to_uint8(it["source_image"]).permute(1, 2, 0).numpy()),
                  pose_image(it["target_keypoints"], 128, 64),
                  Image.fromarray(to_uint8(-it["source_image"]).permute(1, 2, 0).numpy()),
                  Image.fromarray(to_uint8(it["target_image"]).permute(1, 2, 0).numpy())]],
                titles=["source", "target pose", "generated", "target"])
    assert np.array_equal(np.asarray(Image.open(out / "examples.png")), np.asarray(want))
    # the training pairs (the standard rule: no pairs-train.csv is used when absent), a pairs CSV, --max-pairs
    calls.clear()
    r = E.evaluate("ck.pt", str(data), pairs="train", out=str(tmp_path / "t"), max_pairs=3, progress=False,
                   fid_reference="ref", fid_cache="fc", name="n")
    train_pairs = read_pairs(str(data / "pairs-train.csv"))[:3]
    assert (tmp_path / "t" / "pairs.csv").read_text() == "from,to\n" + "".join(f"{a},{b}\n" for a, b in train_pairs)
    assert r["real"] == str(data / "bounding_box_train") and r["name"] == "n" and r["pairs"] == 3
    assert fids[-1][:3] == ("ref", "fc", 16)
    custom = tmp_path / "mine.csv"
    custom.write_text("from,to\n" + f"{pairs[1][1]},{pairs[0][0]}\n")
    r = E.evaluate("ck.pt", str(data), pairs=str(custom), out=str(tmp_path / "c"), progress=False)
    assert os.listdir(tmp_path / "c" / "generated") == [f"{pairs[1][1][:-4]}___{pairs[0][0][:-4]}.png"]
    # a pair naming an image without annotation is refused, naming the file
    custom.write_text("from,to\n" + f"{pairs[0][0]},nobody.jpg\n")
    with pytest.raises(E.AnnotationError, match=f"^{custom}:2: pair .* names 'nobody.jpg', which has no "
                                                "annotation$"):
        E.evaluate("ck.pt", str(data), pairs=str(custom), out=str(tmp_path / "c"), progress=False)
    (data / "pairs-test.csv").write_text("from,to\n" + f"{pairs[0][0]},nobody.jpg\n")
    try:  # the dataset's own pairs file likewise
        with pytest.raises(E.AnnotationError, match=f"^{data / 'pairs-test.csv'}:2: pair .* names 'nobody.jpg'"):
            E.evaluate("ck.pt", str(data), out=str(tmp_path / "c"), progress=False)
    finally:
        (data / "pairs-test.csv").write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    # --data wins over the checkpoint's folder
    monkeypatch.setattr(ckpt_io, "load", lambda path, expect_variant=None: {
        "config": {"data": str(tmp_path / "moved"), "variant": "parts"}, "step": 42})
    r = E.evaluate("ck.pt", str(data), out=str(tmp_path / "d"), progress=False, max_pairs=1)
    assert r["data"] == str(data) and r["pairs"] == 1
    # the generator's image size is the one the images are read at
    Generator.image_size = (64, 32)
    with pytest.raises(ValueError, match=r"is 128x64, expected 64x32$"):
        E.evaluate("ck.pt", str(data), out=str(tmp_path / "e"), progress=False, max_pairs=1)
    Generator.image_size = (128, 64)
    # the device: CUDA when there is one
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    devices = []
    monkeypatch.setattr(ckpt_io, "build_generator", lambda ckpt, dev: devices.append(dev) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        E.evaluate("ck.pt", str(data), out=str(tmp_path / "f"), progress=False)
    assert devices == [torch.device("cuda")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ckpt_io, "build_generator", build_generator)
    # the networks' weights passed on; the same OUT again (its generated/ exists); no progress bar when asked
    capsys.readouterr()
    for _ in range(2):
        E.evaluate("ck.pt", str(data), out=str(tmp_path / "w"), max_pairs=1, progress=False, inception_weights="i",
                   alexnet_weights="a", lpips_weights="l", pose_weights="p", allow_random_networks=True)
    assert stand_ins[-1] == (torch.device("cpu"), "i", "a", "l", "p", True) and capsys.readouterr().err == ""
    # the images moved to the model's device
    seen = []

    def generator_on(x, skp, tkp):
        seen.append(x.device)
        return torch.zeros(x.shape)

    monkeypatch.setattr(ckpt_io, "build_generator", lambda ckpt, dev: type("G", (), {
        "image_size": (128, 64), "__call__": lambda self, x, s, t: generator_on(x, s, t)})())
    E.evaluate("ck.pt", str(data), out=str(tmp_path / "m"), max_pairs=1, progress=False, device="meta")
    assert seen == [torch.device("meta")]
    monkeypatch.setattr(ckpt_io, "build_generator", build_generator)
    # defaults: OUT runs/eval, a progress bar, eight example rows (of ten pairs here)
    custom.write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs + pairs))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    E.evaluate("ck.pt", str(data), pairs=str(custom), device="cpu")
    err = capsys.readouterr().err
    assert "evaluate: 100%" in err and "1/1" in err and "batch/s" in err
    with Image.open(tmp_path / "runs" / "eval" / "examples.png") as im:
        assert im.size[1] == 12 + 8 * (128 + 2) + 2
    os.remove(data / "pairs-test.csv")
    try:
        r = E.evaluate("ck.pt", str(data), out=str(tmp_path / "s"), progress=False, max_pairs=2)
        from deformgan.data.market import standard_pairs
        assert (tmp_path / "s" / "pairs.csv").read_text() == "from,to\n" + "".join(
            f"{a},{b}\n" for a, b in standard_pairs(ann)[:2])
    finally:
        (data / "pairs-test.csv").write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs))


def test_checkpoint_mode_at_the_generators_image_size(tmp_path, stand_ins, monkeypatch):
    from deformgan import checkpoint as ckpt_io
    from deformgan.data.market import MarketPoseDataset, read_annotations
    from deformgan.data.synthetic import make_dataset
    from helpers import halve_dataset
    data = tmp_path / "data"
    make_dataset(str(data), ids=4, images_per_id=3, seed=3, test_fraction=0.5, test_pairs=2, progress=False)
    halve_dataset(data)

    class Generator:
        image_size = (64, 32)

        def __call__(self, x, skp, tkp):
            return x

    monkeypatch.setattr(ckpt_io, "load", lambda path, expect_variant=None: {
        "config": {"data": str(data), "variant": "parts"}, "step": 1})
    monkeypatch.setattr(ckpt_io, "build_generator", lambda ckpt, dev: Generator())
    r = E.evaluate("ck.pt", out=str(tmp_path / "o"), progress=False)
    assert r["image_size"] == [64, 32] and r["dataset"] is None and r["pairs"] == 2
    ds = MarketPoseDataset(str(data), read_annotations(str(data / "annotations-test.csv")),
                           str(data / "pairs-test.csv"), split="test", heatmaps=False, height=64, width=32)

    def pic(t):
        return Image.fromarray(to_uint8(t).permute(1, 2, 0).numpy())

    want = grid([[pic(ds[i]["source_image"]), pose_image(ds[i]["target_keypoints"], 64, 32),
                  pic(ds[i]["source_image"]), pic(ds[i]["target_image"])] for i in range(2)],
                titles=["source", "target pose", "generated", "target"])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "examples.png")), np.asarray(want))


# ---------------------------------------------------------------- the command line
def test_main_modes_arguments_and_exit_codes(tmp_path, monkeypatch, capsys):
    calls = []
    result = {"name": "x", "pairs": 2, "ssim": 0.5}

    def evaluate(*args, **kwargs):
        calls.append(("checkpoint", args, kwargs))
        return result

    def evaluate_folder(*args, **kwargs):
        calls.append(("folder", args, kwargs))
        return result

    monkeypatch.setattr(E, "evaluate", evaluate)
    monkeypatch.setattr(E, "evaluate_folder", evaluate_folder)
    nets = dict(inception_weights="imagenet", alexnet_weights="imagenet", lpips_weights=None,
                pose_weights="yolo11n-pose.pt", allow_random_networks=False)
    assert E.main(["--checkpoint", "c.pt"]) == 0
    assert calls[-1] == ("checkpoint", ("c.pt", None, "test", "runs/eval", 16, None, None),
                         dict(variant=None, fid_reference=None, fid_cache=None, name=None, **nets))
    captured = capsys.readouterr()
    assert captured.out == E.markdown_table([result])
    assert captured.err == ("[deformgan.evaluate] wrote runs/eval/metrics.json, metrics.md, examples.png, "
                            "generated/ and pairs.csv\n")
    assert E.main(["--checkpoint", "c.pt", "--data", "d", "--pairs", "train", "--out", "o", "--batch-size", "3",
                   "--max-pairs", "4", "--device", "cpu", "--variant", "parts", "--fid-reference", "f",
                   "--fid-cache", "fc", "--name", "n", "--inception-weights", "i", "--alexnet-weights", "a",
                   "--lpips-weights", "l", "--pose-weights", "p", "--allow-random-networks"]) == 0
    assert calls[-1] == ("checkpoint", ("c.pt", "d", "train", "o", 3, 4, "cpu"),
                         dict(variant="parts", fid_reference="f", fid_cache="fc", name="n", inception_weights="i",
                              alexnet_weights="a", lpips_weights="l", pose_weights="p", allow_random_networks=True))
    capsys.readouterr()
    assert E.main(["--generated", "g", "--real", "r"]) == 0
    assert calls[-1] == ("folder", ("g", "r", "runs/eval", None, None, None, False, False, None, None, 16, None, None),
                         dict(strict=False, name=None, **nets))
    assert capsys.readouterr().err == "[deformgan.evaluate] wrote runs/eval/metrics.json, metrics.md, examples.png\n"
    assert E.main(["--real-only", "--real", "r", "--annotations", "a.csv", "--pairs", "p.csv", "--strip-panel", "-1",
                   "--resize", "--strict", "--out", "o", "--fid-reference", "f", "--fid-cache", "c",
                   "--batch-size", "2", "--max-pairs", "5", "--device", "cpu", "--name", "n"]) == 0
    assert calls[-1] == ("folder", (None, "r", "o", "a.csv", "p.csv", -1, True, True, "f", "c", 2, 5, "cpu"),
                         dict(strict=True, name="n", **nets))
    capsys.readouterr()
    for argv in (["--generated", "g"], ["--real-only"]):
        with pytest.raises(SystemExit) as e:
            E.main(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            "python -m deformgan.evaluate: error: --real DIR is required with --generated and --real-only")
    n = len(calls)
    for exc in (FileNotFoundError("a"), E.ckpt_io.CheckpointError("b"), E.AnnotationError("c"), ValueError("d"),
                E.EvaluationError("e")):
        def failing(*args, exc=exc, **kwargs):
            raise exc
        monkeypatch.setattr(E, "evaluate", failing)
        assert E.main(["--checkpoint", "c.pt"]) == 2
        assert capsys.readouterr() == ("", f"[deformgan.evaluate] error: {exc}\n")
    assert len(calls) == n


def test_main_compare_prints_and_writes(tmp_path, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(E, "compare", lambda outs, dataset: asked.append((outs, dataset)) or "TABLE\n")
    assert E.main(["--compare", "a", "b"]) == 0
    assert asked == [(["a", "b"], None)] and capsys.readouterr().out == "TABLE\n"
    assert E.main(["--compare", "a", "--dataset", "deepfashion", "--out", str(tmp_path / "x" / "y")]) == 0
    assert asked[-1] == (["a"], "deepfashion") and (tmp_path / "x" / "y" / "compare.md").read_text() == "TABLE\n"
    assert E.main(["--compare", "a", "--out", str(tmp_path / "x" / "y")]) == 0  # into the same folder again
    monkeypatch.setattr(E, "compare", lambda outs, dataset: (_ for _ in ()).throw(FileNotFoundError("gone")))
    assert E.main(["--compare", "a"]) == 2 and capsys.readouterr().err == "[deformgan.evaluate] error: gone\n"
    with pytest.raises(SystemExit):
        E.main(["--compare", "a", "--dataset", "other"])


def test_main_help_and_exclusive_modes(capsys, monkeypatch):
    from helpers import help_text, usage_error
    monkeypatch.setenv("COLUMNS", "400")
    text = help_text(E.main, capsys)
    assert E.__doc__.strip() in text
    flat = " ".join(text.split())
    assert flat.startswith("usage: python -m deformgan.evaluate [-h] (--checkpoint CHECKPOINT | --generated "
                           "GENERATED | --real-only | --compare OUT [OUT ...])")
    options = """
  -h, --help            show this help message and exit
  --checkpoint CHECKPOINT
                        checkpoint mode: generate the test pairs with this checkpoint
  --generated GENERATED
                        folder mode: a folder of generated images (any method)
  --real-only           score the real images themselves
  --compare OUT [OUT ...]
                        evaluation folders to tabulate side by side
  --real REAL           folder of the real target images (or a dataset root with bounding_box_test/)
  --annotations ANNOTATIONS
                        annotation CSV giving the target keypoints (mask metrics, PCKh)
  --data DATA           checkpoint mode: Market-layout folder (default: the checkpoint's)
  --pairs PAIRS         folder modes: a from,to CSV; checkpoint mode: 'test' (default), 'train' or a CSV
  --strip-panel INDEX   generated files are horizontal strips; score panel INDEX (-1: the last)
  --resize              resize generated images of another size to the targets' (bicubic) instead of failing
  --strict              any unpaired, missing or unreadable file is an error
  --fid-reference FID_REFERENCE
                        folder of the FID reference images (the training set)
  --fid-cache FID_CACHE
                        folder for cached FID reference statistics
  --dataset {deepfashion,market}
                        --compare: which published rows (default: from the runs' image size)
  --name NAME           the run's label in tables (default: the OUT folder's name)
  --out OUT             output folder (default runs/eval; --compare: print only)
  --batch-size BATCH_SIZE
  --max-pairs MAX_PAIRS
  --device DEVICE
  --inception-weights INCEPTION_WEIGHTS
  --alexnet-weights ALEXNET_WEIGHTS
  --lpips-weights LPIPS_WEIGHTS
  --pose-weights POSE_WEIGHTS
  --variant VARIANT     fail unless the checkpoint is of this generator variant
  --allow-random-networks
                        tests: weights 'random' build seeded random Inception/AlexNet/LPIPS networks
"""
    assert flat.endswith("options: " + " ".join(options.split()))  # every option and its help, in order
    assert usage_error(E.main, [], capsys) == ("python -m deformgan.evaluate: error: one of the arguments --checkpoint "
                                               "--generated --real-only --compare is required")
    assert usage_error(E.main, ["--checkpoint", "c", "--generated", "g"], capsys) == (
        "python -m deformgan.evaluate: error: argument --generated: not allowed with argument --checkpoint")
    for bad in (["--batch-size", "0"], ["--max-pairs", "0"], ["--strip-panel", "x"]):
        assert usage_error(E.main, ["--checkpoint", "c"] + bad, capsys).startswith(
            f"python -m deformgan.evaluate: error: argument {bad[0]}: ")
