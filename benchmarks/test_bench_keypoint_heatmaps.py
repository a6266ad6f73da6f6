"""keypoint_heatmaps: the reference against each compiled backend, forward and forward + backward
(``pytest benchmarks/test_bench_keypoint_heatmaps.py --benchmark-only``; options in conftest.py)."""
import pytest

from conftest import PROVIDERS, bench_operator


@pytest.mark.parametrize("pass_", ["forward", "both"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_keypoint_heatmaps(benchmark, bench_config, provider, pass_):
    bench_operator(benchmark, bench_config, "keypoint_heatmaps", provider, pass_)
