"""keypoint_heatmaps: Gaussian heatmaps of keypoints, rendered on the fly."""
from typing import Optional

import torch
from torch import nn

from .. import reference
from .._autocast import FLOAT32, autocast_rule, register_dispatch
from .._registry import OpDecl, declare
from .._validate import check_no_overlap, check_out, check_tensor, positive_arg, shape_of, size_arg
from ..backend import extension_loaded, implementation, resolve
from ._autograd import forbid_double_backward, register_out_variant

NAME = "keypoint_heatmaps"
# Under torch.autocast: keypoints in float32 (coordinates); the heatmaps come out in float32 (deformgan_ops._autocast).
AUTOCAST = (FLOAT32,)


def check(keypoints, height, width, sigma) -> None:
    check_tensor(keypoints, "keypoints", 3, "[N, K, 2]")
    if keypoints.shape[2] != 2:
        raise ValueError(f"keypoints must have shape [N, K, 2] (x, y), got {shape_of(keypoints)}")
    size_arg("height", height)
    size_arg("width", width)
    positive_arg("sigma", sigma)


def register(forward, backward_op, backward) -> None:
    """Fake kernels and the autograd formula of one implementation."""
    def fake(keypoints, height, width, sigma):
        return keypoints.new_empty((keypoints.shape[0], keypoints.shape[1], height, width))

    def backward_fake(grad_output, keypoints, height, width, sigma):
        return keypoints.new_empty(keypoints.shape)  # contiguous, as every kernel returns it

    def setup(ctx, inputs, output):
        keypoints, height, width, sigma = inputs
        ctx.args = (height, width, sigma)
        ctx.save_for_backward(keypoints)

    def grad(ctx, grad_output):
        (keypoints,) = ctx.saved_tensors
        return backward(grad_output, keypoints, *ctx.args), None, None, None

    torch.library.register_fake(forward, fake)
    torch.library.register_fake(backward_op, backward_fake)
    torch.library.register_autograd(forward, grad, setup_context=setup)
    forbid_double_backward(backward_op, NAME)


@autocast_rule(*AUTOCAST)
def keypoint_heatmaps(keypoints: torch.Tensor, height: int, width: int, sigma: float = 6.0, *,
                      out: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Gaussian keypoint heatmaps.

    ``h[n, k, y, x] = exp(-((x - x_k)^2 + (y - y_k)^2) / (2 sigma^2))`` at every
    integer pixel (x = column, y = row), peak 1, no normalisation. A joint with a
    negative or non-finite coordinate is missing: its channel is all zeros and
    its gradient is zero.

    Args:
        keypoints: ``[N, K, 2]`` floating point, (x, y) in pixels.
        height: output height (a positive int).
        width: output width (a positive int).
        sigma: Gaussian standard deviation in pixels (> 0); 6 at 128x64.
        out: optional ``[N, K, height, width]`` contiguous tensor of the dtype and
            device of ``keypoints`` to write into (and return). Reusing a buffer
            saves the page faults of a fresh allocation, which on the CPU cost
            more than computing the maps; the out= form is not differentiable.
        backend: ``"auto"``, ``"reference"``, ``"cpu"``, ``"cuda"`` or
            ``"triton"``; None uses :func:`deformgan_ops.get_backend`.

    Returns:
        ``[N, K, height, width]``, differentiable with respect to ``keypoints``
        (unless ``out`` is given).

    Example:
        >>> import torch, deformgan_ops as D
        >>> keypoints = torch.tensor([[[2.0, 1.0], [-1.0, -1.0]]])  # joint 0 at x 2, y 1; joint 1 missing
        >>> maps = D.keypoint_heatmaps(keypoints, 3, 5, sigma=1.0)
        >>> maps.shape
        torch.Size([1, 2, 3, 5])
        >>> maps[0, 0, 1, 2].item(), round(maps[0, 0, 1, 3].item(), 4), maps[0, 1].sum().item()  # peak, exp(-1/2)
        (1.0, 0.6065, 0.0)
    """
    check(keypoints, height, width, sigma)
    height, width, sigma = int(height), int(width), float(sigma)
    if out is None:
        return implementation(NAME, keypoints.device, backend)(keypoints, height, width, sigma)
    check_out(out, "out", (keypoints.shape[0], keypoints.shape[1], height, width), keypoints, "keypoints")
    check_no_overlap(out, "out", [(keypoints, "keypoints")])
    if keypoints.requires_grad and torch.is_grad_enabled():
        raise RuntimeError("keypoint_heatmaps(out=...) does not support autograd (keypoints requires grad)")
    which = resolve(NAME, keypoints.device, backend)
    if which in ("cpu", "cuda"):  # every floating dtype, float16/bfloat16 computed in float32
        torch.ops.deformgan_ops.keypoint_heatmaps.out(keypoints, height, width, sigma, out=out)
        return out
    return out.copy_(implementation(NAME, keypoints.device, which)(keypoints, height, width, sigma))


class KeypointHeatmaps(nn.Module):
    """Renders ``[N, K, 2]`` keypoints to ``[N, K, height, width]`` Gaussian heatmaps."""

    def __init__(self, height: int, width: int, sigma: float = 6.0, backend: Optional[str] = None):
        super().__init__()
        self.height, self.width, self.sigma, self.backend = height, width, sigma, backend

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        return keypoint_heatmaps(keypoints, self.height, self.width, self.sigma, backend=self.backend)

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}, sigma={self.sigma}"


def _compiled(keypoints, height, width, sigma):
    return torch.ops.deformgan_ops.keypoint_heatmaps(keypoints, height, width, sigma)


def _sample_inputs(device, dtype):
    """Joints inside, on the border, outside the image, missing (-1, NaN, inf)."""
    g = torch.Generator().manual_seed(0)
    kp = torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * torch.tensor([9.0, 11.0], dtype=torch.float64)
    kp[0, 1] = torch.tensor([-1.0, -1.0])
    kp[1, 2] = torch.tensor([float("nan"), 3.0])
    kp[1, 3] = torch.tensor([12.5, -0.5])
    kp[0, 4] = torch.tensor([float("inf"), 2.0])
    kp = kp.to(device, dtype)
    return [((kp, 11, 9, 2.5), {}), ((kp[:1, :3], 4, 13, 6.0), {})]


if extension_loaded():
    register_dispatch(NAME, AUTOCAST)
    register(f"deformgan_ops::{NAME}", f"deformgan_ops::_{NAME}_backward",
             getattr(torch.ops.deformgan_ops, f"_{NAME}_backward"))
    register_out_variant(f"deformgan_ops::{NAME}.out")

DECL = declare(OpDecl(name=NAME, autocast=AUTOCAST, public=keypoint_heatmaps, reference=reference.keypoint_heatmaps,
                      compiled=_compiled, triton=f"{NAME}:{NAME}", sample_inputs=_sample_inputs,
                      native_low_precision=True))
