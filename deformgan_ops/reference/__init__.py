"""Pure-PyTorch reference implementations: the executable definition of every
operator (docs/method.md: the operators) and the fallback when no compiled kernel is available.
They are vectorised and differentiable by autograd; they do no input validation
(the public functions in :mod:`deformgan_ops` do).

Each module here defines its operators' functions (listed in its ``__all__``); this
package exposes them by name, ``deformgan_ops.reference.<operator>``.
"""
import importlib as _importlib
import pkgutil as _pkgutil

__all__ = []
for _module in _pkgutil.iter_modules(__path__):
    _mod = _importlib.import_module(f"{__name__}.{_module.name}")
    for _name in getattr(_mod, "__all__", ()):
        globals()[_name] = getattr(_mod, _name)
        __all__.append(_name)
