"""deformgan_ops: fused operators for pose-guided person image generation.

Operators (each with a pure-PyTorch reference, C++ CPU kernels, and GPU kernels
where built): :func:`part_affine_warp`, :func:`keypoint_heatmaps`,
:func:`nn_loss`, and the pose geometry :func:`part_masks` and
:func:`part_affines` (reference and C++ CPU/CUDA kernels). Backend choice: :func:`set_backend`, :func:`use_backend`, or
``backend=`` on each call.
"""
import torch  # noqa: F401  (must be imported before the extension)

from . import reference
from .backend import (BACKENDS, available_backends, extension_loaded, get_backend,
                      has_compiled_kernel, set_backend, use_backend)
from .modules import KeypointHeatmaps, NNLoss, PartAffineWarp
from .ops import keypoint_heatmaps, nn_loss, part_affine_warp, part_affines, part_masks

__all__ = [
    "part_affine_warp", "keypoint_heatmaps", "nn_loss", "part_masks", "part_affines",
    "PartAffineWarp", "KeypointHeatmaps", "NNLoss",
    "BACKENDS", "set_backend", "get_backend", "use_backend", "available_backends",
    "extension_loaded", "has_compiled_kernel", "reference",
]
