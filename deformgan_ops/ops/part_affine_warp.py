"""part_affine_warp: the masked per-part affine warp of the deformable skip connections."""
from typing import Optional

import torch
from torch import nn

from .. import reference
from .._autocast import FLOAT32, LOW, autocast_rule, register_dispatch
from .._registry import OpDecl, declare
from .._validate import check_companion, check_tensor, shape_of
from ..backend import extension_loaded, implementation
from ._autograd import forbid_double_backward

NAME = "part_affine_warp"
# Under torch.autocast: features and masks in the autocast dtype, theta and offsets in float32 (deformgan_ops._autocast).
AUTOCAST = (LOW, FLOAT32, LOW, FLOAT32)


def check(features, theta, masks, offsets: Optional[torch.Tensor]) -> None:
    check_tensor(features, "features", 4, "[N, C, H, W]")
    check_tensor(theta, "theta", 4, "[N, P, 2, 3]")
    check_tensor(masks, "masks", 4, "[N, P, Ho, Wo]")
    check_companion(theta, "theta", features, "features")
    check_companion(masks, "masks", features, "features")
    N = features.shape[0]
    if theta.shape[0] != N or tuple(theta.shape[2:]) != (2, 3):
        raise ValueError(f"theta must have shape [N, P, 2, 3] with N = {N}, got {shape_of(theta)}")
    P = theta.shape[1]
    if not 1 <= P <= 255:
        raise ValueError(f"theta must have between 1 and 255 parts, got P = {P}")
    if masks.shape[0] != N or masks.shape[1] != P:
        raise ValueError(f"masks must have shape [N, P, Ho, Wo] with N = {N} and P = {P}, got {shape_of(masks)}")
    if offsets is not None:
        check_tensor(offsets, "offsets", 4, "[N, 2, Ho, Wo]")
        check_companion(offsets, "offsets", features, "features")
        want = (N, 2, masks.shape[2], masks.shape[3])
        if tuple(offsets.shape) != want:
            raise ValueError(f"offsets must have shape [N, 2, Ho, Wo] = {list(want)}, got {shape_of(offsets)}")


def warp_layout(features: torch.Tensor) -> torch.memory_format:
    """The memory format of the output, the winners and the feature gradient:
    ``torch.channels_last`` when the features are channels-last (and not also plain
    contiguous, as with C = 1 or H * W = 1), else ``torch.contiguous_format``; every
    backend and the fake kernels follow it (the C++ ``warp_layout``)."""
    if features.dim() == 4 and not features.is_contiguous() and \
            features.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def register(forward, backward_op, backward) -> None:
    """Fake kernels and the autograd formula of one implementation (the compiled op or
    the Triton custom op): ``forward`` returns (output, winner uint8), ``backward``
    computes the four gradients from the saved winner."""
    def fake(features, theta, masks, offsets):
        N, C = features.shape[0], features.shape[1]
        Ho, Wo = masks.shape[2], masks.shape[3]
        layout = warp_layout(features)
        return (torch.empty((N, C, Ho, Wo), dtype=features.dtype, device=features.device, memory_format=layout),
                torch.empty((N, C, Ho, Wo), dtype=torch.uint8, device=features.device, memory_format=layout))

    def backward_fake(grad_output, features, theta, masks, offsets, winner, output_mask):
        # grad_features in the features' layout (warp_layout), the others contiguous, as
        # every kernel returns them (not empty_like, whose strides follow any input's).
        def grad_of(t, need, layout=torch.contiguous_format):
            if t is None or not need:
                return features.new_empty((0,))
            return torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=layout)

        return (grad_of(features, output_mask[0], warp_layout(features)), grad_of(theta, output_mask[1]),
                grad_of(masks, output_mask[2]), grad_of(offsets, output_mask[3]))

    def setup(ctx, inputs, output):
        features, theta, masks, offsets = inputs
        ctx.has_offsets = offsets is not None
        # No zero gradient made for the uint8 winners (a pass over N*C*Ho*Wo bytes,
        # a tenth of the backward's time at N8 C64 128x64): grad gets None for it.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(features, theta, masks, offsets, output[1])

    def grad(ctx, grad_output, _grad_winner):
        if grad_output is None:  # no gradient reached the output (a function after it gave None)
            return None, None, None, None
        features, theta, masks, offsets, winner = ctx.saved_tensors
        need = [bool(x) for x in ctx.needs_input_grad[:4]]
        need[3] = need[3] and ctx.has_offsets
        grads = backward(grad_output, features, theta, masks, offsets, winner, need)
        return tuple(g if n else None for g, n in zip(grads, need))

    torch.library.register_fake(forward, fake)
    torch.library.register_fake(backward_op, backward_fake)
    torch.library.register_autograd(forward, grad, setup_context=setup)
    forbid_double_backward(backward_op, NAME)


