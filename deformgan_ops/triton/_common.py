"""Helpers shared by the Triton operator files."""
import torch
import triton.language as tl

BLOCK = 128


def compute_dtype(dtype: torch.dtype):
    """Triton dtype of the arithmetic and of the atomic accumulators: float64 for
    float64 inputs, float32 otherwise (half and bfloat16 are upcast)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def empty_grad(like: torch.Tensor) -> torch.Tensor:
    """The placeholder returned for a gradient that was not asked for."""
    return like.new_empty((0,))
