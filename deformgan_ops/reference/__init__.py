"""Pure-PyTorch reference implementations: the executable definition of every
operator (SPEC section 5) and the fallback when no compiled kernel is available.
They are vectorised and differentiable by autograd; they do no input validation
(the public functions in :mod:`deformgan_ops` do)."""
from .keypoint_heatmaps import keypoint_heatmaps
from .nn_loss import nn_loss
from .part_affine_warp import part_affine_warp
from .pose_geometry import part_affines, part_masks

__all__ = ["part_affine_warp", "keypoint_heatmaps", "nn_loss", "part_masks", "part_affines"]
