"""Where the time of a training step goes: the real CLI loop under torch.profiler.

    python benchmarks/profile_step.py -- --preset full --allow-random-vgg
    python benchmarks/profile_step.py --plot docs/images/step_profile.png -- --preset full --allow-random-vgg
    python benchmarks/profile_step.py -- --preset full --allow-random-vgg --ops-backend reference --no-amp

Everything after ``--`` goes to ``python -m deformgan.train`` unchanged (``--steps`` and
``--out`` are set here: warm-up, profiled steps and one more, whose end-of-run checkpoint
and sample grid are not counted, in a temporary folder; checkpoints and samples are
written only then).
The engine labels the phases of each step (data, geometry, forward, the two backwards,
the optimiser, checkpoint, logging, samples); the first ``--warmup`` steps are dropped.

Two tables per run:
- by phase: wall time per step of each labelled phase;
- by kind of work: the profiler's self CPU time of every op inside the profiled steps,
  each op counted once, in the first of: the operators (``deformgan_ops::*`` and what
  they call), convolutions (forward and backward), normalisation layers, the optimiser
  (``Optimizer.step``), data / checkpoint / logging / samples (by phase), other tensor
  ops; "Python and framework" is the step's wall time minus all op time.

Then the step's floating-point work, counted with ``torch.utils.flop_counter`` on the
same model and batch (convolutions and matrix products, forward and backward), as
achieved GFLOP/s and as a share of this machine's measured fp32 GEMM rate (a large
``torch.mm`` on the same threads: the practical peak of the CPU).
"""
import argparse
import bisect
import os
import sys
import tempfile
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CATEGORIES = ("operators (deformgan_ops)", "convolutions", "normalisation", "optimiser", "data", "checkpoint",
              "logging", "samples", "other tensor ops")


def gemm_gflops(threads: int, n: int = 2048, repeat: int = 5) -> float:
    """fp32 GEMM rate of this machine on ``threads`` threads (median of ``repeat``)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / sorted(times)[len(times) // 2] / 1e9


def step_flops(cfg) -> float:
    """FLOPs of one training step of ``cfg``'s model and batch (flop_counter: convolutions
    and matrix products, forward and backward; the fused operators count 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench_train import build, iteration, make_batch
    from deformgan.config import PRESETS
    preset = cfg.preset if cfg.preset in PRESETS else "full"
    model = build(preset, cfg.ops_backend, cfg.width_mult, tuple(cfg.image_size))
    batch = make_batch(cfg.batch_size, tuple(cfg.image_size))
    with FlopCounterMode(display=False) as counter:
        iteration(*model, batch)
    return float(counter.get_total_flops())


def category(event, chain_names, phase):
    for name in chain_names:
        if name.startswith("deformgan_ops::") or name.startswith("deformgan_triton::"):
            return "operators (deformgan_ops)"
    if phase in ("step/data", "step/checkpoint", "step/logging", "step/samples"):
        return phase.split("/")[1]
    for name in chain_names:
        if name.startswith("Optimizer.step") or name.startswith("Optimizer.zero_grad"):
            return "optimiser"
    if phase == "step/optimiser":
        return "optimiser"
    for name in chain_names:
        low = name.lower()
        if "conv" in low:
            return "convolutions"
        if "norm" in low:
            return "normalisation"
    return "other tensor ops"


