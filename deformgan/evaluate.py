"""`python -m deformgan.evaluate --checkpoint CKPT [--data DIR] [--pairs test] [--out DIR]`

Generates the test pairs in batches and reports SSIM, mask-SSIM, L1 and PSNR always;
LPIPS (AlexNet), FID (against training-image statistics), IS and mask-IS (Inception v3,
10 splits) and PCKh (YOLO re-detection) when their weights can be had, saying which
were skipped and why. Writes OUT/metrics.json, OUT/metrics.md and OUT/examples.png.

Weights: ``--inception-weights`` / ``--alexnet-weights``: "imagenet" (torchvision's
mechanism: its hub cache, or a download where online) or a path; ``--lpips-weights``:
the LPIPS linear layers (a path; the lpips package's alex.pth); ``--pose-weights``: a
YOLO pose model (ultralytics' mechanism or a path). "none" skips a metric.
"""
import argparse
import json
import os
import sys
import warnings
from typing import Dict, List, Optional

import numpy as np
import torch

from . import checkpoint as ckpt_io
from . import metrics as MT
from .data.market import MarketPoseDataset, load_image, read_annotations, read_pairs, standard_pairs
from .cli_types import positive_int


def _find(root: str, *names: str) -> Optional[str]:
    for n in names:
        p = os.path.join(root, n)
        if os.path.exists(p):
            return p
    return None


