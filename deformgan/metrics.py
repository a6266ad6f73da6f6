"""Evaluation metrics of the pose-transfer field (docs/method.md: metrics).

SSIM and mask-SSIM follow the field's scikit-image call: ``structural_similarity(
generated, target, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
channel_axis=-1, data_range=generated.max() - generated.min())`` on uint8 images,
computed here in torch, batched (tests check it against scikit-image). mask-SSIM
multiplies both images by the target's PG2-style pose mask first.
"""
import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import pose as P

# the limb pairs of the PG2 pose mask (1-based joint numbers)
MASK_LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
              (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (2, 17), (2, 18), (9, 12), (12, 6), (9, 3),
              (17, 18))


def _gaussian_kernel(sigma: float = 1.5, truncate: float = 3.5, dtype=torch.float64) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``[B, 1, H, W]``, 'valid' (``[B, 1, H - 2r, W - 2r]``).

    scikit-image filters the whole image (scipy.ndimage, 'reflect' boundary) and then
    drops ``r`` pixels at every border before averaging SSIM; the values it keeps never
    read the boundary, so filtering only where the window fits gives the same numbers."""
    x = F.conv2d(x, k.view(1, 1, -1, 1).to(x))
    return F.conv2d(x, k.view(1, 1, 1, -1).to(x))


def ssim(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of uint8-valued images ``[N, 3, H, W]`` (0..255, any dtype), as
    scikit-image computes it with the field's settings (see the module docstring).
    Images smaller than the 11 x 11 window leave no pixel to average: NaN.

    Example:
        >>> import torch
        >>> from deformgan import metrics
        >>> g = torch.Generator().manual_seed(0)
        >>> a = torch.randint(0, 256, (2, 3, 128, 64), generator=g, dtype=torch.uint8)
        >>> metrics.ssim(a, a).tolist()  # an image against itself
        [1.0, 1.0]
        >>> bool(metrics.ssim(a, 255 - a)[0] < 0)  # against its negative
        True
    """
    g = generated.to(torch.float64)
    t = target.to(torch.float64)
    N, C, H, W = g.shape
    k = _gaussian_kernel()
    if H < k.numel() or W < k.numel():
        return torch.full((N,), float("nan"), dtype=torch.float64, device=g.device)
    # as scikit-image: a constant generated image (data range 0) gives NaN
    data_range = g.amax((1, 2, 3)) - g.amin((1, 2, 3))
    c1 = ((0.01 * data_range) ** 2).view(N, 1, 1, 1)
    c2 = ((0.03 * data_range) ** 2).view(N, 1, 1, 1)
    x = g.reshape(N * C, 1, H, W)
    y = t.reshape(N * C, 1, H, W)
    ux, uy = _filter(x, k), _filter(y, k)
    uxx, uyy, uxy = _filter(x * x, k), _filter(y * y, k), _filter(x * y, k)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1 = c1.repeat_interleave(C, 0)
    c2 = c2.repeat_interleave(C, 0)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(N, C, -1).mean(-1).mean(-1)


def pose_mask(keypoints: torch.Tensor, height: int = 128, width: int = 64, radius: int = 4) -> np.ndarray:
    """The PG2-style pose mask of one pose ``[18, 2]`` (x, y): quadrilaterals of half
    width ``radius`` along the limb pairs, disks of ``radius`` at each present joint,
    then a 5x5 dilation followed by a 5x5 erosion. ``height x width`` bool."""
    from skimage.draw import disk, polygon
    from skimage.morphology import dilation, erosion

    mask = np.zeros((height, width), dtype=bool)
    kp = keypoints.detach().cpu().double().numpy()
    ok = P.present(keypoints).cpu().numpy()
    for a, b in MASK_LIMBS:
        a, b = a - 1, b - 1
        if not (ok[a] and ok[b]):
            continue
        pa, pb = kp[a], kp[b]
        d = pb - pa
        n = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-9) * radius
        quad = np.array([pa + n, pb + n, pb - n, pa - n])
        rr, cc = polygon(quad[:, 1], quad[:, 0], shape=mask.shape)
        mask[rr, cc] = True
    for j in range(P.NUM_JOINTS):
        if ok[j]:
            rr, cc = disk((kp[j, 1], kp[j, 0]), radius, shape=mask.shape)
            mask[rr, cc] = True
    footprint = np.ones((5, 5), dtype=bool)
    return erosion(dilation(mask, footprint), footprint)


