"""Checkpoints: atomic writes, ``weights_only`` loading, variant checks."""
import os
import random
import tempfile
import zipfile
import zlib
from typing import Any, Dict, List, Optional

import numpy as np
import torch

FORMAT = "deformgan-checkpoint-v1"


class CheckpointError(RuntimeError):
    pass


def rng_state() -> Dict[str, Any]:
    """Every RNG the training touches, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Dict[str, Any], path: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``:
    a write killed half-way leaves the previous checkpoint intact."""
    from .outputs import write_error_message
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as any file the process creates (mkstemp makes 0600)
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise CheckpointError(write_error_message(path, exc) + "; the previous checkpoint is kept") from exc
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str) -> List[str]:
    """The temporary files of checkpoint writes killed half-way (``.tmp-*.pt``) in
    ``folder``: removed (call it while holding the folder's lock); returns their names."""
    gone = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".tmp-") and name.endswith(".pt"):
                os.remove(os.path.join(folder, name))
                gone.append(name)
    return gone


def verify(path: str) -> None:
    """Check every member of the checkpoint's zip container against its CRC-32
    (torch.load does not): a truncated or bit-flipped file is refused, naming it."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is damaged (not a readable zip container: {exc}); "
                              "it was not loaded") from exc
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: member {bad!r} fails its CRC-32 check; "
                              "it was not loaded")


# Options that fix the shapes of the saved networks: a resumed run must match them.
ARCHITECTURE = ("variant", "norm", "width_mult", "image_size")


def check_architecture(ckpt: Dict[str, Any], path: str, config: Dict[str, Any]) -> None:
    """Refuse to resume with options that change the networks' shapes, naming the flags."""
    saved = ckpt["config"]
    diffs = []
    for key in ARCHITECTURE:
        a, b = saved.get(key), config.get(key)
        a = list(a) if isinstance(a, (list, tuple)) else a
        b = list(b) if isinstance(b, (list, tuple)) else b
        if a != b:
            diffs.append(f"--{key.replace('_', '-')} {b} (the checkpoint has {a})")
    if diffs:
        raise CheckpointError(f"cannot resume from {path}: the networks it holds were built with other options: "
                              + "; ".join(diffs) + ". Resume with the checkpoint's options, or start a new run "
                              "in another --out folder")


# What every checkpoint holds (a generator-only export holds these too).
REQUIRED = ("config", "generator")


def load(path: str, expect_variant: Optional[str] = None) -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; check its format and, when given,
    that it was trained with ``expect_variant``."""
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder, not a checkpoint file (a training run's checkpoint is "
                              f"{os.path.join(path, 'checkpoint.pt')})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    verify(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a DeformGAN checkpoint (format {FORMAT!r} expected)")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing or not isinstance(ckpt["config"], dict) or "variant" not in ckpt["config"]:
        what = ", ".join(missing) if missing else "config.variant"
        raise CheckpointError(f"checkpoint {path} is incomplete: it has no {what}; it was not loaded")
    for part in ("generator", "discriminator"):
        for name, t in (ckpt.get(part) or {}).items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"checkpoint {path} holds non-finite values (NaN or inf) in {part} weight "
                                      f"{name!r}: a run that diverged; it was not loaded")
    variant = ckpt["config"]["variant"]
    if expect_variant is not None and variant != expect_variant:
        raise CheckpointError(f"checkpoint {path} holds a generator of variant {variant!r}, but variant "
                              f"{expect_variant!r} was asked for; use --variant {variant} (or a matching checkpoint)")
    return ckpt


def build_generator(ckpt: Dict[str, Any], device="cpu", ops_backend: Optional[str] = None):
    """The trained generator of a checkpoint, in eval mode."""
    from .models import Generator

    c = ckpt["config"]
    g = Generator(c["variant"], c["norm"], c["width_mult"], c["dropout"], tuple(c["image_size"]), c["sigma"],
                  ops_backend=ops_backend)
    try:
        g.load_state_dict(ckpt["generator"])
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint's generator does not match its config "
                              f"(variant {c['variant']!r}, width {c['width_mult']}): {exc}") from exc
    return g.to(device).eval()
