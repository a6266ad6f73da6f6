"""Person re-identification data augmentation (the protocol of the journal version of
Deformable GAN, TPAMI 2019): every training image with a valid pose, re-posed K times.

  python -m deformgan.reid_augment --checkpoint CKPT --data DIR --per-image K --out OUT
                                   [--seed S] [--batch-size B] [--generated-only] [--link]

For every training image of DIR (a Market-layout folder: ``bounding_box_train/`` and its
annotation file) whose pose is valid (the pairs rule: a person id, all four torso
joints), K images are generated whose target poses are drawn at random, with
replacement, from all valid training poses of any identity (seeded by ``--seed``); each
is labelled with its SOURCE identity.

OUT is a Market-layout folder that re-ID libraries read unchanged:
``OUT/bounding_box_train/`` holds the generated images, named
``<source stem>_g<k>.jpg`` (so ``([-\\d]+)_c(\\d)`` still parses the source's person id
and camera, and names are unique), plus the real training images (copied, or hard
links with ``--link``) unless ``--generated-only``; ``query/`` and
``bounding_box_test/`` of DIR, when present, are linked as symlinks. ``OUT/manifest.csv``
lists ``generated,source,target_pose_of`` for every generated image; it is written
first, from the seed alone, so an interrupted run resumes exactly where it stopped
(images already under their final name are kept; each image is written to a temporary
name and renamed, so no half image ever has a final name).
"""
import argparse
import csv
import json
import os
import random
import shutil
import sys
from typing import Dict, List, Optional, Tuple

import torch
from PIL import Image

from . import checkpoint as ckpt_io
from .cli_types import int_at_least, positive_int
from .data.layout import DatasetLayout
from .data.market import AnnotationError, is_valid_for_pairs, read_annotations, read_image_uint8
from .outputs import OutputBusy, OutputLock, write_error_message

MANIFEST_HEADER = "generated,source,target_pose_of"


def _annotations_path(data: str) -> str:
    return DatasetLayout(data).require_annotations("train")


def generated_name(source: str, k: int) -> str:
    """``0002_c1s1_000451_03.jpg``, k=4 -> ``0002_c1s1_000451_03_g04.jpg``."""
    return f"{os.path.splitext(source)[0]}_g{k:02d}.jpg"


def plan(annotations: Dict[str, torch.Tensor], per_image: int, seed: int) -> List[Tuple[str, str, str]]:
    """(generated name, source, target-pose image) for every valid training image and k,
    the target poses drawn uniformly with replacement from all valid poses (seeded)."""
    valid = [n for n, kp in annotations.items() if is_valid_for_pairs(n, kp)]
    if not valid:
        raise ValueError("no training image has a valid pose (a person id and all four torso joints)")
    rng = random.Random(seed)
    return [(generated_name(src, k), src, rng.choice(valid)) for src in valid for k in range(per_image)]


