"""The Deformable GAN networks (docs/method.md: generator, discriminator): the generator with deformable
skip connections, its variants, and the PatchGAN discriminator.

A generator variant is two independent choices:

- the warp of the skip connections, ``warp=``:
  ``none``    one encoder on [x_a, H_a, H_b], no warp: the U-Net baseline;
  ``global``  two encoders, skips warped by one affine for the whole body;
  ``parts``   two encoders, skips warped by the ten part affines (the paper's);
- ``offsets=True``: a learned residual displacement per warped level, predicted from
  the pose stream by a zero-initialised conv head (needs a warp).

The names of the checkpoints and configs (``variant=``) stay: ``none``, ``global``,
``parts`` and ``parts+offsets`` (= parts with offsets); any ``<warp>+offsets`` works.

The depth follows the image size: levels are added until the bottleneck is 4 pixels
along the longer side (six levels at 128x64, seven at 256x256, as the original).
"""
import math
from contextlib import nullcontext
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

import deformgan_ops

from . import pose as P

from .geometry import WARPS, Geometry, render

VARIANTS = ("none", "global", "parts", "parts+offsets")  # the names in configs and checkpoints
NORMS = ("instance_all", "instance", "none")
WARPED_LEVELS = (0, 1, 2, 3)
BOTTLENECK = 4  # pixels along the longer side at the deepest level


def parse_variant(variant: str) -> Tuple[str, bool]:
    """``"parts+offsets"`` -> ``("parts", True)``; ``"global"`` -> ``("global", False)``."""
    warp, plus, extra = variant.partition("+")
    if warp not in WARPS or (plus and extra != "offsets") or (warp == "none" and plus):
        raise ValueError(f"variant must be one of {VARIANTS} (or '<warp>+offsets' with a warp in "
                         f"{WARPS[1:]}), got {variant!r}")
    return warp, bool(plus)


def variant_name(warp: str, offsets: bool) -> str:
    return warp + ("+offsets" if offsets else "")


def depth_for(image_size: Sequence[int]) -> int:
    """Encoder levels for an image size: stride-2 levels until the longer side is
    :data:`BOTTLENECK` pixels (128x64 -> 6, 256x256 -> 7). Both sides must halve
    exactly that many times, and at least down to the warped levels."""
    H, W = (int(s) for s in image_size)
    downs = int(round(math.log2(max(H, W) / BOTTLENECK)))
    if downs < WARPED_LEVELS[-1] + 1 or max(H, W) != BOTTLENECK << downs or H % (1 << downs) or W % (1 << downs):
        raise ValueError(f"image_size {H}x{W}: the generator needs the longer side to be {BOTTLENECK} * 2^k "
                         f"(k >= {WARPED_LEVELS[-1] + 1}) and the shorter side a multiple of 2^k, e.g. 128x64 "
                         "or 256x256")
    return downs + 1


DISCRIMINATOR_MIN_SIDE = 64  # four stride-2 halvings leave 4 pixels for the last 4x4 valid convolution


def check_discriminator_size(image_size: Sequence[int]) -> None:
    """ValueError unless the :class:`Discriminator` can score images of ``image_size``
    (both sides at least :data:`DISCRIMINATOR_MIN_SIDE`)."""
    H, W = (int(s) for s in image_size)
    if min(H, W) < DISCRIMINATOR_MIN_SIDE:
        raise ValueError(f"image_size {H}x{W}: the discriminator needs both sides >= {DISCRIMINATOR_MIN_SIDE} "
                         "(four stride-2 convolutions, then a 4x4 one), e.g. 128x64 or 256x256")


