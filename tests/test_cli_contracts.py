"""Observable contracts of the smaller command lines and wrappers: files
written, exit codes, what each prints, and module wrappers equal to the functions."""
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import deformgan_ops as D
from deformgan.data.market import read_annotations, read_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_synthetic_cli_writes_a_market_layout_set(tmp_path):
    out = tmp_path / "syn"
    proc = run("deformgan.data.synthetic", str(out), "--ids", "5", "--images-per-id", "3", "--seed", "4",
               "--test-pairs", "7")
    assert proc.returncode == 0, proc.stderr
    train = os.listdir(out / "bounding_box_train")
    test = os.listdir(out / "bounding_box_test")
    assert len(train) + len(test) == 15 and len(test) == 3  # the last 20% of the ids: one id of 3 images
    ann = read_annotations(str(out / "annotations-train.csv"))
    assert set(ann) == set(train)
    pairs = read_pairs(str(out / "pairs-test.csv"))
    assert 0 < len(pairs) <= 7 and all(a.split("_")[0] == b.split("_")[0] and a != b for a, b in pairs)
    for name in train[:3]:
        with Image.open(out / "bounding_box_train" / name) as im:
            assert im.size == (64, 128)
    proc = run("deformgan.data.synthetic", str(tmp_path / "x"), "--ids", "1")
    assert proc.returncode == 2 and "--ids" in proc.stderr


def test_viz_demo_cli_writes_the_figure(tmp_path):
    out = tmp_path / "fig.png"
    proc = run("deformgan.viz", "demo", str(out))
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as im:
        assert im.size[0] > 4 * 64 and im.size[1] > 128


def test_info_lists_the_backends():
    proc = run("deformgan_ops.info", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for line in ("compiled extension:", "backends for CPU tensors:"):
        assert line in proc.stdout
    for op in D.operators():
        assert op in proc.stdout


def test_module_wrappers_equal_the_functions():
    from deformgan_ops import KeypointHeatmaps, NNLoss, PartAffineWarp
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 6, 5, generator=g), torch.randn(2, 3, 6, 5, generator=g)
    assert torch.equal(NNLoss(5, "sum")(a, b), D.nn_loss(a, b, 5, "sum"))
    assert "kernel_size=5" in repr(NNLoss(5))
    kp = torch.rand(2, 18, 2, generator=g) * 5
    assert torch.equal(KeypointHeatmaps(6, 5, 2.0)(kp), D.keypoint_heatmaps(kp, 6, 5, 2.0))
    theta = torch.eye(2, 3).expand(2, 3, 2, 3).contiguous()
    masks = torch.ones(2, 3, 6, 5)
    # identity affines and all-ones masks: the warp returns the features themselves
    torch.testing.assert_close(PartAffineWarp()(a, theta, masks), a)
    with pytest.raises(ValueError):
        NNLoss(4)(a, b)  # an even window


def test_train_yaml_config_and_precedence(tmp_path):
    from deformgan import train as T
    conf = tmp_path / "c.yaml"
    conf.write_text("steps: 7\nvariant: global\nwidth_mult: 0.5\n")
    c, _ = T.build_config(["--config", str(conf), "--width-mult", "0.125"])
    assert c.steps == 7 and c.variant == "global" and c.width_mult == 0.125  # flags win over the file


def test_train_cli_exit_codes_for_missing_inputs(tmp_path):
    proc = run("deformgan.train", "--data", str(tmp_path / "nowhere"), "--steps", "1", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "[deformgan.train] error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("deformgan.train", "--resume", str(tmp_path / "missing.pt"), "--steps", "1", "--out",
               str(tmp_path / "o2"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_ablation_cli_trains_each_variant_and_writes_table_json_and_figure(tmp_path):
    """python -m deformgan.ablation: one run per variant (same budget), evaluated; the
    table, the JSON and the figure name every variant."""
    env = dict(os.environ, DEFORMGAN_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "ablation"
    proc = subprocess.run([sys.executable, "-m", "deformgan.ablation", "--out", str(out), "--steps", "2",
                           "--width-mult", "0.0625", "--batch-size", "2", "--variants", "baseline", "dsc",
                           "--max-pairs", "4", "--cpu-amp"], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (out / "ablation.md").read_text()
    # --cpu-amp reaches every variant's training config, and the table says what it did
    assert "--cpu-amp" in table
    assert "baseline (none)" in table and "dsc (parts)" in table
    saved = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in saved["results"]] == ["none", "parts"]
    assert all(r["pairs"] == 4 and 0 < r["ssim"] <= 1 for r in saved["results"])
    assert saved["args"]["steps"] == 2 and (out / "ablation.png").exists()
    for name, variant in (("baseline", "none"), ("dsc", "parts")):
        ckpt = torch.load(out / name / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert ckpt["step"] == 2 and ckpt["config"]["variant"] == variant and ckpt["config"]["width_mult"] == 0.0625
        assert ckpt["config"]["cpu_amp"] is True
