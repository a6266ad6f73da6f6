"""Animate one person along a pose sequence.

  python -m deformgan.animate --checkpoint CKPT --source IMG [--source-keypoints "[y...]:[x...]"]
                              --poses POSES --out OUT.gif|OUT.mp4 [--fps 10] [--panel]

POSES is one of
  - an annotation CSV (``name:keypoints_y:keypoints_x``), its rows in order;
  - a JSON list of poses, each ``[[x, y] x 18]``, ``{"keypoints": [[x, y] x 18]}`` or
    ``{"x": [18], "y": [18]}`` (-1 for a missing joint);
  - a folder of frames (sorted by file name) whose poses are found with the YOLO pose
    model (``--pose-weights``), as the keypoints CLI finds them.
Poses are in the pixels of ``--pose-size H W`` (default: the frames' own size for a
folder, else the model's size) and are scaled to the model's size. A joint missing in
one frame is carried over from the previous frame, as the original release's demo did
(a joint missing from the first frame on stays missing).

The frames are generated in batches (``--batch-size``) with a progress bar. ``--panel``
writes source | target pose | generated side by side. GIF always works (Pillow) at up to
50 fps (its frame delays are hundredths of a second; faster is refused); MP4 is
written with OpenCV's ``mp4v`` writer (installed with ultralytics), else imageio-ffmpeg,
and is refused with a clear message when neither is installed. The output appears
under its final name only when complete.
"""
import argparse
import json
import os
import sys
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from . import pose as P
from .cli_types import positive_int, real_in
from .generate import (NoPersonFound, PoseFileError, Reposer, parse_keypoints_string, pose_from_json,
                       read_pose_file)
from .outputs import file_lock


def carry_missing_joints(poses: torch.Tensor) -> torch.Tensor:
    """``[T, 18, 2]`` -> the same with every joint missing in frame t > 0 taken from frame
    t - 1 (after that frame was filled), as the original demo did."""
    out = poses.clone()
    for t in range(1, len(out)):
        gone = P.missing(out[t])
        out[t][gone] = out[t - 1][gone]
    return out


POSE_FORMS = '[[x, y] x 18], {"keypoints": [[x, y] x 18]} or {"x": [18 numbers], "y": [18 numbers]}'


def _pose_from_json(item, where: str) -> torch.Tensor:
    try:
        kp = pose_from_json(item, allow_list=True)
    except (TypeError, ValueError, RuntimeError) as exc:  # not numbers, ragged lists, x and y of other lengths
        raise PoseFileError(f"{where}: expected {POSE_FORMS} ({exc})") from exc
    if kp.shape != (18, 2):
        raise PoseFileError(f"{where}: expected 18 (x, y) joints, got shape {list(kp.shape)}")
    kp[P.missing(kp)] = -1
    return kp


