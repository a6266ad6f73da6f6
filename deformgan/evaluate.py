"""Score pose-transfer results by the field's protocol.

  python -m deformgan.evaluate --checkpoint CKPT [--data DIR] [--pairs test] --out OUT
  python -m deformgan.evaluate --generated DIR --real DIR [--pairs PAIRS.csv [--strip-panel I]]
                               [--annotations ANN.csv] [--resize] [--fid-reference DIR] --out OUT
  python -m deformgan.evaluate --real-only --real DIR [--annotations ANN.csv] --out OUT
  python -m deformgan.evaluate --compare OUT1 OUT2 ... [--out DIR]

Checkpoint mode generates the test pairs with a DeformGAN checkpoint, writes every
generated image to OUT/generated/<from>___<to>.png (lossless) and the pairs to
OUT/pairs.csv, and scores them; the folder mode scores any method's outputs against the
real targets; both go through the same scorer, so rescoring OUT/generated gives the same
numbers. --real-only scores the real images themselves (the papers' "real data" row);
--compare puts several runs side by side with the published rows of docs/method.md (metrics).

Pairing (folder mode): without --pairs a generated file pairs with the real image of the
same file name (or the same name up to the extension, e.g. a .png output of a .jpg
target). With --pairs (a `from,to` CSV) the generated file of a pair is named as the
field's scripts name it: `<from>___<to>` followed by an optional `_vis`, with an image
extension, `from`/`to` with or without their extension. --strip-panel INDEX reads each
generated file as a horizontal strip of equal panels (the original release's
[source | target | generated]; PATN's and GFLA's `_vis` strips) and scores panel INDEX
(negative counts from the right). Unpaired, missing and unreadable files are reported by
name (stderr and metrics.json) and left out; --strict makes any of them an error.

Sizes: every image is scored at the dataset's resolution, the size of the real target
images (all must share it). A generated image (or panel) of another size is an error
unless --resize, which resizes it to the target size with Pillow's bicubic filter
(antialiased when shrinking) before scoring.

Metrics: SSIM, L1, PSNR always; mask-SSIM, mask-L1 (and mask-IS, PCKh) with target
keypoints (--annotations; checkpoint mode: the dataset's); LPIPS (AlexNet + the LPIPS
linear layers, --lpips-weights), IS / mask-IS (Inception v3, 10 splits), FID against
--fid-reference (the whole training set; checkpoint mode: the data's
bounding_box_train) and PCKh (YOLO re-detection) when their weights can be loaded, else
listed as skipped with the reason. FID reference statistics are cached under
--fid-cache, keyed by the reference folder's content (names and bytes) and the weights.

Weights: --inception-weights / --alexnet-weights: "imagenet" (torchvision's mechanism:
its hub cache, or a download where online) or a path; --lpips-weights: the LPIPS linear
layers (the lpips package's alex.pth); --pose-weights: a YOLO pose model. "none" skips.
"""
import argparse
import inspect
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import checkpoint as ckpt_io
from .cli_types import positive_int
from .data.layout import DatasetLayout, discover
from .data.market import (AnnotationError, MarketPoseDataset, read_annotations, read_image_uint8, read_pairs,
                          standard_pairs)
from .outputs import OutputBusy, OutputLock
from .scoring import (Networks, Scorer, build_networks, image_files, reference_statistics,
                      to_uint8, write_json)

__all__ = ["evaluate", "evaluate_folder", "compare", "markdown_table", "to_uint8", "PUBLISHED"]

