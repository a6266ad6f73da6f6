"""Market-1501 annotation and pair files (docs/method.md: file formats), the standard pair rule,
and :class:`MarketPoseDataset`.

Annotation CSV: header ``name:keypoints_y:keypoints_x`` then ``NAME: [y0, ...]: [x0, ...]``
(18 integers each, -1 for a missing joint). Pairs CSV: header ``from,to``. In memory,
keypoints are ``[18, 2]`` float (x, y) with -1 for missing joints.
"""
import json
import os
import random
import re
import warnings
from collections import OrderedDict, defaultdict
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

import deformgan_ops

from .layout import DatasetLayout

from .. import pose as P
from ..images import open_rgb

ANNOTATION_HEADER = "name:keypoints_y:keypoints_x"
PAIRS_HEADER = "from,to"
DISTRACTOR_IDS = ("-1", "0000")


class AnnotationError(ValueError):
    """A malformed line of an annotation or pairs file (the message names file and line)."""


def check_image_name(name: str, where: str = "image name") -> str:
    """An image name as the annotation and pairs files hold it: a plain file name
    inside the dataset's image folder. Refused (ValueError naming it): empty names,
    path separators or ``.``/``..`` (a name must not reach outside the data root),
    ``:`` (the annotation file's separator), ``,`` (the pairs file's), line breaks,
    and leading/trailing white space (the readers strip it)."""
    bad = None
    if not isinstance(name, str) or not name:
        raise AnnotationError(f"{where} {name!r} cannot be used: it is an empty image name")
    elif name != name.strip():
        bad = "leading or trailing white space"
    elif any(c in name for c in "/\\"):
        bad = "a path separator (names are plain file names inside the image folder)"
    elif name in (".", ".."):
        bad = "a relative folder"
    elif ":" in name:
        bad = "':' (the annotation file's field separator)"
    elif "," in name:
        bad = "',' (the pairs file's field separator)"
    elif any(c in name for c in "\r\n\x00"):
        bad = "a line break or NUL"
    if bad is not None:
        raise AnnotationError(f"{where} {name!r} cannot be used: it contains {bad}")
    return name


def person_id(name: str) -> str:
    """The person id of a Market-1501 file name: the prefix before the first ``_``."""
    return os.path.basename(name).split("_", 1)[0]


_FASHION_ITEM = re.compile(r"^fashion.*?(id\d{8})")


def identity(name: str) -> str:
    """Whose image this is, the unit pairs are drawn within: the clothing item id of a
    DeepFashion name (``fashionMENDenimid0000008001_1front.jpg`` -> ``id00000080``),
    else the Market-1501 person id."""
    base = os.path.basename(name)
    m = _FASHION_ITEM.match(base)
    return m.group(1) if m else person_id(base)


def _parse_int_list(text: str, path: str, lineno: int, what: str) -> List[int]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:{lineno}: {what} is not a JSON list ({exc.msg}): {text.strip()[:60]!r}")
    if not isinstance(values, list) or len(values) != P.NUM_JOINTS or \
            not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise AnnotationError(f"{path}:{lineno}: {what} must be a list of 18 integers, got {text.strip()[:80]!r}")
    return values


def read_annotations(path: str) -> "OrderedDict[str, torch.Tensor]":
    """Read an annotation CSV into ``{name: keypoints [18, 2] float32 (x, y)}``, in file
    order. Raises :class:`AnnotationError` naming the file and line of a malformed line
    or a duplicated name, or a file that is not UTF-8 text."""
    try:
        return _read_annotations(path)
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                              f"{exc.start}); annotation files are UTF-8") from None


def _read_annotations(path: str) -> "OrderedDict[str, torch.Tensor]":
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    with open(path, "r", newline="", encoding="utf-8") as fh:
        header = fh.readline().rstrip("\r\n")
        if header != ANNOTATION_HEADER:
            raise AnnotationError(f"{path}:1: header must be {ANNOTATION_HEADER!r}, got {header!r}")
        for lineno, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(":")
            if len(parts) != 3:
                raise AnnotationError(f"{path}:{lineno}: expected 'name: [y...]: [x...]' (3 fields separated "
                                      f"by ':'), got {len(parts)} fields: {line[:80]!r}")
            name = parts[0].strip()
            check_image_name(name, f"{path}:{lineno}: image name")
            ys = _parse_int_list(parts[1], path, lineno, "keypoints_y")
            xs = _parse_int_list(parts[2], path, lineno, "keypoints_x")
            if name in out:
                raise AnnotationError(f"{path}:{lineno}: image {name!r} is annotated twice")
            kp = torch.tensor([[x, y] for x, y in zip(xs, ys)], dtype=torch.float32)
            kp[P.missing(kp)] = -1.0
            out[name] = kp
    return out


def _to_int_rows(kp: torch.Tensor) -> Tuple[List[int], List[int]]:
    kp = torch.as_tensor(kp)
    miss = P.missing(kp.float())
    xs = [-1 if m else int(round(float(v))) for v, m in zip(kp[:, 0], miss)]
    ys = [-1 if m else int(round(float(v))) for v, m in zip(kp[:, 1], miss)]
    return ys, xs


