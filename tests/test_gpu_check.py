"""benchmarks/gpu_check.py, the first command of a GPU session: on this machine without
a GPU it says so and exits 0; its parts run here on the CPU at tiny sizes (the CPU
kernels standing in for the GPU ones), and its report renders every section."""
import json
import math
import os
import sys

import pytest
import torch

import deformgan_ops as D
from conftest import requires_cpu_kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_check as G  # noqa: E402

TINY = G.Shape(batch=2, channels=3, height=9, width=7, parts=3, kernel_size=3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the check would run for real")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path, capsys):
    assert G.main(["--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["environment"]["cuda_available"] is False
    assert report["skipped"] == {"all GPU parts": "no CUDA device"}
    assert set(report["environment"]["kernels"]) == set(D.operators())
    md = (tmp_path / "r" / "report.md").read_text()
    assert "No CUDA device: nothing was checked on a GPU" in md and "| part_affine_warp |" in md
    assert "no CUDA device: nothing checked on a GPU" in capsys.readouterr().err


@requires_cpu_kernels
@pytest.mark.parametrize("non_finite", [False, True])
@pytest.mark.parametrize("op", G.DIFFERENTIABLE)
def test_compare_measures_each_backend_against_the_baseline(op, non_finite):
    errs = G.compare(op, "cpu", ["cpu", "reference"], TINY, non_finite=non_finite, baseline="reference")
    assert set(errs) == {"cpu", "reference"} and errs["reference"] == 0.0
    assert errs["cpu"] < 1e-4, errs


def test_scaled_error_requires_the_same_non_finite_pattern():
    a = torch.tensor([1.0, float("nan"), float("inf"), 4.0])
    assert G._scaled_error(a, a.clone()) == 0.0
    assert G._scaled_error(a, torch.tensor([1.0, 2.0, float("inf"), 4.0])) == math.inf
    assert G._scaled_error(a, torch.tensor([1.0, float("nan"), -float("inf"), 4.0])) == math.inf
    assert G._scaled_error(torch.tensor([10.0, 1.0]), torch.tensor([20.0, 1.0])) == pytest.approx(0.5)


@requires_cpu_kernels
def test_large_inputs_and_timing_run_at_tiny_sizes_on_the_cpu():
    res = G.large_inputs("cpu", ["cpu"], warp=(1, 4, 6, 5), heat=(2, 18, 6, 5), nn=(1, 3, 9, 9))
    assert set(res) == set(G.DIFFERENTIABLE) and all(v["cpu"] < 1e-5 for v in res.values()), res
    t = G.time_op("part_affine_warp", "cpu", "cpu", TINY, repeat=3)
    assert t["forward_ms"] > 0 and t["backward_ms"] > 0 and t["forward_x_floor"] > 0 and t["copy_gbs"] > 0


@requires_cpu_kernels
def test_training_iteration_timing_runs_on_the_cpu():
    t = G.time_training("cpu", "dsc", (128, 64), 1, iters=1, width_mult=1 / 16)
    assert t["cpu"] > 0 and t["reference"] > 0 and t["speed_up"] == pytest.approx(t["reference"] / t["cpu"])


def test_the_report_renders_every_section_of_a_gpu_run(tmp_path):
    env = dict(G.environment(), cuda_available=True, device="NVIDIA H100 80GB HBM3")
    r = {"date": "2026-12-08 00:00 UTC", "seconds": 301.0, "environment": env, "backends": ["cuda", "triton"],
         "tests": {"command": "pytest tests/test_cuda.py", "returncode": 0, "seconds": 80.0,
                   "counts": {"passed": 40}, "tail": ["40 passed"]},
         "compare": {"nn_loss": {"cuda": 1e-7, "triton": 2e-7}},
         "compare_non_finite": {"nn_loss": {"cuda": 0.0, "triton": math.inf}},
         "large": {"nn_loss": {"cuda": 0.0, "triton": 0.0}},
         "timing": {"nn_loss": {"cuda": dict(forward_ms=0.1, backward_ms=0.2, forward_x_floor=2.0,
                                             backward_x_floor=3.0, copy_gbs=3000.0)}},
         "training": {"128x64": {"cuda": 50.0, "reference": 120.0, "speed_up": 2.4}},
         "skipped": {"large": "failed: OutOfMemoryError"}}
    md = G.report_markdown(r)
    for text in ("## Tests", "{'passed': 40}", "| nn_loss | 1.00e-07 | 2.00e-07 |", "| nn_loss | 0.00e+00 | inf |",
                 "| nn_loss | cuda | 0.100 (2.0x) | 0.200 (3.0x) | 3000 |", "| 128x64 | 50.0 | 120.0 | 2.40x |",
                 "- large: failed: OutOfMemoryError", "device NVIDIA H100 80GB HBM3"):
        assert text in md, text
    G._write(str(tmp_path), r, 0.0)
    assert json.loads((tmp_path / "report.json").read_text())["compare_non_finite"]["nn_loss"]["triton"] == "inf"
