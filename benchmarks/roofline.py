"""Memory-traffic floors of the operators: the bytes a pass must move (every input it
needs read once, every output written once) over the memory bandwidth.

    python benchmarks/roofline.py                     # the GPU table of the README (on paper)
    python benchmarks/roofline.py --bandwidth-gbs 2000 --batch 8

``bench_ops.py`` prints the same floor, at the bandwidth it measures on the device
(a large tensor copy), beside each measured time. The "expected" column of this table
is an estimate from reading the kernels, not a measurement, until a GPU run fills
``bench_ops --device cuda``.
"""
import argparse
import time
from typing import Sequence

import torch

H100_SXM_GBS = 3350.0  # HBM3 peak of an H100 SXM (NVIDIA's datasheet), GB/s


def traffic_bytes(op: str, pass_: str, N: int, C: int, H: int, W: int, P: int = 10, K: int = 18,
                  elem: int = 4, offsets: bool = False,
                  needs: Sequence[bool] = (True, False, False, False)) -> int:
    """Bytes that must move for one pass (``forward``, ``backward`` or ``both``) of an
    operator with output size = input size. ``needs``: the gradients the backward
    computes, in the op's input order (warp: features, theta, masks, offsets; nn_loss:
    generated, target; heatmaps: keypoints)."""
    if pass_ == "both":
        return traffic_bytes(op, "forward", N, C, H, W, P, K, elem, offsets, needs) + \
            traffic_bytes(op, "backward", N, C, H, W, P, K, elem, offsets, needs)
    plane = N * H * W
    if op == "part_affine_warp":
        feat, out, masks, off = N * C * H * W * elem, N * C * H * W * elem, N * P * H * W * elem, 2 * plane * elem
        winner = N * C * H * W  # uint8
        theta = N * P * 6 * elem
        if pass_ == "forward":
            return feat + theta + masks + (off if offsets else 0) + out + winner
        nf, nt, nm, no = needs
        b = out + winner + theta + masks + (off if offsets else 0)  # grad_output, winner, inputs
        if nt or nm or no:
            b += feat  # the samples (location / mask gradients)
        b += (feat if nf else 0) + (theta if nt else 0) + (masks if nm else 0) + (off if (no and offsets) else 0)
        return b
    if op == "nn_loss":
        maps = N * C * H * W * elem
        if pass_ == "forward":
            return 2 * maps + plane * elem + plane * 4  # generated, target; distance, argmin (int32)
        ng, nt = needs[:2]
        return plane * elem + plane * 4 + 2 * maps + (maps if ng else 0) + (maps if nt else 0)
    if op == "keypoint_heatmaps":
        maps = N * K * H * W * elem
        kp = N * K * 2 * elem
        return kp + maps if pass_ == "forward" else maps + 2 * kp
    raise ValueError(f"unknown op {op!r}")


def measure_bandwidth(device: torch.device, mib: int = 256, repeat: int = 5) -> float:
    """Copy bandwidth of the device in GB/s (bytes read + written per second), the best
    of ``repeat`` copies of a ``mib`` MiB tensor."""
    n = mib * 2 ** 20 // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeat + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best / 1e9


# The generator's deformable-skip levels at 128x64 (Market, batch 4) and the losses'
# shapes: what one training step of the paper's configuration runs.
MARKET_LEVELS = ((64, 128, 64), (128, 64, 32), (256, 32, 16), (512, 16, 8))

# Expected multiple of the floor for each kernel as now written, from reading it:
# gathers that hit L2 for their neighbours, fp32 atomics on the feature gradient, the
# winner byte per element. Replace with measured figures after the first GPU run.
EXPECTED = {
    ("part_affine_warp", "forward"): ("2-3x", "taps once per (pixel, part) for 8 channels; 4 gathered corners per sample"),
    ("part_affine_warp", "backward"): ("3-5x", "fp32 atomics into grad features; per-chunk sums of the other grads"),
    ("nn_loss", "forward"): ("2.5-3.5x", "instruction-bound: k*k abs-adds per channel (no border predicates inside the window)"),
    ("nn_loss", "backward"): ("2-3x", "target gradient by atomics at the winning position"),
    ("keypoint_heatmaps", "forward"): ("3-6x", "pure writes, but 2.4 MB is a few microseconds: launch latency"),
    ("keypoint_heatmaps", "backward"): ("5-10x", "one block per joint (72 blocks), two exps per pixel"),
}


def table(bandwidth_gbs: float, batch: int = 4, elem: int = 4) -> str:
    rows = ["| kernel | pass | shape | bytes (MB) | floor (us) at %.0f GB/s | expected | why |" % bandwidth_gbs,
            "|---|---|---|---|---|---|---|"]

    def add(op, pass_, shape, b, note=""):
        exp, why = EXPECTED[(op, pass_)]
        rows.append(f"| {op} | {pass_} | {shape} | {b / 1e6:.2f} | {b / bandwidth_gbs / 1e3:.1f} | {exp} | {why} |")

    for C, H, W in MARKET_LEVELS:
        for pass_ in ("forward", "backward"):
            b = traffic_bytes("part_affine_warp", pass_, batch, C, H, W, elem=elem, offsets=False,
                              needs=(True, True, False, False))
            add("part_affine_warp", pass_, f"N{batch} C{C} {H}x{W} P10", b)
    for pass_ in ("forward", "backward"):
        b = traffic_bytes("nn_loss", pass_, batch, 64, 128, 64, elem=elem, needs=(True, False))
        add("nn_loss", pass_, f"N{batch} C64 128x64 k3 (VGG relu1_2)", b)
    for pass_ in ("forward", "backward"):
        b = traffic_bytes("keypoint_heatmaps", pass_, batch, 0, 128, 64, elem=elem)
        add("keypoint_heatmaps", pass_, f"N{batch} K18 128x64", b)
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bandwidth-gbs", type=float, default=H100_SXM_GBS)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--dtype-bytes", type=int, default=4, choices=[2, 4, 8])
    args = ap.parse_args(argv)
    print(f"# memory-traffic floors (ESTIMATE on paper, not measured): {args.bandwidth_gbs:.0f} GB/s, "
          f"{args.dtype_bytes}-byte elements")
    print(table(args.bandwidth_gbs, args.batch, args.dtype_bytes), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
