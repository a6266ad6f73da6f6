"""Input validation helpers shared by the operators' modules (each operator checks its
own arguments in ``deformgan_ops/ops/<name>.py``; the C++ kernels check again)."""
import math
import numbers

import torch


def shape_of(t: torch.Tensor) -> str:
    return str(list(t.shape))


def size_arg(name: str, v) -> int:
    """A positive integer size (Python or numpy int, never bool) as an int."""
    if isinstance(v, torch.Tensor):
        raise ValueError(f"{name} must be a Python or numpy int, not a tensor (pass int({name})), got {v!r}")
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def positive_arg(name: str, v) -> float:
    """A positive finite real (a Python or numpy number, never bool) as a float."""
    if isinstance(v, torch.Tensor):
        raise ValueError(f"{name} must be a Python or numpy number, not a tensor (pass float({name})), got {v!r}")
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def check_no_overlap(out: torch.Tensor, name: str, inputs) -> None:
    """``out`` must not share memory with any input (it is written while they are read)."""
    o = out.untyped_storage()
    for t, tname in inputs:
        if t is not None and t.device == out.device and t.untyped_storage().data_ptr() == o.data_ptr() \
                and o.nbytes() > 0:
            raise ValueError(f"{name} must not share memory with {tname}: the operator writes {name} while "
                             f"it reads {tname}; pass a separate buffer")


def check_tensor(t, name: str, dim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be a {dim}-D tensor {layout}, got shape {shape_of(t)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {t.dtype}")


def check_like(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the same device as {ref_name} ({ref.device}), got {t.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")


LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_companion(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    """``t`` on the device of ``ref`` with its dtype, or float32 when ``ref`` is
    float16/bfloat16 (geometry in float32 beside low-precision features)."""
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the same device as {ref_name} ({ref.device}), got {t.device}")
    low = ref.dtype in LOW_PRECISION
    if t.dtype != ref.dtype and not (low and t.dtype == torch.float32):
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype})" + (" or float32" if low else "")
                        + f", got {t.dtype}")


def check_out(out, name: str, shape, ref: torch.Tensor, ref_name: str) -> None:
    """An ``out=`` tensor: exactly ``shape``, the dtype and device of ``ref``, contiguous,
    and not requiring grad (out= variants are not differentiable)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {shape_of(out)}")
    check_like(out, name, ref, ref_name)
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if out.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"{name}: the out= form does not support autograd ({name} requires grad)")
