"""`python -m deformgan.pairs ANNOTATIONS --out pairs.csv [--sample N --seed S]`

Builds pose-transfer pairs by the standard Market-1501 rule: images that are not
distractors/junk (ids -1, 0000) and have the four torso joints; all ordered pairs
(a, b), a != b, with the same person id; optionally a seeded random sample.
"""
import argparse
import sys

from .data.market import read_annotations, standard_pairs, write_pairs
from .cli_types import int_at_least, positive_int


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.pairs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("annotations", help="annotation CSV (name:keypoints_y:keypoints_x)")
    ap.add_argument("--out", required=True, help="pairs CSV to write (from,to)")
    ap.add_argument("--sample", type=positive_int, default=None, help="keep a random sample of this many pairs")
    ap.add_argument("--seed", type=int_at_least(0), default=0)
    args = ap.parse_args(argv)
    annotations = read_annotations(args.annotations)
    pairs = standard_pairs(annotations, sample=args.sample, seed=args.seed)
    write_pairs(args.out, pairs)
    print(f"{len(annotations)} annotated images -> {len(pairs)} pairs written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
