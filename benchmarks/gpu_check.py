"""The first minutes on a GPU, in one command: build, check, measure, report.

On the GPU machine (its own torch; no network), in the repository:

    TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python3 setup.py build_ext --inplace
    python3 benchmarks/gpu_check.py --out gpu-report

(``make gpu-check`` runs both with the interpreter ``PYTHON`` names.) It

1. records the environment: Python, torch, triton, the device, and which operators
   have compiled CPU and CUDA kernels and Triton kernels;
2. runs the CUDA and Triton tests (``tests/test_cuda.py``) in a subprocess;
3. compares the CUDA and Triton kernels with the CPU kernels on the training shapes
   (N8 C64 128x64, P10, k3), forward and every gradient, with and without non-finite
   values, and on inputs of more than 2^31 elements (int64 offsets);
4. times every operator's forward and backward (the backward alone) with CUDA events
   against its memory-traffic floor at the copy bandwidth measured on the device;
5. times a training iteration at 128x64 (preset full, batch 4) and 256x256
   (fashion-full, batch 2) with the CUDA operators against the reference ones;

and writes ``OUT/report.md`` and ``OUT/report.json``. Each part runs while the time
budget (``--budget-s``, default 420 s, within the 8 minutes of a first session) lasts;
a part that does not fit is listed as skipped. On a machine without a GPU it says so in
the report and exits 0.
"""
import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import deformgan_ops as D  # noqa: E402

from bench_ops import make_case, timed  # noqa: E402
from roofline import measure_bandwidth, traffic_bytes  # noqa: E402

DIFFERENTIABLE = ("part_affine_warp", "keypoint_heatmaps", "nn_loss")


class Shape(argparse.Namespace):
    """The benchmark case of bench_ops.make_case."""

    def __init__(self, batch=8, channels=64, height=128, width=64, parts=10, kernel_size=3):
        super().__init__(batch=batch, channels=channels, height=height, width=width, parts=parts,
                         kernel_size=kernel_size, channels_last=False)


def environment() -> Dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "extension_loaded": D.extension_loaded()}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=p.name, capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2 ** 30, 1), torch_cuda=torch.version.cuda)
    env["kernels"] = {op: {"cpu": D.has_compiled_kernel(op, "cpu"), "cuda": D.has_compiled_kernel(op, "cuda"),
                           "triton": bool(D.operator(op).triton)} for op in D.operators()}
    return env


