"""DeepFashion (In-shop Clothes Retrieval) as the field uses it, in the layout every
DeformGAN command reads.

    python -m deformgan.data.deepfashion IN_SHOP_ROOT --out DIR \
        [--train-list train.lst --test-list test.lst] [--annotations KEYPOINTS.csv]

IN_SHOP_ROOT holds the release's ``img/<GENDER>/<Category>/id_XXXXXXXX/NN_V_view.jpg``
(or those folders directly). DIR receives:

- ``train/`` and ``test/``: every image at 256x256 under the field's name
  (``img/MEN/Denim/id_00000080/01_1_front.jpg`` -> ``fashionMENDenimid0000008001_1front.jpg``).
  The low-resolution release is already 256x256 and is copied pixel for pixel (re-encoded
  as JPEG quality 95 only when the source is not a JPEG); any other size is resized with
  its aspect ratio kept (bicubic, antialiased) so that the longer side is 256, then padded
  to 256x256 with white, centred (the release's background is white). Nothing is cropped.
- the split: the images named in ``--train-list`` / ``--test-list`` (the field's split
  files, one name per line, field names or release paths); without lists, a deterministic
  split by clothing item: the ``--test-fraction`` of the item ids that come first in
  CRC-32 order are test items, so no item is in both splits.
- ``annotations-{split}.csv`` (``name: keypoints_y: keypoints_x``, 18 joints): from
  ``--annotations`` (a keypoint file with the field's names, e.g. the published
  ``fasion-annotation-*.csv``), else detected by ``python -m deformgan.keypoints``'s
  extraction (YOLO pose; ``--weights``).
- ``pairs-{split}.csv``: the field's rule for this dataset: two different images of the
  same clothing item, both with a valid pose (the four torso joints present).
- ``DEEPFASHION.json``: counts, the rule used for sizes and split, problems.

The work is resumable: finished images are kept (written under a temporary name, then
renamed), the keypoint extraction continues where it stopped. Images that cannot be read
and release paths that do not follow the layout are named on stderr and in
``DEEPFASHION.json``, and left out; a list naming an image that is not in the tree is
reported the same way.
"""
import argparse
import json
import os
import re
import sys
import zlib
from typing import Dict, Iterable, List, Optional, Sequence

from PIL import Image

from ..cli_types import real_in
from ..images import to_rgb
from ..outputs import OutputBusy, OutputLock, write_error_message
from ..keypoints import PoseWeightsError
from .market import identity, read_annotations, standard_pairs, write_annotations, write_pairs

SIZE = 256
_ITEM = re.compile(r"id_\d{8}")
_FILE = re.compile(r"(\d+)_(\d+)_([A-Za-z]+)\.(jpe?g|png)", re.IGNORECASE)


class LayoutError(ValueError):
    """A path that does not follow the In-shop release's layout."""


