"""``nn.Module`` wrappers of the operators."""
from typing import Optional

import torch
from torch import nn

from .ops import keypoint_heatmaps, nn_loss, part_affine_warp


class NNLoss(nn.Module):
    """Nearest-neighbour loss criterion: ``NNLoss(3)(generated, target)``.

    See :func:`deformgan_ops.nn_loss` for the definition and shapes.
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


class PartAffineWarp(nn.Module):
    """Module form of :func:`deformgan_ops.part_affine_warp` (no parameters)."""

    def __init__(self, backend: Optional[str] = None):
        super().__init__()
        self.backend = backend

    def forward(self, features, theta, masks, offsets=None):
        return part_affine_warp(features, theta, masks, offsets, backend=self.backend)


class KeypointHeatmaps(nn.Module):
    """Renders ``[N, K, 2]`` keypoints to ``[N, K, height, width]`` Gaussian heatmaps."""

    def __init__(self, height: int, width: int, sigma: float = 6.0, backend: Optional[str] = None):
        super().__init__()
        self.height, self.width, self.sigma, self.backend = height, width, sigma, backend

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        return keypoint_heatmaps(keypoints, self.height, self.width, self.sigma, backend=self.backend)

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}, sigma={self.sigma}"
