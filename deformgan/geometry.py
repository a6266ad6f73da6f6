"""The pose geometry of a batch, rendered in one place: the heatmaps of both poses,
the warp's affines and its masks at every warped level of the generator. Training,
evaluation, generation, the sample grids and the benchmarks all call :func:`render`.

Every operator runs on the process-wide backend (``deformgan_ops.set_backend``, the
``--ops-backend`` flag of the command lines) or the one of a ``use_backend`` block.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch

import deformgan_ops

from . import pose as P

WARPS = ("none", "global", "parts")


@dataclass
class Geometry:
    """What the generator (and the discriminator) need of a pair of poses.

    Attributes:
        source_heatmaps, target_heatmaps: ``[N, 18, H, W]`` Gaussian heatmaps.
        theta: ``[N, P, 2, 3]`` target -> source affines at image resolution (P = 10
            parts for the ``parts`` warp, 1 for ``global``); None for ``none``.
        valid: ``[N, P]`` bool, which affines were fitted; None for ``none``.
        masks: ``{level: [N, P, H >> level, W >> level]}`` the warp's masks per level
            (zero for disabled parts); empty for ``none``.
    """
    source_heatmaps: torch.Tensor
    target_heatmaps: torch.Tensor
    theta: Optional[torch.Tensor] = None
    valid: Optional[torch.Tensor] = None
    masks: Dict[int, torch.Tensor] = field(default_factory=dict)
    heatmaps: Optional[torch.Tensor] = field(default=None, repr=False)  # [2N, ...]: both, one buffer

    def affines_at(self, level: int, dtype: torch.dtype) -> torch.Tensor:
        """``theta`` for features downsampled ``2**level`` times (translation divided)."""
        return P.scale_affines(self.theta, float(1 << level)).to(dtype)


def _reusable(t: Optional[torch.Tensor], shape: Tuple[int, ...], device: torch.device) -> Optional[torch.Tensor]:
    ok = isinstance(t, torch.Tensor) and tuple(t.shape) == tuple(shape) and t.device == device and \
        t.dtype == torch.float32 and t.is_contiguous()
    return t if ok else None


def render(source_keypoints: torch.Tensor, target_keypoints: torch.Tensor, image_size: Sequence[int],
           sigma: float = 6.0, warp: str = "parts", levels: Sequence[int] = (0, 1, 2, 3),
           device: Optional[torch.device] = None, out: Optional[Geometry] = None) -> Geometry:
    """Render the :class:`Geometry` of a batch of pose pairs on ``device``.

    Args:
        source_keypoints: ``[N, 18, 2]`` (x, y) pixels, -1 missing.
        target_keypoints: ``[N, 18, 2]`` likewise.
        image_size: ``(H, W)`` of the images.
        sigma: the heatmaps' Gaussian sigma in pixels.
        warp: ``"parts"`` (ten part affines and part masks), ``"global"`` (one affine,
            masks all one where it is valid) or ``"none"`` (heatmaps only).
        levels: the levels whose masks are rendered, ``level`` meaning features
            downsampled ``2**level`` times (masks rasterised directly at that scale).
        device: where to render (default: the keypoints' device).
        out: a Geometry this function returned before, whose heatmap and mask
            tensors are overwritten where their shapes still fit. On the CPU a
            fresh heatmap batch costs more in page faults than in arithmetic, so a
            loop done with the previous batch should pass it back; nothing else
            may still use those tensors.

    Returns:
        A :class:`Geometry` in float32; not differentiable.

    Example:
        >>> from deformgan.geometry import render
        >>> from deformgan_ops.skeleton import example_poses
        >>> poses = example_poses().float()
        >>> geo = render(poses[:2], poses[2:], (128, 64))  # two pairs at 128x64
        >>> tuple(geo.target_heatmaps.shape), tuple(geo.theta.shape)
        ((2, 18, 128, 64), (2, 10, 2, 3))
        >>> {level: tuple(m.shape[-2:]) for level, m in geo.masks.items()}  # the part masks per level
        {0: (128, 64), 1: (64, 32), 2: (32, 16), 3: (16, 8)}
    """
    if warp not in WARPS:
        raise ValueError(f"warp must be one of {WARPS}, got {warp!r}")
    P.check_keypoints(source_keypoints, "source_keypoints")
    P.check_keypoints(target_keypoints, "target_keypoints")
    if source_keypoints.shape != target_keypoints.shape:
        raise ValueError(f"source_keypoints {list(source_keypoints.shape)} and target_keypoints "
                         f"{list(target_keypoints.shape)} must have the same shape")
    H, W = (int(s) for s in image_size)
    device = torch.device(device) if device is not None else source_keypoints.device
    src = source_keypoints.detach().to(device, torch.float32)
    tgt = target_keypoints.detach().to(device, torch.float32)
    n = src.shape[0]

    heat_shape = (2 * n, P.NUM_JOINTS, H, W)
    heat = _reusable(out.heatmaps, heat_shape, device) if out is not None else None
    if heat is None:
        heat = torch.empty(heat_shape, device=device)
    deformgan_ops.keypoint_heatmaps(torch.cat([src, tgt]), H, W, sigma, out=heat)
    geo = Geometry(source_heatmaps=heat[:n], target_heatmaps=heat[n:], heatmaps=heat)
    if warp == "none":
        return geo

    old_masks = out.masks if out is not None else {}
    if warp == "parts":
        geo.theta, geo.valid = deformgan_ops.part_affines(src, tgt)
        for lv in levels:
            shape = (n, P.NUM_PARTS, H >> lv, W >> lv)
            geo.masks[lv] = deformgan_ops.part_masks(tgt, H >> lv, W >> lv, scale=float(1 << lv),
                                                     enabled=geo.valid,
                                                     out=_reusable(old_masks.get(lv), shape, device))
    else:
        theta, valid = P.global_affine(src, tgt)
        geo.theta, geo.valid = theta.unsqueeze(1), valid.unsqueeze(1)
        on = geo.valid.to(torch.float32)[:, :, None, None]
        for lv in levels:
            geo.masks[lv] = on.expand(n, 1, H >> lv, W >> lv).contiguous()
    return geo
