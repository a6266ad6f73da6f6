"""`python -m deformgan.generate --checkpoint CKPT --source IMG
   (--target-pose POSE.json | --target-image IMG2 | --target-keypoints "[y...]:[x...]")
   [--source-keypoints "[y...]:[x...]" | --source-pose POSE.json] --out OUT.png [--panel]`

Re-poses one person. Keypoints not given are found with a YOLO pose model
(``--pose-weights``, default yolo11n-pose.pt through ultralytics). A pose file is JSON:
``{"keypoints": [[x, y], ... 18 joints]}`` or ``{"x": [...18], "y": [...18]}`` (-1 for
a missing joint), in the pixels of its image. ``--panel`` writes source | target pose |
result side by side. Python API: :class:`Reposer` (load once, generate many).
"""
import argparse
import json
import os
import sys
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from . import checkpoint as ckpt_io
from . import pose as P
from .data.market import to_uint8
from .images import open_rgb, to_rgb
from .outputs import OutputBusy, check_writable, file_lock  # noqa: F401 (check_writable: re-exported)


class NoPersonFound(RuntimeError):
    pass


class PoseFileError(ValueError):
    pass


def parse_keypoints_string(text: str) -> torch.Tensor:
    """``"[y0, ...]:[x0, ...]"`` (the annotation CSV's two fields) -> ``[18, 2]`` (x, y)."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError("expected two lists separated by ':'")
        ys, xs = json.loads(parts[0]), json.loads(parts[1])
        if len(ys) != 18 or len(xs) != 18:
            raise ValueError(f"expected 18 values each, got {len(ys)} and {len(xs)}")
        kp = torch.tensor([[float(x), float(y)] for x, y in zip(xs, ys)])
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise PoseFileError(f"keypoints {text[:60]!r}: {exc} (format: \"[y0, ..., y17]:[x0, ..., x17]\")") from exc
    kp[P.missing(kp)] = -1
    return kp


def check_usable_pose(kp: torch.Tensor, height: int, width: int, what: str = "target") -> None:
    """A pose the generator can follow has at least one joint inside the image;
    with none (all missing, or all outside), the output would be a featureless
    grey image, so this raises a ValueError saying so instead."""
    kp = torch.as_tensor(kp, dtype=torch.float32).reshape(-1, 2)
    present = ~P.missing(kp)
    inside = present & (kp[:, 0] < width) & (kp[:, 1] < height)
    if not bool(inside.any()):
        raise ValueError(f"the {what} pose has no usable joint: {int(present.sum())} of {kp.shape[0]} joints are "
                         f"present and none lies inside the {height}x{width} image; nothing to generate from it")


def pose_from_json(item, allow_list: bool = False) -> torch.Tensor:
    """A parsed JSON pose -> float32 tensor (shape unchecked): ``{"keypoints": [[x, y] x 18]}``,
    ``{"x": [18], "y": [18]}`` or, with ``allow_list``, ``[[x, y] x 18]``. Anything else raises
    ValueError, TypeError or RuntimeError (torch's, for lists that are not numbers)."""
    if isinstance(item, dict) and "keypoints" in item:
        return torch.tensor(item["keypoints"], dtype=torch.float32)
    if isinstance(item, dict) and "x" in item and "y" in item:
        return torch.stack([torch.tensor(item["x"], dtype=torch.float32),
                            torch.tensor(item["y"], dtype=torch.float32)], -1)
    if allow_list:
        return torch.tensor(item, dtype=torch.float32)
    raise ValueError('expected {"keypoints": [[x, y] x 18]} or {"x": [...], "y": [...]}')


def read_pose_file(path: str) -> torch.Tensor:
    """A JSON pose file -> ``[18, 2]`` (x, y); a malformed one raises PoseFileError naming it."""
    try:
        with open(path) as fh:
            data = json.load(fh)
        kp = pose_from_json(data)
        if kp.shape != (18, 2):
            raise ValueError(f"expected 18 (x, y) joints, got shape {list(kp.shape)}")
    except FileNotFoundError:
        raise
    except (ValueError, TypeError, json.JSONDecodeError, RuntimeError) as exc:
        raise PoseFileError(f"pose file {path}: {exc}") from exc
    kp[P.missing(kp)] = -1
    return kp


def as_pose(keypoints, what: str = "target_keypoints") -> torch.Tensor:
    """One pose as a float32 ``[18, 2]`` tensor of (x, y) pixels, from a tensor, a numpy
    array or nested lists; anything else (or another shape) is a ValueError naming
    ``what`` and what was given."""
    if not isinstance(keypoints, torch.Tensor):
        try:
            keypoints = torch.as_tensor(np.asarray(keypoints, dtype=np.float32))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} must be 18 (x, y) joints as a tensor, an array or nested lists; got "
                             f"{type(keypoints).__name__} ({exc})") from exc
    if keypoints.shape != (18, 2):
        raise ValueError(f"{what} must be 18 (x, y) joints, shape [18, 2]; got shape {list(keypoints.shape)}")
    if not (keypoints.is_floating_point() or keypoints.dtype in (torch.int32, torch.int64, torch.int16)):
        raise ValueError(f"{what} must be numbers, got dtype {keypoints.dtype}")
    return keypoints.float()