def format_annotation_line(name: str, keypoints: torch.Tensor) -> str:
    ys, xs = _to_int_rows(keypoints)
    return f"{name}: {json.dumps(ys)}: {json.dumps(xs)}"


def write_annotations(path: str, annotations: Dict[str, torch.Tensor], append: bool = False) -> None:
    """Write ``{name: keypoints [18, 2] (x, y)}`` in the standard format (coordinates
    rounded to integers, missing joints -1). ``append`` adds lines to an existing file
    (writing the header if the file is new or empty)."""
    for name in annotations:
        check_image_name(name)  # refuse before writing anything
    new = not append or not os.path.exists(path) or os.path.getsize(path) == 0
    text = "".join(format_annotation_line(name, kp) + "\n" for name, kp in annotations.items())
    if append and not new:
        with open(path, "a", newline="") as fh:  # appended lines: a cut last line is repaired on resume
            fh.write(text)
    else:  # a whole file: complete under its name or not there (never a 0-byte or half CSV)
        _write_text_atomic(path, ANNOTATION_HEADER + "\n" + text)


def _write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_pairs(path: str, annotations: Optional[Dict[str, torch.Tensor]] = None,
               on_missing: str = "raise") -> List[Tuple[str, str]]:
    """Read a pairs CSV (``from,to``). With ``annotations``, a pair naming an image
    without annotation raises :class:`AnnotationError` (file and line), or is skipped
    with one warning giving the count when ``on_missing="skip"``."""
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")
    try:
        return _read_pairs(path, annotations, on_missing)
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                              f"{exc.start}); pair files are UTF-8") from None


def _read_pairs(path: str, annotations: Optional[Dict[str, torch.Tensor]], on_missing: str) -> List[Tuple[str, str]]:
    pairs, skipped = [], 0
    with open(path, "r", newline="", encoding="utf-8") as fh:
        header = fh.readline().rstrip("\r\n")
        if header != PAIRS_HEADER:
            raise AnnotationError(f"{path}:1: header must be {PAIRS_HEADER!r}, got {header!r}")
        for lineno, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(",")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise AnnotationError(f"{path}:{lineno}: expected 'from,to', got {line[:80]!r}")
            a, b = parts[0].strip(), parts[1].strip()
            check_image_name(a, f"{path}:{lineno}: image name")
            check_image_name(b, f"{path}:{lineno}: image name")
            if annotations is not None and (a not in annotations or b not in annotations):
                if on_missing == "skip":
                    skipped += 1
                    continue
                which = a if a not in annotations else b
                raise AnnotationError(f"{path}:{lineno}: pair ({a}, {b}) names {which!r}, which has no annotation")
            pairs.append((a, b))
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} pairs naming images without annotation", RuntimeWarning)
    return pairs


def write_pairs(path: str, pairs: Iterable[Tuple[str, str]]) -> None:
    """Write a pairs CSV (``from,to``); a name the reader could not read back is
    refused before anything is written."""
    pairs = list(pairs)
    for a, b in pairs:
        check_image_name(a)
        check_image_name(b)
    _write_text_atomic(path, PAIRS_HEADER + "\n" + "".join(f"{a},{b}\n" for a, b in pairs))


def is_valid_for_pairs(name: str, keypoints: torch.Tensor) -> bool:
    """The standard rule's filter: not a distractor/junk id, and the four torso joints present."""
    if identity(name) in DISTRACTOR_IDS:
        return False
    return bool(P.present(keypoints[list(P.TORSO_JOINTS)]).all())


def standard_pairs(annotations: Dict[str, torch.Tensor], sample: Optional[int] = None,
                   seed: int = 0) -> List[Tuple[str, str]]:
    """All ordered pairs (a, b), a != b, of kept images with the same identity (person
    id, or clothing item id for DeepFashion), in annotation order; with ``sample``, a
    random sample of that many (seeded)."""
    by_id: Dict[str, List[str]] = defaultdict(list)
    for name, kp in annotations.items():
        if is_valid_for_pairs(name, kp):
            by_id[identity(name)].append(name)
    pairs = [(a, b) for names in by_id.values() for a in names for b in names if a != b]
    if sample is not None and sample < len(pairs):
        rng = random.Random(seed)
        pairs = rng.sample(pairs, sample)
    return pairs


def read_image_uint8(path: str, height: Optional[int] = None, width: Optional[int] = None) -> np.ndarray:
    """An RGB image file as uint8 ``[H, W, 3]``. A missing file raises FileNotFoundError
    and an unreadable one ValueError, both naming the path; with ``height``/``width``, a
    size other than (height, width) raises ValueError."""
    arr = np.asarray(open_rgb(path), dtype=np.uint8).copy()  # EXIF, 16-bit, alpha: deformgan.images
    if height is not None and arr.shape[:2] != (height, width):
        raise ValueError(f"image {path} is {arr.shape[0]}x{arr.shape[1]}, expected {height}x{width}")
    return arr


