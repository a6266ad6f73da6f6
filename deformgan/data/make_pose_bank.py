"""`python -m deformgan.data.make_pose_bank ANNOTATIONS.csv [--count N] [--out FILE]`

Regenerates ``pose_bank.json``: a seeded sample of real Market-1501 poses (from the
public annotation files) with every body joint present, used to pose the synthetic
demo people. Coordinates are (x, y) in 128x64 images, -1 for missing head joints.
"""
import argparse
import json
import os
import random

from .. import pose as P
from .market import read_annotations

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pose_bank.json")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("annotations")
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    ann = read_annotations(args.annotations)
    body = list(range(14))
    good = [kp for name, kp in ann.items() if P.present(kp[body]).all() and P.present(kp[list(P.HEAD_JOINTS)]).any()]
    rng = random.Random(args.seed)
    chosen = rng.sample(good, min(args.count, len(good)))
    poses = [[[int(v) for v in xy] for xy in kp.tolist()] for kp in chosen]
    with open(args.out, "w") as fh:
        json.dump({"source": os.path.basename(args.annotations), "format": "[18][x, y], -1 missing",
                   "poses": poses}, fh, separators=(",", ":"))
    print(f"{len(good)} complete poses, {len(poses)} written to {args.out}")


if __name__ == "__main__":
    main()