class Reposer:
    """Load a checkpoint once, re-pose many people.

    ``Reposer("runs/demo/checkpoint.pt")`` loads a trained generator;
    :meth:`from_generator` wraps one already in memory. Poses are 18 (x, y) joints in
    pixels (-1 for a missing joint) as tensors, arrays or lists; images are paths,
    ``H x W x 3`` uint8 arrays or PIL images, resized to the model's size.

    Example:
        >>> import numpy as np
        >>> from deformgan.generate import Reposer
        >>> from deformgan.models import Generator
        >>> from deformgan_ops.skeleton import example_poses
        >>> r = Reposer.from_generator(Generator(width_mult=1 / 16))  # random weights, 128x64
        >>> source, target = example_poses()[0], example_poses()[0] + 3  # the same pose, 3 px away
        >>> photo = np.full((128, 64, 3), 200, np.uint8)
        >>> out = r.generate(photo, target.tolist(), source_keypoints=source.tolist())
        >>> out.shape, out.dtype
        ((128, 64, 3), dtype('uint8'))
    """

    def __init__(self, checkpoint: str, device: Optional[str] = None, pose_weights: str = "yolo11n-pose.pt",
                 ops_backend: Optional[str] = None, variant: Optional[str] = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.ckpt = ckpt_io.load(checkpoint, expect_variant=variant)
        self.generator = ckpt_io.build_generator(self.ckpt, self.device, ops_backend)
        self.height, self.width = self.generator.image_size
        self.pose_weights = pose_weights
        self._pose_model = None

    @classmethod
    def from_generator(cls, generator, device: Optional[str] = None,
                       pose_weights: str = "yolo11n-pose.pt") -> "Reposer":
        """A Reposer around a :class:`deformgan.models.Generator` in memory (put in eval
        mode on ``device``, default the generator's own)."""
        r = cls.__new__(cls)
        first = next(generator.parameters(), None)
        r.device = torch.device(device) if device else (first.device if first is not None else torch.device("cpu"))
        r.ckpt = None
        r.generator = generator.to(r.device).eval()
        r.height, r.width = generator.image_size
        r.pose_weights = pose_weights
        r._pose_model = None
        return r

    def load_image(self, image: Union[str, np.ndarray, Image.Image]) -> Image.Image:
        """A path, an array or a PIL image as RGB, read as every command reads photos
        (:func:`deformgan.images.to_rgb`: EXIF orientation, 16-bit scaled, alpha on white)."""
        if isinstance(image, str):
            return open_rgb(image)
        if isinstance(image, np.ndarray):
            return to_rgb(Image.fromarray(image))
        return to_rgb(image)

    def keypoints_of(self, image: Image.Image, name: str = "image") -> torch.Tensor:
        """Keypoints ``[18, 2]`` of the person in ``image`` (its own pixels), with YOLO."""
        from .keypoints import load_pose_model, predict, result_to_keypoints
        if self._pose_model is None:
            self._pose_model = load_pose_model(self.pose_weights)
        res = predict(self._pose_model, [np.asarray(image)[:, :, ::-1].copy()], verbose=False,
                                       device=str(self.device) if self.device.type == "cpu" else self.device.index)
        kp = result_to_keypoints(res[0], conf=0.3)
        if not P.present(kp).any():
            raise NoPersonFound(f"no person found in {name}")
        return kp

    def _fit(self, image: Image.Image, kp: torch.Tensor):
        """Resize to the model's size and scale the keypoints with it."""
        w, h = image.size
        if (h, w) != (self.height, self.width):
            image = image.resize((self.width, self.height), Image.BICUBIC)
            kp = torch.where(P.missing(kp).unsqueeze(-1), kp,
                             kp * torch.tensor([self.width / w, self.height / h]))
        return image, kp

    def generate(self, source, target_keypoints: torch.Tensor, source_keypoints: Optional[torch.Tensor] = None,
                 target_size: Optional[Sequence[int]] = None) -> np.ndarray:
        """The source person in the target pose, ``H x W x 3`` uint8 at the model's size.
        ``target_keypoints`` are in pixels of an image of ``target_size`` (H, W),
        default the model's size."""
        tgt_kp = as_pose(target_keypoints, "target_keypoints").clone()
        if source_keypoints is not None:
            source_keypoints = as_pose(source_keypoints, "source_keypoints")
        img = self.load_image(source)
        name = source if isinstance(source, str) else "the source image"
        src_kp = source_keypoints if source_keypoints is not None else self.keypoints_of(img, name)
        img, src_kp = self._fit(img, src_kp)
        if target_size is not None and tuple(target_size) != (self.height, self.width):
            th, tw = target_size
            tgt_kp = torch.where(P.missing(tgt_kp).unsqueeze(-1), tgt_kp,
                                 tgt_kp * torch.tensor([self.width / tw, self.height / th]))
        check_usable_pose(tgt_kp, self.height, self.width, "target")
        return self.generate_batch(img, src_kp, tgt_kp[None])[0]

    def generate_batch(self, image, source_keypoints: torch.Tensor,
                       target_keypoints: torch.Tensor) -> List[np.ndarray]:
        """Several target poses in one batch, of one source (``image`` a PIL image,
        ``source_keypoints`` ``[18, 2]``) or of one source each (``image`` a list of B
        images, ``source_keypoints`` ``[B, 18, 2]``); images at the model's size (see
        :meth:`generate` for other sizes), targets ``[B, 18, 2]`` in the model's pixels.
        Returns B ``H x W x 3`` uint8 images. Used by animate and reid_augment."""
        if not isinstance(target_keypoints, torch.Tensor):
            target_keypoints = torch.as_tensor(np.asarray(target_keypoints, dtype=np.float32))
        if not isinstance(source_keypoints, torch.Tensor):
            source_keypoints = torch.as_tensor(np.asarray(source_keypoints, dtype=np.float32))
        if target_keypoints.dim() != 3 or target_keypoints.shape[1:] != (18, 2):
            raise ValueError(f"generate_batch: target_keypoints must be [B, 18, 2], got shape "
                             f"{list(target_keypoints.shape)}")
        B = len(target_keypoints)
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        skp = source_keypoints.float().reshape(-1, 18, 2)
        if len(images) not in (1, B) or skp.shape[0] not in (1, B):
            raise ValueError(f"generate_batch: {len(images)} images and {skp.shape[0]} source poses for {B} "
                             "targets (give one source, or one per target)")
        for i, kp in enumerate(skp):
            check_usable_pose(kp, self.height, self.width, "source" if len(skp) == 1 else f"source #{i}")
        for i, kp in enumerate(target_keypoints):
            check_usable_pose(kp, self.height, self.width, "target" if B == 1 else f"target #{i}")
        x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) for im in images])
        x = (x / 127.5 - 1).to(self.device).expand(B, -1, -1, -1)
        with torch.no_grad():
            out = self.generator(x, skp.expand(B, -1, -1), target_keypoints.float())
        arr = to_uint8(out).permute(0, 2, 3, 1).cpu().numpy()
        return list(arr)


