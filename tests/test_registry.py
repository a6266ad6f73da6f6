"""Every operator of the registry, every backend that can run here: one test body per
behaviour (forward and gradients against the reference, the same error for a backend an
operator lacks, the process-wide backend honoured), parametrised from the registry."""
import dataclasses
import glob
import os

import pytest
import torch
import torch._functorch.config
import torch._inductor.config

import deformgan_ops as D
from deformgan_ops import _registry
from deformgan_ops import backend as B
from helpers import assert_fake_strides_match

OPS = D.operators()
CPU_BACKENDS = [b for b in D.available_backends("cpu") if b != "reference"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cases(op, dtype):
    return D.operator(op).sample_inputs(torch.device("cpu"), dtype)


def floating(args):
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]


def call(op, args, kwargs, backend):
    out = D.operator(op).public(*args, **kwargs, backend=backend)
    return out if isinstance(out, tuple) else (out,)


def test_the_registry_holds_the_five_operators_in_order():
    assert OPS == ("part_affine_warp", "keypoint_heatmaps", "nn_loss", "part_masks", "part_affines")


def test_each_operator_s_backends_and_the_registry_s_refusals(monkeypatch):
    with_triton = ("part_affine_warp", "keypoint_heatmaps", "nn_loss")
    for op in OPS:
        assert D.operator(op).backends() == ("reference", "cpu", "cuda") + (("triton",) if op in with_triton else ())
    assert _registry.names() == OPS
    with pytest.raises(ValueError) as err:
        _registry.get("warp")
    assert str(err.value) == f"unknown operator 'warp'; the operators are {OPS}"
    assert err.value.__suppress_context__  # not chained to the KeyError
    twice = dataclasses.replace(_registry.get("nn_loss"))
    monkeypatch.setattr(_registry, "_OPS", dict(_registry._OPS))  # declared into a copy, restored after
    with pytest.raises(RuntimeError) as err:
        _registry.declare(twice)
    assert str(err.value) == "operator 'nn_loss' is declared twice"
    other = dataclasses.replace(twice, name="nn_loss_again")
    assert _registry.declare(other) is other and _registry.get("nn_loss_again") is other
    assert _registry.names() == OPS + ("nn_loss_again",)


