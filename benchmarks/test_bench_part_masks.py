"""part_masks: the reference against each compiled backend on a batch of real Market-1501
pose pairs (``pytest benchmarks/test_bench_part_masks.py --benchmark-only``; options in
conftest.py). Not differentiable: forward only."""
import pytest

from conftest import PROVIDERS, bench_geometry


@pytest.mark.parametrize("provider", PROVIDERS)
def test_part_masks(benchmark, bench_config, provider):
    bench_geometry(benchmark, bench_config, "part_masks", provider)
