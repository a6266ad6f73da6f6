"""nn_loss: the nearest-neighbour loss of Deformable GAN."""
import numbers
from typing import Optional

import torch
from torch import nn

from .. import reference
from ..reference.nn_loss import effective_kernel_size
from .._autocast import FLOAT32, autocast_rule, register_dispatch
from .._registry import OpDecl, declare
from .._validate import check_like, check_tensor, shape_of
from ..backend import extension_loaded, implementation
from ._autograd import forbid_double_backward

NAME = "nn_loss"
# Under torch.autocast: a loss: both inputs in float32, as autocast does for torch's losses (deformgan_ops._autocast).
AUTOCAST = (FLOAT32, FLOAT32)
REDUCTIONS = ("mean", "sum", "none")


def check(generated, target, kernel_size, reduction) -> None:
    check_tensor(generated, "generated", 4, "[N, C, H, W]")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor [N, C, H, W], got {type(target).__name__}")
    check_like(target, "target", generated, "generated")
    if target.shape != generated.shape:
        raise ValueError(f"target must have the shape of generated {shape_of(generated)}, got {shape_of(target)}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def register(forward, backward_op, backward) -> None:
    """Fake kernels and the autograd formula of one implementation: ``forward`` returns
    (distance [N, H, W], argmin int32), ``backward`` routes through the saved argmin."""
    def fake(generated, target, kernel_size):
        N, H, W = generated.shape[0], generated.shape[2], generated.shape[3]
        return generated.new_empty((N, H, W)), generated.new_empty((N, H, W), dtype=torch.int32)

    def backward_fake(grad_distance, generated, target, argmin, kernel_size, output_mask):
        # Contiguous, as every kernel returns them (not empty_like: a channels-last
        # input would give a channels-last fake).
        return tuple(t.new_empty(t.shape) if need else t.new_empty((0,))
                     for t, need in zip((generated, target), output_mask))

    def setup(ctx, inputs, output):
        generated, target, kernel_size = inputs
        ctx.kernel_size = kernel_size
        ctx.set_materialize_grads(False)  # no zero gradient made for the int32 argmin
        ctx.save_for_backward(generated, target, output[1])

    def grad(ctx, grad_distance, _grad_argmin):
        if grad_distance is None:  # no gradient reached the distance (a function after it gave None)
            return None, None, None
        generated, target, argmin = ctx.saved_tensors
        need = [bool(x) for x in ctx.needs_input_grad[:2]]
        gg, gt = backward(grad_distance, generated, target, argmin, ctx.kernel_size, need)
        return (gg if need[0] else None), (gt if need[1] else None), None

    torch.library.register_fake(forward, fake)
    torch.library.register_fake(backward_op, backward_fake)
    torch.library.register_autograd(forward, grad, setup_context=setup)
    forbid_double_backward(backward_op, NAME)


@autocast_rule(*AUTOCAST)
def nn_loss(generated: torch.Tensor, target: torch.Tensor, kernel_size: int = 3,
            reduction: str = "mean", *, backend: Optional[str] = None) -> torch.Tensor:
    """Nearest-neighbour loss of Deformable GAN.

    For each pixel ``p`` of ``generated``, the L1 distance (summed over channels)
    to its best match in the ``kernel_size x kernel_size`` window of ``target``
    centred on ``p``, the window clipped to the image::

        d[n, y, x] = min_{q in window} sum_c |target[n, c, q] - generated[n, c, y, x]|

    The gradient flows through the winning ``q`` (ties: first in row-major
    window order) to both inputs. ``kernel_size=1`` is the channel-summed L1.
    A NaN distance wins the minimum (the first in window order), so a NaN in
    either input gives a NaN loss on every backend; double backward is supported
    by the reference only (the fused kernels raise).

    Args:
        generated: ``[N, C, H, W]``.
        target: ``[N, C, H, W]``, the shape, dtype and device of ``generated``.
        kernel_size: odd positive int (3 for Market-1501, 5 for DeepFashion); a
            window wider than ``2 max(H, W) - 1`` is clipped to that (it adds no
            position inside the image, so the result is the same).
        reduction: ``"mean"`` (over N, H, W; NaN for an empty batch, like
            torch's losses), ``"sum"`` or ``"none"`` (``[N, H, W]``).
        backend: ``"auto"``, ``"reference"``, ``"cpu"``, ``"cuda"`` or
            ``"triton"``; None uses :func:`deformgan_ops.get_backend`.

    Example:
        >>> import torch, deformgan_ops as D
        >>> generated = torch.zeros(1, 1, 1, 3)
        >>> target = torch.tensor([[[[5.0, 0.0, 5.0]]]])
        >>> D.nn_loss(generated, target, kernel_size=1, reduction="none")  # plain L1
        tensor([[[5., 0., 5.]]])
        >>> D.nn_loss(generated, target, kernel_size=3, reduction="none")  # each pixel finds the 0 beside it
        tensor([[[0., 0., 0.]]])
    """
    check(generated, target, kernel_size, reduction)
    kernel_size = effective_kernel_size(kernel_size, generated.shape[2], generated.shape[3])
    distance = implementation(NAME, generated.device, backend)(generated, target, kernel_size)
    if reduction == "none":
        return distance
    if reduction == "sum":
        return distance.sum()
    return distance.mean()


class NNLoss(nn.Module):
    """Nearest-neighbour loss criterion: ``NNLoss(3)(generated, target)``.

    See :func:`nn_loss` for the definition and shapes.
    """

    def __init__(self, kernel_size: int = 3, reduction: str = "mean", backend: Optional[str] = None):
        super().__init__()
        self.kernel_size = kernel_size
        self.reduction = reduction
        self.backend = backend

    def forward(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn_loss(generated, target, self.kernel_size, self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, reduction={self.reduction!r}"


def _reference(generated, target, kernel_size):
    return reference.nn_loss(generated, target, kernel_size, "none")


def _compiled(generated, target, kernel_size):
    return torch.ops.deformgan_ops.nn_loss(generated, target, kernel_size)[0]


def _sample_inputs(device, dtype):
    """Odd sizes, windows 1, 3 and 5 (clipped at the border and by a tiny image)."""
    g = torch.Generator().manual_seed(0)

    def pair(*shape):
        return tuple(torch.randn(*shape, generator=g, dtype=torch.float64).to(device, dtype) for _ in range(2))

    return [(pair(2, 3, 7, 5) + (3,), {}), (pair(1, 2, 6, 9) + (5,), {"reduction": "none"}),
            (pair(2, 1, 3, 2) + (1,), {"reduction": "sum"}), (pair(1, 4, 2, 3) + (7,), {})]


if extension_loaded():
    register_dispatch(NAME, AUTOCAST)
    register(f"deformgan_ops::{NAME}", f"deformgan_ops::_{NAME}_backward",
             getattr(torch.ops.deformgan_ops, f"_{NAME}_backward"))

DECL = declare(OpDecl(name=NAME, autocast=AUTOCAST, public=nn_loss, reference=_reference, compiled=_compiled,
                      triton=f"{NAME}:{NAME}", sample_inputs=_sample_inputs,
                      native_low_precision=True))
