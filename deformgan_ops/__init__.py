"""deformgan_ops: fused operators for pose-guided person image generation.

Operators (each with a pure-PyTorch reference, C++ CPU kernels, and GPU kernels
where built): :func:`part_affine_warp`, :func:`keypoint_heatmaps`,
:func:`nn_loss`, and the pose geometry :func:`part_masks` and
:func:`part_affines` (reference and C++ CPU/CUDA kernels). Backend choice: :func:`set_backend`, :func:`use_backend`, or
``backend=`` on each call. Each operator lives in ``deformgan_ops/ops/<name>.py``
and is declared once in the registry (:func:`operators`).
"""
import torch  # noqa: F401  (must be imported before the extension)

from . import reference, skeleton
from ._registry import get as operator
from ._registry import names as operators
from .backend import (BACKENDS, BackendUnavailable, available_backends, extension_loaded, get_backend,
                      has_compiled_kernel, set_backend, use_backend)
# The operators, in the order of the registry.
from .ops.part_affine_warp import PartAffineWarp, part_affine_warp
from .ops.keypoint_heatmaps import KeypointHeatmaps, keypoint_heatmaps
from .ops.nn_loss import NNLoss, nn_loss
from .ops.part_masks import part_masks
from .ops.part_affines import part_affines

__all__ = list(operators()) + [
    "PartAffineWarp", "KeypointHeatmaps", "NNLoss",
    "BACKENDS", "BackendUnavailable", "set_backend", "get_backend", "use_backend", "available_backends",
    "extension_loaded", "has_compiled_kernel", "operators", "operator", "reference", "skeleton",
]