def test_the_out_overloads_have_fake_kernels():
    """keypoint_heatmaps.out and part_masks.out write into ``out`` and return nothing:
    under FakeTensorMode (torch.compile's tracing) they run through their fake kernels."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    if not D.extension_loaded():
        pytest.skip("the compiled extension is not loaded")
    with FakeTensorMode():
        kp = torch.rand(2, 18, 2) * 8
        heat = torch.empty(2, 18, 8, 6)
        assert torch.ops.deformgan_ops.keypoint_heatmaps.out(kp, 8, 6, 1.5, out=heat) is None
        masks = torch.empty(2, 10, 8, 6)
        assert torch.ops.deformgan_ops.part_masks.out(kp, 8, 6, 1.0, None, out=masks) is None
        assert heat.shape == (2, 18, 8, 6) and masks.shape == (2, 10, 8, 6)


def test_cpu_any_float_upcasts_low_precision_and_casts_the_results_back():
    """The wrapper of a float32/float64-only CPU kernel: float16/bfloat16 tensor
    arguments go in as float32 (other arguments as they are), and floating results
    come back in the dtype of the first low-precision argument."""
    seen = []

    def kernel(*args):
        seen.append(args)
        x = args[0]
        return x * 2, torch.ones(2, dtype=torch.int64)

    wrapped = _registry.cpu_any_float(kernel)
    full, idx = torch.tensor([1.5, 2.25]), torch.tensor([3, 4])
    out = wrapped(full, idx, 0.5)
    assert seen[-1][0] is full and seen[-1][1] is idx and seen[-1][2] == 0.5  # nothing to do: passed as they are
    assert out[0].dtype == torch.float32
    low = torch.tensor([1.5, 2.25], dtype=torch.bfloat16)
    half = torch.tensor([0.5], dtype=torch.float16)
    out = wrapped(low, idx, half, 0.5, torch.tensor([1.0], dtype=torch.float64))
    args = seen[-1]
    assert [a.dtype if isinstance(a, torch.Tensor) else a for a in args] == [
        torch.float32, torch.int64, torch.float32, 0.5, torch.float32]
    assert args[1] is idx and torch.equal(args[0], low.float())
    assert out[0].dtype == torch.bfloat16 and torch.equal(out[0], (low.float() * 2).bfloat16())  # the first one's
    assert out[1].dtype == torch.int64 and torch.equal(out[1], torch.ones(2, dtype=torch.int64))
    single = _registry.cpu_any_float(lambda x, n: x + n)
    r = single(half, torch.tensor([2], dtype=torch.int32))
    assert r.dtype == torch.float16 and torch.equal(r, torch.tensor([2.5], dtype=torch.float16))
    as_int = _registry.cpu_any_float(lambda x: (x > 1).to(torch.int32))
    assert as_int(low).dtype == torch.int32  # a non-floating result is not cast


@pytest.mark.parametrize("op", OPS)
def test_each_operator_is_exposed_under_its_one_name(op):
    decl = D.operator(op)
    assert getattr(D, op) is decl.public and decl.public.__name__ == op
    assert callable(getattr(D.reference, op))
    if D.extension_loaded():
        assert D.has_compiled_kernel(op, "cpu")
    if decl.triton:
        assert os.path.exists(os.path.join(ROOT, "deformgan_ops", "triton", f"{op}.py"))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("op", OPS)
def test_forward_matches_the_reference(op, dtype, backend):
    for args, kwargs in cases(op, dtype):
        got, want = call(op, args, kwargs, backend), call(op, args, kwargs, "reference")
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            torch.testing.assert_close(g, w, equal_nan=True, atol=1e-5 if dtype == torch.float32 else 1e-10,
                                       rtol=1e-5 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("op", [op for op in OPS if D.operator(op).differentiable])
def test_every_gradient_matches_the_reference(op, backend):
    for args, kwargs in cases(op, torch.float64):
        idx = floating(args)

        def grads(which):
            leaves = list(args)
            for i in idx:
                leaves[i] = args[i].clone().requires_grad_()
            outs = call(op, leaves, kwargs, which)
            weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(k), dtype=o.dtype)
                       for k, o in enumerate(outs)]
            loss = sum((torch.nan_to_num(o) * w).sum() for o, w in zip(outs, weights))
            return torch.autograd.grad(loss, [leaves[i] for i in idx], allow_unused=True)

        for g, w in zip(grads(backend), grads("reference")):
            torch.testing.assert_close(g, w, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("op", OPS)
def test_a_backend_the_operator_lacks_gives_the_same_error(op, monkeypatch):
    args, kwargs = cases(op, torch.float32)[0]
    if not D.operator(op).triton:
        with pytest.raises(D.BackendUnavailable,
                           match=rf"^deformgan_ops\.{op}: backend 'triton' is not available: this operator has no "
                                 r"triton kernel \(its backends: reference, cpu, cuda\)$"):
            D.operator(op).public(*args, **kwargs, backend="triton")
    monkeypatch.setattr(B, "has_compiled_kernel", lambda name, dev: False)
    with pytest.raises(D.BackendUnavailable, match=rf"^deformgan_ops\.{op}: backend 'cpu' is not available: "):
        D.operator(op).public(*args, **kwargs, backend="cpu")
    with pytest.raises(RuntimeError, match=rf"^deformgan_ops\.{op}: backend 'cuda' needs cuda tensors"):
        D.operator(op).public(*args, **kwargs, backend="cuda")


@pytest.mark.parametrize("op", OPS)
def test_the_process_wide_backend_reaches_every_operator(op, monkeypatch):
    calls = []
    decl = D.operator(op)

    def spy(*a):
        calls.append(op)
        return decl.reference(*a)

    monkeypatch.setitem(_registry._OPS, op, dataclasses.replace(decl, reference=spy))
    args, kwargs = cases(op, torch.float32)[0]
    with D.use_backend("reference"):
        decl.public(*args, **kwargs)
    assert calls == [op]
    if CPU_BACKENDS:
        with D.use_backend("cpu"):
            decl.public(*args, **kwargs)
        assert calls == [op]


@pytest.mark.parametrize("op", OPS)
def test_an_operator_name_is_written_in_at_most_nine_files(op):
    """The redesign's measure: csrc/ + deformgan_ops/ (sources, not build outputs)."""
    files = [f for pattern in ("csrc/**/*.h", "csrc/**/*.cpp", "csrc/**/*.cu", "csrc/**/*.cuh",
                               "deformgan_ops/**/*.py")
             for f in glob.glob(os.path.join(ROOT, pattern), recursive=True)]
    holding = sorted(os.path.relpath(f, ROOT) for f in files if op in open(f, encoding="utf-8").read())
    assert len(holding) <= 9, holding


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_the_fake_kernels_give_the_strides_the_kernels_return(op, backend):
    """torch.compile plans with the fake kernels' strides and inductor asserts them on the
    real outputs: with channels-last features a fake that said ``empty_like(features)``
    (channels-last) beside a kernel returning a contiguous gradient stopped every compiled
    training step with "expected ... stride" (the backward fakes of the three
    differentiable operators did)."""
    assert_fake_strides_match(op, backend)


def _compiled_calls():
    """(name, forward's inputs, the backward's arguments from (inputs, forward's output,
    gradients asked for), number of gradients) of each compiled op with a backward."""
    from helpers import warp_inputs
    warp = warp_inputs(N=2, C=3, H=6, W=5, P=3, offsets=True)
    kp = torch.tensor([[[1.0, 2.0], [-1.0, -1.0], [3.5, 4.0]]]).expand(2, 3, 2).contiguous()
    return [("part_affine_warp", warp, lambda a, out, need: (out[0], *a, out[1], need), 4),
            ("nn_loss", (torch.randn(2, 3, 6, 5), torch.randn(2, 3, 6, 5), 3),
             lambda a, out, need: (out[0], a[0], a[1], out[1], a[2], need), 2),
            ("keypoint_heatmaps", (kp, 7, 6, 2.0), lambda a, out, need: (out, *a), 1)]


