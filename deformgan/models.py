"""The Deformable GAN networks (SPEC sections 6-7): the generator with deformable
skip connections, its variants, and the PatchGAN discriminator.

Variants (``Generator(variant=...)``):
  ``none``           one encoder on [x_a, H_a, H_b], no warp: the U-Net baseline;
  ``global``         two encoders, skips warped by one affine for the whole body;
  ``parts``          two encoders, skips warped by the ten part affines (the paper's);
  ``parts+offsets``  ``parts`` plus a learned residual displacement per warped level,
                     predicted from the pose stream by a zero-initialised conv head.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import deformgan_ops

from . import pose as P

VARIANTS = ("none", "global", "parts", "parts+offsets")
NORMS = ("instance_all", "instance", "none")
ENCODER_WIDTHS = (64, 128, 256, 512, 512, 512)
DECODER_WIDTHS = (512, 512, 512, 256, 128)
WARPED_LEVELS = (0, 1, 2, 3)


class InstanceNormAll(nn.Module):
    """keras-contrib ``InstanceNormalization(axis=None)`` as the original used it: each
    sample normalised over all of C, H, W with one scalar scale and shift, and 1e-3
    added to the standard deviation."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        mean = flat.mean(1).view(-1, 1, 1, 1)
        std = flat.std(1, unbiased=False).view(-1, 1, 1, 1)
        return (x - mean) / (std + self.eps) * self.weight + self.bias


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance_all":
        return InstanceNormAll()
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, eps=1e-3)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def _widths(widths: Sequence[int], mult: float) -> List[int]:
    return [max(4, int(round(w * mult))) for w in widths]


class Encoder(nn.Module):
    """Level 0: 3x3 conv to w0 at full resolution; levels 1-5: LeakyReLU(0.2) -> 4x4
    stride-2 conv -> normalisation (none on the last). Returns the six level features."""

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str):
        super().__init__()
        self.first = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        blocks = []
        for i in range(1, len(widths)):
            last = i == len(widths) - 1
            blocks.append(nn.Sequential(
                nn.LeakyReLU(0.2),
                nn.Conv2d(widths[i - 1], widths[i], 4, stride=2, padding=1),
                nn.Identity() if last else make_norm(norm, widths[i])))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = [self.first(x)]
        for block in self.blocks:
            feats.append(block(feats[-1]))
        return feats


