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
    flat = features.reshape(N, 1, C, H * W).expand(N, P, C, H * W)
    return _bilinear_gather(flat, loc.unsqueeze(2), H, W, (N, P, C, Ho, Wo))


def _bilinear_gather(flat: torch.Tensor, loc: torch.Tensor, H: int, W: int, shape) -> torch.Tensor:
    """The bilinear samples of the planes ``flat [..., H * W]`` at ``loc`` (broadcast
    to ``shape + (2,)``): ``shape``. The four corners gathered, zero padding."""
    if H == 0 or W == 0:  # no corner is ever inside: every sample is 0 (gradient 0)
        zero = torch.where(torch.isfinite(loc), loc, torch.zeros_like(loc)).sum(-1) * 0 + flat.sum() * 0
        return zero.expand(shape).to(flat.dtype)
    # Non-finite locations go far outside; outside [-1, W) x [-1, H) no corner is
    # inside, so clamping there changes nothing but keeps floor() in range.
    far = torch.full_like(loc, -2.0)
    loc = torch.where(torch.isfinite(loc), loc, far)
    u = loc[..., 0].clamp(-2.0, W + 1.0).expand(shape)
    v = loc[..., 1].clamp(-2.0, H + 1.0).expand(shape)
    fx, fy = torch.floor(u), torch.floor(v)
    wx1, wy1 = u - fx, v - fy
    wx0, wy0 = 1 - wx1, 1 - wy1
    x0, y0 = fx.long(), fy.long()
    lead = flat.shape[:-1]
    sample = None
    for dy, dx, w in ((0, 0, wx0 * wy0), (0, 1, wx1 * wy0), (1, 0, wx0 * wy1), (1, 1, wx1 * wy1)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        index = torch.where(inside, yi * W + xi, torch.zeros_like(xi)).reshape(*lead, shape[-2] * shape[-1])
        f = torch.gather(flat, -1, index).reshape(shape)
        # an outside corner is never read: where() keeps its (clamped) value out
        term = torch.where(inside, w * f, torch.zeros_like(f))
        sample = term if sample is None else sample + term
    return sample


def _candidates(sample: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``m * sample``, except that a zero mask gives exactly 0 with no gradient to the
    sample and the sample (where finite, else 0) as the mask's gradient. Written with
    where() on both sides so that no NaN of an unselected branch reaches a gradient."""
    zero = m == 0
    finite_sample = torch.where(torch.isfinite(sample), sample, torch.zeros_like(sample)).detach()
    sampled = torch.where(zero, torch.zeros_like(sample), sample)
    return torch.where(zero, m * finite_sample, m * sampled)


def part_affine_warp(features: torch.Tensor, theta: torch.Tensor, masks: torch.Tensor,
                     offsets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out[n, c, y, x] = max_p masks[n, p, y, x] * bilinear(features[n, c], u_p, v_p)``.

    Shapes: features ``[N, C, H, W]``, theta ``[N, P, 2, 3]``, masks ``[N, P, Ho, Wo]``,
    offsets ``[N, 2, Ho, Wo]`` or None; returns ``[N, C, Ho, Wo]``. The rules for
    empty sizes, outside samples and non-finite values are in the module docstring.

    The max is taken without a gradient; the output is then the winning part's
    candidate computed again from the winner's own theta, mask and offsets, so that
    the gradient reaches the winning part only: a losing part gets exactly 0, even
    where its own sample is not finite (no ``0 * inf`` through its terms).
    """
    # Arithmetic in float32 at least: float16/bfloat16 inputs are upcast, the
    # output is rounded once to the features' dtype.
    out_dtype = features.dtype
    compute = torch.promote_types(torch.promote_types(features.dtype, theta.dtype), torch.float32)
    features, theta, masks = features.to(compute), theta.to(compute), masks.to(compute)
    offsets = None if offsets is None else offsets.to(compute)
    N, C, H, W = features.shape
    P, Ho, Wo = theta.shape[1], masks.shape[2], masks.shape[3]
    with torch.no_grad():
        loc = _sampling_locations(theta, Ho, Wo, offsets)
        stacked = _candidates(_bilinear(features, loc), masks.unsqueeze(2))  # [N, P, C, Ho, Wo]
        winner = stacked.argmax(dim=1)  # [N, C, Ho, Wo]; NaN wins (first NaN); ties: lowest p
    if P == 0 or N * C * Ho * Wo == 0:
        return (stacked.sum(1) + features.sum() * 0 + theta.sum() * 0 + masks.sum() * 0).to(out_dtype)
    # The winner's theta, mask and offsets at every output element, and its candidate.
    idx = winner.reshape(N, C * Ho * Wo)
    th = torch.gather(theta.reshape(N, P, 6), 1, idx.unsqueeze(-1).expand(N, C * Ho * Wo, 6))
    th = th.reshape(N, C, Ho, Wo, 2, 3)
    ys = torch.arange(Ho, dtype=compute, device=theta.device).view(Ho, 1).expand(Ho, Wo)
    xs = torch.arange(Wo, dtype=compute, device=theta.device).view(1, Wo).expand(Ho, Wo)
    base = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # [Ho, Wo, 3]
    loc = (th * base.view(1, 1, Ho, Wo, 1, 3)).sum(-1)  # [N, C, Ho, Wo, 2]
    if offsets is not None:
        loc = loc + offsets.permute(0, 2, 3, 1).unsqueeze(1)
    sample = _bilinear_gather(features.reshape(N, C, H * W), loc, H, W, (N, C, Ho, Wo))
    m = torch.gather(masks.reshape(N, P, Ho * Wo), 1, winner.reshape(N, C, Ho * Wo)).reshape(N, C, Ho, Wo)
    return _candidates(sample, m).to(out_dtype)
