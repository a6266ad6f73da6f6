"""deformgan_ops._validate: the checks every operator's Python side runs before a kernel
sees its arguments. Each refusal's exact message, each boundary, what passes untouched."""
import numpy as np
import torch

import deformgan_ops as D
from deformgan_ops import _validate as V
from helpers import assert_refused



def test_shape_of():
    assert V.shape_of(torch.empty(2, 0, 3)) == "[2, 0, 3]" and V.shape_of(torch.tensor(1.0)) == "[]"


def test_size_arg():
    assert V.size_arg("height", 1) == 1 and type(V.size_arg("height", np.int64(7))) is int
    assert V.size_arg("height", np.int64(7)) == 7
    for bad in (0, -3, True, False, 2.0, "4", None):
        assert_refused(ValueError, f"height must be a positive int, got {bad!r}", V.size_arg, "height", bad)


def test_positive_arg():
    assert V.positive_arg("sigma", 1) == 1.0 and type(V.positive_arg("sigma", 1)) is float
    assert V.positive_arg("sigma", np.float32(0.5)) == 0.5 and V.positive_arg("sigma", 1e-300) == 1e-300
    for bad in (0, 0.0, -1.5, True, float("inf"), float("nan"), "2", None, 1j):
        assert_refused(ValueError, f"sigma must be a positive finite number, got {bad!r}", V.positive_arg, "sigma", bad)


def test_check_no_overlap():
    a = torch.zeros(4, 3)
    b = torch.zeros(4, 3)
    V.check_no_overlap(a, "out", [(b, "features"), (None, "masks")])  # separate storages pass
    assert_refused(ValueError, "out must not share memory with features: the operator writes out while it reads "
                               "features; pass a separate buffer", V.check_no_overlap, a[1:], "out",
                   [(b, "masks"), (a, "features")])
    one_byte = torch.zeros(1, dtype=torch.uint8)
    assert_refused(ValueError, "out must not share memory with x: the operator writes out while it reads x; pass a "
                               "separate buffer", V.check_no_overlap, one_byte, "out", [(one_byte.view(1), "x")])
    e = torch.zeros(0)
    V.check_no_overlap(e, "out", [(e, "x")])  # empty: nothing is written
    V.check_no_overlap(a.to("meta"), "out", [(a, "x")])  # another device: never the same memory


def test_check_tensor():
    V.check_tensor(torch.zeros(2, 3, dtype=torch.float16), "theta", 2, "[N, 2]")
    assert_refused(TypeError, "theta must be a torch.Tensor [N, P, 2, 3], got list", V.check_tensor, [1.0], "theta", 4,
                   "[N, P, 2, 3]")
    assert_refused(ValueError, "theta must be a 4-D tensor [N, P, 2, 3], got shape [2, 3]", V.check_tensor,
                   torch.zeros(2, 3), "theta", 4, "[N, P, 2, 3]")
    assert_refused(TypeError, "theta must be a floating point tensor, got torch.int64", V.check_tensor,
                   torch.zeros(2, 3, dtype=torch.long), "theta", 2, "[N, 2]")


def test_check_like():
    f = torch.zeros(2)
    V.check_like(torch.ones(3), "b", f, "a")
    assert_refused(ValueError, "b must be on the same device as a (cpu), got meta", V.check_like,
                   torch.zeros(2, device="meta"), "b", f, "a")
    assert_refused(TypeError, "b must have the dtype of a (torch.float32), got torch.float64", V.check_like,
                   f.double(), "b", f, "a")


def test_check_companion():
    for low in V.LOW_PRECISION:
        ref = torch.zeros(2, dtype=low)
        V.check_companion(torch.zeros(2, dtype=low), "theta", ref, "features")
        V.check_companion(torch.zeros(2), "theta", ref, "features")  # fp32 geometry beside low precision
        assert_refused(TypeError, f"theta must have the dtype of features ({low}) or float32, got torch.float64",
                       V.check_companion, torch.zeros(2, dtype=torch.float64), "theta", ref, "features")
    ref = torch.zeros(2, dtype=torch.float64)
    assert_refused(TypeError, "theta must have the dtype of features (torch.float64), got torch.float32",
                   V.check_companion, torch.zeros(2), "theta", ref, "features")
    assert_refused(TypeError, "theta must have the dtype of features (torch.float32), got torch.float16",
                   V.check_companion, torch.zeros(2, dtype=torch.float16), "theta", torch.zeros(2), "features")
    assert_refused(ValueError, "theta must be on the same device as features (cpu), got meta", V.check_companion,
                   torch.zeros(2, device="meta"), "theta", ref, "features")
    assert V.LOW_PRECISION == (torch.float16, torch.bfloat16)


def test_check_out():
    ref = torch.zeros(1)
    V.check_out(torch.zeros(2, 3), "out", (2, 3), ref, "keypoints")
    V.check_out(torch.zeros(2, 3), "out", [2, 3], ref, "keypoints")
    assert_refused(TypeError, "out must be a torch.Tensor, got ndarray", V.check_out, np.zeros((2, 3)), "out", (2, 3),
                   ref, "keypoints")
    assert_refused(ValueError, "out must have shape [2, 3], got [3, 2]", V.check_out, torch.zeros(3, 2), "out", (2, 3),
                   ref, "keypoints")
    assert_refused(TypeError, "out must have the dtype of keypoints (torch.float32), got torch.float64", V.check_out,
                   torch.zeros(2, 3, dtype=torch.float64), "out", (2, 3), ref, "keypoints")
    assert_refused(ValueError, "out must be contiguous", V.check_out, torch.zeros(3, 2).t(), "out", (2, 3), ref,
                   "keypoints")
    wants_grad = torch.zeros(2, 3, requires_grad=True)
    assert_refused(RuntimeError, "out: the out= form does not support autograd (out requires grad)", V.check_out,
                   wants_grad, "out", (2, 3), ref, "keypoints")
    with torch.no_grad():
        V.check_out(wants_grad, "out", (2, 3), ref, "keypoints")  # no graph is recorded under no_grad


def test_an_operator_passes_the_messages_on():
    kp = torch.zeros(1, 18, 2)
    assert_refused(ValueError, "height must be a positive int, got 0", D.keypoint_heatmaps, kp, 0, 4, 6.0)
    assert_refused(ValueError, "sigma must be a positive finite number, got nan", D.keypoint_heatmaps, kp, 8, 4,
                   float("nan"))
