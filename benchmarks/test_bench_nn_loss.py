"""nn_loss: the reference against each compiled backend, forward and forward + backward
(``pytest benchmarks/test_bench_nn_loss.py --benchmark-only``; options in conftest.py)."""
import pytest

from conftest import PROVIDERS, bench_operator


@pytest.mark.parametrize("pass_", ["forward", "both"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_nn_loss(benchmark, bench_config, provider, pass_):
    bench_operator(benchmark, bench_config, "nn_loss", provider, pass_)
