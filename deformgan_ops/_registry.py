"""The operator registry: one :class:`OpDecl` per operator, declared once by the
operator's own module (``deformgan_ops/ops/<name>.py``). Backend resolution
(:mod:`deformgan_ops.backend`), ``python -m deformgan_ops.info``, the tests and the
benchmarks read the operators from here; nothing else lists them.

Adding an operator: see "Adding an operator" in the README.
"""
import importlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

# The floating dtypes the C++ CPU kernels compute in; other floating CPU inputs are
# upcast to float32 for them and the results cast back (see cpu_any_float).
CPU_KERNEL_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class OpDecl:
    """One operator.

    ``reference``, ``compiled`` and the Triton launcher take the same arguments (the
    operator's tensors and scalars, already validated and normalised by the public
    function) and return the same values.

    Attributes:
        name: the operator's name, the same in the schema (``csrc/ops.cpp``), the
            kernels' files, the reference, the Triton file, the tests and benchmarks.
        reference: the pure-PyTorch definition (:mod:`deformgan_ops.reference`).
        compiled: runs the compiled op ``torch.ops.deformgan_ops.<name>`` (CPU or
            CUDA kernel, by the tensors' device).
        triton: ``"module:function"`` of the Triton launcher under
            :mod:`deformgan_ops.triton`, imported on first use; None: no Triton kernel.
        sample_inputs: ``(device, dtype) -> [(args, kwargs), ...]`` small valid calls
            of the public function (odd shapes, missing joints, outside samples), for
            the registry-driven tests.
        differentiable: whether the outputs carry gradients to the floating inputs.
        native_low_precision: the CPU kernel reads float16/bfloat16 inputs itself
            (float32 arithmetic); otherwise they are upcast for it (cpu_any_float).
        autocast: the rule of each tensor argument under ``torch.autocast``
            (:mod:`deformgan_ops._autocast`), by position.
        public: the public function ``deformgan_ops.<name>`` (validation, backend
            choice), which the tests and ``python -m deformgan_ops.info`` call.
    """
    name: str
    public: Callable
    reference: Callable
    compiled: Callable
    sample_inputs: Callable[[torch.device, torch.dtype], List[Tuple[tuple, dict]]]
    triton: Optional[str] = None
    differentiable: bool = True
    native_low_precision: bool = False
    autocast: Tuple[str, ...] = ()

    def triton_launcher(self) -> Callable:
        module, function = self.triton.split(":")
        return getattr(importlib.import_module(f"deformgan_ops.triton.{module}"), function)

    def backends(self) -> Tuple[str, ...]:
        """The concrete backends this operator has (whether built here or not)."""
        return ("reference", "cpu", "cuda") + (("triton",) if self.triton else ())


_OPS: Dict[str, OpDecl] = {}


def declare(decl: OpDecl) -> OpDecl:
    if decl.name in _OPS:
        raise RuntimeError(f"operator {decl.name!r} is declared twice")
    _OPS[decl.name] = decl
    return decl


def names() -> Tuple[str, ...]:
    """Every operator's name, in declaration order."""
    return tuple(_OPS)


def get(name: str) -> OpDecl:
    try:
        return _OPS[name]
    except KeyError:
        raise ValueError(f"unknown operator {name!r}; the operators are {names()}") from None


def cpu_any_float(fn: Callable) -> Callable:
    """``fn`` (a compiled CPU op) for every floating dtype: half and bfloat16 tensor
    arguments are upcast to float32, and the floating results cast back to the dtype
    of the first such argument (autograd casts the gradients back too)."""
    def run(*args):
        low = [a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()
               and a.dtype not in CPU_KERNEL_DTYPES]
        if not low:
            return fn(*args)
        args = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
        out = fn(*args)
        if isinstance(out, tuple):
            return tuple(o.to(low[0]) if o.is_floating_point() else o for o in out)
        return out.to(low[0]) if out.is_floating_point() else out

    return run
