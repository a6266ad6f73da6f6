"""Synthetic Market-1501-format demo data: procedurally drawn people at 128x64.

`python -m deformgan.data.synthetic OUT_DIR [--ids N] [--images-per-id M] [--seed S]`

Each identity is a set of colours and patterns (shirt with optional stripes or two
tones, long or short sleeves, trousers or shorts, skin, hair, shoes, maybe a bag);
each image poses it with a real Market-1501 pose from the shipped pose bank (scaled,
shifted, sometimes mirrored) on a background of one of several "cameras". The
keypoints are exact (the limbs are drawn on them), so no pose model is needed. The
folder has the Market layout: ``bounding_box_train/``, ``bounding_box_test/`` (held-out
identities), ``annotations-train.csv``, ``annotations-test.csv``, ``pairs-train.csv``,
``pairs-test.csv``.
"""
import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from .. import pose as P
from .market import standard_pairs, write_annotations, write_pairs
from ..cli_types import int_at_least, positive_int

HEIGHT, WIDTH = 128, 64
SUPERSAMPLE = 3
BANK_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pose_bank.json")

SKIN = [(241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (120, 72, 40)]
HAIR = [(20, 20, 20), (60, 40, 20), (120, 80, 40), (200, 170, 90), (90, 90, 90), (140, 40, 20)]
CAMERA_BASE = [(150, 150, 140), (90, 110, 90), (170, 160, 120), (110, 110, 130), (180, 180, 185), (120, 95, 80)]


def load_pose_bank(path: str = BANK_PATH) -> torch.Tensor:
    """The shipped bank of real Market-1501 poses, ``[K, 18, 2]`` (x, y), -1 missing."""
    with open(path) as fh:
        poses = json.load(fh)["poses"]
    return torch.tensor(poses, dtype=torch.float32)


@dataclass
class Identity:
    shirt: Tuple[int, int, int]
    shirt2: Tuple[int, int, int]
    pattern: str  # "plain", "stripes", "two-tone"
    long_sleeves: bool
    trousers: Tuple[int, int, int]
    shorts: bool
    skin: Tuple[int, int, int]
    hair: Tuple[int, int, int]
    long_hair: bool
    shoes: Tuple[int, int, int]
    bag: Optional[Tuple[int, int, int]]


def _colour(rng: random.Random, lo: int = 20, hi: int = 235) -> Tuple[int, int, int]:
    return tuple(rng.randint(lo, hi) for _ in range(3))


def random_identity(rng: random.Random) -> Identity:
    return Identity(
        shirt=_colour(rng), shirt2=_colour(rng), pattern=rng.choice(["plain", "plain", "stripes", "two-tone"]),
        long_sleeves=rng.random() < 0.5, trousers=_colour(rng, 10, 200), shorts=rng.random() < 0.25,
        skin=rng.choice(SKIN), hair=rng.choice(HAIR), long_hair=rng.random() < 0.3,
        shoes=_colour(rng, 0, 80), bag=_colour(rng) if rng.random() < 0.3 else None)


def jitter_pose(kp: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """A bank pose, randomly scaled (0.9-1.08 about its centre), shifted, sometimes
    mirrored, rounded to integer pixels (the annotation format) and moved back into the
    frame (x in [2, W - 3], y in [2, H - 3]) where it fits.

    A pose scaled larger than that is moved in from the side it sticks out of (the left
    or top side first) and then reaches past the other edge: joints past the right or
    bottom edge keep their coordinates (the person cut by the crop); joints pushed past
    the left or top edge get negative coordinates and so read as missing although they
    are drawn. In the default demo set (60 ids x 6 images, seed 0) 25 of the 360 poses
    reach past an edge and 5 lose a joint this way. Known and left as is: keeping every
    pose whole would change every synthetic set, and with it the training runs recorded
    bit for bit on three CPU kinds in tests/data/same_numbers.json, of which only one
    can be recorded again here."""
    kp = kp.clone()
    if rng.random() < 0.5:
        kp = P.flip_keypoints(kp, WIDTH)
    ok = P.present(kp)
    pts = kp[ok]
    centre = (pts.min(0).values + pts.max(0).values) / 2
    s = rng.uniform(0.9, 1.08)
    shift = torch.tensor([rng.uniform(-4, 4), rng.uniform(-3, 3)])
    new = (kp - centre) * s + centre + shift
    lo = torch.tensor([2.0, 2.0]) - new[ok].min(0).values  # > 0: sticks out left / top
    hi = torch.tensor([WIDTH - 3.0, HEIGHT - 3.0]) - new[ok].max(0).values  # < 0: right / bottom
    new = (new + torch.where(lo > 0, lo, torch.where(hi < 0, hi, torch.zeros(2)))).round()
    return torch.where(ok.unsqueeze(-1), new, torch.full_like(new, -1.0))


def random_background(rng: random.Random, camera: int, size: Tuple[int, int] = (HEIGHT, WIDTH),
                      studio: bool = False) -> Image.Image:
    """A camera-specific scene: base colour, vertical gradient (wall to floor), a few
    random blocks (doors, cars, posters), noise. ``size`` (H, W) of the final image.
    ``studio``: a plain light backdrop with a soft vertical gradient instead (the
    In-shop photos' white studio). Returns the supersampled canvas (SUPERSAMPLE x size).

    The draws from ``rng``, in this order, and what they make (y in 0..1 down the
    canvas's rows, float32, the result clipped to 0..255 and truncated to uint8):
    - studio: a tone uniform(222, 246), then each channel's tint tone + uniform(-6, 6);
      every row is tint * (1 - 0.06 y).
    - street: base = CAMERA_BASE[camera % 6] + uniform(-25, 25) per channel; the horizon
      uniform(0.45, 0.75); rows above it base * (0.9 + 0.2 y), below it
      0.7 base * (1.1 - 0.2 y); then randint(1, 4) blocks, each x0 uniform(-10k, W),
      y0 uniform(-10k, H * horizon), width uniform(8k, 40k), height uniform(10k, 60k)
      (image pixels, k = H / 128), then its colour: each base channel + uniform(-60, 60),
      clipped to 0..255 and truncated.
    """
    S = SUPERSAMPLE
    H, W = size
    if studio:
        tone = rng.uniform(222, 246)
        tint = np.array([tone + rng.uniform(-6, 6) for _ in range(3)], dtype=np.float32)
        y = np.linspace(0, 1, H * S, dtype=np.float32)[:, None, None]
        img = tint * (1.0 - 0.06 * y) * np.ones((1, W * S, 1), np.float32)
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    k = H / HEIGHT  # block sizes grow with the image
    base = np.array(CAMERA_BASE[camera % len(CAMERA_BASE)], dtype=np.float32)
    base = base + np.array([rng.uniform(-25, 25) for _ in range(3)], dtype=np.float32)
    h, w = H * S, W * S
    horizon = rng.uniform(0.45, 0.75)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    floor = np.clip(base * 0.7, 0, 255)
    img = np.where(y < horizon, base * (0.9 + 0.2 * y), floor * (1.1 - 0.2 * y)) * np.ones((1, w, 1), np.float32)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(1, 4)):
        x0, y0 = rng.uniform(-10 * k, W), rng.uniform(-10 * k, H * horizon)
        bw, bh = rng.uniform(8 * k, 40 * k), rng.uniform(10 * k, 60 * k)
        col = tuple(int(np.clip(c + rng.uniform(-60, 60), 0, 255)) for c in base)
        d.rectangle([x0 * S, y0 * S, (x0 + bw) * S, (y0 + bh) * S], fill=col)
    return im


def _pt(kp: torch.Tensor, j: int) -> Tuple[float, float]:
    """Joint j in supersampled drawing coordinates (pixel centres)."""
    return (float(kp[j, 0]) + 0.5) * SUPERSAMPLE, (float(kp[j, 1]) + 0.5) * SUPERSAMPLE


def _has(kp: torch.Tensor, *joints: int) -> bool:
    return bool(P.present(kp[list(joints)]).all())


def _limb(d: ImageDraw.ImageDraw, kp, a: int, b: int, width: float, fill) -> None:
    if _has(kp, a, b):
        pa, pb = _pt(kp, a), _pt(kp, b)
        d.line([pa, pb], fill=fill, width=max(1, int(width)))
        r = width / 2
        for p in (pa, pb):
            d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=fill)


