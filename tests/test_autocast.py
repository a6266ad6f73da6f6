"""The operators under torch.autocast: each tensor argument becomes what its
operator's rule says (the autocast dtype, or float32), float64 is left alone, and the
operator then runs without autocast. The oracle is the same call outside autocast on
arguments cast by hand from the rule written out here, not from the code under test."""
import warnings

import pytest
import torch

import deformgan_ops as D
from deformgan import engine
from deformgan.config import TrainConfig
from deformgan.models import Generator
from helpers import warp_inputs

BF16 = torch.bfloat16
F32 = torch.float32
# The rules, written out independently of deformgan_ops/ops/*.py: per positional tensor.
RULES = {
    "part_affine_warp": (BF16, F32, BF16, F32),  # features, theta, masks, offsets
    "keypoint_heatmaps": (F32,),
    "nn_loss": (F32, F32),
    "part_masks": (F32,),
    "part_affines": (F32, F32),
}
BACKENDS = [b for b in D.available_backends("cpu") if b in ("reference", "cpu")]


def by_hand(args, rule):
    return tuple(a.to(r) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a, r in zip(args, rule)) + tuple(args[len(rule):])


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def test_the_rules_cover_every_operator():
    assert set(RULES) == set(D.operators())
    for op in D.operators():
        assert len(D.operator(op).autocast) == len(RULES[op])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", D.operators())
def test_public_operator_under_cpu_autocast_casts_by_its_rule(op, backend):
    decl = D.operator(op)
    for args, kwargs in decl.sample_inputs(torch.device("cpu"), torch.float32):
        with torch.autocast("cpu", dtype=BF16):
            got = as_tuple(decl.public(*args, **kwargs, backend=backend))
        want = as_tuple(decl.public(*by_hand(args, RULES[op]), **kwargs, backend=backend))
        for g, w in zip(got, want):
            assert g.dtype == w.dtype, f"{op}: dtype {g.dtype}, the rule gives {w.dtype}"
            assert torch.equal(g, w) or (g.is_floating_point() and torch.equal(g.isnan(), w.isnan())
                                         and torch.equal(g.nan_to_num(), w.nan_to_num())), op


@pytest.mark.parametrize("op", D.operators())
def test_float64_is_left_alone_under_autocast(op):
    decl = D.operator(op)
    args, kwargs = decl.sample_inputs(torch.device("cpu"), torch.float64)[0]
    with torch.autocast("cpu", dtype=BF16):
        got = as_tuple(decl.public(*args, **kwargs, backend="reference"))
    want = as_tuple(decl.public(*args, **kwargs, backend="reference"))
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g, w)


def test_autocast_on_another_device_changes_nothing():
    f, theta, masks, off = warp_inputs(N=1, C=2, H=5, W=4, P=2, offsets=True)
    with torch.autocast("cuda", dtype=torch.float16, enabled=torch.cuda.is_available()):
        out = D.part_affine_warp(f, theta, masks, off, backend="reference")
    assert out.dtype == torch.float32
    assert torch.equal(out, D.part_affine_warp(f, theta, masks, off, backend="reference"))


@pytest.mark.skipif("cpu" not in D.available_backends("cpu"), reason="C++ kernels not built")
def test_compiled_ops_have_the_rule_at_the_dispatcher():
    """torch.ops.deformgan_ops.<op> called directly (not through the public function)."""
    f, theta, masks, off = warp_inputs(N=2, C=3, H=6, W=5, P=3, offsets=True)
    with torch.autocast("cpu", dtype=BF16):
        out, winner = torch.ops.deformgan_ops.part_affine_warp(f, theta, masks, off)
    want, want_w = torch.ops.deformgan_ops.part_affine_warp(f.to(BF16), theta, masks.to(BF16), off)
    assert out.dtype == BF16 and torch.equal(out, want) and torch.equal(winner, want_w)
    g, t = torch.randn(1, 3, 5, 6).to(BF16), torch.randn(1, 3, 5, 6)
    with torch.autocast("cpu", dtype=BF16):
        d, _ = torch.ops.deformgan_ops.nn_loss(g, t, 3)
    assert d.dtype == F32 and torch.equal(d, torch.ops.deformgan_ops.nn_loss(g.float(), t, 3)[0])
    kp = torch.rand(2, 18, 2).to(BF16) * 5
    with torch.autocast("cpu", dtype=BF16):
        h = torch.ops.deformgan_ops.keypoint_heatmaps(kp, 7, 5, 2.0)
    assert h.dtype == F32 and torch.equal(h, torch.ops.deformgan_ops.keypoint_heatmaps(kp.float(), 7, 5, 2.0))