def mask_ssim(generated: torch.Tensor, target: torch.Tensor, target_keypoints: torch.Tensor) -> torch.Tensor:
    """SSIM of both images multiplied by the target's pose mask (:func:`pose_mask`).

    Example:
        >>> import torch
        >>> from deformgan import metrics
        >>> from deformgan_ops.skeleton import example_poses
        >>> g = torch.Generator().manual_seed(0)
        >>> a = torch.randint(0, 256, (1, 3, 128, 64), generator=g, dtype=torch.uint8)
        >>> b = a.clone()
        >>> b[..., :8, :] = 0  # differ only above the head, outside the pose mask
        >>> pose = example_poses()[:1].float()
        >>> metrics.mask_ssim(a, b, pose).tolist(), bool(metrics.ssim(a, b)[0] < 1)
        ([1.0], True)
    """
    H, W = generated.shape[-2:]
    masks = torch.from_numpy(np.stack([pose_mask(k, H, W) for k in target_keypoints])).to(generated.device)
    m = masks.unsqueeze(1).to(torch.float64)
    return ssim(generated.to(torch.float64) * m, target.to(torch.float64) * m)


def l1(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute difference of uint8-valued images, on a 0..1 scale."""
    return (generated.double() - target.double()).abs().mean((1, 2, 3)) / 255.0


def mask_l1(generated: torch.Tensor, target: torch.Tensor, target_keypoints: torch.Tensor) -> torch.Tensor:
    """L1 (0..1 scale) of both images multiplied by the target's pose mask, averaged over
    the whole image as mask-SSIM is (pixels outside the mask count as equal)."""
    H, W = generated.shape[-2:]
    masks = torch.from_numpy(np.stack([pose_mask(k, H, W) for k in target_keypoints])).to(generated.device)
    m = masks.unsqueeze(1).to(torch.float64)
    return l1(generated.to(torch.float64) * m, target.to(torch.float64) * m)


def psnr(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of uint8-valued images."""
    mse = ((generated.double() - target.double()) ** 2).mean((1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(255.0 ** 2 / mse)


def pckh(predicted: torch.Tensor, target: torch.Tensor, ratio: float = 0.5) -> Tuple[float, int]:
    """PCKh: the fraction of target joints (present in the target) whose predicted joint
    is present and within ``ratio`` x the head size, the head size being the diagonal
    of the box around the target's head joints and neck. Poses ``[N, 18, 2]``; returns
    (fraction, joints counted). Poses without two head points are skipped."""
    head_idx = list(P.HEAD_JOINTS) + [P.J["neck"]]
    correct, total = 0, 0
    for pred, tgt in zip(predicted, target):
        hp = tgt[head_idx][P.present(tgt[head_idx])]
        if len(hp) < 2:
            continue
        size = float((hp.max(0).values - hp.min(0).values).norm())
        if size <= 0:
            continue
        for j in range(P.NUM_JOINTS):
            if not P.present(tgt[j]):
                continue
            total += 1
            if P.present(pred[j]) and float((pred[j] - tgt[j]).norm()) <= ratio * size:
                correct += 1
    return (correct / total if total else float("nan")), total


def inception_score(probs: torch.Tensor, splits: int = 10) -> Tuple[float, float]:
    """IS from class probabilities ``[N, K]``: mean and std over ``splits``."""
    scores = []
    n = probs.shape[0]
    for k in range(splits):
        part = probs[k * n // splits:(k + 1) * n // splits].double()
        if len(part) == 0:
            continue
        py = part.mean(0, keepdim=True)
        kl = (part * (torch.log(part.clamp_min(1e-12)) - torch.log(py.clamp_min(1e-12)))).sum(1).mean()
        scores.append(math.exp(kl.item()))
    return float(np.mean(scores)), float(np.std(scores))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FID between two Gaussians (the standard formula, scipy's sqrtm).

    Example:
        >>> import numpy as np
        >>> from deformgan.metrics import frechet_distance
        >>> frechet_distance(np.zeros(2), np.eye(2), np.array([3.0, 4.0]), np.eye(2))  # |mu1 - mu2|^2
        25.0
    """
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_statistics(features: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    f = features.double().cpu().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


# ---------------------------------------------------------------- networks for IS / FID / LPIPS
class InceptionFeatures(torch.nn.Module):
    """torchvision Inception v3: pool3 features (2048) and class probabilities (1000)
    of images in [-1, 1] resized to 299x299. ``weights``: "imagenet" (torchvision's
    mechanism), a state-dict path, or None with ``allow_random`` (tests)."""

    def __init__(self, weights: Optional[str] = "imagenet", allow_random: bool = False):
        super().__init__()
        from torchvision.models import Inception_V3_Weights, inception_v3

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random networks (tests) are the same in every process
            net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        if weights is None:
            if not allow_random:
                raise RuntimeError("Inception weights=None needs allow_random=True")
        elif weights == "imagenet":
            net.load_state_dict(Inception_V3_Weights.IMAGENET1K_V1.get_state_dict(progress=False))
        else:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        net.fc_saved = net.fc
        net.fc = torch.nn.Identity()
        if weights is None:
            # random BatchNorm running statistics (mean 0, var 1) make every activation
            # vanish; one seeded pass in training mode sets them from noise so that random
            # features still tell images apart (tests of IS / FID)
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(0)
                for m in net.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.momentum = None
                net.train()
                net.aux_logits, aux = False, net.AuxLogits
                net.AuxLogits = None
                net(torch.randn(4, 3, 299, 299))
                net.AuxLogits = aux
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate((images + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        pool = self.net(x)
        if isinstance(pool, tuple):
            pool = pool[0]
        probs = torch.softmax(self.net.fc_saved(pool), 1)
        return pool, probs


class LPIPS(torch.nn.Module):
    """LPIPS (AlexNet variant): unit-normalised AlexNet activations at five layers,
    squared differences weighted per channel by learned linear layers, averaged over
    space and summed over layers. Needs the AlexNet ImageNet weights and the LPIPS
    linear weights (``linear_weights``: a state dict with keys lin0..lin4 of shape
    [1, C, 1, 1]); ``allow_random`` builds random ones (tests)."""

    CHANNELS = (64, 192, 384, 256, 256)
    LAYERS = (1, 4, 7, 9, 11)  # ReLU outputs in torchvision's alexnet().features

    def __init__(self, alexnet_weights: Optional[str] = "imagenet", linear_weights: Optional[str] = None,
                 allow_random: bool = False):
        super().__init__()
        from torchvision.models import AlexNet_Weights, alexnet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random networks (tests) are the same in every process
            net = alexnet(weights=None)
            lins = [torch.rand(1, c, 1, 1) if allow_random else torch.zeros(1, c, 1, 1) for c in self.CHANNELS]
        if alexnet_weights == "imagenet":
            net.load_state_dict(AlexNet_Weights.IMAGENET1K_V1.get_state_dict(progress=False))
        elif alexnet_weights is not None:
            net.load_state_dict(torch.load(alexnet_weights, map_location="cpu", weights_only=True))
        elif not allow_random:
            raise RuntimeError("AlexNet weights=None needs allow_random=True")
        self.features = net.features[:12].eval()
        self.lins = torch.nn.ParameterList([torch.nn.Parameter(t) for t in lins])
        if linear_weights is not None:
            state = torch.load(linear_weights, map_location="cpu", weights_only=True)
            for i, p in enumerate(self.lins):
                p.data.copy_(state[f"lin{i}.model.1.weight"] if f"lin{i}.model.1.weight" in state else state[f"lin{i}"])
        elif not allow_random:
            raise RuntimeError("LPIPS needs its linear-layer weights (linear_weights=PATH)")
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def _acts(self, x):
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.LAYERS:
                out.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))
        return out

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image distance of images in [-1, 1]."""
        total = 0
        for fa, fb, w in zip(self._acts(a), self._acts(b), self.lins):
            total = total + ((fa - fb) ** 2 * w).sum(1).mean((1, 2))
        return total