def check_image_output(path: str) -> str:
    """The Pillow format ``path``'s extension names (e.g. "PNG" for ``x.png``), once
    ``path`` can be written (:func:`check_writable`); an unknown extension is refused
    before any work, naming the common ones."""
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(f"--out {path}: not an image file name Pillow can write (use .png or .jpg)")
    check_writable(path)
    return fmt


def save_image(image: Image.Image, path: str, fmt: str) -> None:
    """Write ``image`` to ``path`` atomically: a failure leaves no partial file and an
    existing ``path`` as it was."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        image.save(tmp, format=fmt)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--source", required=True)
    tgt = ap.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--target-pose")
    tgt.add_argument("--target-image")
    tgt.add_argument("--target-keypoints")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--source-keypoints")
    src.add_argument("--source-pose")
    ap.add_argument("--out", required=True)
    ap.add_argument("--panel", action="store_true", help="write source | target pose | result")
    ap.add_argument("--pose-weights", default="yolo11n-pose.pt")
    ap.add_argument("--device", default=None)
    ap.add_argument("--variant", default=None, help="fail unless the checkpoint is of this generator variant")
    ap.add_argument("--annotations", default=None,
                    help="an annotation CSV: keypoints of --source / --target-image are looked up there by file name "
                         "before YOLO is tried")
    args = ap.parse_args(argv)
    lock = file_lock(args.out, "generate")
    try:
        check_image_output(args.out)  # a path that cannot be written: its own message first
        lock.acquire()
    except (OutputBusy, OSError, ValueError) as exc:
        print(f"[deformgan.generate] error: {exc}", file=sys.stderr)
        return 2
    try:
        return _main(args)
    finally:
        lock.release()


def _main(args) -> int:
    try:
        fmt = check_image_output(args.out)
        r = Reposer(args.checkpoint, args.device, args.pose_weights, variant=args.variant)
        known = {}
        if args.annotations:
            from .data.market import read_annotations
            known = read_annotations(args.annotations)
        target_size = None
        if args.target_pose:
            tkp = read_pose_file(args.target_pose)
        elif args.target_keypoints:
            tkp = parse_keypoints_string(args.target_keypoints)
        else:
            timg = r.load_image(args.target_image)
            name = os.path.basename(args.target_image)
            tkp = known[name] if name in known else r.keypoints_of(timg, args.target_image)
            target_size = (timg.size[1], timg.size[0])
        skp = known.get(os.path.basename(args.source))
        if args.source_keypoints:
            skp = parse_keypoints_string(args.source_keypoints)
        elif args.source_pose:
            skp = read_pose_file(args.source_pose)
        out = r.generate(args.source, tkp, skp, target_size)
    except (OSError, ValueError, NoPersonFound, ckpt_io.CheckpointError, RuntimeError) as exc:
        print(f"[deformgan.generate] error: {exc}", file=sys.stderr)
        return 2
    result = Image.fromarray(out)
    if args.panel:
        from .viz import grid, pose_image
        src_img = r.load_image(args.source).resize((r.width, r.height))
        if target_size is not None:
            th, tw = target_size
            tkp = torch.where(P.missing(tkp).unsqueeze(-1), tkp, tkp * torch.tensor([r.width / tw, r.height / th]))
        result = grid([[src_img, pose_image(tkp, r.height, r.width), result]], titles=["source", "pose", "result"])
    save_image(result, args.out, fmt)
    print(f"[deformgan.generate] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
