"""`python -m deformgan.data.make_pose_bank ANNOTATIONS.csv [--count N] [--out FILE]`

Regenerates ``pose_bank.json``: a seeded sample of real Market-1501 poses (from the
public annotation files) with the nose and every body joint present, used to pose the
synthetic demo people. Coordinates are (x, y) in 128x64 images, -1 for missing eyes and ears.
"""
import argparse
import json
import os
import random

from .. import pose as P
from ..cli_types import int_at_least, positive_int
from .market import read_annotations

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pose_bank.json")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m deformgan.data.make_pose_bank", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("annotations", help="Market-1501 annotation CSV (name:keypoints_y:keypoints_x)")
    ap.add_argument("--count", type=positive_int, default=400, help="poses to keep (default 400)")
    ap.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the sample (default 0)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="JSON file to write (default: the shipped pose_bank.json)")
    args = ap.parse_args(argv)
    ann = read_annotations(args.annotations)
    body = list(range(14))  # nose, neck, arms, hips, legs: the eyes and ears may be missing
    good = [kp for name, kp in ann.items() if P.present(kp[body]).all()]
    rng = random.Random(args.seed)
    chosen = rng.sample(good, min(args.count, len(good)))
    poses = [[[int(v) for v in xy] for xy in kp.tolist()] for kp in chosen]
    with open(args.out, "w") as fh:
        json.dump({"source": os.path.basename(args.annotations), "format": "[18][x, y], -1 missing",
                   "poses": poses}, fh, separators=(",", ":"))
    print(f"{len(good)} complete poses, {len(poses)} written to {args.out}")


if __name__ == "__main__":
    main()