def resolve_data(ckpt: Dict, data: Optional[str]) -> str:
    if data:
        return data
    cfg = ckpt["config"]
    if cfg.get("data"):
        return cfg["data"]
    from .train import default_cache
    root = os.path.join(default_cache(), f"synthetic-{cfg['synthetic_ids']}x{cfg['synthetic_images_per_id']}-seed0")
    if not os.path.exists(os.path.join(root, "SYNTHETIC.json")):
        from .data.synthetic import make_dataset
        make_dataset(root, ids=cfg["synthetic_ids"], images_per_id=cfg["synthetic_images_per_id"], seed=0)
    return root


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def evaluate(checkpoint: str, data: Optional[str] = None, pairs: str = "test", out: str = "runs/eval",
             batch_size: int = 16, max_pairs: Optional[int] = None, device: Optional[str] = None,
             inception_weights: Optional[str] = "imagenet", alexnet_weights: Optional[str] = "imagenet",
             lpips_weights: Optional[str] = None, pose_weights: Optional[str] = "yolo11n-pose.pt",
             allow_random_networks: bool = False, progress: bool = True, examples: int = 8,
             variant: Optional[str] = None) -> Dict:
    from tqdm import tqdm

    from .viz import grid, pose_image
    from PIL import Image

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ckpt = ckpt_io.load(checkpoint, expect_variant=variant)
    G = ckpt_io.build_generator(ckpt, dev)
    root = resolve_data(ckpt, data)
    split = "train" if pairs == "train" else "test"
    ann_path = _find(root, f"annotations-{split}.csv", f"market-annotation-{split}.csv")
    if ann_path is None:
        raise FileNotFoundError(f"no {split} annotations in {root}")
    annotations = read_annotations(ann_path)
    if pairs in ("train", "test"):
        pairs_path = _find(root, f"pairs-{split}.csv", f"market-pairs-{split}.csv")
        pair_list = read_pairs(pairs_path, annotations) if pairs_path else standard_pairs(annotations)
    else:
        pair_list = read_pairs(pairs, annotations)
    if max_pairs:
        pair_list = pair_list[:max_pairs]
    ds = MarketPoseDataset(root, annotations, pair_list, split=split, heatmaps=False,
                           height=G.image_size[0], width=G.image_size[1])
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    skipped: Dict[str, str] = {}

    def optional(name, build):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return build()
        except Exception as exc:
            skipped[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return None

    rnd = allow_random_networks
    lpips = None if lpips_weights == "none" or alexnet_weights == "none" else optional(
        "LPIPS", lambda: MT.LPIPS(None if rnd and alexnet_weights == "random" else alexnet_weights,
                                  None if rnd and lpips_weights in (None, "random") else lpips_weights,
                                  allow_random=rnd).to(dev))
    if lpips_weights is None and not rnd and "LPIPS" in skipped:
        skipped["LPIPS"] = "no --lpips-weights (the LPIPS linear layers) given; " + skipped["LPIPS"]
    inception = None if inception_weights == "none" else optional(
        "IS/FID", lambda: MT.InceptionFeatures(None if rnd and inception_weights == "random" else inception_weights,
                                               allow_random=rnd).to(dev))
    pose_model = None if pose_weights == "none" else optional(
        "PCKh", lambda: __import__("deformgan.keypoints", fromlist=["x"]).load_pose_model(pose_weights))
    for name, flag in (("LPIPS", lpips_weights == "none" or alexnet_weights == "none"),
                       ("IS/FID", inception_weights == "none"), ("PCKh", pose_weights == "none")):
        if flag:
            skipped[name] = "disabled (weights 'none')"

    scores: Dict[str, List[float]] = {k: [] for k in ("ssim", "mask_ssim", "l1", "psnr", "lpips")}
    pool, probs, mprobs, pred_kps, tgt_kps, example_rows = [], [], [], [], [], []
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
        with torch.no_grad():
            fake = G(batch["source_image"].to(dev), batch["source_keypoints"], batch["target_keypoints"]).cpu()
        g8, t8 = to_uint8(fake), to_uint8(batch["target_image"])
        scores["ssim"] += MT.ssim(g8, t8).tolist()
        scores["mask_ssim"] += MT.mask_ssim(g8, t8, batch["target_keypoints"]).tolist()
        scores["l1"] += MT.l1(g8, t8).tolist()
        scores["psnr"] += MT.psnr(g8, t8).tolist()
        if lpips is not None:
            scores["lpips"] += lpips(fake.to(dev), batch["target_image"].to(dev)).cpu().tolist()
        if inception is not None:
            f, p = inception(fake.to(dev))
            pool.append(f.cpu())
            probs.append(p.cpu())
            masks = torch.from_numpy(np.stack([MT.pose_mask(k, *fake.shape[-2:]) for k in batch["target_keypoints"]]))
            masked = torch.where(masks.unsqueeze(1), fake, torch.full_like(fake, -1.0))
            mprobs.append(inception(masked.to(dev))[1].cpu())
        if pose_model is not None:
            from .keypoints import result_to_keypoints
            res = pose_model.predict([g.permute(1, 2, 0).numpy()[:, :, ::-1].copy() for g in g8], verbose=False)
            pred_kps += [result_to_keypoints(r, 0.3) for r in res]
            tgt_kps += list(batch["target_keypoints"])
        for i in range(len(fake)):
            if len(example_rows) < examples:
                example_rows.append([Image.fromarray(to_uint8(batch["source_image"][i]).permute(1, 2, 0).numpy()),
                                     pose_image(batch["target_keypoints"][i], *fake.shape[-2:]),
                                     Image.fromarray(g8[i].permute(1, 2, 0).numpy()),
                                     Image.fromarray(t8[i].permute(1, 2, 0).numpy())])
    result = {"checkpoint": checkpoint, "variant": ckpt["config"]["variant"], "step": ckpt["step"], "data": root,
              "pairs": len(ds)}
    for k in ("ssim", "mask_ssim", "l1", "psnr", "lpips"):
        if scores[k]:
            result[k] = float(np.mean(scores[k]))
    if inception is not None and probs:
        result["is"], result["is_std"] = MT.inception_score(torch.cat(probs))
        result["mask_is"], result["mask_is_std"] = MT.inception_score(torch.cat(mprobs))
        train_dir = os.path.join(root, "bounding_box_train")
        if os.path.isdir(train_dir):
            names = sorted(os.listdir(train_dir))[:max(len(ds), 256)]
            feats = []
            for i in range(0, len(names), batch_size):
                imgs = torch.stack([load_image(os.path.join(train_dir, n)) for n in names[i:i + batch_size]])
                feats.append(inception(imgs.to(dev))[0].cpu())
            mu1, s1 = MT.feature_statistics(torch.cat(pool))
            mu2, s2 = MT.feature_statistics(torch.cat(feats))
            result["fid"] = MT.frechet_distance(mu1, s1, mu2, s2)
        else:
            skipped["FID"] = f"no training images in {train_dir}"
    if pred_kps:
        result["pckh"], result["pckh_joints"] = MT.pckh(torch.stack(pred_kps), torch.stack(tgt_kps))
    result["skipped"] = skipped
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    with open(os.path.join(out, "metrics.md"), "w") as fh:
        fh.write(markdown_table([result]))
    if example_rows:
        grid(example_rows, titles=["source", "target pose", "generated", "target"]).save(os.path.join(out, "examples.png"))
    return result


METRIC_COLUMNS = (("ssim", "SSIM"), ("mask_ssim", "mask-SSIM"), ("l1", "L1"), ("psnr", "PSNR"), ("lpips", "LPIPS"),
                  ("is", "IS"), ("mask_is", "mask-IS"), ("fid", "FID"), ("pckh", "PCKh"))


def markdown_table(results: List[Dict], names: Optional[List[str]] = None) -> str:
    cols = [(k, t) for k, t in METRIC_COLUMNS if any(k in r for r in results)]
    lines = ["| model | pairs | " + " | ".join(t for _, t in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for i, r in enumerate(results):
        name = names[i] if names else f"{r['variant']} @ {r['step']}"
        lines.append(f"| {name} | {r['pairs']} | " + " | ".join(
            f"{r[k]:.3f}" if k in r else "-" for k, _ in cols) + " |")
    skipped = {k: v for r in results for k, v in r.get("skipped", {}).items()}
    if skipped:
        lines.append("")
        lines += [f"- {k} skipped: {v}" for k, v in skipped.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default=None, help="Market-layout folder (default: the checkpoint's data)")
    ap.add_argument("--pairs", default="test", help="'test', 'train' or a pairs CSV of the test split")
    ap.add_argument("--out", default="runs/eval")
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("--max-pairs", type=positive_int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--inception-weights", default="imagenet")
    ap.add_argument("--alexnet-weights", default="imagenet")
    ap.add_argument("--lpips-weights", default=None)
    ap.add_argument("--pose-weights", default="yolo11n-pose.pt")
    ap.add_argument("--variant", default=None, help="fail unless the checkpoint is of this generator variant")
    args = ap.parse_args(argv)
    try:
        r = evaluate(args.checkpoint, args.data, args.pairs, args.out, args.batch_size, args.max_pairs, args.device,
                     args.inception_weights, args.alexnet_weights, args.lpips_weights, args.pose_weights,
                     variant=args.variant)
    except (FileNotFoundError, ckpt_io.CheckpointError, ValueError) as exc:
        print(f"[deformgan.evaluate] error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table([r]), end="")
    print(f"[deformgan.evaluate] wrote {os.path.join(args.out, 'metrics.json')}, metrics.md, examples.png",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