def load_image(path: str, height: Optional[int] = None, width: Optional[int] = None) -> torch.Tensor:
    """:func:`read_image_uint8` as a float tensor ``[3, H, W]`` in [-1, 1]."""
    arr = read_image_uint8(path, height, width)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`load_image`: float images in [-1, 1] of any shape (and any
    float dtype) -> uint8 of the same shape on the same device, clamped and rounded in
    float32. The one conversion every output (sample grids, evaluation, generation)
    uses."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class MarketPoseDataset(torch.utils.data.Dataset):
    """Pose-transfer pairs of a Market-1501-layout folder.

    Args:
        root: the dataset folder (``bounding_box_train/``, ``bounding_box_test/``).
        annotations: annotation CSV path (or an already-read dict).
        pairs: pairs CSV path (or a list of (from, to) names).
        split: ``"train"`` or ``"test"``: which image folder the names refer to.
        flip: probability of a horizontal flip of the whole pair (images and both
            poses, L/R joints swapped).
        heatmaps: render per-item heatmaps with ``deformgan_ops.keypoint_heatmaps``;
            set False and render in batch on the training device instead
            (:func:`deformgan.geometry.render`).
        on_missing: ``"raise"`` or ``"skip"`` pairs that name images without annotation.
        height: the expected image height (128 for Market-1501).
        width: the expected image width (64 for Market-1501).

    Each item is a dict: ``source_image``, ``target_image`` ``[3, H, W]`` in [-1, 1];
    ``source_keypoints``, ``target_keypoints`` ``[18, 2]`` (x, y, -1 missing);
    ``source_heatmaps``, ``target_heatmaps`` ``[18, H, W]`` (when ``heatmaps``);
    ``source_name``, ``target_name``.
    """

    def __init__(self, root: str, annotations, pairs, split: str = "train", flip: float = 0.0,
                 heatmaps: bool = True, sigma: float = 6.0, on_missing: str = "raise",
                 height: int = 128, width: int = 64, seed: Optional[int] = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.root = root
        self.image_dir = DatasetLayout(root).images(split)
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        self.annotations = read_annotations(annotations) if isinstance(annotations, str) else annotations
        if isinstance(pairs, str):
            self.pairs = read_pairs(pairs, self.annotations, on_missing=on_missing)
        else:
            self.pairs = list(pairs)
            for pair in self.pairs:  # names are joined to the image folder: plain names only
                for n in pair:
                    check_image_name(n, "pair image name")
            missing_names = [n for pair in self.pairs for n in pair if n not in self.annotations]
            if missing_names and on_missing == "raise":
                raise AnnotationError(f"pair names {missing_names[0]!r}, which has no annotation")
            if missing_names:
                before = len(self.pairs)
                self.pairs = [p for p in self.pairs if p[0] in self.annotations and p[1] in self.annotations]
                warnings.warn(f"skipped {before - len(self.pairs)} pairs naming images without annotation",
                              RuntimeWarning)
        self.flip = flip
        self.heatmaps = heatmaps
        self.sigma = sigma
        self.height, self.width = height, width
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def check_images(self, on_error: str = "raise", progress: bool = False) -> int:
        """Open every image the pairs use; a missing or corrupt one raises (naming the
        file), or with ``on_error="skip"`` drops its pairs (their reasons in
        ``self.unreadable``). Returns the number of pairs dropped (also reported as a
        warning)."""
        from tqdm import tqdm
        bad = set()
        self.unreadable = []
        names = sorted({n for pair in self.pairs for n in pair})
        # (a bar only for a set large enough to take a while: a second or more)
        for name in tqdm(names, desc="checking images", unit="img", disable=not progress or len(names) < 2000,
                         leave=False):
            try:
                read_image_uint8(os.path.join(self.image_dir, name), self.height, self.width)
            except (FileNotFoundError, ValueError) as exc:
                if on_error == "raise":
                    raise
                bad.add(name)
                self.unreadable.append(str(exc))
        before = len(self.pairs)
        self.pairs = [p for p in self.pairs if p[0] not in bad and p[1] not in bad]
        dropped = before - len(self.pairs)
        if dropped:
            warnings.warn(f"dropped {dropped} pairs using {len(bad)} missing or unreadable images", RuntimeWarning)
        return dropped

    def __getitem__(self, index: int) -> dict:
        a, b = self.pairs[index]
        src = load_image(os.path.join(self.image_dir, a), self.height, self.width)
        tgt = load_image(os.path.join(self.image_dir, b), self.height, self.width)
        kp_a, kp_b = self.annotations[a].clone(), self.annotations[b].clone()
        if self.flip > 0 and self.rng.random() < self.flip:
            src, tgt = src.flip(-1), tgt.flip(-1)
            kp_a, kp_b = P.flip_keypoints(kp_a, self.width), P.flip_keypoints(kp_b, self.width)
        item = dict(source_image=src, target_image=tgt, source_keypoints=kp_a, target_keypoints=kp_b,
                    source_name=a, target_name=b)
        if self.heatmaps:
            heat = deformgan_ops.keypoint_heatmaps(torch.stack([kp_a, kp_b]), self.height, self.width, self.sigma)
            item["source_heatmaps"], item["target_heatmaps"] = heat[0], heat[1]
        return item
