"""The benchmark scripts run end to end (tiny sizes; no timing is asserted)."""
import os
import re
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
    assert "# floor = bytes that must move /" in out and "forward floor ms (x floor)" in out
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_ops.py"), "--ops", "part_affine_warp",
         "--channels-last", "--batch", "2", "--channels", "16", "--height", "32", "--width", "32", "--parts", "3",
         "--repeat", "1", "--warmup", "0"], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "| part_affine_warp | reference |" in out and "failed" not in out
    # each row's floor: its bytes over the better of the copies measured around the row
    row = next(line for line in out.splitlines() if line.startswith("| part_affine_warp | reference |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    before, after = (float(v) for v in cells[-1].split(" / "))
    from benchmarks.roofline import traffic_bytes
    floor_ms = float(cells[-2].split(" (")[0])  # fwd+bwd, the last pass
    # Both figures are printed rounded (the bandwidth to 0.1 GB/s, the floor to 0.001 ms):
    # the floor the printed bandwidth allows is a range, and the printed floor must fall in
    # it, widened by the floor's own rounding.
    bytes_ = traffic_bytes("part_affine_warp", "both", 2, 16, 32, 32, 3)
    gbs = max(before, after)
    lo, hi = (bytes_ / ((gbs + d) * 1e9) * 1e3 for d in (0.05, -0.05))
    assert lo - 0.0005 <= floor_ms <= hi + 0.0005, (floor_ms, lo, hi)
    assert re.fullmatch(r"[0-9.]+ \([0-9]+\.[0-9]x\)", cells[-2])


def test_roofline_bytes_by_hand_and_the_gpu_table():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from roofline import traffic_bytes
    # heatmaps N1 K18 2x3 fp32: keypoints 18*2*4 = 144 read, maps 18*6*4 = 432 written
    assert traffic_bytes("keypoint_heatmaps", "forward", 1, 0, 2, 3) == 144 + 432
    assert traffic_bytes("keypoint_heatmaps", "backward", 1, 0, 2, 3) == 432 + 2 * 144
    # warp N1 C2 2x2 P3 fp32, features' gradient only: forward reads features 32, theta 72,
    # masks 48, writes out 32 and the uint8 winner 8; backward reads grad 32, winner 8,
    # theta 72, masks 48 and writes the features' gradient 32 (no sample needed)
    assert traffic_bytes("part_affine_warp", "forward", 1, 2, 2, 2, P=3) == 32 + 72 + 48 + 32 + 8
    assert traffic_bytes("part_affine_warp", "backward", 1, 2, 2, 2, P=3) == 32 + 8 + 72 + 48 + 32
    # nn_loss N1 C2 2x2: forward reads 2 maps of 32, writes distance 16 and argmin 16
    assert traffic_bytes("nn_loss", "forward", 1, 2, 2, 2) == 64 + 32
    assert traffic_bytes("nn_loss", "both", 1, 2, 2, 2, needs=(True, True)) == 96 + 32 + 64 + 64
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "roofline.py")], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "ESTIMATE on paper" in out and "| part_affine_warp | backward | N4 C512 16x8 P10 |" in out


def test_bench_geometry_and_bench_train_run():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_geometry.py"), "--batch", "4",
                          "--repeat", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "| render, reusing the previous batch's buffers (out=), masks at full resolution |" in out
    assert "| render, fresh buffers, masks at full resolution |" in out and "pairs / s" in out
    if sys.platform.startswith("linux"):
        assert "fresh buffers, masks at full resolution, GLIBC_TUNABLES=glibc.malloc.mmap_max=0" in out
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"), "--batch", "2",
                          "--iters", "1", "--width-mult", "0.0625"], capture_output=True, text=True, timeout=600,
                         check=True).stdout
    assert "| reference |" in out and "x |" in out and "peak RSS MiB" in out and "128x64" in out
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"), "--preset",
                          "fashion-full", "--iters", "1", "--width-mult", "0.0625"], capture_output=True, text=True,
                         timeout=600, check=True).stdout
    assert "256x256, NN window 5" in out and "batch 2" in out and "| reference |" in out


