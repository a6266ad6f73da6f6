"""deformgan/ablation.py's contract with stand-ins for training, evaluation and the
generators (one real run of the command is in tests/test_cli_contracts.py): the
configuration each variant trains with, what is evaluated, the table, the JSON, the
notes, the figure's cells, the CLI's ranges."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import ablation as AB
from deformgan.data.market import MarketPoseDataset, read_annotations, standard_pairs, to_uint8
from deformgan.data.synthetic import make_dataset
from deformgan.evaluate import markdown_table
from deformgan.viz import grid, pose_image

# The paper's settings of each variant (Siarohin et al. 2018, Table 1's rows).
PAPER = {"baseline": dict(variant="none", l1=100.0, nn=0.0, perceptual=0.0, smooth=0.0),
         "dsc": dict(variant="parts", l1=100.0, nn=0.0, perceptual=0.0, smooth=0.0),
         "full": dict(variant="parts", l1=0.0, nn=0.01, perceptual=0.0, smooth=0.0),
         "offsets": dict(variant="parts+offsets", l1=0.0, nn=1.0, perceptual=0.1, smooth=0.1)}


def test_vgg_available_says_whether_torchvision_loads_the_weights(monkeypatch):
    from torchvision.models import VGG19_Weights
    asked = []

    def loads(self, progress):
        asked.append(progress)
        return {}

    monkeypatch.setattr(type(VGG19_Weights.IMAGENET1K_V1), "get_state_dict", loads)
    assert AB.vgg_available() is True and asked == [False]

    def fails(self, progress):
        raise RuntimeError("offline")

    monkeypatch.setattr(type(VGG19_Weights.IMAGENET1K_V1), "get_state_dict", fails)
    assert AB.vgg_available() is False


class Stand:
    """train / evaluate / figure stand-ins recording what the ablation asks of them."""

    def __init__(self, monkeypatch, pretrained=False, native_bf16=True):
        self.configs, self.evals, self.figures = [], [], []
        monkeypatch.setattr(AB, "train", self.train)
        monkeypatch.setattr(AB, "evaluate", self.evaluate)
        monkeypatch.setattr(AB, "figure", self.figure)
        monkeypatch.setattr(AB, "vgg_available", lambda: pretrained)
        monkeypatch.setattr(AB, "cpu_has_native_bf16", lambda: native_bf16)

    def train(self, cfg):
        warnings.warn("a training warning")  # hidden by the ablation: its output is the table
        self.configs.append(cfg)
        return {"checkpoint": f"{cfg.out}/checkpoint.pt"}

    def evaluate(self, checkpoint, **kwargs):
        self.evals.append((checkpoint, kwargs))
        n = len(self.evals)
        return {"variant": self.configs[-1].variant, "pairs": 10 * n, "ssim": 0.1 * n, "l1": 0.01 * n,
                "skipped": {"FID": "disabled"}}

    def figure(self, out_dir, checkpoints):
        self.figures.append((out_dir, dict(checkpoints)))
        return f"{out_dir}/ablation.png"


def test_main_trains_every_variant_with_the_papers_settings_and_one_budget(tmp_path, monkeypatch, capsys):
    s = Stand(monkeypatch)
    out = str(tmp_path / "abl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the ablation would fail here
        assert AB.main(["--out", out, "--steps", "7", "--width-mult", "0.5", "--batch-size", "3", "--seed", "5",
                        "--max-pairs", "9"]) == 0
    assert [c.preset for c in s.configs] == list(PAPER)
    for cfg, (name, paper) in zip(s.configs, PAPER.items()):
        assert {k: getattr(cfg, k) for k in paper} == paper, name
        assert cfg.out == f"{out}/{name}" and cfg.steps == 7 and cfg.width_mult == 0.5 and cfg.batch_size == 3
        assert cfg.seed == 5 and cfg.dropout == 0.0 and cfg.log_every == 25
        assert cfg.sample_every == cfg.save_every == 7  # one sample grid and checkpoint, at the end
        assert cfg.allow_random_vgg is True and cfg.vgg_weights is None  # no pretrained VGG19 here
        assert cfg.cpu_amp is None and cfg.image_size == (128, 64) and cfg.norm == "instance_all"  # the CLI's
        assert cfg.data is None and cfg.synthetic == "market"  # the synthetic demo set
    assert [e[0] for e in s.evals] == [f"{out}/{n}/checkpoint.pt" for n in PAPER]
    for (_, kwargs), name in zip(s.evals, PAPER):
        assert kwargs == dict(out=f"{out}/{name}/eval", max_pairs=9, inception_weights="imagenet",
                              alexnet_weights="imagenet", pose_weights="yolo11n-pose.pt")
    assert s.figures == [(out, {n: f"{out}/{n}/checkpoint.pt" for n in PAPER})]
    results = [{"variant": PAPER[n]["variant"], "pairs": 10 * i, "ssim": 0.1 * i, "l1": 0.01 * i,
                "skipped": {"FID": "disabled"}} for i, n in enumerate(PAPER, 1)]
    table = markdown_table(results, names=["baseline (none)", "dsc (parts)", "full (parts)",
                                           "offsets (parts+offsets)"])
    note = ("\nThe VGG19 losses of `full` and `offsets` ran on RANDOM VGG19 features: pretrained weights could "
            "not be loaded on this machine.\n\nTrained with CPU bfloat16 autocast (the default on this CPU, which "
            "has native bfloat16; --no-cpu-amp for float32).\n")
    assert (tmp_path / "abl" / "ablation.md").read_text() == table + note
    saved = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert saved["results"] == results and saved["pretrained_vgg"] is False
    assert saved["args"] == dict(out=out, steps=7, width_mult=0.5, batch_size=3, seed=5, variants=list(PAPER),
                                 max_pairs=9, cpu_amp=None)
    captured = capsys.readouterr()
    assert captured.out == table + note
    assert captured.err == "".join(f"[deformgan.ablation] training {n} ({PAPER[n]['variant']}) for 7 steps\n"
                                   for n in PAPER) + (f"[deformgan.ablation] wrote {out}/ablation.md and "
                                                      f"{out}/ablation.png\n")


def test_main_defaults_pretrained_vgg_chosen_variants_and_cpu_amp(tmp_path, monkeypatch, capsys):
    s = Stand(monkeypatch, pretrained=True, native_bf16=False)
    monkeypatch.chdir(tmp_path)
    assert AB.main([]) == 0
    assert [c.preset for c in s.configs] == list(PAPER)
    cfg = s.configs[0]
    assert (cfg.out, cfg.steps, cfg.width_mult, cfg.batch_size, cfg.seed) == ("runs/ablation/baseline", 1200, 0.25,
                                                                               4, 0)
    assert all(c.allow_random_vgg is False and c.vgg_weights == "imagenet" for c in s.configs)
    assert s.evals[0][1]["max_pairs"] is None
    md = (tmp_path / "runs" / "ablation" / "ablation.md").read_text()
    assert md.endswith("|\n\n- FID skipped: disabled\n\nTrained in float32 (this CPU has no native bfloat16).\n")
    assert json.loads((tmp_path / "runs" / "ablation" / "ablation.json").read_text())["pretrained_vgg"] is True
    capsys.readouterr()
    for flag, native, note in (
            ("--cpu-amp", True, "\nTrained with CPU bfloat16 autocast (--cpu-amp).\n"),
            ("--cpu-amp", False, "\n--cpu-amp was asked for, but this CPU has no native bfloat16: trained in "
                                 "float32.\n"),
            ("--no-cpu-amp", True, "\nTrained in float32 (--no-cpu-amp).\n"),
            ("--no-cpu-amp", False, "\nTrained in float32 (--no-cpu-amp).\n")):
        s = Stand(monkeypatch, pretrained=True, native_bf16=native)
        assert AB.main(["--out", "o", "--variants", "offsets", "dsc", flag]) == 0
        want = flag == "--cpu-amp"
        assert [c.preset for c in s.configs] == ["offsets", "dsc"] and all(c.cpu_amp is want for c in s.configs)
        md = (tmp_path / "o" / "ablation.md").read_text()
        assert md.startswith("| model | pairs |") and "| offsets (parts+offsets) | 10 |" in md
        assert "| dsc (parts) | 20 |" in md and md.endswith("- FID skipped: disabled\n" + note)
        assert json.loads((tmp_path / "o" / "ablation.json").read_text())["args"]["variants"] == ["offsets", "dsc"]
        assert s.figures == [("o", {"offsets": "o/offsets/checkpoint.pt", "dsc": "o/dsc/checkpoint.pt"})]
    Stand(monkeypatch, pretrained=False, native_bf16=True)
    assert AB.main(["--out", "o", "--variants", "dsc", "--cpu-amp", "--seed", "0"]) == 0  # seed 0 is allowed
    assert (tmp_path / "o" / "ablation.md").read_text().endswith(
        "\nThe VGG19 losses of `full` and `offsets` ran on RANDOM VGG19 features: pretrained weights could not be "
        "loaded on this machine.\n\nTrained with CPU bfloat16 autocast (--cpu-amp).\n")  # both notes


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--width-mult", "0"], ["--width-mult", "16.5"],
                                 ["--batch-size", "0"], ["--seed", "-1"], ["--max-pairs", "0"],
                                 ["--variants", "global"], ["--variants"], ["--steps", "1.5"]])
def test_main_refuses_out_of_range_options(bad, tmp_path, monkeypatch, capsys):
    s = Stand(monkeypatch)
    with pytest.raises(SystemExit) as e:
        AB.main(["--out", str(tmp_path / "o")] + bad)
    assert e.value.code == 2 and s.configs == []
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m deformgan.ablation") and f"argument {bad[0]}:" in err


def test_main_refuses_an_out_it_cannot_write_before_training(tmp_path, monkeypatch, capsys):
    s = Stand(monkeypatch)
    (tmp_path / "file").write_text("")
    assert AB.main(["--out", str(tmp_path / "file" / "abl")]) == 2 and s.configs == []
    assert capsys.readouterr().err == (f"[deformgan.ablation] error: --out {tmp_path / 'file' / 'abl'}: cannot write "
                                       "there (Not a directory)\n")


def test_main_help(capsys):
    from helpers import help_text
    text = help_text(AB.main, capsys)
    assert AB.__doc__.strip() in text
    flat = " ".join(text.split()).replace("--no- cpu-amp", "--no-cpu-amp")  # argparse wraps at a hyphen
    assert flat.startswith("usage: python -m deformgan.ablation [-h] [--out OUT] [--steps STEPS]")
    assert "--variants {baseline,dsc,full,offsets} [{baseline,dsc,full,offsets} ...]" in flat
    assert ("--cpu-amp, --no-cpu-amp CPU bfloat16 autocast, as the train CLI's: the default is on where the CPU "
            "has native bfloat16 and float32 elsewhere; --cpu-amp asks for it (float32 with a warning where the CPU "
            "has no native bfloat16), --no-cpu-amp trains in float32") in flat


def test_figure_shows_the_same_test_pairs_across_the_variants(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_dataset(str(data), ids=10, images_per_id=3, seed=4, test_pairs=9, progress=False)
    loaded = []

    def load(path):
        loaded.append(path)
        return {"config": {"data": str(data), "image_size": [128, 64]}, "path": path}

    class Generator:
        """The source image scaled by a factor of its checkpoint; records its inputs."""

        def __init__(self, factor):
            self.factor, self.calls = factor, []

        def __call__(self, x, skp, tkp):
            assert not torch.is_grad_enabled()
            self.calls.append((x.clone(), skp.clone(), tkp.clone()))
            return x * self.factor

    built = {}

    def build_generator(ckpt):
        built[ckpt["path"]] = Generator({"a.pt": 0.5, "b.pt": -1.0}[ckpt["path"]])
        return built[ckpt["path"]]

    from deformgan import checkpoint as ckpt_io
    monkeypatch.setattr(ckpt_io, "load", load)
    monkeypatch.setattr(ckpt_io, "build_generator", build_generator)
    path = AB.figure(str(tmp_path), {"dsc": "a.pt", "full": "b.pt"}, rows=3)
    assert path == str(tmp_path / "ablation.png") and loaded == ["a.pt", "a.pt", "b.pt"]
    ann = read_annotations(str(data / "annotations-test.csv"))
    ds = MarketPoseDataset(str(data), ann, str(data / "pairs-test.csv"), split="test", heatmaps=False)
    assert len(ds) == 9
    items = [ds[i] for i in (0, 3, 6)]  # three rows spread over nine pairs
    for g in built.values():  # one batch of the three rows' pairs
        x, skp, tkp = g.calls[0]
        assert len(g.calls) == 1 and torch.equal(x, torch.stack([it["source_image"] for it in items]))
        assert torch.equal(skp, torch.stack([it["source_keypoints"] for it in items]))
        assert torch.equal(tkp, torch.stack([it["target_keypoints"] for it in items]))

    def pic(t):
        return Image.fromarray(to_uint8(t).permute(1, 2, 0).numpy())

    rows = [[pic(it["source_image"]), pose_image(it["target_keypoints"], 128, 64), pic(it["source_image"] * 0.5),
             pic(-it["source_image"]), pic(it["target_image"])] for it in items]
    want = grid(rows, titles=["source", "pose", "dsc", "full", "target"])
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(want))
    # more rows than pairs: every pair once; no pairs file: the standard pairs; six rows by default
    (data / "pairs-test.csv").unlink()
    std = MarketPoseDataset(str(data), ann, standard_pairs(ann), split="test", heatmaps=False)
    assert len(std) == 12
    AB.figure(str(tmp_path), {"dsc": "a.pt"}, rows=50)
    x = built["a.pt"].calls[0][0]
    assert torch.equal(x, torch.stack([std[i]["source_image"] for i in range(12)]))
    with Image.open(path) as im:
        assert im.size[1] == 12 + 12 * (128 + 2) + 2  # title, rows, padding
    AB.figure(str(tmp_path), {"dsc": "a.pt"})
    assert torch.equal(built["a.pt"].calls[0][0], torch.stack([std[i]["source_image"] for i in range(0, 12, 2)]))
    (data / "pairs-test.csv").write_text("from,to\n")
    with pytest.raises(ValueError, match=f"^no test pairs in {data}: nothing to show in the figure$"):
        AB.figure(str(tmp_path), {"dsc": "a.pt"})


def test_figure_at_the_checkpoints_image_size(tmp_path, monkeypatch):
    """A set of 64x32 images (the synthetic set halved, its keypoints with it)."""
    from deformgan import checkpoint as ckpt_io
    from helpers import halve_dataset
    data = tmp_path / "data"
    make_dataset(str(data), ids=5, images_per_id=3, seed=4, progress=False)
    halve_dataset(data)
    monkeypatch.setattr(ckpt_io, "load", lambda path: {"config": {"data": str(data), "image_size": [64, 32]}})
    monkeypatch.setattr(ckpt_io, "build_generator", lambda ckpt: (lambda x, skp, tkp: x))
    path = AB.figure(str(tmp_path), {"dsc": "a.pt"}, rows=1)
    ann = read_annotations(str(data / "annotations-test.csv"))
    it = MarketPoseDataset(str(data), ann, str(data / "pairs-test.csv"), split="test", heatmaps=False, height=64,
                           width=32)[0]
    pic = Image.fromarray(to_uint8(it["source_image"]).permute(1, 2, 0).numpy())
    want = grid([[pic, pose_image(it["target_keypoints"], 64, 32), pic,
                  Image.fromarray(to_uint8(it["target_image"]).permute(1, 2, 0).numpy())]],
                titles=["source", "pose", "dsc", "target"])
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(want))
    monkeypatch.setattr(ckpt_io, "load", lambda path: {"config": {"data": str(data), "image_size": [128, 64]}})
    with pytest.raises(ValueError, match=r"^image .* is 64x32, expected 128x64$"):  # not the checkpoints' size
        AB.figure(str(tmp_path), {"dsc": "a.pt"}, rows=1)
