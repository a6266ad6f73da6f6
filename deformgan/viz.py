"""Pictures for people to look at: pose skeletons, heatmaps, part masks, grids.

`python -m deformgan.viz demo OUT.png [--data DIR]` draws the README figure: a few
synthetic people with their pose, heatmaps and part masks, and a source part warped
onto a target pose with part_affine_warp.
"""
import argparse
import colorsys
import contextlib
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import pose as P
from .data.market import to_uint8


def part_colours(n: int) -> np.ndarray:
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb(i / n, 0.85, 1.0)] for i in range(n)], np.uint8)


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in [-1, 1] -> ``H x W x 3`` uint8 array (:func:`to_uint8`, then
    channels last), for PIL."""
    return to_uint8(image).cpu().permute(1, 2, 0).numpy()


def draw_pose(image: np.ndarray, keypoints: torch.Tensor, radius: int = 2) -> Image.Image:
    """The skeleton of ``keypoints`` [18, 2] (x, y) over an ``H x W x 3`` uint8 image."""
    im = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    d = ImageDraw.Draw(im)
    colours = part_colours(len(P.LIMBS))
    ok = P.present(keypoints)
    for (a, b), col in zip(P.LIMBS, colours):
        if ok[a] and ok[b]:
            d.line([tuple(keypoints[a].tolist()), tuple(keypoints[b].tolist())], fill=tuple(int(c) for c in col), width=1)
    for j in range(P.NUM_JOINTS):
        if ok[j]:
            x, y = keypoints[j].tolist()
            d.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 255, 255), outline=(0, 0, 0))
    return im


def pose_image(keypoints: torch.Tensor, height: int = 128, width: int = 64) -> Image.Image:
    """The skeleton on a black background."""
    return draw_pose(np.zeros((height, width, 3), np.uint8), keypoints)


def heatmaps_to_image(heatmaps: torch.Tensor) -> Image.Image:
    """``[K, H, W]`` heatmaps -> one picture, each joint in its own colour (max over joints)."""
    h = heatmaps.detach().float().cpu()
    colours = torch.from_numpy(part_colours(h.shape[0])).float()
    rgb = (h.unsqueeze(-1) * colours.view(-1, 1, 1, 3)).amax(0)
    return Image.fromarray(rgb.clamp(0, 255).byte().numpy())


def masks_to_image(masks: torch.Tensor, skip_first: bool = True) -> Image.Image:
    """``[P, H, W]`` part masks -> one picture, each part in its own colour (later parts on top)."""
    m = masks.detach().float().cpu()
    colours = part_colours(m.shape[0])
    out = np.zeros(m.shape[1:] + (3,), np.uint8)
    for p in range(1 if skip_first else 0, m.shape[0]):
        out[m[p].numpy() > 0] = colours[p]
    return Image.fromarray(out)


def grid(rows: Sequence[Sequence[Image.Image]], pad: int = 2, background=(255, 255, 255),
         titles: Optional[Sequence[str]] = None) -> Image.Image:
    """Images (rows of equal length) on a grid, with optional column titles."""
    h = max(im.size[1] for row in rows for im in row)
    w = max(im.size[0] for row in rows for im in row)
    top = 12 if titles else 0
    cols = max(len(r) for r in rows)
    out = Image.new("RGB", (cols * (w + pad) + pad, len(rows) * (h + pad) + pad + top), background)
    d = ImageDraw.Draw(out)
    if titles:
        for c, t in enumerate(titles):
            d.text((pad + c * (w + pad), 0), t, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            out.paste(im.convert("RGB"), (pad + c * (w + pad), top + pad + r * (h + pad)))
    return out


def demo_figure(data_dir: str, out: str, rows: int = 3, upscale: int = 2) -> str:
    """Synthetic people with heatmaps and part masks, and part_affine_warp moving the
    source onto the target pose (all parts, and the torso part alone)."""
    import deformgan_ops as D

    from .data.market import MarketPoseDataset
    from .geometry import render

    ds = MarketPoseDataset(data_dir, os.path.join(data_dir, "annotations-train.csv"),
                           os.path.join(data_dir, "pairs-train.csv"), split="train", heatmaps=False)
    if len(ds) == 0:
        raise ValueError(f"no training pairs in {data_dir} to draw")
    step = max(1, len(ds) // rows)
    items = [ds[(i * step + 7 * i) % len(ds)] for i in range(rows)]  # spread over the set, wrapping in a small one
    src_kp = torch.stack([it["source_keypoints"] for it in items])
    tgt_kp = torch.stack([it["target_keypoints"] for it in items])
    g = render(src_kp, tgt_kp, (128, 64), levels=(0,))
    # images mapped to [0, 1] so that the max over parts keeps colours (in the
    # network the warped tensors are feature maps, where this does not matter)
    src = (torch.stack([it["source_image"] for it in items]) + 1) / 2
    masks = g.masks[0]
    warped = D.part_affine_warp(src, g.theta, masks) * 2 - 1
    body = masks.clone()
    body[:, 0] = 0  # every part but the torso/background plane
    parts_only = D.part_affine_warp(src, g.theta, body) * 2 - 1
    lines = []
    for i, it in enumerate(items):
        row = [Image.fromarray(to_hwc(it["source_image"])),
               draw_pose(to_hwc(it["source_image"]), it["source_keypoints"]),
               heatmaps_to_image(g.source_heatmaps[i]),
               pose_image(it["target_keypoints"]),
               masks_to_image(masks[i]),
               Image.fromarray(to_hwc(parts_only[i])),
               Image.fromarray(to_hwc(warped[i])),
               Image.fromarray(to_hwc(it["target_image"]))]
        lines.append([im.resize((im.size[0] * upscale, im.size[1] * upscale), Image.NEAREST) for im in row])
    fig = grid(lines, titles=["source", "source pose", "heatmaps", "target pose", "part masks",
                              "warped parts", "warped (all)", "target"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.save(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.viz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="the README figure from the synthetic set")
    demo.add_argument("out")
    demo.add_argument("--data", default=None, help="a synthetic set (made in a temporary folder if omitted)")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as cleanup:
        data = args.data
        if data is None:  # a synthetic set in a temporary folder, removed afterwards
            import tempfile

            from .data.synthetic import make_dataset
            data = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="deformgan-synthetic-"))
            make_dataset(data, ids=10, images_per_id=4, seed=1, progress=False)
        try:
            print(demo_figure(data, args.out), file=sys.stderr)
        except (FileNotFoundError, ValueError) as exc:
            print(f"[deformgan.viz] error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
