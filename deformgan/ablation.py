"""`python -m deformgan.ablation [--out runs/ablation] [--steps 1200] [--width-mult 0.25]`

The ablation study on the synthetic demo set: the U-Net baseline, the paper's DSC and
full configurations, and the offsets variant, each trained for the same budget on the
CPU with the same seed and data order, then evaluated on the held-out identities'
test pairs. Writes OUT/ablation.md (the table), OUT/ablation.json and
OUT/ablation.png (the same test pairs across the variants). Like the train CLI, every
variant trains under CPU bfloat16 autocast where the CPU has native bfloat16 (AVX512-BF16
or AMX) and in float32 elsewhere; --no-cpu-amp trains in float32 everywhere, to compare
the scores with the bfloat16 runs of the same seeds. The table's note says which ran.

The VGG19-based losses (full: NN loss; offsets: NN + perceptual) use pretrained VGG19
weights when torchvision can load them, else random VGG19 features
(--allow-random-vgg is implied here and reported in the table), since pretrained
weights cannot be downloaded on an offline machine.
"""
import argparse
import json
import os
import sys
import warnings

import torch
from PIL import Image

from .evaluate import evaluate, markdown_table, to_uint8
from .engine import cpu_has_native_bf16
from .train import PRESETS, TrainConfig, train
from .cli_types import int_at_least, positive_int, real_in

VARIANTS = ("baseline", "dsc", "full", "offsets")


def vgg_available() -> bool:
    try:
        from torchvision.models import VGG19_Weights
        VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        return True
    except Exception:
        return False


def figure(out_dir: str, checkpoints: dict, rows: int = 6) -> str:
    """OUT_DIR/ablation.png: ``rows`` test pairs spread over the test set (all of them
    when it has fewer), one column per checkpoint between the source, the target pose
    and the real target, at the checkpoints' image size. Returns its path."""
    from . import checkpoint as ckpt_io
    from .data.layout import discover
    from .data.market import MarketPoseDataset, read_annotations, standard_pairs
    from .evaluate import resolve_data
    from .viz import grid, pose_image

    first = ckpt_io.load(next(iter(checkpoints.values())))
    root = resolve_data(first, None)
    layout = discover(root)
    annotations = read_annotations(layout.require_annotations("test"))
    height, width = first["config"]["image_size"]
    ds = MarketPoseDataset(root, annotations, layout.pairs("test") or standard_pairs(annotations), split="test",
                           heatmaps=False, height=height, width=width)
    if len(ds) == 0:
        raise ValueError(f"no test pairs in {root}: nothing to show in the figure")
    rows = min(rows, len(ds))
    step = len(ds) // rows
    items = [ds[i * step] for i in range(rows)]
    src = torch.stack([it["source_image"] for it in items])
    skp = torch.stack([it["source_keypoints"] for it in items])
    tkp = torch.stack([it["target_keypoints"] for it in items])
    outs = {}
    for name, path in checkpoints.items():
        g = ckpt_io.build_generator(ckpt_io.load(path))
        with torch.no_grad():
            outs[name] = to_uint8(g(src, skp, tkp))
    lines = []
    for i, it in enumerate(items):
        row = [Image.fromarray(to_uint8(it["source_image"]).permute(1, 2, 0).numpy()), pose_image(tkp[i], *src.shape[-2:])]
        row += [Image.fromarray(outs[n][i].permute(1, 2, 0).numpy()) for n in checkpoints]
        row.append(Image.fromarray(to_uint8(it["target_image"]).permute(1, 2, 0).numpy()))
        lines.append(row)
    path = os.path.join(out_dir, "ablation.png")
    grid(lines, titles=["source", "pose"] + list(checkpoints) + ["target"]).save(path)
    return path


def precision_note(cpu_amp) -> str:
    """The table's line on the precision the variants trained in (see --cpu-amp)."""
    if cpu_amp is False:
        return "\nTrained in float32 (--no-cpu-amp).\n"
    native = cpu_has_native_bf16()
    if cpu_amp:
        return ("\nTrained with CPU bfloat16 autocast (--cpu-amp).\n" if native else
                "\n--cpu-amp was asked for, but this CPU has no native bfloat16: trained in float32.\n")
    return ("\nTrained with CPU bfloat16 autocast (the default on this CPU, which has native bfloat16; "
            "--no-cpu-amp for float32).\n" if native else
            "\nTrained in float32 (this CPU has no native bfloat16).\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.ablation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--steps", type=positive_int, default=1200)
    ap.add_argument("--width-mult", type=real_in(0, 16, low_open=True), default=0.25)
    ap.add_argument("--batch-size", type=positive_int, default=4)
    ap.add_argument("--seed", type=int_at_least(0), default=0)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--max-pairs", type=positive_int, default=None)
    ap.add_argument("--cpu-amp", action=argparse.BooleanOptionalAction, default=None,
                    help="CPU bfloat16 autocast, as the train CLI's: the default is on where the CPU has native "
                         "bfloat16 and float32 elsewhere; --cpu-amp asks for it (float32 with a warning where the "
                         "CPU has no native bfloat16), --no-cpu-amp trains in float32")
    args = ap.parse_args(argv)
    from .outputs import check_writable
    try:
        check_writable(args.out, "--out", is_folder=True)  # before hours of training, not after
    except ValueError as exc:
        print(f"[deformgan.ablation] error: {exc}", file=sys.stderr)
        return 2
    pretrained_vgg = vgg_available()
    results, ckpts = [], {}
    for name in args.variants:
        values = dict(PRESETS[name])
        values.update(preset=name, out=os.path.join(args.out, name), steps=args.steps, width_mult=args.width_mult,
                      batch_size=args.batch_size, seed=args.seed, dropout=0.0, sample_every=args.steps,
                      save_every=args.steps, log_every=25, allow_random_vgg=not pretrained_vgg,
                      vgg_weights="imagenet" if pretrained_vgg else None, cpu_amp=args.cpu_amp)
        cfg = TrainConfig(**values)
        print(f"[deformgan.ablation] training {name} ({cfg.variant}) for {cfg.steps} steps", file=sys.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = train(cfg)
        ckpts[name] = res["checkpoint"]
        r = evaluate(res["checkpoint"], out=os.path.join(args.out, name, "eval"), max_pairs=args.max_pairs,
                     inception_weights="imagenet", alexnet_weights="imagenet", pose_weights="yolo11n-pose.pt")
        results.append(r)
    table = markdown_table(results, names=[f"{n} ({r['variant']})" for n, r in zip(args.variants, results)])
    note = ("" if pretrained_vgg else
            "\nThe VGG19 losses of `full` and `offsets` ran on RANDOM VGG19 features: pretrained weights "
            "could not be loaded on this machine.\n")
    note += precision_note(args.cpu_amp)
    with open(os.path.join(args.out, "ablation.md"), "w") as fh:
        fh.write(table + note)
    with open(os.path.join(args.out, "ablation.json"), "w") as fh:
        json.dump({"results": results, "pretrained_vgg": pretrained_vgg, "args": vars(args)}, fh, indent=1)
    fig = figure(args.out, ckpts)
    print(table + note, end="")
    print(f"[deformgan.ablation] wrote {os.path.join(args.out, 'ablation.md')} and {fig}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
