"""pytest-benchmark suite: one module per operator and one for the training step, each
comparing the providers (the reference against every compiled backend of the device).

    pip install pytest-benchmark
    pytest benchmarks/ --benchmark-only                              # CPU, full size
    pytest benchmarks/ --benchmark-only --bench-device cuda          # GPU providers
    pytest benchmarks/ --benchmark-only --benchmark-autosave         # save the run (.benchmarks/)
    pytest benchmarks/ --benchmark-only --benchmark-compare          # against the last saved run
    pytest benchmarks/ --benchmark-only --benchmark-json out.json    # JSON

Not part of CI's test command (``tests/`` only); CI runs this suite once at tiny sizes
(``--bench-tiny``, tests/test_benchmarks.py) so it cannot rot. Besides pytest-benchmark's
own table (grouped per operator and pass), the end of the run prints the ratio table of
bench_ops.py: each provider's median against the reference's, and against the
memory-traffic floor (roofline.traffic_bytes over the copy bandwidth measured once).
"""
import argparse
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import deformgan_ops as D  # noqa: E402
from bench_ops import clear_grads, make_case  # noqa: E402
from roofline import measure_bandwidth, traffic_bytes  # noqa: E402

_RESULTS = {}  # (group, provider) -> (median s, floor s or None)


def pytest_addoption(parser):
    group = parser.getgroup("deformgan benchmarks")
    group.addoption("--bench-device", default="cpu", choices=["cpu", "cuda"])
    group.addoption("--bench-tiny", action="store_true", help="tiny sizes, one round (a smoke run)")
    group.addoption("--bench-rounds", type=int, default=5)
    group.addoption("--bench-threads", type=int, default=2, help="torch CPU threads")
    group.addoption("--bench-channels-last", action="store_true",
                    help="part_affine_warp's features channels-last (bench_ops.py --channels-last)")


@pytest.fixture(scope="session")
def bench_config(request):
    o = request.config.option
    device = torch.device(o.bench_device)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda: no GPU here")
    if device.type == "cpu":
        torch.set_num_threads(o.bench_threads)
    tiny = o.bench_tiny
    size = dict(batch=2, channels=4, height=16, width=8) if tiny else dict(batch=8, channels=64, height=128, width=64)
    args = argparse.Namespace(parts=10, kernel_size=3, channels_last=o.bench_channels_last, **size)
    return argparse.Namespace(device=device, args=args, tiny=tiny, rounds=1 if tiny else o.bench_rounds,
                              bandwidth=measure_bandwidth(device, mib=16 if tiny else 256))


# Every provider, as test parameters; the ones an operator lacks or this machine cannot
# run are skipped with the reason.
PROVIDERS = ["reference", "cpu", "cuda", "triton"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def skip_unavailable(provider, device):
    """Skip the benchmark when ``provider`` cannot run on ``device`` here."""
    if provider != "reference" and provider not in D.available_backends(device.type):
        pytest.skip(f"{provider} is not available for {device.type} tensors here")


def _check_provider(op, provider, device):
    if provider not in D.operator(op).backends():
        pytest.skip(f"{op} has no {provider} kernel")
    skip_unavailable(provider, device)


def bench_geometry(benchmark, bench_config, op, provider):
    """Time ``part_masks`` (the target pose's ten masks at full size) or ``part_affines``
    (the ten affines of a pose pair) for a batch of real Market-1501 pose pairs."""
    from bench_geometry import poses
    device, args = bench_config.device, bench_config.args
    _check_provider(op, provider, device)
    n = args.batch * (1 if bench_config.tiny else 8)
    src, tgt = (k.to(device) for k in poses(n))
    if op == "part_masks":
        def run():
            D.part_masks(tgt, args.height, args.width, backend=provider)
            _sync(device)
    else:
        def run():
            D.part_affines(src, tgt, backend=provider)
            _sync(device)
    benchmark.group = f"{op} forward"
    benchmark.extra_info.update(provider=provider, device=str(device), pairs=n, height=args.height, width=args.width)
    benchmark.pedantic(run, rounds=bench_config.rounds, warmup_rounds=0 if bench_config.tiny else 1, iterations=1)
    record(benchmark, provider)


def bench_operator(benchmark, bench_config, op, provider, pass_):
    """Time one pass (``forward`` or ``both`` = forward + backward) of ``op`` on
    ``provider``, in pytest-benchmark's group ``"<op> <pass>"``."""
    device, args = bench_config.device, bench_config.args
    _check_provider(op, provider, device)
    inputs, call = make_case(op, device, torch.float32, args)
    out = call(provider)
    grad = torch.randn_like(out)

    def forward():
        with torch.no_grad():
            call(provider)
        _sync(device)

    def both():
        clear_grads(inputs)
        call(provider).backward(grad)
        _sync(device)

    benchmark.group = f"{op} {pass_}"
    benchmark.extra_info.update(provider=provider, device=str(device), **vars(args))
    benchmark.pedantic(forward if pass_ == "forward" else both, rounds=bench_config.rounds,
                       warmup_rounds=0 if bench_config.tiny else 1, iterations=1)
    needs = (True,) if op == "keypoint_heatmaps" else (True, False, False, False)
    floor = traffic_bytes(op, pass_, args.batch, args.channels, args.height, args.width, args.parts,
                          needs=needs) / (bench_config.bandwidth * 1e9)
    record(benchmark, provider, floor)


def record(benchmark, provider, floor=None):
    """Keep a benchmark's median for the ratio table printed at the end."""
    if benchmark.stats is not None:
        _RESULTS[(benchmark.group, provider)] = (benchmark.stats.stats.median, floor)


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("deformgan: providers against the reference (median, one run)")
    tr.write_line("| group | provider | median ms | speed-up vs reference | x floor |")
    tr.write_line("|---|---|---|---|---|")
    for (group, provider), (t, floor) in sorted(_RESULTS.items(), key=lambda kv: (kv[0][0], kv[0][1] != "reference")):
        ref = _RESULTS.get((group, "reference"))
        ratio = f"{ref[0] / t:.1f}x" if ref else "-"
        xf = f"{t / floor:.0f}x" if floor else "-"
        tr.write_line(f"| {group} | {provider} | {t * 1e3:.2f} | {ratio} | {xf} |")