class Generator(nn.Module):
    """Deformable GAN generator for 128x64 images.

    ``forward(source_image [N, 3, H, W] in [-1, 1], source_keypoints [N, 18, 2],
    target_keypoints [N, 18, 2], geometry=None) -> [N, 3, H, W]`` in [-1, 1]. Heatmaps,
    masks and affines are rendered on the model's device, in batch (or passed as
    ``geometry``, from :meth:`render_geometry`).
    """

    def __init__(self, variant: str = "parts", norm: str = "instance_all", width_mult: float = 1.0,
                 dropout: float = 0.5, image_size: Tuple[int, int] = (128, 64), sigma: float = 6.0,
                 ops_backend: Optional[str] = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        make_norm(norm, 4)  # validates
        self.variant, self.norm, self.width_mult = variant, norm, width_mult
        self.image_size, self.sigma, self.ops_backend = tuple(image_size), sigma, ops_backend
        enc = _widths(ENCODER_WIDTHS, width_mult)
        dec = _widths(DECODER_WIDTHS, width_mult)
        K = P.NUM_JOINTS
        if variant == "none":
            self.appearance = Encoder(3 + 2 * K, enc, norm)
            self.pose = None
            skip = list(enc)
        else:
            self.appearance = Encoder(3 + K, enc, norm)
            self.pose = Encoder(K, enc, norm)
            skip = [2 * w for w in enc]
        if variant == "parts+offsets":
            heads = []
            for level in WARPED_LEVELS:
                head = nn.Sequential(nn.Conv2d(enc[level], max(8, enc[level] // 4), 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(max(8, enc[level] // 4), 2, 3, padding=1))
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)
                heads.append(head)
            self.offset_heads = nn.ModuleList(heads)
        else:
            self.offset_heads = None
        ups = []
        in_ch = skip[5]
        for i, out_ch in enumerate(dec):
            level = 4 - i
            ups.append(nn.Sequential(
                nn.ReLU(),
                nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1),
                make_norm(norm, out_ch),
                nn.Dropout(dropout) if i < 3 and dropout > 0 else nn.Identity()))
            in_ch = out_ch + skip[level]
        self.ups = nn.ModuleList(ups)
        self.final = nn.Sequential(nn.ReLU(), nn.Conv2d(in_ch, 3, 3, padding=1), nn.Tanh())
        self.last_offsets: List[torch.Tensor] = []

    # ------------------------------------------------------------ geometry
    def render_geometry(self, source_keypoints: torch.Tensor, target_keypoints: torch.Tensor) -> Dict:
        """Heatmaps, affines (image resolution) and per-level masks, on the model's device."""
        H, W = self.image_size
        dev = next(self.parameters()).device
        src = source_keypoints.to(dev, torch.float32)
        tgt = target_keypoints.to(dev, torch.float32)
        heat = deformgan_ops.keypoint_heatmaps(torch.cat([src, tgt]), H, W, self.sigma, backend=self.ops_backend)
        n = src.shape[0]
        geo = dict(source_heatmaps=heat[:n], target_heatmaps=heat[n:])
        if self.variant in ("parts", "parts+offsets"):
            theta, valid = P.part_affines(src, tgt, backend=self.ops_backend)
            masks = {lv: P.part_masks(tgt, H >> lv, W >> lv, scale=float(1 << lv), enabled=valid,
                                      backend=self.ops_backend)
                     for lv in WARPED_LEVELS}
        elif self.variant == "global":
            theta, valid = P.global_affine(src, tgt)
            theta, valid = theta.unsqueeze(1), valid.unsqueeze(1)
            masks = {lv: valid.to(torch.float32)[:, :, None, None].expand(n, 1, H >> lv, W >> lv).contiguous()
                     for lv in WARPED_LEVELS}
        else:
            theta, valid, masks = None, None, None
        geo.update(theta=theta, valid=valid, masks=masks)
        return geo

    # ------------------------------------------------------------ forward
    def forward(self, source_image: torch.Tensor, source_keypoints: torch.Tensor,
                target_keypoints: torch.Tensor, geometry: Optional[Dict] = None) -> torch.Tensor:
        geo = geometry if geometry is not None else self.render_geometry(source_keypoints, target_keypoints)
        h_a = geo["source_heatmaps"].to(source_image.dtype)
        h_b = geo["target_heatmaps"].to(source_image.dtype)
        self.last_offsets = []
        if self.variant == "none":
            skips = self.appearance(torch.cat([source_image, h_a, h_b], 1))
        else:
            app = self.appearance(torch.cat([source_image, h_a], 1))
            pos = self.pose(h_b)
            skips = []
            for level, (fa, fp) in enumerate(zip(app, pos)):
                if level in WARPED_LEVELS:
                    fa = self._warp(fa, fp, geo, level)
                skips.append(torch.cat([fa, fp], 1))
        x = skips[5]
        for i, up in enumerate(self.ups):
            x = torch.cat([up(x), skips[4 - i]], 1)
        return self.final(x)

    def _warp(self, feat: torch.Tensor, pose_feat: torch.Tensor, geo: Dict, level: int) -> torch.Tensor:
        # Sampling locations need more than 16-bit precision (a bf16 translation of 60 px
        # is off by up to a quarter pixel): under autocast the warp runs in float32.
        dtype = torch.float32 if feat.dtype in (torch.float16, torch.bfloat16) else feat.dtype
        theta = P.scale_affines(geo["theta"], float(1 << level)).to(dtype)
        masks = geo["masks"][level].to(dtype)
        offsets = None
        if self.offset_heads is not None:
            offsets = self.offset_heads[level](pose_feat)
            self.last_offsets.append(offsets)
            offsets = offsets.to(dtype)
        out = deformgan_ops.part_affine_warp(feat.to(dtype), theta, masks, offsets, backend=self.ops_backend)
        return out.to(feat.dtype)


class Discriminator(nn.Module):
    """PatchGAN on ``[x_a, H_a, x_b or x_hat, H_b]`` (42 channels): 4x4 stride-2 conv to
    64, blocks LeakyReLU(0.2) -> 4x4 stride-2 conv -> norm to 128, 256, 512, then a 4x4
    stride-2 valid conv to one channel of logits (3 patch scores at 128x64)."""

    def __init__(self, norm: str = "instance_all", width_mult: float = 1.0):
        super().__init__()
        w = _widths((64, 128, 256, 512), width_mult)
        layers: List[nn.Module] = [nn.Conv2d(6 + 2 * P.NUM_JOINTS, w[0], 4, stride=2, padding=1)]
        for i in range(1, 4):
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(w[i - 1], w[i], 4, stride=2, padding=1), make_norm(norm, w[i])]
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(w[3], 1, 4, stride=2, padding=0)]
        self.net = nn.Sequential(*layers)

    def forward(self, source_image, source_heatmaps, image, target_heatmaps) -> torch.Tensor:
        return self.net(torch.cat([source_image, source_heatmaps, image, target_heatmaps], 1))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
