"""Input makers and comparison helpers shared by the operator tests."""
import contextlib
import os

import torch

# The real Market-1501 annotation files and two real photos, for the tests that need
# real data: the folder DEFORMGAN_MARKET_DATA names, else a data checkout beside the
# repository. The tests that need it skip with MARKET_DATA_ABSENT when it is not there.
SHARED_MARKET = os.environ.get("DEFORMGAN_MARKET_DATA") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "market")
MARKET_DATA_ABSENT = ("the real Market-1501 annotation files are absent: set DEFORMGAN_MARKET_DATA to the folder "
                      "holding market-annotation-train.csv")


def market_file(name: str) -> str:
    """The path of a real Market-1501 data file (``name`` inside SHARED_MARKET), or the
    calling test skipped with MARKET_DATA_ABSENT when it is not there."""
    import pytest
    path = os.path.join(SHARED_MARKET, name)
    if not os.path.exists(path):
        pytest.skip(MARKET_DATA_ABSENT)
    return path


def assert_refused(exc, message, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises exactly ``exc`` (not a subclass) with exactly ``message``."""
    import pytest
    with pytest.raises(exc) as err:
        fn(*args, **kwargs)
    assert type(err.value) is exc and str(err.value) == message


def warned_at(warning, path):
    """The warning names a line of the file ``path`` (the caller's, by ``stacklevel``).

    Under mutmut every mutated function is called through mutmut's trampoline, one frame
    more, so there the warning names the trampoline; that is accepted (and only that).
    """
    import os
    where = os.path.realpath(warning.filename)
    if os.path.basename(where) == "trampoline.py" and "mutmut" in where.split(os.sep):
        return True
    return where == os.path.realpath(path)


def assert_close_scaled(actual, expected, rtol=1e-4, what=""):
    """max |actual - expected| <= rtol * max(1, max |expected|) (the issue's float32 criterion)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.numel() == 0:
        return
    scale = max(1.0, expected.abs().max().item())
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rtol * scale, f"{what}: max abs difference {err:.3g} > {rtol} * {scale:.3g}"


def warp_inputs(N=2, C=3, H=9, W=7, P=4, Ho=None, Wo=None, dtype=torch.float32, offsets=True,
                zero_masks=True, far=False, seed=0):
    """Random part_affine_warp inputs: near-identity affines (rescaled from the output
    to the input size), masks in (0.2, 1] with part 0 all ones and, optionally, exact
    zeros elsewhere; optionally parts whose samples lie far outside the image."""
    Ho = H if Ho is None else Ho
    Wo = W if Wo is None else Wo
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    theta = torch.zeros(N, P, 2, 3, dtype=torch.float64)
    theta[:, :, 0, 0] = (W - 1) / max(Wo - 1, 1)
    theta[:, :, 1, 1] = (H - 1) / max(Ho - 1, 1)
    theta = theta + 0.15 * torch.randn(N, P, 2, 3, generator=g, dtype=torch.float64)
    theta[:, :, :, 2] += 1.5 * torch.randn(N, P, 2, generator=g, dtype=torch.float64)
    if far and P > 1:
        theta[:, -1, :, 2] = 1e4  # every sample of the last part is far outside
        theta[0, 1, 0, 2] = -50.0
    masks = 0.2 + 0.8 * torch.rand(N, P, Ho, Wo, generator=g, dtype=torch.float64)
    masks[:, 0] = 1.0
    if zero_masks and P > 1:
        masks[:, 1:] *= (torch.rand(N, P - 1, Ho, Wo, generator=g, dtype=torch.float64) > 0.4)
    off = 0.7 * torch.randn(N, 2, Ho, Wo, generator=g, dtype=torch.float64) if offsets else None
    out = [features, theta, masks, off]
    return [t.to(dtype) if t is not None else None for t in out]


def grads_of(fn, inputs, grad_out):
    """Run fn(*inputs) with fresh leaf copies and return (output, [grad of each input or None])."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*leaves)
    need = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, need, grad_out, allow_unused=True)
    it = iter(grads)
    return out.detach(), [next(it) if t is not None else None for t in leaves]


def relayout(t):
    """The same values with other strides: channels-last for 4-D tensors, the last two
    dimensions' strides swapped for 2-D and 3-D ones (keypoints, masks)."""
    if not isinstance(t, torch.Tensor) or t.dim() < 2:
        return t
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def output_and_gradient_strides(op, args, kwargs, backend, mode=None):
    """The strides of every output of ``deformgan_ops.<op>`` and of every floating input's
    gradient, computed for real or, under a FakeTensorMode, by the fake kernels alone."""
    import contextlib

    import deformgan_ops as D
    decl = D.operator(op)
    if mode is not None:
        args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
    idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()
           and decl.differentiable]
    leaves = [a.detach().requires_grad_() if i in idx else a for i, a in enumerate(args)]
    with mode if mode is not None else contextlib.nullcontext():
        outs = decl.public(*leaves, **kwargs, backend=backend)
        outs = outs if isinstance(outs, tuple) else (outs,)
        strides = [tuple(o.stride()) for o in outs]
        if idx:
            loss = sum(o.sum() for o in outs if o.is_floating_point())
            grads = torch.autograd.grad(loss, [leaves[i] for i in idx], allow_unused=True)
            strides += [None if g is None else tuple(g.stride()) for g in grads]
    return strides


def assert_fake_strides_match(op, backend, device="cpu"):
    """The fake kernels give every output and gradient the strides the kernels return,
    for the operator's sample inputs as they are and relaid out (channels-last, swapped)."""
    import deformgan_ops as D
    from torch._subclasses.fake_tensor import FakeTensorMode
    for args, kwargs in D.operator(op).sample_inputs(torch.device(device), torch.float32):
        for layout in (lambda t: t, relayout):
            moved = [layout(a) for a in args]
            real = output_and_gradient_strides(op, moved, kwargs, backend)
            fake = output_and_gradient_strides(op, moved, kwargs, backend, FakeTensorMode())
            assert fake == real, (op, backend, [tuple(a.stride()) for a in moved if isinstance(a, torch.Tensor)])


def help_text(main, capsys) -> str:
    """What a command's ``main(["--help"])`` prints (it must exit 0)."""
    import pytest
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def usage_error(main, argv, capsys) -> str:
    """The last stderr line of ``main(argv)`` refused by argparse (exit 2)."""
    import pytest
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def halve_dataset(root) -> None:
    """A Market-layout folder (``root``, a pathlib.Path) made 64x32 in place: every
    image resized (bicubic) and every annotation's keypoints halved, missing joints kept."""
    import os

    from PIL import Image

    from deformgan.data.market import read_annotations, write_annotations
    for split in ("train", "test"):
        folder = root / f"bounding_box_{split}"
        for name in os.listdir(folder):
            with Image.open(folder / name) as im:
                small = im.resize((32, 64), Image.BICUBIC)
            small.save(folder / name)
        path = str(root / f"annotations-{split}.csv")
        write_annotations(path, {n: torch.where(kp < 0, kp, kp / 2) for n, kp in read_annotations(path).items()})


@contextlib.contextmanager
def saved_as_on_cuda():
    """``torch.save`` inside this block tags every storage "cuda:0", as in a file written
    by a GPU run: loading such a file on this CPU-only machine needs ``map_location``
    (without it torch refuses: CUDA is not available)."""
    import torch.serialization as serialization
    registry = serialization._package_registry
    serialization._package_registry = [(0, lambda storage: "cuda:0", lambda storage, location: None)] + registry
    try:
        yield
    finally:
        serialization._package_registry = registry


def ops_run_by_backward(out, grad=None):
    """The names of the operators ``out.backward(grad)`` dispatches (the outermost
    calls: what a compiled backward runs inside is not seen)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.name())
            return func(*args, **(kwargs or {}))

    grad = torch.ones_like(out) if grad is None else grad
    with Record() as record:
        out.backward(grad)
    return record.names


class DropGradient(torch.autograd.Function):
    """The identity whose backward gives its input no gradient (None): the node
    before it is reached with an undefined gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return None
