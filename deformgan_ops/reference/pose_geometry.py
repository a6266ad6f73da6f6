"""Reference (pure PyTorch, vectorised, any device) of the body-part geometry of
Deformable GAN (docs/method.md: keypoints, pose rendering, body parts): torso size, limb rectangles, the least-squares part affines and the part masks. The executable
definition of the ``part_affines`` and ``part_masks`` operators (their C++/CUDA
kernels are transcriptions of it, see ``csrc/ops/pose_geometry_math.h``);
:mod:`deformgan.pose` re-exports the helpers; the skeleton tables are in
:mod:`deformgan_ops.skeleton`.

Conventions: keypoints are float tensors ``[..., 18, 2]`` holding (x, y) =
(column, row) in pixels of the image; a joint is missing when either
coordinate is negative or not finite (the files write -1). Affines map a point
of the TARGET image to the SOURCE image (what an inverse-warping sampler
needs), as ``[..., 2, 3]`` matrices in pixel coordinates.
"""
from typing import Optional, Tuple

import torch

from ..skeleton import HEAD_JOINTS, J, LIMB_PARTS, NUM_JOINTS, NUM_PARTS, TORSO_JOINTS, check_keypoints, present

__all__ = ["part_affines", "part_masks"]

MAX_CONDITION = 1e4
MIN_SPREAD = 1e-10  # determinant of the normalised target points' covariance (collinear: 0)


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root in the dtype of x (computed in float64: torch's
    vectorised float32 sqrt can be off by an ulp, and the kernels' is exact), so that
    the reference and the kernels agree on pixel centres that lie on a mask edge."""
    return torch.sqrt(x.double()).to(x.dtype)


def torso_size(keypoints: torch.Tensor) -> torch.Tensor:
    """``st = sqrt((|Rhip - Rsho|^2 + |Lhip - Lsho|^2) / 2)`` per pose, ``[...]``.
    With one side missing, that side's length is replaced by the other's; with
    both missing the result is NaN (the parts that need it are then disabled)."""
    check_keypoints(keypoints)
    r = keypoints[..., J["r_hip"], :] - keypoints[..., J["r_shoulder"], :]
    l = keypoints[..., J["l_hip"], :] - keypoints[..., J["l_shoulder"], :]
    r_ok = present(keypoints[..., J["r_hip"], :]) & present(keypoints[..., J["r_shoulder"], :])
    l_ok = present(keypoints[..., J["l_hip"], :]) & present(keypoints[..., J["l_shoulder"], :])
    r2, l2 = (r * r).sum(-1), (l * l).sum(-1)
    r2 = torch.where(r_ok, r2, l2)
    l2 = torch.where(l_ok, l2, r2)
    st = _sqrt(((r2 + l2) / 2))
    return torch.where(r_ok | l_ok, st, torch.full_like(st, float("nan")))


def limb_rectangle(a: torch.Tensor, b: torch.Tensor, st: torch.Tensor, inc) -> torch.Tensor:
    """Corners ``[..., 4, 2]`` of the limb rectangle of segment a -> b (docs/method.md: body parts):
    a' = a + 0.1 (a - b), b' = b + inc (b - a'), corners a' + w n, a' - w n,
    b' - w n, b' + w n with w = 0.2 st and n the unit normal; a zero-length
    segment gets a 2 px box around a. ``inc`` is a float or a tensor broadcastable
    to ``st``."""
    if isinstance(inc, torch.Tensor):
        inc = inc.to(a.dtype).unsqueeze(-1)
    a2 = a + 0.1 * (a - b)
    b2 = b + inc * (b - a2)
    d = b - a
    length = _sqrt(d[..., 0:1] * d[..., 0:1] + d[..., 1:2] * d[..., 1:2])
    n = torch.stack([-d[..., 1], d[..., 0]], -1) / length.clamp_min(1e-12)
    w = (0.2 * st).unsqueeze(-1) * n
    rect = torch.stack([a2 + w, a2 - w, b2 - w, b2 + w], -2)
    box = a.unsqueeze(-2) + torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]],
                                         dtype=a.dtype, device=a.device)
    return torch.where((length < 1e-6).unsqueeze(-1), box, rect)


def _normalisation(points: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 3]`` matrices that centre the (weighted) points and scale their root mean
    square coordinate to 1 (Hartley normalisation, as scikit-image does)."""
    count = w.sum(-1).clamp_min(1)  # [B]
    centroid = (points * w.unsqueeze(-1)).sum(1) / count.unsqueeze(-1)  # [B, 2]
    centred = (points - centroid.unsqueeze(1)) * w.unsqueeze(-1)
    rms = torch.sqrt((centred ** 2).sum((1, 2)) / (2 * count))  # [B]
    inv = 1.0 / rms
    m = torch.zeros(points.shape[0], 3, 3, dtype=points.dtype, device=points.device)
    m[:, 0, 0] = inv
    m[:, 1, 1] = inv
    m[:, :2, 2] = -centroid * inv.unsqueeze(-1)
    m[:, 2, 2] = 1
    return m


def fit_affines(target_points: torch.Tensor, source_points: torch.Tensor,
                weights: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Least-squares affines mapping target points to source points, computed as
    ``skimage.transform.estimate_transform("affine", target, source)`` does (the
    original's estimator): Hartley-normalised points, the homogeneous system solved
    by SVD, then de-normalised.

    target_points, source_points ``[B, k, 2]``; weights ``[B, k]`` (0 drops a point).
    Returns theta ``[B, 2, 3]`` and valid ``[B]``: at least 3 points, target points
    that are not collinear (they would leave the fit undetermined), a finite
    solution, and a fitted 3x3 matrix with condition number < 1e4 (nearly
    collinear points give an ill-conditioned fit). The small solves run in float64."""
    dtype = torch.float64
    tgt = target_points.to(dtype)
    src = source_points.to(dtype)
    w = (weights > 0).to(dtype)
    B, k = w.shape
    # dropped points are zeroed first: a missing joint may be NaN, and NaN * 0 is NaN
    tgt = torch.where(w.unsqueeze(-1) > 0, tgt, torch.zeros_like(tgt))
    src = torch.where(w.unsqueeze(-1) > 0, src, torch.zeros_like(src))
    t_norm, s_norm = _normalisation(tgt, w), _normalisation(src, w)
    tn = tgt @ t_norm[:, :2, :2].transpose(1, 2) + t_norm[:, None, :2, 2]
    sn = src @ s_norm[:, :2, :2].transpose(1, 2) + s_norm[:, None, :2, 2]
    # the present target points must span the plane (collinear points leave the
    # affine undetermined: the solution below would be an arbitrary null vector);
    # normalised, their covariance has trace 2, and its determinant is ~0 only
    # when they are (numerically exactly) collinear
    cov = (tn.unsqueeze(-1) * tn.unsqueeze(-2) * w[..., None, None]).sum(1) / w.sum(-1).clamp_min(1)[:, None, None]
    spread = (cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] * cov[:, 1, 0]) > MIN_SPREAD
    # rows [x, y, 1, 0, 0, 0, X] and [0, 0, 0, x, y, 1, Y] of every present point
    A = torch.zeros(B, 2 * k, 7, dtype=dtype, device=tgt.device)
    A[:, :k, 0:2] = tn
    A[:, :k, 2] = 1
    A[:, :k, 6] = sn[..., 0]
    A[:, k:, 3:5] = tn
    A[:, k:, 5] = 1
    A[:, k:, 6] = sn[..., 1]
    A = A * torch.cat([w, w], 1).unsqueeze(-1)
    finite_in = torch.isfinite(A).all(-1).all(-1)
    A = torch.where(finite_in[:, None, None], A, torch.zeros_like(A))
    # the right singular vector of A's smallest singular value is the eigenvector of
    # A^T A with the smallest eigenvalue (eigh of 7x7 is ~3x faster than the SVD)
    _, Q = torch.linalg.eigh(A.transpose(1, 2) @ A)
    v = Q[:, :, 0]
    last = v[:, 6]
    ok_last = last.abs() > 1e-8
    H = torch.zeros(B, 3, 3, dtype=dtype, device=tgt.device)
    H[:, :2, :] = (-v[:, :6] / torch.where(ok_last, last, torch.ones_like(last)).unsqueeze(-1)).view(B, 2, 3)
    H[:, 2, 2] = 1
    eye = torch.eye(3, dtype=dtype, device=tgt.device)
    finite_norm = torch.isfinite(s_norm).all(-1).all(-1) & torch.isfinite(t_norm).all(-1).all(-1)
    s_norm = torch.where(finite_norm[:, None, None], s_norm, eye)
    t_norm = torch.where(finite_norm[:, None, None], t_norm, eye)
    H = torch.linalg.inv(s_norm) @ H @ t_norm
    H = H / H[:, 2:3, 2:3]
    finite = torch.isfinite(H).all(-1).all(-1)
    cond = torch.linalg.cond(torch.where(finite[:, None, None], H, eye))
    valid = (w.sum(-1) >= 3) & finite_in & finite_norm & spread & ok_last & finite & torch.isfinite(cond) & \
        (cond < MAX_CONDITION)
    theta = torch.where(valid[:, None, None], H[:, :2, :], torch.zeros_like(H[:, :2, :]))
    return theta.to(target_points.dtype), valid


_LIMB_ORDER = tuple(range(2, NUM_PARTS))
_LIMB_A = [LIMB_PARTS[p][0] for p in _LIMB_ORDER]
_LIMB_B = [LIMB_PARTS[p][1] for p in _LIMB_ORDER]
_LIMB_INC = ([LIMB_PARTS[p][2] for p in _LIMB_ORDER], [LIMB_PARTS[p][3] for p in _LIMB_ORDER])
_LIMB_MIRROR = [LIMB_PARTS[p][4] - 2 for p in _LIMB_ORDER]


def _limb_rectangles(kp: torch.Tensor, st: torch.Tensor, for_mask: bool):
    """Rectangles ``[B, 8, 4, 2]`` of the eight limbs (parts 2-9) and whether each limb
    is present ``[B, 8]``, all at once."""
    a, b = kp[:, _LIMB_A], kp[:, _LIMB_B]
    pres = present(kp)
    ok = pres[:, _LIMB_A] & pres[:, _LIMB_B] & torch.isfinite(st).unsqueeze(-1)
    inc = torch.tensor(_LIMB_INC[1 if for_mask else 0], dtype=kp.dtype, device=kp.device)
    rect = limb_rectangle(a, b, torch.nan_to_num(st).unsqueeze(-1).expand(-1, len(_LIMB_A)), inc.expand(kp.shape[0], -1))
    return rect, ok


def part_affines(source_keypoints: torch.Tensor, target_keypoints: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ten part affines (target -> source, pixels): ``[N, 10, 2, 3]`` and a validity
    mask ``[N, 10]``. Disabled parts (missing in the target, no head joint common to
    both poses, singular or ill-conditioned fit) have a zero affine and False validity;
    a limb missing in the source is fitted from the source's mirror limb."""
    check_keypoints(source_keypoints, "source_keypoints")
    check_keypoints(target_keypoints, "target_keypoints")
    if source_keypoints.shape != target_keypoints.shape:
        raise ValueError(f"source_keypoints {list(source_keypoints.shape)} and target_keypoints "
                         f"{list(target_keypoints.shape)} must have the same shape")
    src, tgt = source_keypoints, target_keypoints
    lead = src.shape[:-2]
    src = src.reshape(-1, NUM_JOINTS, 2)
    tgt = tgt.reshape(-1, NUM_JOINTS, 2)
    both = present(src) & present(tgt)  # [B, 18]
    # torso (its four joints, all present in both poses) and head (head joints present
    # in both, plus both shoulders) in one batched fit, padded to 7 points
    B = src.shape[0]
    t_idx = list(TORSO_JOINTS) + [0, 0, 0]
    h_idx = list(HEAD_JOINTS) + [J["r_shoulder"], J["l_shoulder"]]
    w_torso = torch.cat([both[:, list(TORSO_JOINTS)], torch.zeros_like(both[:, :3])], 1)
    pts_t = torch.cat([tgt[:, t_idx], tgt[:, h_idx]])
    pts_s = torch.cat([src[:, t_idx], src[:, h_idx]])
    th, ok = fit_affines(pts_t, pts_s, torch.cat([w_torso, both[:, h_idx]]).to(src.dtype))
    thetas = [th[:B], th[B:]]
    valids = [ok[:B] & both[:, list(TORSO_JOINTS)].all(-1), ok[B:] & both[:, list(HEAD_JOINTS)].any(-1)]
    # limbs: 4 rectangle corners; mirror fallback in the source; one batched fit
    t_rect, t_ok = _limb_rectangles(tgt, torso_size(tgt), for_mask=False)
    s_rect, s_ok = _limb_rectangles(src, torso_size(src), for_mask=False)
    m_rect, m_ok = s_rect[:, _LIMB_MIRROR], s_ok[:, _LIMB_MIRROR]
    use_mirror = ~s_ok & m_ok
    s_rect = torch.where(use_mirror[..., None, None], m_rect, s_rect)
    have = t_ok & (s_ok | m_ok)  # [B, 8]
    th, ok = fit_affines(t_rect.reshape(-1, 4, 2), s_rect.reshape(-1, 4, 2),
                         have.reshape(-1, 1).expand(-1, 4).to(src.dtype))
    B = src.shape[0]
    thetas += list(th.view(B, 8, 2, 3).unbind(1))
    valids += list((ok.view(B, 8) & have).unbind(1))
    theta = torch.stack(thetas, 1)
    valid = torch.stack(valids, 1)
    theta = torch.where(valid[..., None, None], theta, torch.zeros_like(theta))
    return theta.reshape(lead + (NUM_PARTS, 2, 3)), valid.reshape(lead + (NUM_PARTS,))


def _inside_quads(quads: torch.Tensor, height: int, width: int,
                  enabled: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[..., 4, 2]`` convex quadrilaterals -> ``[..., height, width]`` bool masks of the
    pixel centres (integer coordinates) inside or on the boundary (all False where
    ``enabled`` [...] is False, and for a degenerate, zero-area quad); with ``out`` (``[..., height, width]``, any dtype) the
    result is written there.

    Each edge is a half-plane ``a x + b(y) >= 0``; per row they bound x to an
    interval [lo(y), hi(y)], so the full-size work is two comparisons and an and.
    The bounds are computed in float64 so that centres on an edge (common: joints
    are integers) are reliably inside."""
    dev, dt = quads.device, torch.float64
    lead = quads.shape[:-2]
    quads = quads.reshape(-1, 4, 2).to(dt)
    B = quads.shape[0]
    ys = torch.arange(height, device=dev, dtype=dt).view(1, height)
    xs = torch.arange(width, device=dev, dtype=dt).view(1, 1, width)
    e0 = quads[:, 1] - quads[:, 0]
    e1 = quads[:, 2] - quads[:, 1]
    orient = torch.sign(e0[:, 0] * e1[:, 1] - e0[:, 1] * e1[:, 0]).view(-1, 1)  # [B, 1]
    inf = torch.tensor(float("inf"), device=dev, dtype=dt)
    lo = torch.full((B, height), -float("inf"), device=dev, dtype=dt)
    hi = torch.full((B, height), float("inf"), device=dev, dtype=dt)
    eps = 1e-6
    lo = torch.where(orient == 0, inf, lo)  # a degenerate (zero-area) quad is empty
    for i in range(4):
        p, q = quads[:, i], quads[:, (i + 1) % 4]
        ex = (q[:, 0] - p[:, 0]).view(-1, 1)
        ey = (q[:, 1] - p[:, 1]).view(-1, 1)
        # orient * (ex (y - py) - ey (x - px)) >= 0  <=>  a x + b >= 0
        a = -orient * ey
        b = orient * (ex * (ys - p[:, 1].view(-1, 1)) + ey * p[:, 0].view(-1, 1))
        bound = -b / torch.where(a == 0, torch.ones_like(a), a)
        lo = torch.where(a > 0, torch.maximum(lo, bound - eps), lo)
        hi = torch.where(a < 0, torch.minimum(hi, bound + eps), hi)
        lo = torch.where((a == 0) & (b < -eps), inf, lo)  # a row outside a horizontal edge
    if enabled is not None:
        lo = torch.where(enabled.reshape(-1, 1), lo, inf)
    lo = lo.view(lead + (height, 1))
    hi = hi.view(lead + (height, 1))
    inside = xs >= lo
    if out is not None:
        return torch.logical_and(inside, xs <= hi, out=out)
    return inside.logical_and_(xs <= hi)


def part_masks(target_keypoints: torch.Tensor, height: int, width: int,
               scale: float = 1.0, enabled: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Target-frame masks of the ten parts, ``[N, 10, height, width]`` (float 0/1).

    Torso: all ones (it doubles as the background warp); head: the square centred on
    the integer mean of the target's head joints, extended by int(0.4 st) each side;
    limbs: the limb rectangles (inc 0.5 for lower limbs). A disabled part (missing in
    the target) is all zeros. ``scale`` rasterises at a level downsampled by
    ``scale`` from the keypoints' image (pixel (x, y) there is (x s, y s) here),
    directly from the scaled geometry. ``enabled`` ``[N, 10]`` (e.g. the validity from
    :func:`part_affines`) zeroes the masks of parts that are off."""
    check_keypoints(target_keypoints, "target_keypoints")
    kp = target_keypoints.reshape(-1, NUM_JOINTS, 2)
    on = enabled.reshape(-1, NUM_PARTS).to(torch.bool) if enabled is not None else None
    B = kp.shape[0]
    dt = kp.dtype
    out = torch.empty(B, NUM_PARTS, height, width, dtype=dt, device=kp.device)
    st = torso_size(kp)
    torso_ok = present(kp[:, list(TORSO_JOINTS)]).all(-1)
    if on is not None:
        torso_ok = torso_ok & on[:, 0]
    out[:, 0] = torso_ok.to(dt).view(B, 1, 1)
    # head square
    head = kp[:, list(HEAD_JOINTS)]
    head_ok = present(head)
    count = head_ok.sum(-1)
    mean = (torch.where(head_ok.unsqueeze(-1), head, torch.zeros_like(head)).sum(1)
            / count.clamp_min(1).unsqueeze(-1)).floor()
    ext = torch.floor(0.4 * torch.nan_to_num(st))
    ys = torch.arange(height, device=kp.device, dtype=dt).view(1, height, 1) * scale
    xs = torch.arange(width, device=kp.device, dtype=dt).view(1, 1, width) * scale
    head_on = (count > 0) & torch.isfinite(st)
    if on is not None:
        head_on = head_on & on[:, 1]
    head_on = head_on.view(-1, 1, 1)
    in_rows = ((ys - mean[:, 1].view(-1, 1, 1)).abs() <= ext.view(-1, 1, 1)) & head_on
    in_cols = (xs - mean[:, 0].view(-1, 1, 1)).abs() <= ext.view(-1, 1, 1)
    out[:, 1] = in_rows & in_cols
    # limb rectangles, all eight at once
    rects, oks = _limb_rectangles(kp, st, for_mask=True)
    rects = rects / scale  # [B, 8, 4, 2] in the level's pixels
    if on is not None:
        oks = oks & on[:, 2:]
    _inside_quads(rects, height, width, oks, out=out[:, 2:])
    return out.reshape(target_keypoints.shape[:-2] + (NUM_PARTS, height, width))