def test_gradients_under_autocast_come_back_in_each_inputs_dtype():
    f, theta, masks, off = (t.requires_grad_() for t in warp_inputs(N=2, C=3, H=6, W=5, P=3, offsets=True))
    with torch.autocast("cpu", dtype=BF16):
        out = D.part_affine_warp(f, theta, masks, off)
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == F32 and torch.isfinite(t.grad).all()
               for t in (f, theta, masks, off))


def test_generator_under_cpu_autocast_warps_bfloat16_features_with_float32_geometry(monkeypatch):
    """The generator hands the warp its features as the encoder made them (bf16 from a
    convolution under autocast; float32 after a norm layer, which autocast keeps in
    float32), with no float32 copy, beside float32 theta, masks and offsets; the warp
    returns the autocast dtype."""
    seen = []
    real = D.part_affine_warp

    def spy(features, theta, masks, offsets=None, **kw):
        out = real(features, theta, masks, offsets, **kw)
        seen.append((features.dtype, theta.dtype, masks.dtype, None if offsets is None else offsets.dtype))
        assert out.dtype == BF16  # the rule: features in the autocast dtype
        return out

    monkeypatch.setattr(D, "part_affine_warp", spy)
    G = Generator("parts+offsets", width_mult=1 / 16)
    kp = torch.tensor([[32.0, 20], [32, 34], [22, 34], [20, 52], [18, 70], [42, 34], [44, 52], [46, 70],
                       [26, 72], [26, 98], [26, 124], [38, 72], [38, 98], [38, 124], [30, 18], [34, 18],
                       [28, 20], [36, 20]]).unsqueeze(0)
    with torch.autocast("cpu", dtype=BF16):
        out = G(torch.rand(1, 3, 128, 64) * 2 - 1, kp, kp.flip(0))
    assert torch.isfinite(out.float()).all()
    assert len(seen) == 4 and seen[0][0] == BF16, seen  # level 0 follows a convolution directly
    assert all(s[1:] == (F32, F32, F32) for s in seen), seen


class _Cfg:
    def __init__(self, amp, cpu_amp):
        self.amp, self.cpu_amp = amp, cpu_amp


@pytest.mark.parametrize("native", [True, False])
def test_training_autocast_on_the_cpu_only_with_native_bf16(monkeypatch, native):
    """bf16 autocast costs 85x on a CPU without native bf16 (measured, AVX2: one
    128-channel 3x3 conv fwd+bwd 42 ms float32, 3.6 s bf16): it is the default only
    where the CPU has it, and --cpu-amp there gets a warning saying why training stays
    in float32."""
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert TrainConfig().cpu_amp is None  # the default: the CPU decides
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default says nothing where it stays float32
        assert engine.autocast_enabled(_Cfg(True, None), cpu) is native
    assert engine.autocast_enabled(_Cfg(False, None), cpu) is False
    assert engine.autocast_enabled(_Cfg(True, False), cpu) is False
    assert engine.autocast_enabled(_Cfg(False, True), cpu) is False
    assert engine.autocast_enabled(_Cfg(True, False), cuda) is True
    assert engine.autocast_enabled(_Cfg(False, False), cuda) is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert engine.autocast_enabled(_Cfg(True, True), cpu) is native
    assert any("no native bfloat16" in str(w.message) for w in caught) is (not native)
