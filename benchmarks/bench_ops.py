"""Fused operators against the pure-PyTorch reference: speed and peak memory.

    python benchmarks/bench_ops.py                      # CPU: reference vs cpu
    python benchmarks/bench_ops.py --device cuda        # GPU: reference vs cuda vs triton
    python benchmarks/bench_ops.py --ops nn_loss --pass both --threads 2

For each operator and provider it times the forward, the backward, and both,
reports peak memory (CPU: the allocator's peak RSS growth measured with a
fresh process per case is too slow, so the CPU figure is the sum of the
bytes of the tensors the pass keeps alive for backward plus its outputs,
measured with torch's saved-tensor hooks; CUDA: torch.cuda.max_memory_allocated),
and prints the ratio of each provider against the reference in the same run.
Beside each time it prints the memory-traffic floor of that pass (the bytes the pass
must move, ``roofline.traffic_bytes``, over the copy bandwidth of the device) and the
time as a multiple of it. The bandwidth is measured right before and right after each
provider's timings (best of 5 copies each, the better of the two taken, both printed):
on a shared machine it moves by a third between runs, and a figure taken at the start
only would judge later rows against another machine state.
"""
import argparse
import os
import statistics
import sys
import time

import torch

import deformgan_ops as D

try:
    from roofline import measure_bandwidth, traffic_bytes
except ImportError:  # imported as benchmarks.bench_ops
    from benchmarks.roofline import measure_bandwidth, traffic_bytes

# The differentiable operators of the registry (the pose geometry has its own
# benchmark, bench_geometry.py); each needs a realistic case in make_case.
OPS = tuple(op for op in D.operators() if D.operator(op).differentiable)


def realistic_masks(N, P, H, W, generator, dtype, device):
    """Part 0 all ones; parts 1..P-1 each a random axis-aligned box of ~1/10 of the image."""
    masks = torch.zeros(N, P, H, W, dtype=dtype, device=device)
    masks[:, 0] = 1
    bh, bw = max(1, int(H * 0.35)), max(1, int(W * 0.29))
    for n in range(N):
        for p in range(1, P):
            y0 = int(torch.randint(0, H - bh + 1, (1,), generator=generator))
            x0 = int(torch.randint(0, W - bw + 1, (1,), generator=generator))
            masks[n, p, y0 : y0 + bh, x0 : x0 + bw] = 1
    return masks


def make_case(op, device, dtype, args):
    g = torch.Generator().manual_seed(0)
    N, C, H, W = args.batch, args.channels, args.height, args.width
    if op == "part_affine_warp":
        P = args.parts
        feats = torch.randn(N, C, H, W, generator=g, dtype=dtype).to(device)
        if args.channels_last:  # then the output, the incoming gradient and grad_features are too
            feats = feats.contiguous(memory_format=torch.channels_last)
        theta = torch.zeros(N, P, 2, 3, dtype=dtype)
        theta[:, :, 0, 0] = 1 + 0.1 * torch.randn(N, P, generator=g, dtype=dtype)
        theta[:, :, 1, 1] = 1 + 0.1 * torch.randn(N, P, generator=g, dtype=dtype)
        theta[:, :, :, 2] = 5 * torch.randn(N, P, 2, generator=g, dtype=dtype)
        theta[:, :, 0, 1] = 0.1 * torch.randn(N, P, generator=g, dtype=dtype)
        theta[:, :, 1, 0] = 0.1 * torch.randn(N, P, generator=g, dtype=dtype)
        masks = realistic_masks(N, P, H, W, g, dtype, "cpu").to(device)
        inputs, grads, scalars = [feats, theta.to(device), masks], [True, False, False], ()
    elif op == "nn_loss":
        gen = torch.randn(N, C, H, W, generator=g, dtype=dtype).to(device)
        tgt = torch.randn(N, C, H, W, generator=g, dtype=dtype).to(device)
        inputs, grads, scalars = [gen, tgt], [True, False], (args.kernel_size,)
    elif op == "keypoint_heatmaps":
        K = D.skeleton.NUM_JOINTS
        kp = torch.stack([torch.rand(N, K, generator=g, dtype=dtype) * W,
                          torch.rand(N, K, generator=g, dtype=dtype) * H], -1).to(device)
        kp[:, ::5] = -1  # some missing joints
        inputs, grads, scalars = [kp], [True], (H, W, 6.0)
    else:
        raise NotImplementedError(f"bench_ops has no benchmark case for the operator {op!r}: add one to make_case")
    for t, r in zip(inputs, grads):
        t.requires_grad_(r)
    public = D.operator(op).public

    def call(backend):
        return public(*inputs, *scalars, backend=backend)
    return inputs, call


def clear_grads(inputs):
    """Each backward writes fresh .grad tensors (as after zero_grad(set_to_none=True),
    torch's default): accumulating into the previous iteration's .grad would add an
    elementwise pass over every input that is not the operator's."""
    for t in inputs:
        t.grad = None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    """Seconds ``fn`` takes on ``device``: on CUDA between two events recorded on the
    current stream around it (the device's own time, not the host's launch time; the
    work queued before is finished first), on the CPU by the wall clock."""
    sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(fn, device, repeat, warmup):
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device) for _ in range(repeat))