def test_pytest_benchmark_suite_runs_every_module_and_prints_the_ratio_table(tmp_path):
    """`pytest benchmarks/ --benchmark-only`, once at tiny sizes: one module per
    operator of the registry plus the training step, every provider that runs here, the
    JSON written, the ratio table printed."""
    import json

    import deformgan_ops as D
    modules = sorted(f for f in os.listdir(os.path.join(ROOT, "benchmarks")) if f.startswith("test_bench_"))
    assert modules == sorted([f"test_bench_{op}.py" for op in D.operators()] + ["test_bench_train_step.py"])
    out_json = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "--bench-tiny", "-q",
                          "-p", "no:cacheprovider", f"--benchmark-json={out_json}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    names = {b["name"] for b in json.loads(out_json.read_text())["benchmarks"]}
    for op in D.operators():
        assert f"test_{op}[reference]" in names or f"test_{op}[reference-forward]" in names, op
        assert f"test_{op}[cpu]" in names or f"test_{op}[cpu-both]" in names, op
    assert {"test_train_step[reference]", "test_train_step[cpu]"} <= names
    assert "| group | provider | median ms | speed-up vs reference | x floor |" in run.stdout
    assert "| part_affine_warp both | cpu |" in run.stdout and "| train step (full preset) | cpu |" in run.stdout


def test_profile_step_profiles_the_cli_loop_by_phase_and_kind_of_work(tmp_path):
    """benchmarks/profile_step.py runs the real training loop under the profiler: every
    labelled phase of a step appears, the kinds of work add up to the step, the figure
    is written. (Tiny model; no timing is asserted.)"""
    png = tmp_path / "profile.png"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"), "--warmup", "1",
                          "--profile-steps", "1", "--plot", str(png), "--", "--preset", "demo", "--width-mult",
                          "0.0625"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for phase in ("data", "geometry", "forward G, D", "backward D", "optimiser", "losses G", "backward G"):
        assert f"| {phase} |" in text, phase
    assert "| samples |" not in text.split("| kind of work |")[0], "the end-of-run sample grid was counted"
    shares = [int(line.rsplit("|", 2)[1].strip().rstrip("%")) for line in text.split("| kind of work |")[1].splitlines()
              if line.startswith("| ") and line.rstrip().endswith("% |")]
    assert 95 <= sum(shares) <= 105, shares  # the kinds of work (with Python) make up the step
    assert "GFLOP per step" in text and "of this machine's fp32 GEMM rate" in text
    assert png.stat().st_size > 10_000


def test_bench_cli_runs_the_training_command_three_ways_and_prints_the_ratios():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_cli.py"), "--preset", "demo",
                          "--rounds", "1", "--steps", "4", "--log-every", "1", "--", "--width-mult", "0.0625"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    row = [line for line in out.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(row) == 1
    d, f, r, ratio, ratio_f = (float(c.strip().rstrip("x")) for c in row[0].strip("|").split("|")[1:])
    assert d > 0 and f > 0 and r > 0 and abs(ratio - d / r) < 0.01 and abs(ratio_f - f / r) < 0.01
    for name, rate in (("default", d), ("float32", f)):
        m = re.search(rf"# {name} / reference: ([0-9.]+)x \(per round ([0-9.]+)-([0-9.]+)x\)", out.stdout)
        assert m and abs(float(m.group(1)) - rate / r) < 0.01 and m.group(2) == m.group(3), out.stdout
    # achieved GFLOP/s = steps/s x the step's GFLOP, for each configuration, and its share of the GEMM rate
    step = re.search(r"# one step: ([0-9.]+) GFLOP \(flop_counter\); fp32 GEMM rate ([0-9.]+) GFLOP/s", out.stdout)
    assert step, out.stdout
    gflop, peak = float(step.group(1)), float(step.group(2))
    assert gflop > 0 and peak > 0
    for name, rate in (("default", d), ("float32", f), ("reference", r)):
        m = re.search(rf"# {name}: ([0-9.]+) GFLOP/s achieved, ([0-9]+)% of the GEMM rate", out.stdout)
        assert m, out.stdout
        assert abs(float(m.group(1)) - rate * gflop) <= 0.05 + 0.01 * rate * gflop
        assert abs(int(m.group(2)) - 100 * float(m.group(1)) / peak) <= 1
