"""Reference part_affine_warp: the bilinear sample of every part written out in
pixel coordinates (the four corners gathered, zero padding), then the max over parts.

This is the executable definition (docs/method.md: the operators), including the rules for
non-finite values that every backend follows:

- the sampling location ``(u, v)`` of part ``p`` at output pixel ``(x, y)`` is
  ``theta[n, p] @ (x, y, 1) + offsets[n, :, y, x]``; a non-finite location has no
  corner inside the image (sample 0, zero gradient);
- the sample is ``sum_i w_i f_i`` over the four corners ``(x0 + a, y0 + b)``,
  ``x0 = floor(u)``, that lie inside ``[0, W-1] x [0, H-1]``; a corner outside is
  never read (it contributes exactly 0, whatever value lies elsewhere in the
  plane), a corner inside is, even with weight 0 (so a NaN/inf feature reaches
  every output that samples next to it, as with ``grid_sample``);
- the candidate of a part is ``masks[n, p, y, x] * sample``, except that a part
  whose mask is exactly 0 has candidate exactly 0 (it is not sampled; its mask
  gradient is the sample where finite, else 0);
- the output is the max over parts; a NaN candidate wins (the first NaN in p
  order), otherwise ties go to the lowest ``p``; the gradient reaches the
  winning part only.
"""
from typing import Optional

import torch

__all__ = ["part_affine_warp"]


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


def _bilinear(features: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """Zero-padded bilinear samples ``[N, P, C, Ho, Wo]`` of ``features [N, C, H, W]``
    at ``loc [N, P, Ho, Wo, 2]`` (pixel coordinates, (u, v) = (column, row))."""
    N, C, H, W = features.shape
    P, Ho, Wo = loc.shape[1], loc.shape[2], loc.shape[3]
    if H == 0 or W == 0:  # no corner is ever inside: every sample is 0 (gradient 0)
        zero = torch.where(torch.isfinite(loc), loc, torch.zeros_like(loc)).sum(-1) * 0 + features.sum() * 0
        return zero.unsqueeze(2).expand(N, P, C, Ho, Wo).to(features.dtype)
    # Non-finite locations go far outside; outside [-1, W) x [-1, H) no corner is
    # inside, so clamping there changes nothing but keeps floor() in range.
    far = torch.full_like(loc, -2.0)
    loc = torch.where(torch.isfinite(loc), loc, far)
    u = loc[..., 0].clamp(-2.0, W + 1.0)
    v = loc[..., 1].clamp(-2.0, H + 1.0)
    fx, fy = torch.floor(u), torch.floor(v)
    wx1, wy1 = u - fx, v - fy
    wx0, wy0 = 1 - wx1, 1 - wy1
    x0, y0 = fx.long(), fy.long()
    flat = features.reshape(N, 1, C, H * W)
    sample = None
    for dy, dx, w in ((0, 0, wx0 * wy0), (0, 1, wx1 * wy0), (1, 0, wx0 * wy1), (1, 1, wx1 * wy1)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)  # [N, P, Ho, Wo]
        index = torch.where(inside, yi * W + xi, torch.zeros_like(xi)).reshape(N, P, 1, Ho * Wo)
        f = torch.gather(flat.expand(N, P, C, H * W), 3, index.expand(N, P, C, Ho * Wo))
        f = f.reshape(N, P, C, Ho, Wo)
        # an outside corner is never read: where() keeps its (clamped) value out
        term = torch.where(inside.unsqueeze(2), w.unsqueeze(2) * f, torch.zeros_like(f))
        sample = term if sample is None else sample + term
    return sample


def part_affine_warp(features: torch.Tensor, theta: torch.Tensor, masks: torch.Tensor,
                     offsets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out[n, c, y, x] = max_p masks[n, p, y, x] * bilinear(features[n, c], u_p, v_p)``.

    Shapes: features ``[N, C, H, W]``, theta ``[N, P, 2, 3]``, masks ``[N, P, Ho, Wo]``,
    offsets ``[N, 2, Ho, Wo]`` or None; returns ``[N, C, Ho, Wo]``. The rules for
    empty sizes, outside samples and non-finite values are in the module docstring.
    """
    # Arithmetic in float32 at least: float16/bfloat16 inputs are upcast, the
    # output is rounded once to the features' dtype.
    out_dtype = features.dtype
    compute = torch.promote_types(torch.promote_types(features.dtype, theta.dtype), torch.float32)
    features, theta, masks = features.to(compute), theta.to(compute), masks.to(compute)
    offsets = None if offsets is None else offsets.to(compute)
    Ho, Wo = masks.shape[2], masks.shape[3]
    loc = _sampling_locations(theta, Ho, Wo, offsets)
    sample = _bilinear(features, loc)  # [N, P, C, Ho, Wo]
    m = masks.unsqueeze(2)  # [N, P, 1, Ho, Wo]
    zero = m == 0
    # A zero-mask part: candidate exactly 0, no gradient to the sample, mask
    # gradient = the sample where finite. Written with where() on both sides so
    # that no NaN of an unselected branch reaches a gradient.
    finite_sample = torch.where(torch.isfinite(sample), sample, torch.zeros_like(sample)).detach()
    sampled = torch.where(zero, torch.zeros_like(sample), sample)
    stacked = torch.where(zero, m * finite_sample, m * sampled)  # [N, P, C, Ho, Wo]
    winner = stacked.argmax(dim=1, keepdim=True)  # NaN wins (first NaN); ties: lowest p
    return stacked.gather(1, winner).squeeze(1).to(out_dtype)
