"""The training configuration: the options with their types and allowed ranges, the
presets, and how a run's config is put together (preset < config file < flags).
:mod:`deformgan.train` is the command line over it."""
import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

import deformgan_ops

from .cli_types import int_at_least, positive_int, real_in
from .models import check_discriminator_size, depth_for, parse_variant

PRESETS: Dict[str, Dict] = {
    "demo": dict(variant="parts", l1=100.0, width_mult=0.25, dropout=0.0, steps=1200, batch_size=4,
                 sample_every=200, save_every=200, log_every=10),
    "baseline": dict(variant="none", l1=100.0),
    "dsc": dict(variant="parts", l1=100.0),
    "full": dict(variant="parts", l1=0.0, nn=0.01),
    "offsets": dict(variant="parts+offsets", l1=0.0, nn=1.0, perceptual=0.1, smooth=0.1),
    # DeepFashion at 256x256 as the original trained it: batch 2, NN loss window 5x5.
    "fashion-dsc": dict(variant="parts", l1=100.0, image_size=(256, 256), batch_size=2, nn_kernel=5),
    "fashion-full": dict(variant="parts", l1=0.0, nn=0.01, image_size=(256, 256), batch_size=2, nn_kernel=5),
    "fashion-demo": dict(variant="parts", l1=100.0, image_size=(256, 256), synthetic="fashion", width_mult=0.125,
                         dropout=0.0, steps=600, batch_size=2, nn_kernel=5, sample_every=100, save_every=100,
                         log_every=10, synthetic_ids=40, synthetic_images_per_id=4),
}
SYNTHETIC_SETS = ("market", "fashion")


@dataclass
class TrainConfig:
    preset: str = "demo"
    data: Optional[str] = None
    annotations: Optional[str] = None
    pairs: Optional[str] = None
    out: str = "runs/demo"
    variant: str = "parts"
    norm: str = "instance_all"
    width_mult: float = 1.0
    dropout: float = 0.5
    image_size: Tuple[int, int] = (128, 64)
    sigma: float = 6.0
    adv: float = 1.0
    l1: float = 0.0
    nn: float = 0.0
    nn_kernel: int = 3
    perceptual: float = 0.0
    smooth: float = 0.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    # Adam's fused kernel (torch.optim.Adam(fused=True)): the two optimiser steps of the
    # full-size model (64M parameters) take 45 instead of 230 ms on 2 CPU cores. The
    # weights then differ from the for-loop implementation's in the last bits;
    # --no-fused-adam runs that one (the recorded same-numbers runs use it).
    fused_adam: bool = True
    batch_size: int = 4
    steps: int = 90000
    flip: float = 0.0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = True
    # bfloat16 autocast on the CPU (with --amp): None (the default) turns it on where
    # the CPU has native bf16 (AVX512-BF16 or AMX; 1.5-1.65x faster steps there, the
    # ablation's scores within float32's run-to-run spread: docs/log/precision.md) and
    # leaves float32 elsewhere; True asks for it (float32 with a warning where the CPU
    # has no native bf16); False (--no-cpu-amp) is float32 everywhere.
    cpu_amp: Optional[bool] = None
    ops_backend: Optional[str] = None
    # The generator's and discriminator's weights and images in channels-last memory:
    # the convolutions' outputs are then channels-last, and part_affine_warp reads and
    # writes them in place with no transposes. Same results up to the
    # convolutions' summation order.
    channels_last: bool = False
    num_workers: int = 0
    log_every: int = 50
    sample_every: int = 1000
    save_every: int = 1000
    vgg_weights: Optional[str] = "imagenet"
    allow_random_vgg: bool = False
    synthetic: str = "market"
    synthetic_ids: int = 60
    synthetic_images_per_id: int = 6

    @classmethod
    def fields(cls):
        return {f.name: f for f in dataclasses.fields(cls)}


# Allowed ranges of the numeric options (deformgan.cli_types, shared with the other CLIs).
_RANGES = {
    "steps": positive_int, "batch_size": positive_int, "log_every": positive_int,
    "sample_every": positive_int, "save_every": positive_int, "num_workers": int_at_least(0),
    "nn_kernel": int_at_least(1, odd=True), "synthetic_ids": int_at_least(2),
    "synthetic_images_per_id": int_at_least(2), "seed": int_at_least(0),
    "width_mult": real_in(0, 16, low_open=True), "dropout": real_in(0, 1, high_open=True),
    "sigma": real_in(0, low_open=True), "lr": real_in(0, 1, low_open=True, high_open=True),
    "beta1": real_in(0, 1, high_open=True), "beta2": real_in(0, 1, high_open=True), "flip": real_in(0, 1),
    **{w: real_in(0) for w in ("adv", "l1", "nn", "perceptual", "smooth")},
}