@pytest.mark.skipif(not CPU_BACKENDS, reason="the compiled CPU kernels are not built")
def test_the_fake_kernels_give_each_outputs_shape_dtype_and_device_for_every_gradient_subset():
    """Fake (forward and backward) against the real CPU kernels for every subset of
    gradients asked for (a gradient not asked for is an empty [0] tensor), and on fake
    CUDA tensors (no GPU needed) every output on the inputs' device."""
    import itertools
    from torch._subclasses.fake_tensor import FakeTensorMode

    def described(outs):
        return [(tuple(o.shape), o.dtype, tuple(o.stride())) for o in as_tuple(outs)]

    def as_tuple(outs):
        return tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)

    for name, inputs, backward_args, n_grads in _compiled_calls():
        forward = getattr(torch.ops.deformgan_ops, name)
        backward = getattr(torch.ops.deformgan_ops, "_" + name + "_backward")
        subsets = [list(m) for m in itertools.product([False, True], repeat=n_grads)] if n_grads > 1 else [None]
        real_out = forward(*inputs)
        for need in subsets:
            real = backward(*backward_args(inputs, real_out, need))
            for device in ("cpu", "cuda"):
                mode = FakeTensorMode()
                with mode:
                    fake_in = [mode.from_tensor(a).to(device) if isinstance(a, torch.Tensor) else a for a in inputs]
                    fake_out = forward(*fake_in)
                    fake = backward(*backward_args(fake_in, fake_out, need))
                assert described(fake_out) == described(real_out), (name, device)
                assert described(fake) == described(real), (name, need, device)
                assert all(o.device.type == device for o in as_tuple(fake_out) + as_tuple(fake)), (name, need, device)


@pytest.mark.skipif(not CPU_BACKENDS, reason="the compiled CPU kernels are not built")
def test_the_backward_kernel_is_asked_only_for_the_gradients_autograd_needs():
    """The output mask the compiled backward receives: exactly the inputs that require
    grad (training asks for the features' gradient only, and the warp's backward then
    reads no features); offsets given but not trained are not asked for."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.masks = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.name().startswith("deformgan_ops::_") and func.name().endswith("_backward"):
                self.masks.append((func.name().split("::_")[1], list(args[-1])))
            return func(*args, **(kwargs or {}))

    calls = {name: inputs for name, inputs, _, _ in _compiled_calls()}
    f, theta, masks, off = calls["part_affine_warp"]
    gen, tgt, _ = calls["nn_loss"]
    cases = [("part_affine_warp", (f, theta, masks, off), (True, False, False, False)),
             ("part_affine_warp", (f, theta, masks, off), (False, True, False, True)),
             ("part_affine_warp", (f, theta, masks, None), (False, False, True, False)),
             ("nn_loss", (gen, tgt, 3), (True, False)),
             ("nn_loss", (gen, tgt, 3), (False, True))]
    for op, args, wanted in cases:
        leaves = [a.detach().requires_grad_(w) if isinstance(a, torch.Tensor) else a for a, w in zip(args, wanted)]
        out = D.operator(op).public(*leaves, backend="cpu")
        with Record() as rec:
            out.sum().backward()
        assert rec.masks == [(op + "_backward", list(wanted))], (op, wanted, rec.masks)


@pytest.mark.skipif(not CPU_BACKENDS, reason="the compiled CPU kernels are not built")
@pytest.mark.parametrize("op", ["part_affine_warp", "nn_loss"])
def test_a_compiled_step_with_channels_last_features_runs_under_inductor(op):
    """The case the stride test stands for, end to end: inductor, channels-last features
    (as a channels-last network gives them), forward and backward; the gradients equal
    eager mode's. (With the old fakes both raised "expected size ... stride".)"""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 9, 7, generator=g).contiguous(memory_format=torch.channels_last)
    theta = torch.tensor([[1.0, 0.1, 0.3], [0.0, 0.9, 0.2]]).expand(2, 2, 2, 3).clone()
    masks = torch.rand(2, 2, 9, 7, generator=g)
    target = torch.randn(2, 3, 9, 7, generator=g).contiguous(memory_format=torch.channels_last)

    def step(f):
        if op == "part_affine_warp":
            warped = D.part_affine_warp(f, theta, masks, backend="cpu")
            return (warped * warped).sum()
        return D.nn_loss(f * 2, target, 3, backend="cpu") * 3

    def grad(fn):
        f = feats.clone().requires_grad_()
        fn(f).backward()
        return f.grad

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="inductor", fullgraph=True)
    # No on-disk caches: a graph compiled earlier with other fake kernels would be reused.
    with torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        torch.testing.assert_close(grad(compiled), grad(step), rtol=0, atol=0)