def draw_person(im: Image.Image, kp: torch.Tensor, ident: Identity, rng: random.Random) -> None:
    """Draw one person on a supersampled canvas, limbs centred on the keypoints.

    Sizes are fractions of the torso size ``st`` (``P.torso_size`` on the canvas), in
    drawing order, later shapes covering earlier ones; a limb is a line between two
    present joints with round caps (a capsule), nothing when either is missing:
    - bag (when the identity has one and the right hip and shoulder are present): a box
      from 0.35 st left of to 0.1 st right of the right hip, 0.45 st above to 0.05 st
      below it, corners rounded at 0.06 st;
    - each leg, right then left: shin 0.255 st wide (skin with shorts, else trousers),
      thigh 0.3 st (trousers), shoe an ellipse 0.17 st either side of the ankle, 0.07 st
      above to 0.1 st below it;
    - torso (all four of shoulders and hips present): the quad through them widened
      1.25x about its mean x; plain, stripes (0.07 st bands every 0.16 st from its top)
      or two-tone (the lower half, from the mean height of the right shoulder and hip);
    - each arm, right then left: forearm 0.18 st (shirt with long sleeves, else skin),
      upper arm 0.2 st (shirt), hand a disc of radius 0.09 st on the wrist;
    - head at the mean of the present head joints (r = 0.26 st): neck a 0.16 st line
      from the neck joint, long hair a box r * 1.1 to the sides and the top and r * 1.6
      down with corners rounded at r, hair an ellipse r to the sides, 1.15 r up and
      1.05 r down, the face an ellipse 0.85 r to the sides, 0.75 r up and 1.05 r down.
    """
    S = SUPERSAMPLE
    st = float(P.torso_size(kp)) * S
    d = ImageDraw.Draw(im)
    leg_w, arm_w = 0.30 * st, 0.2 * st
    # bag behind the body, hanging at the hip
    if ident.bag is not None and _has(kp, J_RHIP, J_RSHO):
        hx, hy = _pt(kp, J_RHIP)
        d.rounded_rectangle([hx - 0.35 * st, hy - 0.45 * st, hx + 0.1 * st, hy + 0.05 * st], radius=0.06 * st,
                            fill=ident.bag)
    # legs: trousers (or shorts and skin), shoes
    lower = ident.skin if ident.shorts else ident.trousers
    for hip, knee, ankle in ((J_RHIP, J_RKNEE, J_RANK), (J_LHIP, J_LKNEE, J_LANK)):
        _limb(d, kp, knee, ankle, leg_w * 0.85, lower)
        _limb(d, kp, hip, knee, leg_w, ident.trousers)
        if _has(kp, ankle):
            ax, ay = _pt(kp, ankle)
            d.ellipse([ax - 0.17 * st, ay - 0.07 * st, ax + 0.17 * st, ay + 0.1 * st], fill=ident.shoes)
    # torso: a quad through shoulders and hips, widened a little
    if _has(kp, J_RSHO, J_LSHO, J_RHIP, J_LHIP):
        quad = [_pt(kp, j) for j in (J_RSHO, J_LSHO, J_LHIP, J_RHIP)]
        cx = sum(p[0] for p in quad) / 4
        quad = [(cx + (x - cx) * 1.25, y) for x, y in quad]
        mask = Image.new("L", im.size, 0)
        ImageDraw.Draw(mask).polygon(quad, fill=255)
        layer = Image.new("RGB", im.size, ident.shirt)
        ld = ImageDraw.Draw(layer)
        if ident.pattern == "stripes":
            top = min(p[1] for p in quad)
            for k in range(0, 40):
                y0 = top + k * 0.16 * st
                ld.rectangle([0, y0, im.size[0], y0 + 0.07 * st], fill=ident.shirt2)
        elif ident.pattern == "two-tone":
            midy = (quad[0][1] + quad[3][1]) / 2
            ld.rectangle([0, midy, im.size[0], im.size[1]], fill=ident.shirt2)
        im.paste(layer, (0, 0), mask)
    # arms: sleeves and skin
    for sho, elb, wri in ((J_RSHO, J_RELB, J_RWRI), (J_LSHO, J_LELB, J_LWRI)):
        _limb(d, kp, elb, wri, arm_w * 0.9, ident.shirt if ident.long_sleeves else ident.skin)
        _limb(d, kp, sho, elb, arm_w, ident.shirt)
        if _has(kp, wri):
            wx, wy = _pt(kp, wri)
            r = 0.09 * st
            d.ellipse([wx - r, wy - r, wx + r, wy + r], fill=ident.skin)
    # neck and head
    head = [j for j in P.HEAD_JOINTS if _has(kp, j)]
    if head:
        hx = sum(_pt(kp, j)[0] for j in head) / len(head)
        hy = sum(_pt(kp, j)[1] for j in head) / len(head)
        if _has(kp, J_NECK):
            d.line([_pt(kp, J_NECK), (hx, hy)], fill=ident.skin, width=max(1, int(0.16 * st)))
        r = 0.26 * st
        if ident.long_hair:
            d.rounded_rectangle([hx - r * 1.1, hy - r * 1.1, hx + r * 1.1, hy + r * 1.6], radius=r, fill=ident.hair)
        d.ellipse([hx - r, hy - r * 1.15, hx + r, hy + r * 1.05], fill=ident.hair)
        d.ellipse([hx - r * 0.85, hy - r * 0.75, hx + r * 0.85, hy + r * 1.05], fill=ident.skin)


