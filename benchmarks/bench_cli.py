"""Training speed as a user meets it: `python -m deformgan.train` itself, default options
against the pure-PyTorch pipeline, one run after the other, several times.

    python benchmarks/bench_cli.py                       # --preset full --allow-random-vgg, 3 rounds
    python benchmarks/bench_cli.py --rounds 5 --steps 13 --log-every 4

Each round runs the three commands below one after the other (fresh processes, the same
synthetic data set, made before the first round):

    python -m deformgan.train --preset full --allow-random-vgg                                 (default)
    python -m deformgan.train --preset full --allow-random-vgg --no-cpu-amp                     (float32)
    python -m deformgan.train --preset full --allow-random-vgg --ops-backend reference --no-amp  (reference)

The default trains under bfloat16 autocast where the CPU has native bfloat16 (AVX512-BF16 or
AMX), else in float32 like the second command; the reference is the pure-PyTorch operators
in float32.

and reads steps/s from the run's own log (``it_per_s`` of log.jsonl, the rate over each
``--log-every`` window). The first window (start-up, first-iteration allocations) and the
last (the end-of-run checkpoint and sample grid) are dropped; the rest are averaged per
run. Printed: steps/s of every run, the mean and range per configuration, and the ratio
of the means to the reference's with its range over the rounds (each round's run over its
reference).
Then, unless ``--no-flops``, each configuration's achieved GFLOP/s (steps/s times the
step's floating-point work, counted once with ``torch.utils.flop_counter`` on the same
model and batch: convolutions and matrix products, the same for both configurations)
and its share of this machine's fp32 GEMM rate (a large ``torch.mm``: the CPU's
practical peak), as ``profile_step.py`` reports for one configuration.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CONFIGS = {"default": [], "float32": ["--no-cpu-amp"], "reference": ["--ops-backend", "reference", "--no-amp"]}


def run_once(extra, args, out):
    cmd = [sys.executable, "-m", "deformgan.train", "--preset", args.preset, "--allow-random-vgg",
           "--steps", str(args.steps), "--log-every", str(args.log_every), "--save-every", str(10 ** 9),
           "--sample-every", str(10 ** 9), "--out", out] + args.train_args + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "log.jsonl")) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rates = [r["it_per_s"] for r in rows if "it_per_s" in r]
    # drop the first window (start-up) and the last (end-of-run checkpoint and samples)
    steady = rates[1:-1]
    if not steady:
        raise SystemExit("too few log windows: raise --steps or lower --log-every")
    return statistics.mean(steady)


def print_flops(args, rates):
    """Achieved GFLOP/s of each configuration and its share of the GEMM rate."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from profile_step import gemm_gflops, step_flops

    from deformgan.config import build_config
    cfg, _ = build_config(["--preset", args.preset, "--allow-random-vgg"] + args.train_args)
    gflop = step_flops(cfg) / 1e9
    threads = torch.get_num_threads()
    peak = gemm_gflops(threads)
    print(f"# one step: {gflop:.3f} GFLOP (flop_counter); fp32 GEMM rate {peak:.0f} GFLOP/s on {threads} threads")
    for name, v in rates.items():
        achieved = statistics.mean(v) * gflop
        print(f"# {name}: {achieved:.2f} GFLOP/s achieved, {100 * achieved / peak:.0f}% of the GEMM rate")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=13)
    ap.add_argument("--log-every", type=int, default=4)
    ap.add_argument("--no-flops", action="store_true", help="skip the GFLOP/s and peak-share lines")
    ap.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: more options for both commands")
    args = ap.parse_args(argv)
    args.train_args = [a for a in args.train_args if a != "--"]
    work = tempfile.mkdtemp(prefix="bench_cli_")
    rates = {name: [] for name in CONFIGS}
    print(f"# python -m deformgan.train --preset {args.preset} --allow-random-vgg {' '.join(args.train_args)} "
          f"--steps {args.steps} --log-every {args.log_every}; steps/s from log.jsonl, first and last window dropped")
    print("| round | default steps/s | float32 steps/s | reference steps/s | default / reference | "
          "float32 / reference |\n|---|---|---|---|---|---|")
    for i in range(args.rounds):
        for name, extra in CONFIGS.items():
            rates[name].append(run_once(extra, args, os.path.join(work, f"{name}{i}")))
        d, f, r = rates["default"][-1], rates["float32"][-1], rates["reference"][-1]
        print(f"| {i + 1} | {d:.3f} | {f:.3f} | {r:.3f} | {d / r:.2f}x | {f / r:.2f}x |", flush=True)
    for name, v in rates.items():
        print(f"# {name}: mean {statistics.mean(v):.3f} steps/s, range {min(v):.3f}-{max(v):.3f}")
    for name in ("default", "float32"):
        ratios = [a / r for a, r in zip(rates[name], rates["reference"])]
        mean_ratio = statistics.mean(rates[name]) / statistics.mean(rates["reference"])
        print(f"# {name} / reference: {mean_ratio:.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f}x)")
    if not args.no_flops:
        print_flops(args, rates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
