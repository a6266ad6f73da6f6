"""Reference part_affine_warp: one grid_sample per part, then a max over parts."""
from typing import Optional

import torch
import torch.nn.functional as F


def _sampling_locations(theta: torch.Tensor, Ho: int, Wo: int,
                        offsets: Optional[torch.Tensor]) -> torch.Tensor:
    """(u, v) of every part at every output pixel: ``[N, P, Ho, Wo, 2]``."""
    ys = torch.arange(Ho, dtype=theta.dtype, device=theta.device)
    xs = torch.arange(Wo, dtype=theta.dtype, device=theta.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)  # [Ho, Wo, 3]
    loc = torch.einsum("npij,hwj->nphwi", theta, base)
    if offsets is not None:
        loc = loc + offsets.permute(0, 2, 3, 1).unsqueeze(1)
    return loc


def part_affine_warp(features: torch.Tensor, theta: torch.Tensor, masks: torch.Tensor,
                     offsets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out[n, c, y, x] = max_p masks[n, p, y, x] * bilinear(features[n, c], u_p, v_p)``.

    Shapes: features ``[N, C, H, W]``, theta ``[N, P, 2, 3]``, masks ``[N, P, Ho, Wo]``,
    offsets ``[N, 2, Ho, Wo]`` or None; returns ``[N, C, Ho, Wo]``. Ties go to the
    lowest part index (``argmax`` returns the first maximum).
    """
    N, C, H, W = features.shape
    P, Ho, Wo = masks.shape[1], masks.shape[2], masks.shape[3]
    loc = _sampling_locations(theta, Ho, Wo, offsets)
    # Non-finite locations are sent far outside, where every corner is out of bounds.
    loc = torch.where(torch.isfinite(loc), loc, torch.full_like(loc, -4.0))
    src = features
    if H < 2 or W < 2:
        # grid_sample cannot express a size-1 axis with align_corners=True:
        # pad one zero pixel all round and shift the locations to match.
        src = F.pad(features, (1, 1, 1, 1))
        loc = loc + 1
        H, W = H + 2, W + 2
    scale = torch.tensor([2.0 / (W - 1), 2.0 / (H - 1)], dtype=loc.dtype, device=loc.device)
    grid = loc * scale - 1
    candidates = []
    for p in range(P):
        sample = F.grid_sample(src, grid[:, p], mode="bilinear", padding_mode="zeros",
                               align_corners=True)
        candidates.append(masks[:, p : p + 1] * sample)
    stacked = torch.stack(candidates, dim=1)  # [N, P, C, Ho, Wo]
    winner = stacked.argmax(dim=1, keepdim=True)
    return stacked.gather(1, winner).squeeze(1)
