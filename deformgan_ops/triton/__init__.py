"""Triton kernels of the DeformGAN operators, one file per operator (kernels,
launchers, op registration with fake kernels and autograd). The registry
(:mod:`deformgan_ops._registry`) imports an operator's file on first use.

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