def field_name(path: str) -> str:
    """The field's name of a release path: ``img/MEN/Denim/id_00000080/01_1_front.jpg``
    -> ``fashionMENDenimid0000008001_1front.jpg`` (gender and category as written, the
    item id without its underscore, the file name without the underscore before the
    view; the extension becomes ``.jpg``)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if parts and parts[0] == "img":
        parts = parts[1:]
    if len(parts) != 4:
        raise LayoutError(f"{path}: expected img/<GENDER>/<Category>/id_XXXXXXXX/NN_V_view.jpg")
    gender, category, item, file = parts
    m = _FILE.fullmatch(file)
    if not _ITEM.fullmatch(item) or m is None:
        raise LayoutError(f"{path}: expected img/<GENDER>/<Category>/id_XXXXXXXX/NN_V_view.jpg")
    return f"fashion{gender}{category}{item.replace('_', '')}{m.group(1)}_{m.group(2)}{m.group(3)}.jpg"


def scan(root: str) -> List[str]:
    """The release paths (relative to ``root``, starting with ``img/`` when the tree
    has it) of every image file under the tree, sorted."""
    base = os.path.join(root, "img") if os.path.isdir(os.path.join(root, "img")) else root
    prefix = "img/" if base != root else ""
    found = []
    for folder, _dirs, files in os.walk(base):
        for f in files:
            if f.lower().endswith((".jpg", ".jpeg", ".png")):
                rel = os.path.relpath(os.path.join(folder, f), base).replace(os.sep, "/")
                found.append(prefix + rel)
    return sorted(found)


def to_field_size(image: Image.Image) -> Image.Image:
    """256x256 RGB: unchanged at that size, else the longer side resized to 256 (bicubic,
    antialiased, aspect ratio kept) and padded with white, centred."""
    image = image.convert("RGB")
    if image.size == (SIZE, SIZE):
        return image
    w, h = image.size
    scale = SIZE / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image.resize((nw, nh), Image.BICUBIC, reducing_gap=None)
    canvas = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    canvas.paste(resized, ((SIZE - nw) // 2, (SIZE - nh) // 2))
    return canvas


def read_list(path: str) -> List[str]:
    """A split file: one image per line, as a field name or a release path."""
    names = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                names.append(field_name(line) if "/" in line else line)
    return names


def split_by_item(names: Iterable[str], test_fraction: float) -> Dict[str, str]:
    """name -> "train"/"test": the first ``test_fraction`` of the item ids in CRC-32
    order (at least one when there are two items or more) are test items."""
    names = list(names)
    items = sorted({identity(n) for n in names}, key=lambda i: (zlib.crc32(i.encode()), i))
    n_test = int(round(len(items) * test_fraction))
    if len(items) >= 2:
        n_test = min(max(1, n_test), len(items) - 1)
    test_items = set(items[:n_test])
    return {n: ("test" if identity(n) in test_items else "train") for n in names}


class ImageWriteError(OSError):
    """The converter could not write an output image (a full disk, a read-only folder)."""


def _write_image(src: str, dst: str) -> None:
    """Convert one image; a source that cannot be read raises (any PIL error), a
    destination that cannot be written raises :class:`ImageWriteError` naming it, and
    no ``.part`` file is left either way."""
    with Image.open(src) as im:
        im.load()
        fmt = im.format
        rotated = im.getexif().get(0x0112, 1) not in (0, 1)  # an EXIF orientation to apply
        same = fmt == "JPEG" and im.size == (SIZE, SIZE) and im.mode == "RGB" and not rotated
        out = to_field_size(to_rgb(im))  # EXIF, 16-bit, alpha on white: deformgan.images
    tmp = dst + ".part"
    try:
        if same:  # the release's own JPEG, byte for byte
            with open(src, "rb") as a, open(tmp, "wb") as b:
                b.write(a.read())
        else:
            out.save(tmp, format="JPEG", quality=95)
        os.replace(tmp, dst)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        error = ImageWriteError(write_error_message(dst, exc))
        error.errno = exc.errno
        raise error from exc


def prepare(root: str, out: str, train_list: Optional[str] = None, test_list: Optional[str] = None,
            annotations: Optional[str] = None, test_fraction: float = 0.1, weights: str = "yolo11n-pose.pt",
            device: Optional[str] = None, progress: bool = True) -> Dict:
    """Convert an In-shop tree (see the module); returns the summary written to
    ``OUT/DEEPFASHION.json``. The run holds ``out`` while it works."""
    if os.path.isdir(root) and os.path.realpath(out) == os.path.realpath(root):
        raise ValueError(f"--out {out} is the In-shop folder itself: write the converted set elsewhere")
    with OutputLock(out, "deepfashion"):
        return _prepare(root, out, train_list, test_list, annotations, test_fraction, weights, device, progress)


def _prepare(root: str, out: str, train_list: Optional[str], test_list: Optional[str], annotations: Optional[str],
             test_fraction: float, weights: str, device: Optional[str], progress: bool) -> Dict:
    from tqdm import tqdm

    if not os.path.isdir(root):
        raise FileNotFoundError(f"In-shop folder not found: {root}")
    if (train_list is None) != (test_list is None):
        raise ValueError("give both --train-list and --test-list, or neither")
    problems: Dict[str, List[str]] = {"not_in_layout": [], "unreadable": [], "listed_but_missing": [],
                                      "in_both_lists": []}
    sources: Dict[str, str] = {}
    for rel in scan(root):
        try:
            sources.setdefault(field_name(rel), rel)
        except LayoutError as exc:
            problems["not_in_layout"].append(str(exc))
    if not sources:
        raise FileNotFoundError(f"no images in the In-shop layout under {root} (img/<GENDER>/<Category>/id_X/...)")
    if train_list is not None:
        lists = {"train": read_list(train_list), "test": read_list(test_list)}
        problems["in_both_lists"] = sorted(set(lists["train"]) & set(lists["test"]))
        split = {}
        for s in ("train", "test"):
            for n in lists[s]:
                if n in problems["in_both_lists"]:
                    continue
                if n in sources:
                    split[n] = s
                else:
                    problems["listed_but_missing"].append(n)
        split_rule = f"lists {os.path.basename(train_list)} / {os.path.basename(test_list)}"
    else:
        split = split_by_item(sources, test_fraction)
        split_rule = f"by clothing item: first {test_fraction:g} of the item ids in CRC-32 order are test"
    pose_model = None
    if annotations is None:  # detection: the pose model is loaded before any image is converted
        from .. import keypoints
        pose_model = keypoints.load_pose_model(weights, flag="--weights")
    for s in ("train", "test"):
        os.makedirs(os.path.join(out, s), exist_ok=True)
        # an image an earlier run put in this split that the present split puts in the
        # other (or nowhere) goes: a test item must never remain among the training images
        for old in os.listdir(os.path.join(out, s)):
            if split.get(old) != s:
                os.remove(os.path.join(out, s, old))
                problems.setdefault("removed_from_an_earlier_split", []).append(f"{s}/{old}")
    todo = [(n, s) for n, s in split.items() if not os.path.exists(os.path.join(out, s, n))]
    bar = tqdm(total=len(split), initial=len(split) - len(todo), desc="deepfashion images", unit="img",
               disable=not progress)
    bad = set()
    for name, s in todo:
        try:
            _write_image(os.path.join(root, sources[name]), os.path.join(out, s, name))
        except ImageWriteError:
            bar.close()
            raise  # a write failure stops the conversion: every later write would fail too
        except Exception as exc:  # PIL raises several types for corrupt files
            bad.add(name)
            problems["unreadable"].append(f"{sources[name]}: {exc}")
            tqdm.write(f"[deformgan.data.deepfashion] cannot read {sources[name]}: {exc} (left out)", file=sys.stderr)
        bar.update(1)
    bar.close()
    for msg in problems["not_in_layout"] + [f"listed but not in the tree: {n}" for n in problems["listed_but_missing"]] \
            + [f"in both lists (left out): {n}" for n in problems["in_both_lists"]]:
        print(f"[deformgan.data.deepfashion] {msg}", file=sys.stderr)
    known = read_annotations(annotations) if annotations else None
    summary: Dict = {"source": os.path.abspath(root), "size": [SIZE, SIZE],
                     "size_rule": "256x256 kept as is; else longer side resized to 256 (bicubic), white padding",
                     "split_rule": split_rule, "keypoints": annotations or f"detected ({weights})"}
    for s in ("train", "test"):
        names = sorted(n for n, sp in split.items() if sp == s and n not in bad)
        ann_path = os.path.join(out, f"annotations-{s}.csv")
        if known is not None:
            rows = {n: known[n] for n in names if n in known}
            missing = [n for n in names if n not in known]
            if missing:
                print(f"[deformgan.data.deepfashion] {len(missing)} {s} images have no keypoints in {annotations} "
                      f"(left out of the pairs), e.g. {missing[0]}", file=sys.stderr)
            write_annotations(ann_path, rows)
        else:
            from .. import keypoints
            keypoints.extract(os.path.join(out, s), ann_path, weights=weights, device=device, progress=progress,
                              model=pose_model)
        ann = read_annotations(ann_path) if os.path.exists(ann_path) else {}
        pairs = standard_pairs(ann)
        write_pairs(os.path.join(out, f"pairs-{s}.csv"), pairs)
        summary[s] = {"images": len(names), "annotated": len(ann), "pairs": len(pairs),
                      "items": len({identity(n) for n in names})}
    summary["problems"] = {k: v for k, v in problems.items() if v}
    with open(os.path.join(out, "DEEPFASHION.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.data.deepfashion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="the In-shop release folder (holding img/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-list", help="the field's train split file (one name per line)")
    ap.add_argument("--test-list", help="the field's test split file")
    ap.add_argument("--test-fraction", type=real_in(0, 1, low_open=True, high_open=True), default=0.1,
                    help="without lists: the fraction of clothing items held out for test")
    ap.add_argument("--annotations", help="keypoints of the images (annotation CSV with the field's names); "
                                          "default: detect them with YOLO pose")
    ap.add_argument("--weights", default="yolo11n-pose.pt", help="YOLO pose weights for the detection")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    try:
        summary = prepare(args.root, args.out, args.train_list, args.test_list, args.annotations,
                          args.test_fraction, args.weights, args.device)
    except (FileNotFoundError, ValueError, PoseWeightsError, ImportError, ImageWriteError, OutputBusy) as exc:
        print(f"[deformgan.data.deepfashion] error: {exc}", file=sys.stderr)
        return 2
    print(f"[deformgan.data.deepfashion] wrote {args.out}: train {summary['train']}, test {summary['test']}; "
          f"{sum(len(v) for v in summary['problems'].values())} problems (DEEPFASHION.json)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
