"""The benchmark scripts run end to end (tiny sizes; no timing is asserted)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_ops_prints_a_table_with_ratios():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_ops.py"), "--batch", "1", "--channels", "2",
         "--height", "8", "--width", "6", "--parts", "3", "--repeat", "1", "--warmup", "0"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    for op in ("part_affine_warp", "nn_loss", "keypoint_heatmaps"):
        assert f"| {op} | reference |" in out
    assert "speed-up" in out and "failed" not in out


def test_bench_geometry_and_bench_train_run():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_geometry.py"), "--batch", "4",
                          "--repeat", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "| render_batch, reusing the previous batch's buffers (out=), masks at full resolution |" in out
    assert "| render_batch, fresh buffers, masks at full resolution |" in out and "pairs / s" in out
    if sys.platform.startswith("linux"):
        assert "fresh buffers, masks at full resolution, GLIBC_TUNABLES=glibc.malloc.mmap_max=0" in out
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"), "--batch", "2",
                          "--iters", "1", "--width-mult", "0.0625"], capture_output=True, text=True, timeout=600,
                         check=True).stdout
    assert "| reference |" in out and "x |" in out