def analyse(events, warmup: int, count: int):
    """(steps, {phase: s}, {category: s}, wall s) summed over the ``count`` steps after
    the first ``warmup``."""
    steps = sorted((e for e in events if e.name == "step"), key=lambda e: e.time_range.start)[warmup:warmup + count]
    if not steps:
        raise SystemExit("no profiled step: raise --steps or lower --warmup")
    step_iv = [(e.time_range.start, e.time_range.end) for e in steps]
    phases = sorted(((e.time_range.start, e.time_range.end, e.name) for e in events if e.name.startswith("step/")),
                    key=lambda t: t[0])
    starts = [p[0] for p in phases]
    step_starts = [s for s, _ in step_iv]

    def in_steps(t):
        i = bisect.bisect_right(step_starts, t) - 1
        return i >= 0 and step_iv[i][0] <= t <= step_iv[i][1]

    def phase_of(t):
        i = bisect.bisect_right(starts, t) - 1
        return phases[i][2] if i >= 0 and phases[i][0] <= t <= phases[i][1] else ""

    by_phase = defaultdict(float)
    for s, e, name in phases:
        if in_steps(s):
            by_phase[name] += (e - s) / 1e6
    by_cat = defaultdict(float)
    for e in events:
        if e.name == "step" or e.name.startswith("step/") or e.self_cpu_time_total <= 0:
            continue
        t = e.time_range.start
        if not in_steps(t):
            continue
        chain, p = [e.name], e.cpu_parent
        while p is not None:
            chain.append(p.name)
            p = p.cpu_parent
        by_cat[category(e, chain, phase_of(t))] += e.self_cpu_time_total / 1e6
    wall = sum((e - s) / 1e6 for s, e in step_iv)
    return len(steps), by_phase, by_cat, wall


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup", type=int, default=2, help="steps run first and not counted")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--plot", default=None, help="save a bar chart of the two tables (PNG)")
    args = ap.parse_args(own)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    import deformgan_ops
    from deformgan.config import build_config
    from deformgan.engine import train
    out = tempfile.mkdtemp(prefix="profile_step_")
    # one more step than profiled: the last step of a run writes the checkpoint and the
    # sample grid, which a step of a long run does not
    steps = args.warmup + args.profile_steps + 1
    cfg, _ = build_config(train_args + ["--steps", str(steps), "--out", out, "--save-every", str(10 ** 9),
                                        "--sample-every", str(10 ** 9)])
    if cfg.ops_backend is not None:
        deformgan_ops.set_backend(cfg.ops_backend)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(cfg, progress=False)
    n, by_phase, by_cat, wall = analyse(prof.events(), args.warmup, args.profile_steps)
    per = wall / n
    print(f"# one training step, profiled: {' '.join(train_args)}; {n} steps after {args.warmup} warm-up; "
          f"threads={threads}; torch={torch.__version__}")
    print(f"# step wall time {per * 1e3:.0f} ms ({1 / per:.2f} steps/s under the profiler)")
    print("\n| phase | ms / step | share |\n|---|---|---|")
    for name, t in sorted(by_phase.items(), key=lambda kv: -kv[1]):
        print(f"| {name[5:]} | {t / n * 1e3:.0f} | {t / wall:.0%} |")
    print("\n| kind of work | ms / step | share |\n|---|---|---|")
    ops_total = sum(by_cat.values())
    rows = [(c, by_cat.get(c, 0.0)) for c in CATEGORIES] + [("Python and framework", max(wall - ops_total, 0.0))]
    for name, t in rows:
        print(f"| {name} | {t / n * 1e3:.0f} | {t / wall:.0%} |")
    flops = step_flops(cfg)
    peak = gemm_gflops(threads)
    achieved = flops / per / 1e9
    print(f"\n# work: {flops / 1e9:.0f} GFLOP per step (flop_counter); achieved {achieved:.0f} GFLOP/s "
          f"(profiled wall time) = {achieved / peak:.0%} of this machine's fp32 GEMM rate ({peak:.0f} GFLOP/s, "
          f"torch.mm 2048^2 on {threads} threads)")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        items = sorted(by_phase.items(), key=lambda kv: kv[1])
        axes[0].barh([k[5:] for k, _ in items], [v / n * 1e3 for _, v in items], color="tab:blue")
        axes[0].set_xlabel("ms per step")
        axes[0].set_title("by phase")
        rows = sorted(rows, key=lambda kv: kv[1])
        axes[1].barh([k for k, _ in rows], [v / n * 1e3 for _, v in rows], color="tab:orange")
        axes[1].set_xlabel("ms per step")
        axes[1].set_title("by kind of work")
        fig.suptitle(f"one training step: {' '.join(train_args)} ({per * 1e3:.0f} ms, {threads} threads)")
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"# saved {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