# docs/method.md (metrics): the numbers as printed in the papers' tables.
PUBLISHED = {
    "market": [
        ("Deformable GAN (CVPR 2018)", {"ssim": 0.290, "is": 3.185, "mask_ssim": 0.805, "mask_is": 3.502}),
        ("PATN (CVPR 2019)", {"ssim": 0.311, "is": 3.323, "mask_ssim": 0.811, "mask_is": 3.773, "pckh": 0.94}),
        ("real data", {"ssim": 1.000, "is": 3.890, "mask_ssim": 1.000, "mask_is": 3.706}),
    ],
    "deepfashion": [
        ("Deformable GAN (CVPR 2018)", {"ssim": 0.756, "is": 3.439}),
        ("PATN (CVPR 2019)", {"ssim": 0.773, "is": 3.209, "pckh": 0.96}),
        ("PG2 (NeurIPS 2017)", {"ssim": 0.762, "is": 3.090}),
    ],
}
DATASET_BY_SIZE = {(128, 64): "market", (256, 256): "deepfashion"}
METRIC_COLUMNS = (("ssim", "SSIM"), ("mask_ssim", "mask-SSIM"), ("l1", "L1"), ("mask_l1", "mask-L1"),
                  ("psnr", "PSNR"), ("lpips", "LPIPS"), ("is", "IS"), ("mask_is", "mask-IS"), ("fid", "FID"),
                  ("pckh", "PCKh"))


class EvaluationError(ValueError):
    """A protocol violation that makes the scores meaningless (size mismatch, no pairs...)."""


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def resolve_data(ckpt: Dict, data: Optional[str]) -> str:
    if data:
        return data
    cfg = ckpt["config"]
    if cfg.get("data"):
        return cfg["data"]
    from .data.layout import ensure_synthetic, ensure_synthetic_fashion
    make = ensure_synthetic_fashion if cfg.get("synthetic") == "fashion" else ensure_synthetic
    return make(cfg["synthetic_ids"], cfg["synthetic_images_per_id"])


# ---------------------------------------------------------------- pairing
@dataclass
class Item:
    """One scored pair: the generated file, the real target's name, the source's name."""
    generated: str
    target: str
    source: Optional[str] = None


@dataclass
class Pairing:
    items: List[Item]
    unpaired_generated: List[str] = field(default_factory=list)   # generated files no pair/target uses
    missing_generated: List[str] = field(default_factory=list)    # pairs without a generated file
    missing_real: List[str] = field(default_factory=list)         # pairs whose real target is absent
    ambiguous: List[str] = field(default_factory=list)            # pairs matching several generated files
    unreadable: List[str] = field(default_factory=list)           # filled while reading

    def problems(self) -> Dict[str, List[str]]:
        return {k: v for k, v in (("unpaired_generated", self.unpaired_generated),
                                  ("missing_generated", self.missing_generated),
                                  ("missing_real", self.missing_real), ("ambiguous", self.ambiguous),
                                  ("unreadable", self.unreadable)) if v}


def real_folder(real: str) -> str:
    """The folder of real images: ``real`` itself, or its ``bounding_box_test/`` when
    ``real`` is a dataset root (no images directly inside)."""
    if not os.path.isdir(real):
        raise FileNotFoundError(f"--real: no such folder {real}")
    if not image_files(real) and DatasetLayout(real).has_images("test"):
        return DatasetLayout(real).images("test")
    return real


def pair_by_name(generated_dir: str, real_dir: str) -> Pairing:
    """Each generated file with the real image of the same name, else of the same name up
    to the extension (one such real image only)."""
    real = image_files(real_dir)
    real_set = set(real)
    by_stem: Dict[str, List[str]] = {}
    for r in real:
        by_stem.setdefault(_stem(r), []).append(r)
    p = Pairing([])
    for g in image_files(generated_dir):
        if g in real_set:
            p.items.append(Item(os.path.join(generated_dir, g), g))
        elif len(by_stem.get(_stem(g), [])) == 1:
            p.items.append(Item(os.path.join(generated_dir, g), by_stem[_stem(g)][0]))
        elif len(by_stem.get(_stem(g), [])) > 1:
            p.ambiguous.append(f"{g} (real: {', '.join(by_stem[_stem(g)])})")
        else:
            p.unpaired_generated.append(g)
    # Two generated files for one target (x.jpg beside x.png): the one of the target's
    # exact name is kept, the other reported (never scored twice, never dropped unsaid).
    by_target: Dict[str, List[Item]] = {}
    for it in p.items:
        by_target.setdefault(it.target, []).append(it)
    for target, its in by_target.items():
        if len(its) > 1:
            keep = [it for it in its if os.path.basename(it.generated) == target][:1]
            for it in its:
                if it not in keep:
                    p.items.remove(it)
                    p.ambiguous.append(f"{os.path.basename(it.generated)} (another generated file for the real "
                                       f"{target}: {', '.join(os.path.basename(i.generated) for i in its if i is not it)})")
    return p