@autocast_rule(*AUTOCAST)
def part_affine_warp(features: torch.Tensor, theta: torch.Tensor, masks: torch.Tensor,
                     offsets: Optional[torch.Tensor] = None, *,
                     backend: Optional[str] = None) -> torch.Tensor:
    """Masked per-part affine warp, combined by a max over parts.

    For output pixel ``(x, y)`` (column, row) and part ``p``::

        (u, v) = theta[n, p] @ (x, y, 1) + offsets[n, :, y, x]
        out[n, c, y, x] = max_p masks[n, p, y, x] * bilinear(features[n, c], u, v)

    ``(u, v)`` is in the input's pixel-index coordinates; bilinear sampling uses
    zero padding (a corner outside ``[0, W-1] x [0, H-1]`` contributes 0, as
    ``grid_sample(align_corners=True, padding_mode="zeros")``); non-finite
    locations sample 0. A part whose mask is exactly 0 at a pixel contributes
    exactly 0 and is not sampled. Ties go to the lowest ``p``; the gradient of
    the max reaches the winning part only. Non-finite values (the same on every
    backend, see :mod:`deformgan_ops.reference.part_affine_warp`): a corner outside
    the image is never read; a NaN/inf feature at a corner inside reaches the
    sample even with weight 0; a NaN candidate wins the max (the first in p
    order). Features with ``H = 0`` or ``W = 0`` sample 0 everywhere. Double
    backward is supported by the reference only (the fused kernels raise).

    Precision: the arithmetic is in float32 for float16/bfloat16 features (float64
    for float64); ``theta``, ``masks`` and ``offsets`` have the features' dtype, or
    float32 beside float16/bfloat16 features (sampling locations need more than 16
    bits: a bfloat16 translation of 60 px is off by up to a quarter pixel). The
    output has the features' dtype (the float32 result rounded once); each gradient
    has its input's dtype. Under ``torch.autocast`` the features and masks are cast
    to the autocast dtype and theta and offsets to float32 (see
    :mod:`deformgan_ops._autocast`).

    Args:
        features: ``[N, C, H, W]`` floating point.
        theta: ``[N, P, 2, 3]`` target -> source affines in pixel coordinates,
            ``1 <= P <= 255``. For a level downsampled by ``s``, divide the
            translation column by ``s`` (see :func:`deformgan.pose.scale_affines`).
        masks: ``[N, P, Ho, Wo]`` per-part masks in the target frame.
        offsets: optional ``[N, 2, Ho, Wo]`` residual displacements (channel 0
            adds to ``u``, channel 1 to ``v``).
        backend: ``"auto"``, ``"reference"``, ``"cpu"``, ``"cuda"`` or
            ``"triton"``; None uses :func:`deformgan_ops.get_backend`.

    Returns:
        ``[N, C, Ho, Wo]``, differentiable with respect to all four inputs.

    Example:
        >>> import torch, deformgan_ops as D
        >>> features = torch.arange(12.0).reshape(1, 1, 3, 4)
        >>> theta = torch.tensor([[[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]])  # one part: u = x + 1, v = y
        >>> D.part_affine_warp(features, theta, torch.ones(1, 1, 3, 4))  # the last column samples outside
        tensor([[[[ 1.,  2.,  3.,  0.],
                  [ 5.,  6.,  7.,  0.],
                  [ 9., 10., 11.,  0.]]]])
        >>> masks = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]] * 3]])  # the part only on the left half
        >>> D.part_affine_warp(features, theta, masks)[0, 0, 0]
        tensor([1., 2., 0., 0.])
    """
    check(features, theta, masks, offsets)
    return implementation(NAME, features.device, backend)(features, theta, masks, offsets)


class PartAffineWarp(nn.Module):
    """Module form of :func:`part_affine_warp` (no parameters)."""

    def __init__(self, backend: Optional[str] = None):
        super().__init__()
        self.backend = backend

    def forward(self, features, theta, masks, offsets=None):
        return part_affine_warp(features, theta, masks, offsets, backend=self.backend)


def _compiled(features, theta, masks, offsets):
    return torch.ops.deformgan_ops.part_affine_warp(features, theta, masks, offsets)[0]


def _sample_inputs(device, dtype):
    """Odd sizes; parts of zero mask; affines that sample outside the image; with and
    without offsets; one output larger than the input."""
    g = torch.Generator().manual_seed(0)

    def case(N, C, H, W, P, Ho, Wo, with_offsets):
        f = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
        lin = torch.eye(2, dtype=torch.float64) + 0.3 * torch.randn(N, P, 2, 2, generator=g, dtype=torch.float64)
        shift = torch.randn(N, P, 2, 1, generator=g, dtype=torch.float64) * 3
        theta = torch.cat([lin, shift], -1)
        masks = (torch.rand(N, P, Ho, Wo, generator=g, dtype=torch.float64) > 0.3).double() * \
            torch.rand(N, P, Ho, Wo, generator=g, dtype=torch.float64)
        off = torch.randn(N, 2, Ho, Wo, generator=g, dtype=torch.float64) if with_offsets else None
        return tuple(None if t is None else t.to(device, dtype) for t in (f, theta, masks, off)), {}

    return [case(2, 3, 9, 7, 4, 9, 7, False), case(1, 2, 5, 6, 3, 7, 5, True), case(3, 1, 4, 4, 1, 4, 4, True)]


if extension_loaded():
    register_dispatch(NAME, AUTOCAST)
    register(f"deformgan_ops::{NAME}", f"deformgan_ops::_{NAME}_backward",
             getattr(torch.ops.deformgan_ops, f"_{NAME}_backward"))

DECL = declare(OpDecl(name=NAME, autocast=AUTOCAST, public=part_affine_warp, reference=reference.part_affine_warp,
                      compiled=_compiled, triton=f"{NAME}:{NAME}", sample_inputs=_sample_inputs,
                      native_low_precision=True))
