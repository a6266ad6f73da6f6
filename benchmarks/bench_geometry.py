"""Batched pose geometry + heatmaps on the CPU: pairs per second.

    python benchmarks/bench_geometry.py [--batch 64] [--threads 2] [--repeat 10]

For a batch of real Market-1501 pose pairs (the real annotation files where DEFORMGAN_MARKET_DATA
names their folder or a data checkout lies beside the repository; else the
shipped pose bank), times deformgan.geometry.render: source and target heatmaps
(deformgan_ops.keypoint_heatmaps), the ten part affines (deformgan_ops.part_affines)
and the part masks (deformgan_ops.part_masks), at full resolution only and at the
four warped levels of the generator (1, 2, 4, 8), and prints pairs per second; a
training loop passes the previous batch back (out=) so the 75 MB of heatmaps are
not page-faulted in again, and both ways are timed. The PyTorch references and a
per-pair reference path are timed too, for the ratio.

Fresh buffers are slow on the CPU only because glibc returns blocks over 32 MB to the
OS on free, so each batch faults its 75 MB of heatmaps in again. On Linux the last row
runs the fresh path in a child process with glibc told to keep freed memory
(GLIBC_TUNABLES below), which a CPU training job can set too.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

import deformgan_ops as D
from deformgan.data.market import read_annotations
from deformgan.geometry import render
from deformgan.data.synthetic import load_pose_bank

SHARED = os.path.join(os.environ.get("DEFORMGAN_MARKET_DATA") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "market"), "market-annotation-train.csv")


def poses(n, seed=0):
    if os.path.exists(SHARED):
        kp = torch.stack(list(read_annotations(SHARED).values()))
    else:
        kp = load_pose_bank()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(kp), (2, n), generator=g)
    return kp[idx[0]], kp[idx[1]]


def timed(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def per_pair_reference(src, tgt):
    for s, t in zip(src, tgt):
        D.keypoint_heatmaps(torch.stack([s, t]), 128, 64, 6.0, backend="reference")
        D.part_affines(s[None], t[None], backend="reference")
        D.part_masks(t[None], 128, 64, backend="reference")


KEEP_FREED_MEMORY = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"
FRESH = "render, fresh buffers, masks at full resolution"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--fresh-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    src, tgt = poses(args.batch)
    if args.fresh_only:  # the child process of the last row
        t = timed(lambda: render(src, tgt, (128, 64), levels=(0,)), args.repeat)
        print(f"| {FRESH}, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')} | {t * 1e3:.1f} | "
              f"{args.batch / t:.0f} |")
        return
    print(f"# batched geometry + heatmaps: {args.batch} pairs, 128x64, threads={torch.get_num_threads()}, "
          f"heatmap backend: {D.available_backends('cpu')[-1]}")
    print("| path | ms per batch | pairs / s |")
    print("|---|---|---|")
    prev = {}

    def reuse(levels):
        def run():
            prev[levels] = render(src, tgt, (128, 64), levels=levels, out=prev.get(levels))
        return run

    heat_buf = torch.empty(2 * args.batch, 18, 128, 64)
    both = torch.cat([src, tgt])
    rows = [
        ("render, reusing the previous batch's buffers (out=), masks at full resolution", reuse((0,))),
        ("render, reusing buffers (out=), masks at the generator's levels 0-3", reuse((0, 1, 2, 3))),
        (FRESH, lambda: render(src, tgt, (128, 64), levels=(0,))),
        ("  of which heatmaps into a reused buffer (out=)",
         lambda: D.keypoint_heatmaps(both, 128, 64, 6.0, out=heat_buf)),
        ("  of which heatmaps into a fresh buffer", lambda: D.keypoint_heatmaps(both, 128, 64, 6.0)),
        ("  of which part affines", lambda: D.part_affines(src, tgt)),
        ("  of which part masks (full resolution, fresh)", lambda: D.part_masks(tgt, 128, 64)),
        ("part affines, reference (PyTorch)", lambda: D.part_affines(src, tgt, backend="reference")),
        ("part masks, reference (PyTorch)", lambda: D.part_masks(tgt, 128, 64, backend="reference")),
        ("per pair, reference ops (baseline)", lambda: per_pair_reference(src, tgt)),
    ]
    for name, fn in rows:
        t = timed(fn, args.repeat if "per pair" not in name else max(1, args.repeat // 5))
        print(f"| {name} | {t * 1e3:.1f} | {args.batch / t:.0f} |")
    if sys.platform.startswith("linux") and "GLIBC_TUNABLES" not in os.environ:
        env = dict(os.environ, GLIBC_TUNABLES=KEEP_FREED_MEMORY)
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--fresh-only", "--batch", str(args.batch),
                                "--threads", str(args.threads), "--repeat", str(args.repeat)],
                               env=env, capture_output=True, text=True)
        print(child.stdout.strip() if child.returncode == 0 else f"| {FRESH}, GLIBC_TUNABLES: failed | - | - |")

if __name__ == "__main__":
    main()
