"""part_affine_warp: the reference against each compiled backend, forward and forward + backward
(``pytest benchmarks/test_bench_part_affine_warp.py --benchmark-only``; options in conftest.py)."""
import pytest

from conftest import PROVIDERS, bench_operator


@pytest.mark.parametrize("pass_", ["forward", "both"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_part_affine_warp(benchmark, bench_config, provider, pass_):
    bench_operator(benchmark, bench_config, "part_affine_warp", provider, pass_)
