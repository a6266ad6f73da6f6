"""Hypothesis fuzzing of the compiled CPU kernels against the reference (see
tests/fuzz_ops.py for what is generated and compared)."""
from hypothesis import given

import fuzz_ops as F
from conftest import requires_cpu_kernels

pytestmark = requires_cpu_kernels


@F.fuzz_settings(150)
@given(case=F.warp_case())
def test_fuzz_part_affine_warp(case):
    F.check_part_affine_warp("cpu", case)


@F.fuzz_settings(150)
@given(case=F.nn_loss_case())
def test_fuzz_nn_loss(case):
    F.check_nn_loss("cpu", case)


@F.fuzz_settings(100)
@given(case=F.heatmaps_case())
def test_fuzz_keypoint_heatmaps(case):
    F.check_keypoint_heatmaps("cpu", case)


@F.fuzz_settings(60)
@given(case=F.poses_case())
def test_fuzz_pose_geometry(case):
    F.check_pose_geometry("cpu", case)
