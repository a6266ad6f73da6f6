"""Helpers shared by the Triton operator files.

Launch rules every kernel follows:
- 1-D grids over (plane, block) tiles: axis 0 allows 2^31 - 1 programs, where axes 1
  and 2 stop at 65535;
- the program id is widened to int64 first, so every flat offset built from it
  (``n * C * H * W``-style products) is int64 and cannot wrap past 2^31 elements;
- scalar arguments that take part in floating-point arithmetic go in as 1-element
  tensors of the compute dtype (a Python float argument becomes fp32 in compiled
  Triton, which would break the float64 path);
- launches run under the tensors' CUDA device (:func:`device_guard`);
- backward passes that accumulate with atomics call :func:`alert_not_deterministic`,
  as the CUDA kernels do.
"""
import contextlib
import warnings

import torch
import triton
import triton.language as tl

BLOCK = 128
MAX_GRID_0 = 2 ** 31 - 1


def compute_dtype(dtype: torch.dtype):
    """Triton dtype of the arithmetic and of the atomic accumulators: float64 for
    float64 inputs, float32 otherwise (half and bfloat16 are upcast)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def empty_grad(like: torch.Tensor) -> torch.Tensor:
    """The placeholder returned for a gradient that was not asked for."""
    return like.new_empty((0,))


def tiles(planes: int, plane_size: int) -> tuple:
    """The 1-D grid of ``planes`` x ``cdiv(plane_size, BLOCK)`` tiles."""
    n = planes * triton.cdiv(plane_size, BLOCK)
    if n > MAX_GRID_0:
        raise RuntimeError(f"Triton launch of {n} programs exceeds the grid limit {MAX_GRID_0}; "
                           "use the CUDA backend or split the batch")
    return (n,)


def scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """A floating scalar kernel argument as a 1-element tensor of the compute dtype."""
    return torch.full((1,), value, dtype=accumulator_dtype(like.dtype), device=like.device)


def device_guard(t: torch.Tensor):
    """Run a launch on ``t``'s CUDA device (tensors on cuda:1 with cuda:0 current)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def alert_not_deterministic(caller: str) -> None:
    """torch's deterministic-algorithms contract for a kernel that accumulates with atomics."""
    if torch.are_deterministic_algorithms_enabled():
        msg = (f"{caller} does not have a deterministic implementation (it accumulates with atomics), but you "
               "set 'torch.use_deterministic_algorithms(True)'. Use backend='reference' (or the CPU kernels) "
               "for bitwise-reproducible gradients.")
        if torch.is_deterministic_algorithms_warn_only_enabled():
            warnings.warn(msg, UserWarning, stacklevel=3)
        else:
            raise RuntimeError(msg)


@triton.jit
def tile_of(HW, BLOCK: tl.constexpr):
    """(plane, offsets in the plane) of this program in a :func:`tiles` grid; int64."""
    pid = tl.program_id(0).to(tl.int64)
    nblk = tl.cdiv(HW, BLOCK)
    plane = pid // nblk
    offs = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)
    return plane, offs