J_NECK, J_RSHO, J_RELB, J_RWRI = P.J["neck"], P.J["r_shoulder"], P.J["r_elbow"], P.J["r_wrist"]
J_LSHO, J_LELB, J_LWRI = P.J["l_shoulder"], P.J["l_elbow"], P.J["l_wrist"]
J_RHIP, J_RKNEE, J_RANK = P.J["r_hip"], P.J["r_knee"], P.J["r_ankle"]
J_LHIP, J_LKNEE, J_LANK = P.J["l_hip"], P.J["l_knee"], P.J["l_ankle"]


def render_image(kp: torch.Tensor, ident: Identity, camera: int, rng: random.Random,
                 size: Tuple[int, int] = (HEIGHT, WIDTH), studio: bool = False) -> Image.Image:
    """One RGB image (128x64 unless ``size`` says otherwise) of ``ident`` in pose ``kp``
    (pixels of that image) seen by ``camera`` (or in a plain ``studio``)."""
    im = random_background(rng, camera, size, studio)
    draw_person(im, kp, ident, rng)
    im = im.resize((size[1], size[0]), Image.LANCZOS)
    gain = 0.85 + 0.06 * (camera % 5) + rng.uniform(-0.05, 0.05)
    arr = np.asarray(im, dtype=np.float32) * gain
    arr += np.asarray(np.random.default_rng(rng.randint(0, 2**31)).normal(0, 3.0, arr.shape), np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_dataset(out_dir: str, ids: int = 60, images_per_id: int = 6, seed: int = 0, cameras: int = 6,
                 test_fraction: float = 0.2, test_pairs: int = 200, progress: bool = True) -> Dict[str, str]:
    """Write the synthetic set; returns the paths of its annotation and pair files."""
    from tqdm import tqdm

    if ids < 2 or images_per_id < 2:
        raise ValueError(f"need at least 2 ids and 2 images per id, got ids={ids}, images_per_id={images_per_id}")
    rng = random.Random(seed)
    bank = load_pose_bank()
    n_test = max(1, int(round(ids * test_fraction)))
    splits = {"train": {}, "test": {}}
    for split in splits:
        os.makedirs(os.path.join(out_dir, f"bounding_box_{split}"), exist_ok=True)
    frame = 0
    bar = tqdm(total=ids * images_per_id, desc="synthetic people", unit="img", disable=not progress)
    for pid in range(1, ids + 1):
        split = "test" if pid > ids - n_test else "train"
        ident = random_identity(rng)
        for k in range(images_per_id):
            camera = 1 + (k + rng.randint(0, cameras - 1)) % cameras
            kp = jitter_pose(bank[rng.randrange(len(bank))], rng)
            frame += rng.randint(1, 50)
            name = f"{pid:04d}_c{camera}s1_{frame:06d}_00.jpg"
            render_image(kp, ident, camera, rng).save(os.path.join(out_dir, f"bounding_box_{split}", name),
                                                       quality=95)
            splits[split][name] = kp
            bar.update(1)
    bar.close()
    paths = {}
    for split, ann in splits.items():
        ann_path = os.path.join(out_dir, f"annotations-{split}.csv")
        pairs_path = os.path.join(out_dir, f"pairs-{split}.csv")
        write_annotations(ann_path, ann)
        pairs = standard_pairs(ann, sample=test_pairs if split == "test" else None, seed=seed)
        write_pairs(pairs_path, pairs)
        paths[f"annotations_{split}"] = ann_path
        paths[f"pairs_{split}"] = pairs_path
    with open(os.path.join(out_dir, "SYNTHETIC.json"), "w") as fh:
        json.dump(dict(ids=ids, images_per_id=images_per_id, seed=seed, cameras=cameras,
                       test_ids=n_test, generator="deformgan.data.synthetic"), fh, indent=1)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.data.synthetic", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--ids", type=int_at_least(2), default=60, help="identities (the last 20%% are the test split)")
    ap.add_argument("--images-per-id", type=int_at_least(2), default=6)
    ap.add_argument("--seed", type=int_at_least(0), default=0)
    ap.add_argument("--test-pairs", type=positive_int, default=200, help="sampled test pairs")
    args = ap.parse_args(argv)
    t0 = time.time()
    paths = make_dataset(args.out_dir, args.ids, args.images_per_id, args.seed, test_pairs=args.test_pairs)
    print(f"synthetic Market-format set written to {args.out_dir} in {time.time() - t0:.1f} s: "
          + ", ".join(f"{k}={os.path.basename(v)}" for k, v in paths.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------- DeepFashion-shaped demo
FASHION_SIZE = (256, 256)
FASHION_CATEGORIES = {"MEN": ("Denim", "Jackets_Vests", "Shirts_Polos", "Sweaters"),
                      "WOMEN": ("Blouses_Shirts", "Dresses", "Skirts", "Tees_Tanks")}
FASHION_VIEWS = ("front", "side", "back", "full")


def fashion_pose(kp: torch.Tensor) -> torch.Tensor:
    """A 128x64 pose drawn at 256x256: scaled by 2, centred horizontally."""
    scaled = kp * 2 + torch.tensor([float(FASHION_SIZE[1] - 2 * WIDTH) / 2, 0.0])
    return torch.where(P.missing(kp).unsqueeze(-1), torch.full_like(kp, -1.0), scaled)


def make_fashion_tree(root: str, items: int = 40, images_per_item: int = 4, seed: int = 0,
                      progress: bool = True) -> str:
    """Synthetic people at 256x256 in the In-shop release's layout
    (``img/<GENDER>/<Category>/id_XXXXXXXX/NN_V_view.jpg``, one identity per clothing
    item, photographed in a plain light studio as the release is), drawn on real
    Market-1501 poses scaled to 256x256,
    and their exact keypoints under the field's names in ``ROOT/keypoints.csv`` (the
    input of ``python -m deformgan.data.deepfashion ROOT --annotations``). Returns that
    file's path."""
    from tqdm import tqdm

    from .deepfashion import field_name

    if items < 2 or images_per_item < 2:
        raise ValueError(f"need at least 2 items and 2 images per item, got {items}, {images_per_item}")
    rng = random.Random(seed)
    bank = load_pose_bank()
    ann: Dict[str, torch.Tensor] = {}
    bar = tqdm(total=items * images_per_item, desc="synthetic fashion", unit="img", disable=not progress)
    for item in range(1, items + 1):
        gender = ("MEN", "WOMEN")[item % 2]
        category = FASHION_CATEGORIES[gender][rng.randrange(len(FASHION_CATEGORIES[gender]))]
        ident = random_identity(rng)
        camera = 1 + item % len(CAMERA_BASE)
        folder = os.path.join(root, "img", gender, category, f"id_{item:08d}")
        os.makedirs(folder, exist_ok=True)
        for k in range(images_per_item):
            view = k % len(FASHION_VIEWS)
            file = f"{k + 1:02d}_{view + 1}_{FASHION_VIEWS[view]}.jpg"
            kp = fashion_pose(jitter_pose(bank[rng.randrange(len(bank))], rng))
            render_image(kp, ident, camera, rng, FASHION_SIZE, studio=True).save(os.path.join(folder, file), quality=95)
            ann[field_name(f"img/{gender}/{category}/id_{item:08d}/{file}")] = kp
            bar.update(1)
    bar.close()
    path = os.path.join(root, "keypoints.csv")
    write_annotations(path, ann)
    with open(os.path.join(root, "SYNTHETIC.json"), "w") as fh:
        json.dump(dict(items=items, images_per_item=images_per_item, seed=seed, size=list(FASHION_SIZE),
                       generator="deformgan.data.synthetic.make_fashion_tree"), fh, indent=1)
    return path
