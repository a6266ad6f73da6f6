"""Triton kernels of the DeformGAN operators, one file per operator (kernels,
launchers, op registration with fake kernels and autograd).

They run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (set
before this package is imported), which is how they are tested on machines
without a GPU. Accumulation is in float32 (float64 for float64 inputs).
"""
try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    AVAILABLE = False
else:
    AVAILABLE = True

if AVAILABLE:
    from .keypoint_heatmaps import keypoint_heatmaps
    from .nn_loss import nn_loss
    from .part_affine_warp import part_affine_warp

    __all__ = ["part_affine_warp", "keypoint_heatmaps", "nn_loss", "AVAILABLE"]
