"""One training iteration of the full-size Deformable GAN (the ``full`` preset: deformable
skips, NN loss on VGG19 relu1_2 with random weights, batch 4, 128x64): geometry
rendering, generator forward, a discriminator step and a generator step, with the
operators on the reference against the compiled backend of the device
(``pytest benchmarks/test_bench_train_step.py --benchmark-only``). bench_train.py runs
the same iteration with each backend in a fresh process and its peak memory."""
import pytest

from bench_train import build, iteration, make_batch
from conftest import _sync, record, skip_unavailable


@pytest.mark.parametrize("provider", ["reference", "cpu", "cuda", "triton"])
def test_train_step(benchmark, bench_config, provider):
    device = bench_config.device
    skip_unavailable(provider, device)
    width, batch = (1 / 16, 1) if bench_config.tiny else (1.0, 4)
    G, Dn, loss, opt_g, opt_d = build("full", provider, width_mult=width)
    G, Dn, loss = G.to(device), Dn.to(device), loss.to(device)
    data = tuple(t.to(device) for t in make_batch(batch))

    def step():
        iteration(G, Dn, loss, opt_g, opt_d, data)
        _sync(device)

    benchmark.group = "train step (full preset)"
    benchmark.extra_info.update(provider=provider, device=str(device), batch=batch, width_mult=width)
    benchmark.pedantic(step, rounds=bench_config.rounds, warmup_rounds=0 if bench_config.tiny else 1, iterations=1)
    record(benchmark, provider)