def write_manifest(path: str, rows: List[Tuple[str, str, str]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as fh:
        fh.write(MANIFEST_HEADER + "\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerows(rows)
    os.replace(tmp, path)


def read_manifest(path: str) -> List[Tuple[str, str, str]]:
    with open(path, newline="") as fh:
        lines = fh.read().splitlines()
    if not lines or lines[0] != MANIFEST_HEADER:
        raise ValueError(f"{path}: not a reid_augment manifest (header {MANIFEST_HEADER!r})")
    return [tuple(r) for r in csv.reader(lines[1:])]


def augment(checkpoint: str, data: str, per_image: int, out: str, seed: int = 0, batch_size: int = 16,
            generated_only: bool = False, link: bool = False, device: Optional[str] = None,
            ops_backend: Optional[str] = None, progress: bool = True) -> Dict:
    """Write the augmented re-ID training set (see the module docstring); returns counts
    and the generation speed. The run holds ``out`` while it works; ``out`` may not be
    the input dataset or inside it; a resumed run must use the same checkpoint."""
    from .outputs import check_writable
    check_writable(out, "--out", is_folder=True)
    real_out, real_data = os.path.realpath(out), os.path.realpath(data)
    if real_out == real_data or real_out.startswith(real_data + os.sep):
        raise ValueError(f"--out {out} is the input dataset {data} or inside it: the augmented set is written to a "
                         "folder of its own, never into the input")
    with OutputLock(out, "reid_augment"):
        return _augment(checkpoint, data, per_image, out, seed, batch_size, generated_only, link, device,
                        ops_backend, progress)


def _augment(checkpoint: str, data: str, per_image: int, out: str, seed: int, batch_size: int,
             generated_only: bool, link: bool, device: Optional[str], ops_backend: Optional[str],
             progress: bool) -> Dict:
    import time

    from tqdm import tqdm

    from .scoring import _file_digest
    ann_path = _annotations_path(data)
    annotations = read_annotations(ann_path)
    train_dir = DatasetLayout(data).images("train")  # Market's bounding_box_train/ or DeepFashion's train/
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(f"no training images in {data} (bounding_box_train/ or train/)")
    rows = plan(annotations, per_image, seed)
    out_train = os.path.join(out, "bounding_box_train")
    os.makedirs(out_train, exist_ok=True)
    manifest = os.path.join(out, "manifest.csv")
    origin = os.path.join(out, "AUGMENT.json")
    made_by = {"checkpoint_sha256": _file_digest(checkpoint) if os.path.isfile(checkpoint) else None,
               "data": os.path.realpath(data),
               "per_image": per_image, "seed": seed}
    if os.path.isfile(manifest):
        old = read_manifest(manifest)
        if old != rows:
            raise ValueError(f"{manifest} was written by another run (other data, --per-image or --seed); "
                             "use another --out or remove it")
        if os.path.isfile(origin):
            with open(origin) as fh:
                before = json.load(fh)
            if before.get("checkpoint_sha256") != made_by["checkpoint_sha256"]:
                raise ValueError(f"{out} was generated with another checkpoint (sha256 "
                                 f"{str(before.get('checkpoint_sha256'))[:12]}...); resuming with {checkpoint} would "
                                 "mix two generators in one set: use another --out")
    else:
        write_manifest(manifest, rows)
    if not os.path.isfile(origin):
        _write_json(origin, made_by)
    todo = [r for r in rows if not os.path.isfile(os.path.join(out_train, r[0]))]
    from .generate import Reposer
    reposer = Reposer(checkpoint, device=device, ops_backend=ops_backend)
    H, W = reposer.height, reposer.width
    cache: Dict[str, Image.Image] = {}

    def image(name: str) -> Image.Image:
        if name not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[name] = Image.fromarray(read_image_uint8(os.path.join(train_dir, name), H, W))
        return cache[name]

    t0, done = time.perf_counter(), 0
    for start in tqdm(range(0, len(todo), batch_size), desc="reid_augment", unit="batch", disable=not progress):
        chunk = todo[start:start + batch_size]
        outs = reposer.generate_batch([image(src) for _, src, _ in chunk],
                                      torch.stack([annotations[src] for _, src, _ in chunk]),
                                      torch.stack([annotations[tgt] for _, _, tgt in chunk]))
        for (name, _, _), arr in zip(chunk, outs):
            final = os.path.join(out_train, name)
            tmp = final + ".tmp.jpg"
            Image.fromarray(arr).save(tmp, quality=95, subsampling=0)  # 4:4:4, no chroma halving
            os.replace(tmp, final)
        done += len(chunk)
    seconds = time.perf_counter() - t0
    copied = 0
    if not generated_only:
        for name in sorted(os.listdir(train_dir)):
            dst = os.path.join(out_train, name)
            src = os.path.join(train_dir, name)
            # a copy kept from an earlier run is verified (its size); each copy goes to a
            # temporary name and is renamed once complete: never a half file under its name
            if os.path.exists(dst) and os.path.getsize(dst) == os.path.getsize(src):
                continue
            tmp = dst + ".part"
            try:
                if link:
                    try:
                        os.link(src, tmp)
                    except OSError:
                        shutil.copy2(src, tmp)
                else:
                    shutil.copy2(src, tmp)
                os.replace(tmp, dst)
            except OSError as exc:
                if os.path.exists(tmp):
                    os.remove(tmp)
                error = OSError(write_error_message(dst, exc))
                error.errno = exc.errno
                raise error from exc
            copied += 1
    for sub in ("query", "bounding_box_test"):
        src, dst = os.path.join(data, sub), os.path.join(out, sub)
        if os.path.isdir(src) and not os.path.lexists(dst):
            os.symlink(os.path.abspath(src), dst)
    return {"generated": len(rows), "generated_now": done, "real_copied": copied, "manifest": manifest,
            "images_per_s": done / seconds if done and seconds > 0 else None, "seconds": seconds}


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.reid_augment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="Market-layout folder with bounding_box_train/ and its annotations")
    ap.add_argument("--per-image", type=positive_int, required=True, help="K generated images per training image")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int_at_least(0), default=0)
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("--generated-only", action="store_true", help="do not copy the real training images")
    ap.add_argument("--link", action="store_true", help="hard-link the real training images instead of copying")
    ap.add_argument("--device", default=None)
    ap.add_argument("--ops-backend", default=None, choices=["auto", "reference", "cpu", "cuda", "triton"])
    args = ap.parse_args(argv)
    try:
        r = augment(args.checkpoint, args.data, args.per_image, args.out, args.seed, args.batch_size,
                    args.generated_only, args.link, args.device, args.ops_backend)
    except (OSError, ValueError, ckpt_io.CheckpointError, AnnotationError, OutputBusy) as exc:
        print(f"[deformgan.reid_augment] error: {exc}", file=sys.stderr)
        return 2
    speed = f", {r['images_per_s']:.1f} images/s" if r["images_per_s"] else ""
    print(f"[deformgan.reid_augment] {r['generated']} generated images ({r['generated_now']} this run{speed}), "
          f"{r['real_copied']} real images added; manifest {r['manifest']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