def validate_config(cfg: "TrainConfig") -> None:
    """Every numeric option in its allowed range (from the command line, a config
    file or a preset alike); the ValueError names the flag and the range."""
    for name, allowed in _RANGES.items():
        error = allowed.check(getattr(cfg, name))
        if error:
            raise ValueError(f"--{name.replace('_', '-')} {error}")
    for name, kind in FLAG_TYPES.items():  # a config file's "false" or 0 would pass for a choice
        value = getattr(cfg, name)
        if kind is bool and not (isinstance(value, bool) or (value is None and name in _UNSET_ALLOWED)):
            unset = " or unset (null)" if name in _UNSET_ALLOWED else ""
            raise ValueError(f"--{name.replace('_', '-')} must be true or false{unset}, got {value!r}")
    size = cfg.image_size
    if len(size) != 2 or not all(isinstance(x, int) and x >= 8 for x in size):
        raise ValueError(f"--image-size must be two ints >= 8 (height width), got {size!r}")
    try:
        depth_for(size)
        check_discriminator_size(size)
    except ValueError as exc:
        raise ValueError(f"--image-size: {exc}") from None
    if cfg.synthetic not in SYNTHETIC_SETS:
        raise ValueError(f"--synthetic must be one of {SYNTHETIC_SETS}, got {cfg.synthetic!r}")
    if cfg.ops_backend is not None and cfg.ops_backend not in deformgan_ops.BACKENDS:
        raise ValueError(f"--ops-backend must be one of {deformgan_ops.BACKENDS}, got {cfg.ops_backend!r}")
    try:
        parse_variant(cfg.variant)
    except ValueError as exc:
        raise ValueError(f"--variant: {exc}") from None
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: no CUDA GPU is available to this process "
                         "(torch.cuda.is_available() is False); use --device cpu or auto")


# ---------------------------------------------------------------- config
def build_config(argv=None, description: Optional[str] = None) -> Tuple[TrainConfig, argparse.Namespace]:
    """The run's config from the command line (``argv``), the ``--config`` file and
    the preset, and the parsed arguments (``--resume``)."""
    ap = argparse.ArgumentParser(prog="python -m deformgan.train", description=description or __doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="JSON or YAML file of options")
    ap.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="continue from OUT/checkpoint.pt (or a given checkpoint path)")
    ap.add_argument("--overwrite", action="store_true",
                    help="start afresh in an OUT that holds an earlier run's checkpoint (it is replaced; "
                         "without this flag such a folder is refused)")
    for name in TrainConfig.fields():
        flag = "--" + name.replace("_", "-")
        if FLAG_TYPES[name] is bool:
            ap.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction)
        elif name == "image_size":
            ap.add_argument(flag, dest=name, type=int, nargs=2, default=None)
        elif name == "preset":
            ap.add_argument(flag, dest=name, default=None, choices=sorted(PRESETS))
        else:
            ap.add_argument(flag, dest=name, type=FLAG_TYPES[name], default=None)
    args = ap.parse_args(argv)
    values: Dict = {}
    file_values: Dict = {}
    if args.config:
        try:
            file_values = _read_config_file(args.config)
            check_file_types(file_values)
        except ConfigFileError as exc:
            ap.error(f"--config {args.config}: {exc}")
        unknown = set(file_values) - set(TrainConfig.fields())
        if unknown:
            ap.error(f"unknown options in {args.config}: {sorted(unknown)}")
    cli = {k: v for k, v in vars(args).items() if k in TrainConfig.fields() and v is not None}
    preset = cli.get("preset") or file_values.get("preset") or ("demo" if not (cli.get("data") or file_values.get("data")) else "dsc")
    if preset not in PRESETS:
        ap.error(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    values.update(PRESETS[preset])
    values.update(file_values)
    values.update(cli)
    values["preset"] = preset
    if "image_size" in values:
        values["image_size"] = tuple(values["image_size"])
    cfg = TrainConfig(**values)
    if cfg.out == "runs/demo" and preset != "demo":
        cfg.out = f"runs/{preset}"
    try:
        validate_config(cfg)
    except ValueError as exc:
        ap.error(str(exc))
    return cfg, args


class ConfigFileError(ValueError):
    """A config file that cannot be read, is not an object of options, or holds a value of
    the wrong type (the message names the option)."""


def _read_config_file(path: str) -> Dict:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"cannot read it ({exc})") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as exc:
            raise SystemExit(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from exc
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"not valid YAML ({' '.join(str(exc).split())})") from None
        values = {} if values is None else values
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigFileError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(values, dict):
        raise ConfigFileError(f"expected an object of options (name: value), got {type(values).__name__}")
    return values


def check_file_types(values: Dict) -> None:
    """Each known option of a config file holds a value of its type (ints where floats
    are asked for too; null where the option may be unset); the ranges are checked later
    with the flags'. Unknown options are left to the caller."""
    for name, value in values.items():
        kind = FLAG_TYPES.get(name)
        if kind is None:
            continue
        if value is None:
            if name in _UNSET_ALLOWED:
                continue
            raise ConfigFileError(f"option {name!r} must be set, got null")
        if name == "image_size":
            if not (isinstance(value, (list, tuple)) and len(value) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise ConfigFileError(f"option 'image_size' must be two ints [height, width], got {value!r}")
            continue
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise ConfigFileError(f"option {name!r} must be {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r} "
                                  f"({type(value).__name__})")


_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _flag_type(annotation):
    """The type a flag's text converts to: the annotation, unwrapped from Optional."""
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _flag_type(args[0])
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0]  # image_size: two ints (nargs=2)
    return annotation


# Each option's type, from the dataclass's annotations (explicit, never guessed from text),
# and the options that may be left unset (None: Optional in the annotation).
_HINTS = typing.get_type_hints(TrainConfig)
FLAG_TYPES = {name: _flag_type(t) for name, t in _HINTS.items()}
_UNSET_ALLOWED = {name for name, t in _HINTS.items()
                  if typing.get_origin(t) is typing.Union and type(None) in typing.get_args(t)}
