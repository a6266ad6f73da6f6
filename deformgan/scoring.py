"""Scoring generated images by the field's protocol: one :class:`Scorer` used by every
mode of ``python -m deformgan.evaluate`` (a checkpoint's outputs, a folder of any
method's outputs, the real images themselves), so that the same images give the same
numbers whichever way they arrive.

Every metric is computed on uint8 RGB images at the dataset's resolution (what a method
writes to disk); networks (Inception v3, AlexNet/LPIPS) see them mapped to [-1, 1].
"""
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import metrics as MT
from .data.market import read_image_uint8, to_uint8  # noqa: F401  (re-exported)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1] (the networks' input range)."""
    return x.to(torch.float32) / 127.5 - 1.0


def image_files(folder: str) -> List[str]:
    """The image files (by extension, case-insensitive) directly inside ``folder``, sorted."""
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))


@dataclass
class Networks:
    """The optional networks of the metrics; ``skipped`` maps a metric group to the reason
    it cannot be computed. ``inception_key`` identifies the Inception weights (FID cache)."""
    device: torch.device
    lpips: Optional[torch.nn.Module] = None
    inception: Optional[torch.nn.Module] = None
    pose_model: Optional[object] = None
    inception_key: Optional[str] = None
    skipped: Dict[str, str] = field(default_factory=dict)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_networks(device, inception_weights: Optional[str] = "imagenet", alexnet_weights: Optional[str] = "imagenet",
                   lpips_weights: Optional[str] = None, pose_weights: Optional[str] = "yolo11n-pose.pt",
                   allow_random: bool = False) -> Networks:
    """Load what can be loaded. A weights argument "none" disables that metric; with
    ``allow_random`` (tests), "random" (or None for the LPIPS layers) builds seeded random
    networks. Anything that fails to load is listed in ``skipped`` with the reason."""
    nets = Networks(torch.device(device))
    dev = nets.device

    def optional(name: str, build: Callable):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return build()
        except Exception as exc:
            nets.skipped[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return None

    rnd = allow_random
    if lpips_weights == "none" or alexnet_weights == "none":
        nets.skipped["LPIPS"] = "disabled (weights 'none')"
    else:
        nets.lpips = optional("LPIPS", lambda: MT.LPIPS(
            None if rnd and alexnet_weights == "random" else alexnet_weights,
            None if rnd and lpips_weights in (None, "random") else lpips_weights, allow_random=rnd).to(dev))
        if lpips_weights is None and not rnd and "LPIPS" in nets.skipped:
            nets.skipped["LPIPS"] = "no --lpips-weights (the LPIPS linear layers) given; " + nets.skipped["LPIPS"]
    if inception_weights == "none":
        nets.skipped["IS/FID"] = "disabled (weights 'none')"
    else:
        random_inception = rnd and inception_weights == "random"
        nets.inception = optional("IS/FID", lambda: MT.InceptionFeatures(
            None if random_inception else inception_weights, allow_random=rnd).to(dev))
        if nets.inception is not None:
            if random_inception:
                nets.inception_key = "random-seed0"
            elif inception_weights == "imagenet":
                nets.inception_key = "torchvision-IMAGENET1K_V1"
            else:
                nets.inception_key = "sha256-" + _file_digest(inception_weights)
    if pose_weights == "none":
        nets.skipped["PCKh"] = "disabled (weights 'none')"
    else:
        from .keypoints import load_pose_model
        nets.pose_model = optional("PCKh", lambda: load_pose_model(pose_weights))
    return nets


# ---------------------------------------------------------------- FID reference statistics
def folder_key(folder: str, files: Sequence[str]) -> str:
    """A digest of a folder's image content: every file's name and bytes."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + b"\0" + _file_digest(os.path.join(folder, f)).encode())
    return h.hexdigest()


def reference_statistics(folder: str, nets: Networks, batch_size: int = 32, cache_dir: Optional[str] = None,
                         progress: bool = True) -> Tuple[np.ndarray, np.ndarray, int, bool]:
    """Inception pool3 mean and covariance of every image in ``folder`` (the FID
    reference set: the whole training set, as GFLA and PIDM report FID), each image at
    its own size. Cached in ``cache_dir`` under a key made of the folder's content (every
    file name and its bytes) and the Inception weights; returns (mu, sigma, images,
    from_cache)."""
    from tqdm import tqdm

    files = image_files(folder)
    if not files:
        raise FileNotFoundError(f"no images in the FID reference folder {folder}")
    key = hashlib.sha256((folder_key(folder, files) + "|" + str(nets.inception_key)).encode()).hexdigest()[:32]
    path = os.path.join(cache_dir, f"fid-reference-{key}.npz") if cache_dir else None
    if path and os.path.isfile(path):
        with np.load(path) as z:
            return z["mu"], z["sigma"], int(z["count"]), True
    feats = []
    batch: List[np.ndarray] = []

    def flush():
        if batch:
            x = to_unit(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2))
            feats.append(nets.inception(x.to(nets.device))[0].cpu())
            batch.clear()

    for f in tqdm(files, desc="FID reference", unit="img", disable=not progress):
        img = read_image_uint8(os.path.join(folder, f))
        if batch and (img.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(img)
    flush()
    mu, sigma = MT.feature_statistics(torch.cat(feats))
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = path + f".tmp{os.getpid()}.npz"
        np.savez(tmp, mu=mu, sigma=sigma, count=len(files), folder=os.path.abspath(folder))
        os.replace(tmp, path)
    return mu, sigma, len(files), False


# ---------------------------------------------------------------- the scorer
# Why a per-image score can be undefined (left out of the means, and counted).
UNDEFINED = {
    "ssim": "SSIM is undefined where the generated image is constant (a data range of 0, as in scikit-image)",
    "mask_ssim": "undefined where the masked generated image is constant: a target pose with no joint (an "
                 "empty pose mask) or a constant generated image",
}


class Scorer:
    """Accumulates the metrics of batches of (generated, target) uint8 images
    ``[N, 3, H, W]``; target keypoints ``[N, 18, 2]`` (x, y) enable the mask metrics
    (mask-SSIM, mask-L1, mask-IS) and PCKh. Networks that :func:`build_networks`
    could not load (or was told to leave out) are listed in the result's ``skipped``.

    Example:
        >>> import torch
        >>> from deformgan.scoring import Scorer, build_networks
        >>> nets = build_networks("cpu", inception_weights="none", alexnet_weights="none", pose_weights="none")
        >>> scorer = Scorer(nets)
        >>> g = torch.Generator().manual_seed(0)
        >>> images = torch.randint(0, 256, (4, 3, 128, 64), generator=g, dtype=torch.uint8)
        >>> scorer.add(images, images)
        >>> result = scorer.result()
        >>> result["pairs"], result["ssim"], result["l1"]
        (4, 1.0, 0.0)
    """

    PER_IMAGE = ("ssim", "mask_ssim", "l1", "mask_l1", "psnr", "lpips")

    def __init__(self, nets: Networks):
        self.nets = nets
        self.scores: Dict[str, List[float]] = {k: [] for k in self.PER_IMAGE}
        self.pool: List[torch.Tensor] = []
        self.probs: List[torch.Tensor] = []
        self.mask_probs: List[torch.Tensor] = []
        self.pred_kps: List[torch.Tensor] = []
        self.tgt_kps: List[torch.Tensor] = []
        self.count = 0
        self.with_keypoints = True

    def add(self, generated: torch.Tensor, target: torch.Tensor, target_keypoints: Optional[torch.Tensor] = None):
        if generated.dtype != torch.uint8 or target.dtype != torch.uint8:
            raise TypeError("Scorer.add expects uint8 images")
        if generated.shape != target.shape or generated.dim() != 4 or generated.shape[1] != 3:
            raise ValueError(f"generated {tuple(generated.shape)} and target {tuple(target.shape)} must both be "
                             "[N, 3, H, W]")
        nets, dev = self.nets, self.nets.device
        self.count += len(generated)
        s = self.scores
        s["ssim"] += MT.ssim(generated, target).tolist()
        s["l1"] += MT.l1(generated, target).tolist()
        s["psnr"] += MT.psnr(generated, target).tolist()
        H, W = generated.shape[-2:]
        masks = None
        if target_keypoints is None:
            self.with_keypoints = False
        else:
            masks = torch.from_numpy(np.stack([MT.pose_mask(k, H, W) for k in target_keypoints]))
            s["mask_ssim"] += MT.mask_ssim(generated, target, target_keypoints).tolist()
            s["mask_l1"] += MT.mask_l1(generated, target, target_keypoints).tolist()
        g = to_unit(generated)
        if nets.lpips is not None:
            s["lpips"] += nets.lpips(g.to(dev), to_unit(target).to(dev)).cpu().tolist()
        if nets.inception is not None:
            f, p = nets.inception(g.to(dev))
            self.pool.append(f.cpu())
            self.probs.append(p.cpu())
            if masks is not None:
                masked = torch.where(masks.unsqueeze(1), g, torch.full_like(g, -1.0))
                self.mask_probs.append(nets.inception(masked.to(dev))[1].cpu())
        if nets.pose_model is not None and target_keypoints is not None:
            from .keypoints import predict, result_to_keypoints
            res = predict(nets.pose_model, [x.permute(1, 2, 0).numpy()[:, :, ::-1].copy() for x in generated],
                          verbose=False)
            self.pred_kps += [result_to_keypoints(r, 0.3) for r in res]
            self.tgt_kps += list(target_keypoints)

    def result(self, fid_reference: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Dict:
        """The averages; IS / mask-IS (10 splits) and FID against ``fid_reference``
        (mu, sigma) where the networks and inputs allow; ``skipped`` lists the rest."""
        out: Dict = {"pairs": self.count}
        skipped = dict(self.nets.skipped)
        left_out: Dict = {}
        for k in self.PER_IMAGE:
            if self.scores[k] and (k not in ("mask_ssim", "mask_l1") or self.with_keypoints):
                values = np.asarray(self.scores[k], dtype=np.float64)
                finite = np.isfinite(values)
                # An undefined per-image score (SSIM of a constant image, a mask-SSIM over
                # an empty pose mask) is left out of the mean and counted: never a NaN mean.
                out[k] = float(values[finite].mean()) if finite.any() else None
                if not finite.all():
                    left_out[k] = {"count": int((~finite).sum()), "of": int(values.size),
                                   "reason": UNDEFINED.get(k, "not a finite number")}
        if left_out:
            out["left_out"] = left_out
        if not self.with_keypoints:
            skipped["mask-SSIM/mask-L1/mask-IS/PCKh"] = "no target keypoints (give --annotations)"
        if self.probs:
            out["is"], out["is_std"] = MT.inception_score(torch.cat(self.probs))
            if self.with_keypoints and self.mask_probs:
                out["mask_is"], out["mask_is_std"] = MT.inception_score(torch.cat(self.mask_probs))
            if fid_reference is not None:
                mu1, s1 = MT.feature_statistics(torch.cat(self.pool))
                out["fid"] = MT.frechet_distance(mu1, s1, *fid_reference)
            else:
                skipped.setdefault("FID", "no reference set (give --fid-reference DIR: the training images)")
        if self.pred_kps:
            out["pckh"], out["pckh_joints"] = MT.pckh(torch.stack(self.pred_kps), torch.stack(self.tgt_kps))
        out["skipped"] = skipped
        return out


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(_no_bare_nan(obj), fh, indent=1, allow_nan=False)
    os.replace(tmp, path)


def _no_bare_nan(x):
    """JSON has no NaN or Infinity: a non-finite float is written as null."""
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _no_bare_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_bare_nan(v) for v in x]
    return x