def run_tests(timeout: float) -> Dict:
    """tests/test_cuda.py in a subprocess: counts and the last lines."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.join(ROOT, "tests", "test_cuda.py")]
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1))
        out, rc = run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as exc:
        out, rc = (exc.stdout or "") if isinstance(exc.stdout, str) else "", "timeout"
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", out)}
    return {"command": " ".join(cmd[1:]), "returncode": rc, "seconds": round(time.perf_counter() - t0, 1),
            "counts": counts, "tail": out.strip().splitlines()[-15:]}


def _scaled_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(1, max |b|) over the elements finite in both; inf where the
    non-finite pattern differs (NaN where the other is not, or infinities of other signs)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if a.shape != b.shape:
        return math.inf
    if not torch.equal(a.isnan(), b.isnan()) or not torch.equal(a[a.isinf()], b[a.isinf()]):
        return math.inf
    fin = a.isfinite() & b.isfinite()
    if not fin.any():
        return 0.0
    return float((a[fin] - b[fin]).abs().max() / max(1.0, float(b[fin].abs().max())))


def _outputs_and_grads(op: str, backend: str, inputs: List[torch.Tensor], call: Callable) -> List[torch.Tensor]:
    for t in inputs:
        t.grad = None
    out = call(backend)
    if not out.requires_grad:
        return [out]
    g = torch.Generator().manual_seed(1)
    grad = torch.randn(out.shape, generator=g, dtype=out.dtype).to(out.device)
    out.backward(grad)
    return [out] + [t.grad for t in inputs if t.requires_grad]


def compare(op: str, device: str, backends: List[str], shape: Shape, non_finite: bool = False,
            baseline: str = "cpu") -> Dict[str, float]:
    """The largest scaled error of each of ``backends`` (on ``device``) against the
    ``baseline`` backend on CPU copies of the same inputs, forward and gradients; with
    ``non_finite``, NaN and inf are put into the first input (and the errors require
    the same non-finite pattern)."""
    inputs, call = make_case(op, torch.device("cpu"), torch.float32, shape)
    if non_finite:
        with torch.no_grad():
            flat = inputs[0].view(-1)
            flat[::97] = float("nan")
            flat[5::89] = float("inf")
    want = _outputs_and_grads(op, baseline, inputs, call)
    moved = [t.detach().to(device).requires_grad_(t.requires_grad) for t in inputs]
    public = D.operator(op).public
    scalars = {"nn_loss": (shape.kernel_size,), "keypoint_heatmaps": (shape.height, shape.width, 6.0)}.get(op, ())
    errors = {}
    for b in backends:
        got = _outputs_and_grads(op, b, moved, lambda backend: public(*moved, *scalars, backend=backend))
        errors[b] = max(_scaled_error(x, y) for x, y in zip(got, want))
    return errors


def large_inputs(device: str, backends: List[str], warp=(1, 16384, 256, 256), heat=(64, 18, 1536, 1536),
                 nn=(1, 16384, 384, 384)) -> Dict[str, Dict[str, float]]:
    """Forwards over more than 2^31 elements, each checked on a slice (the last batch
    item / channel, where a wrapped int32 offset would land) against the reference on
    the same slice: the warp (C 16384 x 256 x 256 features), the heatmaps (64 x 18 x
    1536 x 1536 maps) and nn_loss (C 16384 x 384 x 384)."""
    res: Dict[str, Dict[str, float]] = {}
    g = torch.Generator(device=device).manual_seed(0)
    dev = torch.device(device)
    # part_affine_warp
    (N, C, H, W), P = warp, 2
    feats = torch.randn(N, C, H, W, device=dev, generator=g)
    theta = torch.tensor([[1.0, 0.1, 3.5], [-0.1, 1.0, -2.25]], device=dev).expand(N, P, 2, 3).contiguous()
    theta[:, 1, 0, 2] = -4.75
    masks = torch.rand(N, P, H, W, device=dev, generator=g)
    want = D.part_affine_warp(feats[:, -2:].cpu(), theta.cpu(), masks.cpu(), backend="reference")
    res["part_affine_warp"] = {}
    for b in backends:
        with torch.no_grad():
            out = D.part_affine_warp(feats, theta, masks, backend=b)
        res["part_affine_warp"][b] = _scaled_error(out[:, -2:], want)
        del out
    del feats, masks
    # keypoint_heatmaps
    N, K, H, W = heat
    kp = torch.rand(N, K, 2, device=dev, generator=g) * torch.tensor([W, H], device=dev)
    want = D.keypoint_heatmaps(kp[-1:].cpu(), H, W, 6.0, backend="reference")
    res["keypoint_heatmaps"] = {}
    for b in backends:
        with torch.no_grad():
            out = D.keypoint_heatmaps(kp, H, W, 6.0, backend=b)
        res["keypoint_heatmaps"][b] = _scaled_error(out[-1:], want)
        del out
    # nn_loss
    N, C, H, W = nn
    gen = torch.randn(N, C, H, W, device=dev, generator=g)
    tgt = torch.randn(N, C, H, W, device=dev, generator=g)
    res["nn_loss"] = {}
    small_gen, small_tgt = gen[:, :, :8, :8].cpu(), tgt[:, :, :8, :8].cpu()
    # the distance at the top-left 7x7 pixels depends only on the 8x8 corner (window 3)
    want = D.nn_loss(small_gen, small_tgt, 3, "none", backend="reference")[:, :7, :7]
    for b in backends:
        with torch.no_grad():
            out = D.nn_loss(gen, tgt, 3, "none", backend=b)
        res["nn_loss"][b] = _scaled_error(out[:, :7, :7], want)
        del out
    return res


def time_op(op: str, device: str, backend: str, shape: Shape, repeat: int = 20) -> Dict[str, float]:
    """Median forward and backward seconds (the backward alone, the forward finished
    first), with CUDA events on a GPU, and each pass's traffic floor multiple."""
    dev = torch.device(device)
    inputs, call = make_case(op, dev, torch.float32, shape)
    out = call(backend)
    grad = torch.randn_like(out)

    def fwd():
        with torch.no_grad():
            call(backend)

    def bwd():
        for t in inputs:
            t.grad = None
        o = call(backend)
        return timed(lambda: o.backward(grad), dev)

    for _ in range(3):
        fwd()
        bwd()
    f = sorted(timed(fwd, dev) for _ in range(repeat))[repeat // 2]
    b = sorted(bwd() for _ in range(repeat))[repeat // 2]
    gbs = measure_bandwidth(dev)
    args = (shape.batch, shape.channels, shape.height, shape.width, shape.parts)
    needs = (True,) if op == "keypoint_heatmaps" else (True, False, False, False)
    floor_f = traffic_bytes(op, "forward", *args, needs=needs) / (gbs * 1e9)
    floor_b = traffic_bytes(op, "backward", *args, needs=needs) / (gbs * 1e9)
    return {"forward_ms": f * 1e3, "backward_ms": b * 1e3, "forward_x_floor": f / floor_f,
            "backward_x_floor": b / floor_b, "copy_gbs": gbs}


def time_training(device: str, preset: str, size, batch: int, iters: int = 5,
                  width_mult: float = 1.0) -> Dict[str, float]:
    """Milliseconds per training iteration (geometry, G forward, a D step, a G step) of
    the full-size model with the compiled operators and with the reference ones."""
    import bench_train as BT
    dev = torch.device(device)
    res = {}
    for backend in ("cuda" if device == "cuda" else "cpu", "reference"):
        G, Dn, loss, opt_g, opt_d = BT.build(preset, backend, width_mult=width_mult, size=tuple(size))
        G, Dn, loss = G.to(dev), Dn.to(dev), loss.to(dev)
        opt_g, opt_d = (torch.optim.Adam(m.parameters(), 2e-4, betas=(0.5, 0.999)) for m in (G, Dn))
        batch_t = tuple(t.to(dev) for t in BT.make_batch(batch, tuple(size)))
        for _ in range(2):
            BT.iteration(G, Dn, loss, opt_g, opt_d, batch_t)
        times = [timed(lambda: BT.iteration(G, Dn, loss, opt_g, opt_d, batch_t), dev) for _ in range(iters)]
        res[backend] = sorted(times)[len(times) // 2] * 1e3
        del G, Dn, loss, opt_g, opt_d
        if device == "cuda":
            torch.cuda.empty_cache()
    fused = res.get("cuda", res.get("cpu"))
    res["speed_up"] = res["reference"] / fused
    return res


def report_markdown(r: Dict) -> str:
    env = r["environment"]
    lines = ["# GPU check", "", f"{r['date']}, {r.get('seconds', 0):.0f} s. "
             f"Python {env['python']}, torch {env['torch']}, triton {env['triton']}, "
             f"device {env.get('device', 'none')}.", ""]
    if not env["cuda_available"]:
        lines += ["No CUDA device: nothing was checked on a GPU (this report says so and the command exits 0).", ""]
    lines += ["## Kernels", "", "| operator | CPU | CUDA | Triton |", "|---|---|---|---|"]
    for op, k in env["kernels"].items():
        lines.append(f"| {op} | {'yes' if k['cpu'] else 'no'} | {'yes' if k['cuda'] else 'no'} | "
                     f"{'yes' if k['triton'] else 'no'} |")
    if "tests" in r:
        t = r["tests"]
        lines += ["", "## Tests", "", f"`{t['command']}`: {t['counts']} (exit {t['returncode']}, {t['seconds']} s)",
                  "", "```", *t["tail"], "```"]
    for key, title in (("compare", "Against the CPU kernels (largest scaled error)"),
                       ("compare_non_finite", "Against the CPU kernels, with NaN and inf inputs"),
                       ("large", "Over 2^31 elements (checked on a slice against the reference)")):
        if key in r:
            lines += ["", f"## {title}", "", "| operator | " + " | ".join(r["backends"]) + " |",
                      "|---|" + "---|" * len(r["backends"])]
            for op, errs in r[key].items():
                lines.append(f"| {op} | " + " | ".join(f"{errs.get(b, float('nan')):.2e}" for b in r["backends"]) + " |")
    if "timing" in r:
        lines += ["", "## Operators (N8 C64 128x64 P10 k3, float32; CUDA events; median)", "",
                  "| operator | backend | forward ms (x floor) | backward ms (x floor) | copy GB/s |",
                  "|---|---|---|---|---|"]
        for op, per in r["timing"].items():
            for b, t in per.items():
                lines.append(f"| {op} | {b} | {t['forward_ms']:.3f} ({t['forward_x_floor']:.1f}x) | "
                             f"{t['backward_ms']:.3f} ({t['backward_x_floor']:.1f}x) | {t['copy_gbs']:.0f} |")
    if "training" in r:
        lines += ["", "## Training iteration (full-size model, random VGG weights)", "",
                  "| size | fused ms | reference ms | speed-up |", "|---|---|---|---|"]
        for size, t in r["training"].items():
            fused = t.get("cuda", t.get("cpu"))
            lines.append(f"| {size} | {fused:.1f} | {t['reference']:.1f} | {t['speed_up']:.2f}x |")
    if r.get("skipped"):
        lines += ["", "## Skipped", ""] + [f"- {k}: {v}" for k, v in r["skipped"].items()]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for report.md and report.json")
    ap.add_argument("--budget-s", type=float, default=420.0, help="time budget of the whole check (seconds)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["tests", "compare", "large", "timing", "training"])
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    r: Dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "environment": environment(),
               "skipped": {}}
    if r["environment"]["cuda_available"]:
        backends = [b for b in ("cuda", "triton") if b in D.available_backends("cuda")]
        r["backends"] = backends
        baseline = "cpu" if D.extension_loaded() else "reference"
        warnings.simplefilter("ignore")
        # each part: (name, estimated seconds, function)
        parts = [
            ("tests", 150, lambda: r.__setitem__("tests", run_tests(min(240, args.budget_s / 2)))),
            ("compare", 30, lambda: (r.__setitem__("compare", {op: compare(op, "cuda", backends, Shape(), False,
                                                                               baseline) for op in DIFFERENTIABLE}),
                                     r.__setitem__("compare_non_finite", {
                                         op: compare(op, "cuda", backends, Shape(), True, baseline)
                                         for op in DIFFERENTIABLE}))),
            ("large", 60, lambda: r.__setitem__("large", large_inputs("cuda", backends))),
            ("timing", 40, lambda: r.__setitem__("timing", {op: {b: time_op(op, "cuda", b, Shape()) for b in
                                                                 ["reference"] + backends} for op in DIFFERENTIABLE})),
            ("training", 90, lambda: r.__setitem__("training", {
                "128x64": time_training("cuda", "full", (128, 64), 4),
                "256x256": time_training("cuda", "fashion-full", (256, 256), 2)})),
        ]
        for name, estimate, fn in parts:
            left = args.budget_s - (time.perf_counter() - t0)
            if name in args.skip:
                r["skipped"][name] = "--skip"
            elif left < estimate:
                r["skipped"][name] = f"{left:.0f} s of the budget left, about {estimate} s needed"
            else:
                try:
                    fn()
                except Exception as exc:  # report it and go on with the other parts
                    r["skipped"][name] = f"failed: {type(exc).__name__}: {exc}"
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
            _write(args.out, r, t0)
    else:
        r["skipped"]["all GPU parts"] = "no CUDA device"
    _write(args.out, r, t0)
    print(f"[gpu_check] wrote {os.path.join(args.out, 'report.md')} ({time.perf_counter() - t0:.0f} s)"
          + ("" if r["environment"]["cuda_available"] else "; no CUDA device: nothing checked on a GPU"),
          file=sys.stderr)
    return 0


def _plain(x):
    """JSON without bare NaN or Infinity: non-finite floats as the strings "nan", "inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _write(out: str, r: Dict, t0: float) -> None:
    r["seconds"] = time.perf_counter() - t0
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(_plain(r), fh, indent=1, default=str, allow_nan=False)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write(report_markdown(r))


if __name__ == "__main__":
    sys.exit(main())