def read_poses(poses: str, reposer: Optional[Reposer] = None, progress: bool = True):
    """The pose sequence ``[T, 18, 2]`` of a CSV, a JSON list or a folder of frames, the
    size (H, W) of the frames' images when they are known (folder), else None, and the
    frames skipped because no person was found in them (named, in order)."""
    from tqdm import tqdm

    if os.path.isdir(poses):
        from .scoring import image_files
        frames = image_files(poses)
        if not frames:
            raise FileNotFoundError(f"--poses: no images in the folder {poses}")
        if reposer is None:
            raise ValueError("a folder of frames needs a Reposer (its pose model) to find the poses")
        out, size, skipped = [], None, []
        for f in tqdm(frames, desc="poses", unit="frame", disable=not progress):
            img = reposer.load_image(os.path.join(poses, f))
            if size is None:
                size = (img.size[1], img.size[0])
            elif (img.size[1], img.size[0]) != size:
                raise ValueError(f"--poses: frame {f} is {img.size[0]}x{img.size[1]}, the first frame "
                                 f"{size[1]}x{size[0]} (WxH); the frames of a sequence share one size")
            try:
                out.append(reposer.keypoints_of(img, f"frame {f}"))
            except NoPersonFound:
                skipped.append(f)
        if not out:
            raise NoPersonFound(f"--poses: no person found in any of the {len(frames)} frames of {poses}")
        return torch.stack(out), size, skipped
    if not os.path.isfile(poses):
        raise FileNotFoundError(f"--poses: no such file or folder {poses}")
    if poses.lower().endswith(".csv"):
        from .data.market import read_annotations
        rows = list(read_annotations(poses).values())
        if not rows:
            raise PoseFileError(f"{poses}: no pose rows")
        return torch.stack(rows), None, []
    try:
        with open(poses) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise PoseFileError(f"{poses}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise PoseFileError(f"{poses}: expected a non-empty JSON list of poses")
    return torch.stack([_pose_from_json(item, f"{poses}[{i}]") for i, item in enumerate(data)]), None, []


def mp4_writer_name() -> Optional[str]:
    """Which installed library writes MP4: 'opencv', 'imageio-ffmpeg', or None."""
    try:
        import cv2  # noqa: F401
        return "opencv"
    except ImportError:
        pass
    try:
        import imageio_ffmpeg  # noqa: F401
        return "imageio-ffmpeg"
    except ImportError:
        return None


MP4_MISSING = ("MP4 needs OpenCV (pip install opencv-python) or imageio-ffmpeg; "
               "GIF output (--out X.gif) always works")
GIF_MAX_FPS = 50.0  # a GIF's frame delay is in hundredths of a second; viewers slow delays under 2 to 10
GIF_MAX_DELAY_CS = 65535  # the delay field is 16 bits of hundredths of a second


def check_output(out: str, fps: float) -> str:
    """The extension of ``out`` (".gif" or ".mp4") once the output can be written as
    asked: a known extension, an MP4 writer installed, a frame rate a GIF can hold."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in (".gif", ".mp4"):
        raise ValueError(f"--out must end in .gif or .mp4, got {out!r}")
    if ext == ".mp4" and mp4_writer_name() is None:
        raise RuntimeError(MP4_MISSING)
    if ext == ".gif" and 100.0 / fps > GIF_MAX_DELAY_CS:
        raise ValueError(f"--fps {fps:g}: a GIF stores a frame's delay as at most {GIF_MAX_DELAY_CS} hundredths of a "
                         f"second, so its slowest rate is {100.0 / GIF_MAX_DELAY_CS:.4f} fps; use a higher --fps")
    if ext == ".gif" and fps > GIF_MAX_FPS:
        raise ValueError(f"--fps {fps:g}: a GIF stores frame delays in hundredths of a second and viewers show "
                         f"delays under 2 of them as 10, so it would play at 10 fps; use --fps {GIF_MAX_FPS:g} or "
                         "less for GIF, or MP4 (--out X.mp4)")
    return ext


def write_video(frames: Sequence[np.ndarray], out: str, fps: float) -> str:
    """Write ``H x W x 3`` uint8 frames to a GIF or MP4 (by extension, see
    :func:`check_output`) atomically; returns the writer used."""
    ext = check_output(out, fps)
    tmp = f"{out}.tmp{os.getpid()}{ext}"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        if ext == ".gif":
            ims = [Image.fromarray(f) for f in frames]
            ims[0].save(tmp, save_all=True, append_images=ims[1:], duration=int(round(1000 / fps)), loop=0)
            writer = "pillow"
        else:
            writer = mp4_writer_name()
            h, w = frames[0].shape[:2]
            if writer == "opencv":
                import cv2
                vw = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
                if not vw.isOpened():
                    raise RuntimeError(f"OpenCV could not open an MP4 writer for {out}")
                for f in frames:
                    vw.write(np.ascontiguousarray(f[:, :, ::-1]))
                vw.release()
            else:
                import imageio_ffmpeg
                gen = imageio_ffmpeg.write_frames(tmp, (w, h), fps=fps)
                gen.send(None)
                for f in frames:
                    gen.send(np.ascontiguousarray(f))
                gen.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return writer


def animate(checkpoint: str, source: str, poses: str, out: str, source_keypoints: Optional[torch.Tensor] = None,
            fps: float = 10.0, panel: bool = False, batch_size: int = 8, pose_size: Optional[Sequence[int]] = None,
            device: Optional[str] = None, pose_weights: str = "yolo11n-pose.pt", progress: bool = True,
            reposer: Optional[Reposer] = None) -> dict:
    """Generate ``source`` in every pose of ``poses`` and write ``out``; returns a summary.
    A second run writing the same ``out`` at once is refused (:func:`deformgan.outputs.file_lock`)."""
    check_output(out, fps)  # before any work
    from .outputs import check_writable
    check_writable(out)
    with file_lock(out, "animate"):
        return _animate(checkpoint, source, poses, out, source_keypoints, fps, panel, batch_size, pose_size, device,
                        pose_weights, progress, reposer)


def _animate(checkpoint, source, poses, out, source_keypoints, fps, panel, batch_size, pose_size, device,
             pose_weights, progress, reposer) -> dict:
    from tqdm import tqdm

    from .viz import pose_image

    r = reposer or Reposer(checkpoint, device=device, pose_weights=pose_weights)
    seq, frame_size, skipped = read_poses(poses, r, progress)
    if skipped:
        print(f"[deformgan.animate] warning: no person found in {len(skipped)} frame(s), skipped: "
              + ", ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""), file=sys.stderr)
    size = tuple(pose_size) if pose_size else (frame_size or (r.height, r.width))
    seq = carry_missing_joints(seq)
    if size != (r.height, r.width):
        sy, sx = r.height / size[0], r.width / size[1]
        seq = torch.where(P.missing(seq).unsqueeze(-1), seq, seq * torch.tensor([sx, sy]))
    img = r.load_image(source)
    src_kp = source_keypoints if source_keypoints is not None else r.keypoints_of(img, source)
    img, src_kp = r._fit(img, src_kp)
    frames: List[np.ndarray] = []
    for start in tqdm(range(0, len(seq), batch_size), desc="animate", unit="batch", disable=not progress):
        chunk = seq[start:start + batch_size]
        outs = r.generate_batch(img, src_kp, chunk)
        for kp, g in zip(chunk, outs):
            if panel:
                row = [np.asarray(img), np.asarray(pose_image(kp, r.height, r.width)), g]
                frames.append(np.concatenate(row, axis=1))
            else:
                frames.append(g)
    writer = write_video(frames, out, fps)
    return {"frames": len(frames), "out": out, "writer": writer, "size": list(frames[0].shape[:2]),
            "skipped_frames": skipped}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.animate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--source", required=True)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--source-keypoints", help='"[y0, ..., y17]:[x0, ..., x17]"')
    src.add_argument("--source-pose", help="a JSON pose file")
    ap.add_argument("--poses", required=True, help="annotation CSV, JSON list of poses, or a folder of frames")
    ap.add_argument("--out", required=True, help="OUT.gif or OUT.mp4")
    ap.add_argument("--fps", type=real_in(0, 240, low_open=True), default=10.0)
    ap.add_argument("--panel", action="store_true", help="source | target pose | generated")
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--pose-size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                    help="the image size the poses are given in (default: the frames', else the model's)")
    ap.add_argument("--pose-weights", default="yolo11n-pose.pt")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    try:
        skp = None
        if args.source_keypoints:
            skp = parse_keypoints_string(args.source_keypoints)
        elif args.source_pose:
            skp = read_pose_file(args.source_pose)
        res = animate(args.checkpoint, args.source, args.poses, args.out, skp, args.fps, args.panel,
                      args.batch_size, args.pose_size, args.device, args.pose_weights)
    except (FileNotFoundError, ValueError, RuntimeError, NoPersonFound) as exc:
        print(f"[deformgan.animate] error: {exc}", file=sys.stderr)
        return 2
    print(f"[deformgan.animate] wrote {res['frames']} frames to {res['out']} ({res['writer']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
