"""Backend choice for the DeformGAN operators.

Backends: ``"auto"`` (the compiled kernel for the tensor's device, else the
reference with a one-time warning that says why), ``"reference"`` (pure PyTorch),
``"cpu"`` (C++ CPU kernels), ``"cuda"`` (CUDA C++ kernels) and ``"triton"``.
Choose per call with ``backend=...``, process-wide with :func:`set_backend`,
for a block with :func:`use_backend`, or with the ``DEFORMGAN_OPS_BACKEND``
environment variable.

Asking for a backend an operator does not have raises :class:`BackendUnavailable`
with the same message for every operator, with one exception: a process-wide
``"triton"`` (a choice for the whole program) runs the operators that have no Triton
kernel (the pose geometry) on their compiled kernel for the device, else the
reference; a per-call ``backend="triton"`` on such an operator raises.
"""
import contextlib
import os
import warnings
from typing import Callable, Iterator, Optional

import torch

from . import _registry

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")


class BackendUnavailable(RuntimeError):
    """A backend that cannot run this operator on these tensors here."""

ENV_VAR = "DEFORMGAN_OPS_BACKEND"
# the process-wide default; "from_env": it still is the environment variable's value
_state = {"backend": os.environ.get(ENV_VAR) or "auto", "from_env": bool(os.environ.get(ENV_VAR))}
_warned: set = set()
_extension_error: Optional[str] = None

try:  # loading the library registers the C++ kernels
    from . import _C  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the build
    _extension_error = str(exc)


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def set_backend(name: str) -> None:
    """Set the process-wide default backend (one of :data:`BACKENDS`)."""
    _state["backend"] = _check_name(name)
    _state["from_env"] = False


def get_backend() -> str:
    """The process-wide default backend. A value of ``DEFORMGAN_OPS_BACKEND`` that is
    not a backend is a ValueError naming the variable (at the first operator call)."""
    name = _state["backend"]
    if _state["from_env"] and name not in BACKENDS:
        raise ValueError(f"the environment variable {ENV_VAR} must be one of {BACKENDS}, got {name!r}")
    return _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager that sets the default backend inside a block."""
    previous = dict(_state)
    _state["backend"] = _check_name(name)
    _state["from_env"] = False
    try:
        yield
    finally:
        _state.update(previous)


def extension_loaded() -> bool:
    """True when the compiled extension ``deformgan_ops._C`` was imported."""
    return _extension_error is None


def has_compiled_kernel(op: str, device_type: str) -> bool:
    """Whether the compiled library registered a kernel of ``op`` for a device type."""
    if not extension_loaded():
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"deformgan_ops::{op}", key)


def triton_available() -> bool:
    """Whether the Triton kernels can run: triton importable and the backend module present."""
    try:
        import triton  # noqa: F401
        from . import triton as _triton_ops  # noqa: F401
    except ImportError:
        return False
    return getattr(_triton_ops, "AVAILABLE", False)


def available_backends(device_type: str = "cpu") -> list:
    """The backends that can run on tensors of ``device_type`` in this installation."""
    out = ["reference"]
    for name, dev in (("cpu", "cpu"), ("cuda", "cuda")):
        if dev == device_type and any(has_compiled_kernel(op, dev) for op in _registry.names()):
            out.append(name)
    if triton_available() and (device_type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"):
        out.append("triton")
    return out


def _unavailable(op: str, name: str, why: str) -> BackendUnavailable:
    return BackendUnavailable(f"deformgan_ops.{op}: backend {name!r} is not available: {why}")


@torch.compiler.assume_constant_result
def resolve(op: str, device: torch.device, backend: Optional[str]) -> str:
    """The concrete backend for one call of ``op`` on ``device`` (under torch.compile
    the choice is made once, at trace time)."""
    explicit = backend is not None
    name = _check_name(backend if explicit else get_backend())
    decl = _registry.get(op)
    dev = device.type
    if name == "reference":
        return name
    if name == "auto":
        if has_compiled_kernel(op, dev):
            return dev
        if dev == "cuda" and decl.triton and triton_available():
            return "triton"
        key = (op, dev)
        if key not in _warned:
            _warned.add(key)
            why = (f"the compiled extension failed to load ({_extension_error})" if not extension_loaded()
                   else f"it has no {dev} kernel for {op}")
            warnings.warn(f"deformgan_ops.{op}: using the slow pure-PyTorch reference on {dev} because "
                          f"{why}", RuntimeWarning, stacklevel=4)
        return "reference"
    if name not in decl.backends():
        if explicit:
            raise _unavailable(op, name, f"this operator has no {name} kernel (its backends: "
                                         f"{', '.join(decl.backends())})")
        return dev if has_compiled_kernel(op, dev) else "reference"
    if name in ("cpu", "cuda"):
        if dev != name:
            raise RuntimeError(f"deformgan_ops.{op}: backend {name!r} needs {name} tensors, got tensors on {device}")
        if not has_compiled_kernel(op, dev):
            why = (f"the compiled extension failed to load ({_extension_error})" if not extension_loaded()
                   else f"the extension was built without {name} kernels")
            raise _unavailable(op, name, why)
        return name
    # triton
    if not triton_available():
        raise _unavailable(op, name, "triton is not installed or the Triton kernels failed to import")
    if dev != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(f"deformgan_ops.{op}: backend 'triton' needs CUDA tensors "
                           f"(or TRITON_INTERPRET=1 for CPU tensors), got tensors on {device}")
    return "triton"


def implementation(op: str, device: torch.device, backend: Optional[str]) -> Callable:
    """The function that computes ``op`` for tensors on ``device`` with the chosen
    backend: the declaration's reference, compiled op (CPU kernels take every floating
    dtype, see :func:`deformgan_ops._registry.cpu_any_float`) or Triton launcher."""
    decl = _registry.get(op)
    which = resolve(op, device, backend)
    if which == "reference":
        return decl.reference
    if which == "triton":
        return decl.triton_launcher()
    if which == "cpu":
        return decl.compiled if decl.native_low_precision else _registry.cpu_any_float(decl.compiled)
    return decl.compiled