def encoder_widths(levels: int) -> List[int]:
    """64, 128, 256, then 512 for every further level (the original's encoders)."""
    return [min(512, 64 << i) for i in range(levels)]


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
    """Level 0: 3x3 conv to w0 at full resolution; each further level: LeakyReLU(0.2) ->
    4x4 stride-2 conv -> normalisation (none on the last). Returns every level's features."""

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
    """Deformable GAN generator.

    ``forward(source_image [N, 3, H, W] in [-1, 1], source_keypoints [N, 18, 2],
    target_keypoints [N, 18, 2], geometry=None, return_offsets=False)`` -> the image
    ``[N, 3, H, W]`` in [-1, 1], or ``(image, offsets)`` with ``return_offsets``:
    the list of ``[N, 2, H >> l, W >> l]`` displacements it used per warped level
    (empty without offsets). The geometry is rendered on the model's device by
    :func:`deformgan.geometry.render` (or passed, from :meth:`render_geometry`).

    ``variant`` names the warp and offsets together (see the module); ``warp`` and
    ``offsets`` may be given instead. ``ops_backend``: the operators' backend inside
    this model's calls (default: the process-wide one).
    """

    def __init__(self, variant: Optional[str] = "parts", norm: str = "instance_all", width_mult: float = 1.0,
                 dropout: float = 0.5, image_size: Tuple[int, int] = (128, 64), sigma: float = 6.0,
                 ops_backend: Optional[str] = None, *, warp: Optional[str] = None,
                 offsets: Optional[bool] = None):
        super().__init__()
        if warp is not None:
            if warp not in WARPS:
                raise ValueError(f"warp must be one of {WARPS}, got {warp!r}")
            variant = variant_name(warp, bool(offsets))
        self.warp, self.use_offsets = parse_variant(variant)
        make_norm(norm, 4)  # validates
        self.variant, self.norm, self.width_mult = variant, norm, width_mult
        self.image_size, self.sigma, self.ops_backend = tuple(image_size), sigma, ops_backend
        self.levels = depth_for(self.image_size)
        widths = encoder_widths(self.levels)
        enc = _widths(widths, width_mult)
        # The decoder block that outputs level l has the width of encoder level l + 1.
        dec = _widths([widths[level + 1] for level in range(self.levels - 2, -1, -1)], width_mult)
        K = P.NUM_JOINTS
        if self.warp == "none":
            self.appearance = Encoder(3 + 2 * K, enc, norm)
            self.pose = None
            skip = list(enc)
        else:
            self.appearance = Encoder(3 + K, enc, norm)
            self.pose = Encoder(K, enc, norm)
            skip = [2 * w for w in enc]
        if self.use_offsets:
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
        in_ch = skip[-1]
        for i, out_ch in enumerate(dec):
            level = self.levels - 2 - i
            ups.append(nn.Sequential(
                nn.ReLU(),
                nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1),
                make_norm(norm, out_ch),
                nn.Dropout(dropout) if i < 3 and dropout > 0 else nn.Identity()))
            in_ch = out_ch + skip[level]
        self.ups = nn.ModuleList(ups)
        self.final = nn.Sequential(nn.ReLU(), nn.Conv2d(in_ch, 3, 3, padding=1), nn.Tanh())

    def _backend(self):
        return deformgan_ops.use_backend(self.ops_backend) if self.ops_backend is not None else nullcontext()

    # ------------------------------------------------------------ geometry
    def render_geometry(self, source_keypoints: torch.Tensor, target_keypoints: torch.Tensor,
                        out: Optional[Geometry] = None) -> Geometry:
        """The :class:`~deformgan.geometry.Geometry` this model needs, on its device."""
        with self._backend():
            return render(source_keypoints, target_keypoints, self.image_size, self.sigma, self.warp,
                          WARPED_LEVELS, device=next(self.parameters()).device, out=out)

    # ------------------------------------------------------------ forward
    def forward(self, source_image: torch.Tensor, source_keypoints: torch.Tensor,
                target_keypoints: torch.Tensor, geometry: Optional[Geometry] = None,
                return_offsets: bool = False):
        geo = geometry if geometry is not None else self.render_geometry(source_keypoints, target_keypoints)
        h_a = geo.source_heatmaps.to(source_image.dtype)
        h_b = geo.target_heatmaps.to(source_image.dtype)
        offsets: List[torch.Tensor] = []
        with self._backend():
            if self.warp == "none":
                skips = self.appearance(torch.cat([source_image, h_a, h_b], 1))
            else:
                app = self.appearance(torch.cat([source_image, h_a], 1))
                pos = self.pose(h_b)
                skips = []
                for level, (fa, fp) in enumerate(zip(app, pos)):
                    if level in WARPED_LEVELS:
                        fa = self._warp(fa, fp, geo, level, offsets)
                    skips.append(torch.cat([fa, fp], 1))
        x = skips[-1]
        for i, up in enumerate(self.ups):
            x = torch.cat([up(x), skips[self.levels - 2 - i]], 1)
        image = self.final(x)
        return (image, offsets) if return_offsets else image

    def _warp(self, feat: torch.Tensor, pose_feat: torch.Tensor, geo: Geometry, level: int,
              used_offsets: List[torch.Tensor]) -> torch.Tensor:
        # Sampling locations need more than 16-bit precision (a bf16 translation of 60 px
        # is off by up to a quarter pixel): beside float16/bfloat16 features (autocast)
        # theta, masks and offsets stay float32; the warp reads the features in their
        # dtype, computes in float32 and returns the features' dtype.
        dtype = torch.float32 if feat.dtype in (torch.float16, torch.bfloat16) else feat.dtype
        theta = geo.affines_at(level, dtype)
        masks = geo.masks[level].to(dtype)
        offsets = None
        if self.offset_heads is not None:
            offsets = self.offset_heads[level](pose_feat)
            used_offsets.append(offsets)
            offsets = offsets.to(dtype)
        return deformgan_ops.part_affine_warp(feat, theta, masks, offsets)


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