class SavedBytes:
    """Bytes of distinct tensors saved for backward (CPU memory proxy)."""

    def __init__(self):
        self.seen = {}

    def pack(self, t):
        self.seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    def total(self):
        return sum(self.seen.values())


def run_case(op, provider, device, dtype, args):
    inputs, call = make_case(op, device, dtype, args)

    def fwd():
        with torch.no_grad():
            return call(provider)

    out = call(provider)
    grad = torch.randn_like(out)

    def fwd_bwd():
        clear_grads(inputs)
        o = call(provider)
        o.backward(grad)

    def bwd_only():  # the forward finishes before the timer starts (timed syncs first)
        clear_grads(inputs)
        o = call(provider)
        return timed(lambda: o.backward(grad), device)

    res = {}
    if args.pass_ in ("forward", "all"):
        res["forward"] = measure(fwd, device, args.repeat, args.warmup)
    if args.pass_ in ("backward", "all"):
        for _ in range(args.warmup):
            bwd_only()
        res["backward"] = statistics.median(bwd_only() for _ in range(args.repeat))
    if args.pass_ in ("both", "all"):
        res["both"] = measure(fwd_bwd, device, args.repeat, args.warmup)
    # memory
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fwd_bwd()
        sync(device)
        res["memory"] = torch.cuda.max_memory_allocated() - base
    else:
        saved = SavedBytes()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            o = call(provider)
        input_ptrs = {i.untyped_storage().data_ptr() for i in inputs}
        kept = sum(v for (ptr, _), v in saved.seen.items() if ptr not in input_ptrs)
        res["memory"] = kept + o.untyped_storage().nbytes()
        del o
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    ap.add_argument("--providers", nargs="+", default=None,
                    help="default: reference plus every compiled backend for the device")
    ap.add_argument("--pass", dest="pass_", default="all", choices=["forward", "backward", "both", "all"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--parts", type=int, default=10)
    ap.add_argument("--kernel-size", type=int, default=3)
    ap.add_argument("--channels-last", action="store_true",
                    help="part_affine_warp's features in channels-last memory (as a channels-last "
                         "network passes them); its output and gradients follow")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (CPU runs)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    providers = args.providers or D.available_backends(device.type)
    if "reference" not in providers:
        providers = ["reference"] + providers
    print(f"# deformgan_ops benchmark: device={device} dtype={args.dtype} N={args.batch} C={args.channels} "
          f"{args.height}x{args.width} P={args.parts} k={args.kernel_size} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}")
    passes = ["forward", "backward", "both"] if args.pass_ == "all" else [args.pass_]
    elem = torch.empty((), dtype=dtype).element_size()
    if device.type == "cpu":  # the CPU kernels' transpose settings (part_affine_warp's TransposeSettings)
        print("# cpu transposes: " + ", ".join(f"{k}={os.environ.get(k) or 'default'}" for k in
                                              ("DEFORMGAN_CPU_TRANSPOSE", "DEFORMGAN_STREAM_MIN_BYTES")))
    print(f"# floor = bytes that must move / copy bandwidth on {device} (the better of the copies measured "
          f"before and after the row's timings)")
    header = "| op | provider | " + " | ".join(f"{p} ms" for p in passes) + " | memory MiB | " + \
        " | ".join(f"{p} speed-up" for p in passes) + " | memory ratio | " + \
        " | ".join(f"{p} floor ms (x floor)" for p in passes) + " | copy GB/s before / after |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for op in args.ops:
        ref = None
        for provider in providers:
            if provider not in D.operator(op).backends():
                continue
            try:
                before = measure_bandwidth(device)
                r = run_case(op, provider, device, dtype, args)
                after = measure_bandwidth(device)
            except Exception as exc:  # report and keep going with the other providers
                print(f"| {op} | {provider} | failed: {type(exc).__name__}: {exc} |")
                continue
            if provider == "reference":
                ref = r
            cells = [f"{r[p] * 1e3:.2f}" for p in passes]
            mem = f"{r['memory'] / 2**20:.1f}"
            if ref is not None:
                ratios = [f"{ref[p] / r[p]:.1f}x" for p in passes]
                mratio = f"{ref['memory'] / max(r['memory'], 1):.1f}x"
            else:
                ratios, mratio = ["-"] * len(passes), "-"
            floors = []
            for p in passes:
                needs = (True, False, False, False) if op != "keypoint_heatmaps" else (True,)
                b = traffic_bytes(op, p, args.batch, args.channels, args.height, args.width, args.parts,
                                  elem=elem, needs=needs)
                f = b / (max(before, after) * 1e9)
                floors.append(f"{f * 1e3:.3f} ({r[p] / f:.1f}x)")
            print(f"| {op} | {provider} | " + " | ".join(cells) + f" | {mem} | " + " | ".join(ratios) +
                  f" | {mratio} | " + " | ".join(floors) + f" | {before:.1f} / {after:.1f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
