"""Autocast rules of the operators: what each floating input becomes inside a
``torch.autocast`` region of its device (CPU or CUDA).

Each operator declares one rule per tensor argument, by position:

- ``LOW``: the autocast dtype (bfloat16 or float16), as autocast does for
  convolutions (the warp's features and masks: the warp reads them in
  that dtype and computes in float32).
- ``FLOAT32``: float32. Coordinates (theta, offsets, keypoints) need more than 16
  bits: a bfloat16 translation of 60 px is off by up to a quarter pixel. Losses
  (the nearest-neighbour loss) are computed in float32, as autocast does for
  torch's losses.

As in autocast itself, float64 tensors and non-floating tensors are left alone. The
operator then runs with autocast disabled on that device, so the reference's own
torch ops are not cast again. The same rule is registered for the compiled ops
(``torch.ops.deformgan_ops.<name>``) at the dispatcher's ``AutocastCPU`` and
``AutocastCUDA`` keys.
"""
import functools
from typing import Callable, Sequence

import torch

LOW = "autocast dtype"
FLOAT32 = "float32"
DEVICES = ("cpu", "cuda")


def cast(value, kind: str, dtype: torch.dtype):
    """One argument under a rule (``kind``) with autocast dtype ``dtype``."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dtype == torch.float64:
        return value
    return value.to(dtype if kind == LOW else torch.float32)


def _device_of(args) -> str:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type
    return ""


def autocast_rule(*kinds: str) -> Callable:
    """Decorator of a public operator function: under autocast on the device of its
    tensors, cast the first ``len(kinds)`` positional arguments by ``kinds`` and run
    the function with autocast disabled. The tensors must be passed positionally
    (keyword tensors are left as they are)."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            device = _device_of(args[:len(kinds)])
            if device not in DEVICES or not torch.is_autocast_enabled(device):
                return fn(*args, **kwargs)
            dtype = torch.get_autocast_dtype(device)
            args = tuple(cast(a, k, dtype) for a, k in zip(args, kinds)) + tuple(args[len(kinds):])
            with torch.autocast(device, enabled=False):
                return fn(*args, **kwargs)

        return run

    return wrap


_LIB = None


def register_dispatch(name: str, kinds: Sequence[str]) -> None:
    """The same rule for the compiled op ``deformgan_ops::<name>`` at the
    dispatcher's autocast keys of every device."""
    global _LIB
    if _LIB is None:
        _LIB = torch.library.Library("deformgan_ops", "IMPL")
    op = getattr(torch.ops.deformgan_ops, name).default
    for device in DEVICES:
        key = "Autocast" + torch._C._dispatch_key_for_device(device)
        excluded = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

        def kernel(_keyset, *args, _device=device, _excluded=excluded):
            dtype = torch.get_autocast_dtype(_device)
            args = tuple(cast(a, k, dtype) for a, k in zip(args, kinds)) + tuple(args[len(kinds):])
            with torch._C._ExcludeDispatchKeyGuard(_excluded):
                return op(*args)

        _LIB.impl(name, kernel, key, with_keyset=True)
