"""`python -m deformgan.keypoints IMAGES_DIR --out annotations.csv [--weights yolo11n-pose.pt]
[--device DEV] [--batch-size B] [--conf C]`

Runs an ultralytics YOLO pose model over a folder of person images, keeps one person
per image (the largest box), converts its 17 COCO keypoints to the 18-joint order
(neck from the shoulders, keypoints under --conf missing) in the image's pixel frame,
and writes the standard annotation CSV. Resumable: names already in the output are
skipped and new lines are appended. Unreadable images are reported by name and
skipped (a count is printed at the end), never silently. An image where no person is
found gets a line of -1 (all joints missing), so a resumed run does not retry it.

Pretrained weights: ``--weights yolo11n-pose.pt`` loads them through ultralytics
(its cache, or a download where the machine is online); on an offline machine give a
path to a local .pt file. ``--weights yolo11n-pose.yaml`` builds the architecture
with random weights (for tests: its keypoints are meaningless).
"""
import argparse
import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import pose as P
from .data.market import AnnotationError, check_image_name, read_annotations, write_annotations
from .cli_types import positive_int, real_in
from .images import open_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class PoseWeightsError(RuntimeError):
    """The YOLO pose model could not be loaded (weights missing offline, or unreadable)."""


def load_pose_model(weights: str = "yolo11n-pose.pt", flag: str = "--pose-weights"):
    """An ultralytics YOLO pose model. A ``.yaml`` builds the architecture with random
    weights; a ``.pt`` that is neither a local file nor in ultralytics' cache needs a
    download, which fails offline with a :class:`PoseWeightsError` whose message names
    the command's option ``flag``."""
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise ImportError("keypoint extraction needs ultralytics: pip install ultralytics") from exc
    if weights.endswith(".yaml"):
        print(f"[deformgan.keypoints] building {weights} with RANDOM weights: the keypoints will be meaningless",
              file=sys.stderr)
        return YOLO(weights, task="pose")
    try:
        return YOLO(weights, task="pose")
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PoseWeightsError(f"cannot load pose weights {weights!r} ({reason}). Pretrained weights are downloaded "
                               f"by ultralytics when online; offline, pass {flag} /path/to/yolo11n-pose.pt") from exc


def predict(model, images, **kwargs):
    """``model.predict(images, **kwargs)`` without its side effect on torch: ultralytics
    sets ``torch.set_num_threads(1)`` when it predicts on the CPU, which would leave the
    rest of the process (training, generation) single-threaded and, since convolutions
    sum in another order on another thread count, with other numbers."""
    threads = torch.get_num_threads()
    try:
        return model.predict(images, **kwargs)
    finally:
        torch.set_num_threads(threads)


def select_person(boxes_xyxy: torch.Tensor, scores: Optional[torch.Tensor] = None) -> Optional[int]:
    """Index of the person to keep: the largest box (ties: the highest score), or None."""
    if boxes_xyxy is None or len(boxes_xyxy) == 0:
        return None
    area = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]).clamp_min(0) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1]).clamp_min(0)
    if scores is None:
        return int(area.argmax())
    largest = area == area.max()  # ties between equal boxes go to the higher score
    return int(torch.where(largest, scores.float(), torch.full_like(scores.float(), -float("inf"))).argmax())


def result_to_keypoints(result, conf: float) -> torch.Tensor:
    """One ultralytics Results object -> ``[18, 2]`` (x, y) of the kept person, -1 when missing."""
    kps = getattr(result, "keypoints", None)
    boxes = getattr(result, "boxes", None)
    if kps is None or kps.xy is None or len(kps.xy) == 0:
        return torch.full((P.NUM_JOINTS, 2), -1.0)
    xy = kps.xy.float().cpu()
    kconf = kps.conf.float().cpu() if kps.conf is not None else None
    if boxes is not None and len(boxes) == len(xy):
        i = select_person(boxes.xyxy.float().cpu(), boxes.conf.float().cpu() if boxes.conf is not None else None)
    else:
        i = 0
    return P.coco17_to_openpose18(xy[i], kconf[i] if kconf is not None else None, threshold=conf)


def list_images(folder: str) -> List[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def _read_rgb(path: str) -> np.ndarray:
    return np.asarray(open_rgb(path))


def extract(images_dir: str, out: str, weights: str = "yolo11n-pose.pt", device: Optional[str] = None,
            batch_size: int = 16, conf: float = 0.3, model=None, progress: bool = True) -> Tuple[int, int, List[str]]:
    """Run the extraction; returns (images written, images skipped as done, names not done:
    unreadable images and names the annotation file cannot hold)."""
    from tqdm import tqdm

    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    names = list_images(images_dir)
    refused = []
    for name in names:
        try:
            check_image_name(name)
        except AnnotationError as exc:
            refused.append(name)
            print(f"[deformgan.keypoints] {exc} (skipped; rename the file)", file=sys.stderr)
    refused_set = set(refused)
    names = [n for n in names if n not in refused_set]
    repair_partial_last_line(out)
    done = set(read_annotations(out).keys()) if os.path.exists(out) and os.path.getsize(out) > 0 else set()
    todo = [n for n in names if n not in done]
    model = model if model is not None else load_pose_model(weights, flag="--weights")
    unreadable: List[str] = []
    written = 0
    bar = tqdm(total=len(todo), desc="keypoints", unit="img", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        imgs, ok_names = [], []
        for name in chunk:
            try:
                arr = _read_rgb(os.path.join(images_dir, name))
            except Exception as exc:
                unreadable.append(name)
                tqdm.write(f"[deformgan.keypoints] cannot read {name}: {exc} (skipped)", file=sys.stderr)
                continue
            imgs.append(arr[:, :, ::-1].copy())  # ultralytics takes numpy images as BGR
            ok_names.append(name)
        if imgs:
            results = predict(model, imgs, device=device, verbose=False, conf=0.25)
            rows = {name: result_to_keypoints(r, conf) for name, r in zip(ok_names, results)}
            write_annotations(out, rows, append=True)
            written += len(rows)
        bar.update(len(chunk))
    bar.close()
    return written, len(done & set(names)), unreadable + refused


def repair_partial_last_line(path: str) -> Optional[str]:
    """A run killed mid-write can leave a last line without its newline: cut it
    off (it is redone on resume) and say so; returns the dropped text, if any."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return None
        cut = data.rfind(b"\n") + 1
        fh.truncate(cut)
    dropped = data[cut:].decode("utf-8", "replace")
    print(f"[deformgan.keypoints] {path}: dropped an incomplete last line left by an interrupted run "
          f"({dropped[:60]!r}); its image is redone", file=sys.stderr)
    return dropped


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.keypoints", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images_dir")
    ap.add_argument("--out", required=True, help="annotation CSV to write (appended to when it exists)")
    ap.add_argument("--weights", default="yolo11n-pose.pt", help="YOLO pose weights (.pt) or architecture (.yaml)")
    ap.add_argument("--device", default=None, help="e.g. cpu, 0, cuda:0 (default: ultralytics' choice)")
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("--conf", type=real_in(0, 1), default=0.3, help="keypoint confidence under which a joint is missing")
    args = ap.parse_args(argv)
    try:
        written, skipped, unreadable = extract(args.images_dir, args.out, args.weights, args.device,
                                               args.batch_size, args.conf)
    except (PoseWeightsError, ImportError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"[deformgan.keypoints] error: {exc}", file=sys.stderr)
        return 2
    print(f"[deformgan.keypoints] wrote {written} images to {args.out}; {skipped} already there; "
          f"{len(unreadable)} unreadable" + (f": {', '.join(unreadable)}" if unreadable else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
