"""Hypothesis fuzzing of the Triton kernels (in the interpreter) against the
reference: the same properties as tests/test_fuzz_ops.py, fewer examples (the
interpreter is slow), tiny sizes."""
import os
import sys

import pytest
from hypothesis import given

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import deformgan_ops as D  # noqa: E402
import fuzz_ops as F  # noqa: E402

pytestmark = pytest.mark.skipif("triton" not in D.available_backends("cpu"),
                                reason="triton is not installed")


@F.fuzz_settings(40)
@given(case=F.warp_case(max_side=4))
def test_fuzz_part_affine_warp_triton(case):
    F.check_part_affine_warp("triton", case)


@F.fuzz_settings(40)
@given(case=F.nn_loss_case(max_side=4))
def test_fuzz_nn_loss_triton(case):
    F.check_nn_loss("triton", case)


@F.fuzz_settings(25)
@given(case=F.heatmaps_case(max_side=4))
def test_fuzz_keypoint_heatmaps_triton(case):
    F.check_keypoint_heatmaps("triton", case)