def pair_names(source: str, target: str) -> List[str]:
    """The stems a generated file of the pair (source, target) may have, in the order they
    are tried: the field's ``<from>___<to>`` with and without extensions, then ``_vis``."""
    out = []
    for suffix in ("", "_vis"):
        for a in (_stem(source), source):
            for b in (_stem(target), target):
                s = f"{a}___{b}{suffix}"
                if s not in out:
                    out.append(s)
    return out


def pair_by_pairs(generated_dir: str, real_dir: str, pairs: Sequence[Tuple[str, str]]) -> Pairing:
    """Each (from, to) pair with its generated file named by :func:`pair_names`."""
    files = image_files(generated_dir)
    by_stem: Dict[str, List[str]] = {}
    for f in files:
        by_stem.setdefault(_stem(f), []).append(f)
    real = set(image_files(real_dir))
    used = set()
    p = Pairing([])
    for a, b in pairs:
        found = [f for s in pair_names(a, b) for f in by_stem.get(s, [])]
        if not found:
            p.missing_generated.append(f"{a},{b}")
            continue
        used.update(found)
        if len(found) > 1:
            p.ambiguous.append(f"{a},{b} ({', '.join(found)})")
            continue
        if b not in real:
            p.missing_real.append(b)
            continue
        p.items.append(Item(os.path.join(generated_dir, found[0]), b, a))
    p.unpaired_generated = [f for f in files if f not in used]
    return p


