"""Batched pose geometry + heatmaps on the CPU: pairs per second.

    python benchmarks/bench_geometry.py [--batch 64] [--threads 2] [--repeat 10]

For a batch of real Market-1501 pose pairs (from ../shared/data/market, or the
shipped pose bank), times deformgan.data.render_batch: source and target heatmaps
(deformgan_ops.keypoint_heatmaps), the ten part affines and the part masks, at full
resolution only and at the four warped levels of the generator (1, 2, 4, 8), and
prints pairs per second. The per-item reference path (heatmaps with the reference
op, one pair at a time) is timed too, for the ratio.
"""
import argparse
import os
import statistics
import time

import torch

import deformgan_ops as D
from deformgan import pose as P
from deformgan.data.market import read_annotations, render_batch
from deformgan.data.synthetic import load_pose_bank

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "market",
                      "market-annotation-train.csv")


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
        P.part_affines(s[None], t[None])
        P.part_masks(t[None], 128, 64)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    src, tgt = poses(args.batch)
    print(f"# batched geometry + heatmaps: {args.batch} pairs, 128x64, threads={torch.get_num_threads()}, "
          f"heatmap backend: {D.available_backends('cpu')[-1]}")
    print("| path | ms per batch | pairs / s |")
    print("|---|---|---|")
    rows = [
        ("render_batch, masks at full resolution", lambda: render_batch(src, tgt, levels=(1,))),
        ("render_batch, masks at levels 1, 2, 4, 8", lambda: render_batch(src, tgt, levels=(1, 2, 4, 8))),
        ("  of which heatmaps (source + target)", lambda: D.keypoint_heatmaps(torch.cat([src, tgt]), 128, 64, 6.0)),
        ("  of which part affines", lambda: P.part_affines(src, tgt)),
        ("  of which part masks (full resolution)", lambda: P.part_masks(tgt, 128, 64)),
        ("per pair, reference heatmaps (baseline)", lambda: per_pair_reference(src, tgt)),
    ]
    for name, fn in rows:
        t = timed(fn, args.repeat if "per pair" not in name else max(1, args.repeat // 5))
        print(f"| {name} | {t * 1e3:.1f} | {args.batch / t:.0f} |")


if __name__ == "__main__":
    main()