# ---------------------------------------------------------------- reading generated images
def read_generated(path: str, size: Tuple[int, int], strip_panel: Optional[int] = None,
                   resize: bool = False) -> np.ndarray:
    """A generated image as uint8 ``[H, W, 3]`` at ``size`` (H, W): panel ``strip_panel``
    of a horizontal strip when given, resized (bicubic) only with ``resize``. Raises
    ValueError when unreadable, EvaluationError on a size or panel mismatch."""
    img = read_image_uint8(path)
    H, W = size
    if strip_panel is not None:
        h, w = img.shape[:2]
        pw = W * h / H  # panels keep the target's aspect ratio
        n = int(round(w / pw))  # pw > 0: an image is at least one pixel high
        if n < 1 or abs(n * pw - w) > 0.5 or w % n:
            raise EvaluationError(f"{path}: a {w}x{h} image is not a strip of {W}:{H} panels "
                                  f"(width must be a multiple of {pw:g})")
        if not -n <= strip_panel < n:
            raise EvaluationError(f"--strip-panel {strip_panel}: {path} has {n} panels "
                                  f"(valid: {-n}..{n - 1})")
        k = strip_panel % n
        img = img[:, k * (w // n):(k + 1) * (w // n)]
    if img.shape[:2] != (H, W):
        if not resize:
            raise EvaluationError(f"{path}: generated image is {img.shape[1]}x{img.shape[0]} (WxH), the real "
                                  f"targets are {W}x{H}; give --resize to resize it (bicubic) to {W}x{H}")
        from PIL import Image
        img = np.asarray(Image.fromarray(img).resize((W, H), Image.BICUBIC), dtype=np.uint8)
    return img


def _keypoints_for(items: Sequence[Item], annotations: Optional[Dict[str, torch.Tensor]], where: str):
    if annotations is None:
        return None
    missing = [it.target for it in items if it.target not in annotations]
    if missing:
        raise EvaluationError(f"{len(missing)} target image(s) have no row in {where}: "
                              + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return torch.stack([annotations[it.target] for it in items])


def _report(pairing: Pairing, strict: bool) -> None:
    labels = {"unpaired_generated": "generated file(s) with no real target / pair",
              "missing_generated": "pair(s) with no generated file", "missing_real": "real target(s) missing",
              "ambiguous": "ambiguous match(es)", "unreadable": "unreadable file(s)"}
    for k, names in pairing.problems().items():
        print(f"[deformgan.evaluate] {'error' if strict else 'warning'}: {len(names)} {labels[k]}, left out: "
              + ", ".join(names[:20]) + (f" ... (all {len(names)} in metrics.json)" if len(names) > 20 else ""),
              file=sys.stderr)
    if strict and pairing.problems():
        raise EvaluationError("--strict: the pairing above is incomplete")


def _fid_statistics(nets: Networks, fid_reference: Optional[str], fid_cache: Optional[str], batch_size: int,
                    progress: bool, result: Dict):
    if nets.inception is None or fid_reference is None:
        return None
    if not os.path.isdir(fid_reference):
        raise FileNotFoundError(f"--fid-reference: no such folder {fid_reference}")
    mu, sigma, count, cached = reference_statistics(fid_reference, nets, batch_size, fid_cache, progress)
    result.update(fid_reference=os.path.abspath(fid_reference), fid_reference_images=count,
                  fid_reference_cached=cached)
    return mu, sigma


def default_fid_cache() -> str:
    from .data.layout import default_cache
    return os.path.join(default_cache(), "fid")


def _write_outputs(out: str, result: Dict, rows: List, titles: List[str]) -> None:
    from .viz import grid
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "metrics.json"), result)
    with open(os.path.join(out, "metrics.md"), "w") as fh:
        fh.write(markdown_table([result]))
    if rows:
        grid(rows, titles=titles).save(os.path.join(out, "examples.png"))


# ---------------------------------------------------------------- folder mode
def evaluate_folder(generated: Optional[str], real: str, out: str, *args, **kwargs) -> Dict:
    """Score a folder of generated images against the real targets (see the module
    docstring for the protocol); with ``real_only`` the real images themselves. The run
    holds ``out`` (:class:`deformgan.outputs.OutputLock`) while it works."""
    with OutputLock(out, "evaluate"):
        return _evaluate_folder(generated, real, out, *args, **kwargs)


def _evaluate_folder(generated: Optional[str], real: str, out: str, annotations: Optional[str] = None,
                    pairs: Optional[str] = None, strip_panel: Optional[int] = None, resize: bool = False,
                    real_only: bool = False, fid_reference: Optional[str] = None,
                    fid_cache: Optional[str] = None, batch_size: int = 16, max_pairs: Optional[int] = None,
                    device: Optional[str] = None, inception_weights: Optional[str] = "imagenet",
                    alexnet_weights: Optional[str] = "imagenet", lpips_weights: Optional[str] = None,
                    pose_weights: Optional[str] = "yolo11n-pose.pt", allow_random_networks: bool = False,
                    strict: bool = False, name: Optional[str] = None, progress: bool = True,
                    examples: int = 8) -> Dict:
    """Score a folder of generated images against the real targets (see the module
    docstring for the protocol); with ``real_only`` the real images themselves."""
    from PIL import Image
    from tqdm import tqdm

    from .viz import pose_image

    real_dir = real_folder(real)
    ann = read_annotations(annotations) if annotations else None
    pair_list = read_pairs(pairs) if pairs else None
    if real_only:
        if pair_list is not None:
            targets = list(dict.fromkeys(b for _, b in pair_list))
            have = set(image_files(real_dir))
            pairing = Pairing([Item(os.path.join(real_dir, t), t) for t in targets if t in have],
                              missing_real=[t for t in targets if t not in have])
        else:
            pairing = Pairing([Item(os.path.join(real_dir, t), t) for t in image_files(real_dir)])
    else:
        if generated is None or not os.path.isdir(generated):
            raise FileNotFoundError(f"--generated: no such folder {generated}")
        pairing = pair_by_pairs(generated, real_dir, pair_list) if pair_list is not None else \
            pair_by_name(generated, real_dir)
    if max_pairs:
        pairing.items = pairing.items[:max_pairs]
    if not pairing.items:
        _report(pairing, False)
        raise EvaluationError(f"nothing to score: no generated image in {generated} pairs with a real image in "
                              f"{real_dir}" + (f" by the pairs of {pairs}" if pairs else " by file name"))
    first = read_image_uint8(os.path.join(real_dir, pairing.items[0].target))
    size = first.shape[:2]
    kps_all = _keypoints_for(pairing.items, ann, annotations)

    nets = build_networks(device or ("cuda" if torch.cuda.is_available() else "cpu"), inception_weights,
                          alexnet_weights, lpips_weights, pose_weights, allow_random_networks)
    scorer = Scorer(nets)
    rows = []
    keep = []
    for start in tqdm(range(0, len(pairing.items), batch_size), desc="evaluate", unit="batch",
                      disable=not progress):
        chunk = pairing.items[start:start + batch_size]
        gen, tgt, idx = [], [], []
        for j, it in enumerate(chunk):
            t = read_image_uint8(os.path.join(real_dir, it.target))
            if t.shape[:2] != size:
                raise EvaluationError(f"real images of two sizes: {pairing.items[0].target} is {size[1]}x{size[0]}, "
                                      f"{it.target} is {t.shape[1]}x{t.shape[0]} (WxH); the dataset's images share "
                                      "one resolution")
            try:
                g = t if real_only else read_generated(it.generated, size, strip_panel, resize)
            except EvaluationError:
                raise
            except ValueError:
                pairing.unreadable.append(os.path.basename(it.generated))
                continue
            gen.append(g)
            tgt.append(t)
            idx.append(start + j)
        if not gen:
            continue
        keep += idx
        g8 = torch.from_numpy(np.stack(gen)).permute(0, 3, 1, 2).contiguous()
        t8 = torch.from_numpy(np.stack(tgt)).permute(0, 3, 1, 2).contiguous()
        kps = kps_all[idx] if kps_all is not None else None
        scorer.add(g8, t8, kps)
        for j, i in enumerate(idx):
            if len(rows) >= examples:
                break
            it = pairing.items[i]
            row = []
            if pair_list is not None and not real_only:
                src = os.path.join(real_dir, it.source) if it.source else None
                row.append(Image.fromarray(read_image_uint8(src)) if src and os.path.isfile(src)
                           else Image.new("RGB", (size[1], size[0]), (255, 255, 255)))
            if kps is not None:
                row.append(pose_image(kps[j], *size))
            row += [Image.fromarray(gen[j]), Image.fromarray(tgt[j])]
            rows.append(row)
    _report(pairing, strict)
    if not keep:
        raise EvaluationError("nothing to score: every generated image was unreadable")
    result: Dict = {"name": name or os.path.basename(os.path.normpath(out)),
                    "mode": "real" if real_only else "folder", "generated": generated, "real": real_dir,
                    "annotations": annotations, "pairs_file": pairs, "strip_panel": strip_panel, "resize": resize,
                    "image_size": list(size), "dataset": DATASET_BY_SIZE.get(tuple(size))}
    fid = _fid_statistics(nets, fid_reference, fid_cache or default_fid_cache(), batch_size, progress, result)
    result.update(scorer.result(fid))
    result["pairing"] = pairing.problems()
    titles = (["source"] if pair_list is not None and not real_only else []) + \
             (["target pose"] if kps_all is not None else []) + ["generated", "target"]
    _write_outputs(out, result, rows, titles)
    return result


# ---------------------------------------------------------------- checkpoint mode
def evaluate(checkpoint: str, data: Optional[str] = None, pairs: str = "test", out: str = "runs/eval",
             *args, **kwargs) -> Dict:
    """Generate the test pairs with a checkpoint, write them to OUT/generated (PNG) with
    OUT/pairs.csv, and score them as the folder mode scores a folder. The run holds
    ``out`` while it works (a second run into it at once is refused)."""
    with OutputLock(out, "evaluate"):
        return _evaluate(checkpoint, data, pairs, out, *args, **kwargs)


def _evaluate(checkpoint: str, data: Optional[str] = None, pairs: str = "test", out: str = "runs/eval",
             batch_size: int = 16, max_pairs: Optional[int] = None, device: Optional[str] = None,
             inception_weights: Optional[str] = "imagenet", alexnet_weights: Optional[str] = "imagenet",
             lpips_weights: Optional[str] = None, pose_weights: Optional[str] = "yolo11n-pose.pt",
             allow_random_networks: bool = False, progress: bool = True, examples: int = 8,
             variant: Optional[str] = None, fid_reference: Optional[str] = None,
             fid_cache: Optional[str] = None, name: Optional[str] = None) -> Dict:
    """Generate the test pairs with a checkpoint, write them to OUT/generated (PNG) with
    OUT/pairs.csv, and score them as the folder mode scores a folder."""
    from PIL import Image
    from tqdm import tqdm

    from .data.market import PAIRS_HEADER
    from .viz import pose_image

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ckpt = ckpt_io.load(checkpoint, expect_variant=variant)
    G = ckpt_io.build_generator(ckpt, dev)
    root = resolve_data(ckpt, data)
    split = "train" if pairs == "train" else "test"
    layout = discover(root)
    ann_path = layout.require_annotations(split)
    annotations = read_annotations(ann_path)
    if pairs in ("train", "test"):
        pairs_path = layout.pairs(split)
        pair_list = read_pairs(pairs_path, annotations) if pairs_path else standard_pairs(annotations)
    else:
        pair_list = read_pairs(pairs, annotations)
    if max_pairs:
        pair_list = pair_list[:max_pairs]
    if not pair_list:
        raise EvaluationError(f"no pairs to evaluate in {pairs if pairs not in ('train', 'test') else root} "
                              f"({split} split): nothing to generate or score")
    seen: Dict[str, Tuple[str, str]] = {}
    for a, b in pair_list:  # the generated files are named by the stems: two pairs, one name?
        file_stem = f"{os.path.splitext(a)[0]}___{os.path.splitext(b)[0]}"
        if file_stem in seen and seen[file_stem] != (a, b):
            raise EvaluationError(f"pairs {seen[file_stem]} and {(a, b)} would both be written as {file_stem}.png "
                                  "(names that differ only in their extension); rename one of the images")
        seen[file_stem] = (a, b)
    ds = MarketPoseDataset(root, annotations, pair_list, split=split, heatmaps=False,
                           height=G.image_size[0], width=G.image_size[1])
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    nets = build_networks(dev, inception_weights, alexnet_weights, lpips_weights, pose_weights,
                          allow_random_networks)
    gen_dir = os.path.join(out, "generated")
    os.makedirs(gen_dir, exist_ok=True)
    # An earlier run's images (another checkpoint, other pairs) would mix with this
    # run's in the folder that is scored: the folder is emptied first (the run holds OUT).
    for old in os.listdir(gen_dir):
        if os.path.isfile(os.path.join(gen_dir, old)):
            os.remove(os.path.join(gen_dir, old))
    with open(os.path.join(out, "pairs.csv"), "w", newline="") as fh:
        fh.write(PAIRS_HEADER + "\n" + "".join(f"{a},{b}\n" for a, b in pair_list))
    scorer = Scorer(nets)
    rows = []
    done = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
        with torch.no_grad():
            fake = G(batch["source_image"].to(dev), batch["source_keypoints"], batch["target_keypoints"]).cpu()
        g8, t8 = to_uint8(fake), to_uint8(batch["target_image"])
        scorer.add(g8, t8, batch["target_keypoints"])
        for i in range(len(g8)):
            a, b = pair_list[done + i]
            path = os.path.join(gen_dir, f"{os.path.splitext(a)[0]}___{os.path.splitext(b)[0]}.png")
            Image.fromarray(g8[i].permute(1, 2, 0).numpy()).save(path + ".tmp.png")
            os.replace(path + ".tmp.png", path)
            if len(rows) < examples:
                rows.append([Image.fromarray(to_uint8(batch["source_image"][i]).permute(1, 2, 0).numpy()),
                             pose_image(batch["target_keypoints"][i], *fake.shape[-2:]),
                             Image.fromarray(g8[i].permute(1, 2, 0).numpy()),
                             Image.fromarray(t8[i].permute(1, 2, 0).numpy())])
        done += len(g8)
    size = tuple(G.image_size)
    result: Dict = {"name": name or f"{ckpt['config']['variant']} @ {ckpt.get('step')}", "mode": "checkpoint",
                    "checkpoint": checkpoint, "variant": ckpt["config"]["variant"], "step": ckpt.get("step"),
                    "data": root, "generated": gen_dir, "real": layout.images(split),
                    "annotations": ann_path, "pairs_file": os.path.join(out, "pairs.csv"),
                    "image_size": list(size), "dataset": DATASET_BY_SIZE.get(size)}
    if fid_reference is None and layout.has_images("train"):
        fid_reference = layout.images("train")
    fid = _fid_statistics(nets, fid_reference, fid_cache or default_fid_cache(), batch_size, progress, result)
    result.update(scorer.result(fid))
    _write_outputs(out, result, rows, ["source", "target pose", "generated", "target"])
    return result


# The entry points carry the signatures of the functions they lock around.
evaluate_folder.__signature__ = inspect.signature(_evaluate_folder)
evaluate.__signature__ = inspect.signature(_evaluate)


# ---------------------------------------------------------------- tables
def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


def markdown_table(results: List[Dict], names: Optional[List[str]] = None,
                   published: Sequence[Tuple[str, Dict]] = ()) -> str:
    """Runs (metrics.json dicts) as one markdown table; ``published`` rows (name, values)
    are appended marked as published. Skipped metrics are listed under the table."""
    every = list(results) + [v for _, v in published]
    cols = [(k, t) for k, t in METRIC_COLUMNS if any(k in r for r in every)]
    lines = ["| model | pairs | " + " | ".join(t for _, t in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for i, r in enumerate(results):
        label = names[i] if names else r.get("name") or f"{r.get('variant')} @ {r.get('step')}"
        lines.append(f"| {label} | {r.get('pairs', '-')} | " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    for label, values in published:
        lines.append(f"| {label} (published) | - | " + " | ".join(_fmt(values.get(k)) for k, _ in cols) + " |")
    skipped = {k: v for r in results for k, v in r.get("skipped", {}).items()}
    titles = dict(METRIC_COLUMNS)
    left_out = [(r, k, v) for r in results for k, v in (r.get("left_out") or {}).items()]
    if skipped or left_out:
        lines.append("")
        lines += [f"- {k} skipped: {v}" for k, v in skipped.items()]
        for i, (r, k, v) in enumerate(left_out):
            who = f" ({names[results.index(r)]})" if names else (f" ({r['name']})" if r.get("name") else "")
            lines.append(f"- {titles.get(k, k)}{who}: {v['count']} of {v['of']} images left out of the mean: "
                         f"{v['reason']}")
    return "\n".join(lines) + "\n"


def compare(outs: Sequence[str], dataset: Optional[str] = None) -> str:
    """One markdown table of the runs in the evaluation folders ``outs`` (their
    metrics.json), followed by the published rows of their dataset (``dataset`` or the
    runs' own: market for 128x64 images, deepfashion for 256x256)."""
    results = []
    for o in outs:
        path = os.path.join(o, "metrics.json") if os.path.isdir(o) else o
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--compare: no metrics.json in {o}")
        try:
            with open(path) as fh:
                results.append(json.load(fh))
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"--compare: {path} is not valid JSON ({exc})") from exc
    if dataset is None:
        found = {r.get("dataset") for r in results} - {None}
        dataset = found.pop() if len(found) == 1 else None
    sets = [dataset] if dataset else list(PUBLISHED)
    published = [(f"{label}, {d}" if not dataset else label, v) for d in sets for label, v in PUBLISHED[d]]
    table = markdown_table(results, published=published)
    head = f"Dataset: {dataset}. " if dataset else "Dataset: unknown (published rows of both benchmarks). "
    return head + "Published rows: as printed in the papers (docs/method.md: metrics); '-' = not reported.\n\n" + table


# ---------------------------------------------------------------- command line
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deformgan.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--checkpoint", help="checkpoint mode: generate the test pairs with this checkpoint")
    mode.add_argument("--generated", help="folder mode: a folder of generated images (any method)")
    mode.add_argument("--real-only", action="store_true", help="score the real images themselves")
    mode.add_argument("--compare", nargs="+", metavar="OUT", help="evaluation folders to tabulate side by side")
    ap.add_argument("--real", help="folder of the real target images (or a dataset root with bounding_box_test/)")
    ap.add_argument("--annotations", help="annotation CSV giving the target keypoints (mask metrics, PCKh)")
    ap.add_argument("--data", default=None, help="checkpoint mode: Market-layout folder (default: the checkpoint's)")
    ap.add_argument("--pairs", default=None,
                    help="folder modes: a from,to CSV; checkpoint mode: 'test' (default), 'train' or a CSV")
    ap.add_argument("--strip-panel", type=int, default=None, metavar="INDEX",
                    help="generated files are horizontal strips; score panel INDEX (-1: the last)")
    ap.add_argument("--resize", action="store_true",
                    help="resize generated images of another size to the targets' (bicubic) instead of failing")
    ap.add_argument("--strict", action="store_true", help="any unpaired, missing or unreadable file is an error")
    ap.add_argument("--fid-reference", default=None, help="folder of the FID reference images (the training set)")
    ap.add_argument("--fid-cache", default=None, help="folder for cached FID reference statistics")
    ap.add_argument("--dataset", choices=sorted(PUBLISHED), default=None,
                    help="--compare: which published rows (default: from the runs' image size)")
    ap.add_argument("--name", default=None, help="the run's label in tables (default: the OUT folder's name)")
    ap.add_argument("--out", default=None, help="output folder (default runs/eval; --compare: print only)")
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("--max-pairs", type=positive_int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--inception-weights", default="imagenet")
    ap.add_argument("--alexnet-weights", default="imagenet")
    ap.add_argument("--lpips-weights", default=None)
    ap.add_argument("--pose-weights", default="yolo11n-pose.pt")
    ap.add_argument("--variant", default=None, help="fail unless the checkpoint is of this generator variant")
    ap.add_argument("--allow-random-networks", action="store_true",
                    help="tests: weights 'random' build seeded random Inception/AlexNet/LPIPS networks")
    args = ap.parse_args(argv)
    try:
        if args.compare:
            table = compare(args.compare, args.dataset)
            print(table, end="")
            if args.out:
                os.makedirs(args.out, exist_ok=True)
                with open(os.path.join(args.out, "compare.md"), "w") as fh:
                    fh.write(table)
            return 0
        out = args.out or "runs/eval"
        nets = dict(inception_weights=args.inception_weights, alexnet_weights=args.alexnet_weights,
                    lpips_weights=args.lpips_weights, pose_weights=args.pose_weights,
                    allow_random_networks=args.allow_random_networks)
        if args.checkpoint:
            r = evaluate(args.checkpoint, args.data, args.pairs or "test", out, args.batch_size, args.max_pairs,
                         args.device, variant=args.variant, fid_reference=args.fid_reference,
                         fid_cache=args.fid_cache, name=args.name, **nets)
        else:
            if not args.real:
                ap.error("--real DIR is required with --generated and --real-only")
            r = evaluate_folder(args.generated, args.real, out, args.annotations, args.pairs, args.strip_panel,
                                args.resize, args.real_only, args.fid_reference, args.fid_cache, args.batch_size,
                                args.max_pairs, args.device, strict=args.strict, name=args.name, **nets)
    except (FileNotFoundError, ckpt_io.CheckpointError, AnnotationError, ValueError, OutputBusy) as exc:
        print(f"[deformgan.evaluate] error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table([r]), end="")
    print(f"[deformgan.evaluate] wrote {os.path.join(out, 'metrics.json')}, metrics.md, examples.png"
          + (", generated/ and pairs.csv" if args.checkpoint else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
