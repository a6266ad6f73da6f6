"""The pose-geometry operators (part_masks, part_affines) and the out= forms:
compiled CPU kernels against the PyTorch reference on every real annotation row,
random and degenerate poses, odd sizes, levels, dtypes, layouts and bad input."""
import os

import pytest
import torch

import deformgan_ops as D
from conftest import requires_cpu_kernels
from deformgan.data.market import read_annotations
from deformgan_ops.reference import pose_geometry as R
from helpers import market_file


@pytest.fixture(scope="module")
def all_real_poses():
    ann = read_annotations(market_file("market-annotation-train.csv"))
    ann.update(read_annotations(market_file("market-annotation-test.csv")))
    return torch.stack(list(ann.values()))


def random_poses(n, seed=0, dtype=torch.float32, missing=0.15):
    """Poses with integer and fractional joints, some missing (-1, NaN, negative),
    some outside the image, some joints coinciding."""
    g = torch.Generator().manual_seed(seed)
    kp = torch.stack([torch.rand(n, 18, generator=g, dtype=torch.float64) * 80 - 8,
                      torch.rand(n, 18, generator=g, dtype=torch.float64) * 150 - 11], -1)
    kp[: n // 2] = kp[: n // 2].round()
    drop = torch.rand(n, 18, generator=g) < missing
    kp[drop] = -1.0
    if n > 3:
        kp[1, 3] = float("nan")
        kp[1, 0] = float("nan")  # a missing head joint as NaN
        kp[0, 14] = float("inf")
        kp[2, 8] = kp[2, 2]  # r_hip on r_shoulder
        kp[3, 9] = kp[3, 8]  # a zero-length limb
    return kp.to(dtype)


def compare_affines(src, tgt, rtol):
    th_c, v_c = D.part_affines(src, tgt, backend="cpu")
    th_r, v_r = D.part_affines(src, tgt, backend="reference")
    assert th_c.dtype == src.dtype and v_c.dtype == torch.bool
    assert torch.equal(v_c, v_r), f"{(v_c != v_r).sum().item()} validity mismatches"
    scale = th_r.double().abs() + 1
    err = ((th_c.double() - th_r.double()).abs() / scale).max().item() if th_r.numel() else 0.0
    assert err <= rtol, f"affines differ by {err:.3g} (relative)"
    assert torch.equal(th_c[~v_c], torch.zeros_like(th_c[~v_c]))
    return v_c


@requires_cpu_kernels
def test_part_affines_cpu_matches_reference_on_every_real_pair(all_real_poses):
    kp = all_real_poses
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(len(kp), generator=g)
    valid = compare_affines(kp[perm], kp, rtol=1e-5)
    assert 0.3 < valid.float().mean().item() < 1.0  # both valid and disabled parts occur
    valid = compare_affines(kp[perm[:3000]].double(), kp[:3000].double(), rtol=1e-9)
    assert valid.any() and not valid.all()


@requires_cpu_kernels
@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_part_affines_cpu_matches_reference_on_random_and_degenerate_poses(dtype, rtol):
    src, tgt = random_poses(400, 0, dtype), random_poses(400, 1, dtype)
    compare_affines(src, tgt, rtol)
    compare_affines(tgt, tgt, rtol)  # identical poses: identity affines
    th, v = D.part_affines(tgt, tgt, backend="cpu")
    eye = torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=dtype)
    assert torch.allclose(th[v], eye.expand(int(v.sum()), 2, 3), atol=1e-3)


@requires_cpu_kernels
def test_part_affines_shapes_layouts_and_empty_batch(all_real_poses):
    src, tgt = all_real_poses[:24].view(2, 3, 4, 18, 2), all_real_poses[24:48].view(2, 3, 4, 18, 2)
    th, v = D.part_affines(src, tgt, backend="cpu")
    assert th.shape == (2, 3, 4, 10, 2, 3) and v.shape == (2, 3, 4, 10)
    flat, vf = D.part_affines(src.reshape(-1, 18, 2), tgt.reshape(-1, 18, 2), backend="cpu")
    assert torch.equal(th.reshape(-1, 10, 2, 3), flat) and torch.equal(v.reshape(-1, 10), vf)
    nc_src = torch.stack([src.reshape(-1, 18, 2)] * 2, -1)[..., 0]  # non-contiguous
    assert not nc_src.is_contiguous()
    assert torch.equal(D.part_affines(nc_src, tgt.reshape(-1, 18, 2), backend="cpu")[0], flat)
    th0, v0 = D.part_affines(src[:0, 0, 0], tgt[:0, 0, 0], backend="cpu")
    assert th0.shape == (0, 10, 2, 3) and v0.shape == (0, 10)
    half, vh = D.part_affines(src.half(), tgt.half(), backend="cpu")  # computed in float32, returned in half
    assert half.dtype == torch.float16 and vh.shape == v.shape


def compare_masks(kp, H, W, scale, enabled=None):
    m_c = D.part_masks(kp, H, W, scale, enabled, backend="cpu")
    m_r = D.part_masks(kp, H, W, scale, enabled, backend="reference")
    assert m_c.dtype == kp.dtype and m_c.shape == kp.shape[:-2] + (10, H, W)
    bad = (m_c != m_r).sum().item()
    assert bad == 0, f"{bad} mask pixels differ"
    return m_c


@requires_cpu_kernels
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_part_masks_cpu_matches_reference_on_real_poses_at_every_level(all_real_poses, scale):
    """Every real pose (32,668), pixel for pixel, in chunks (the reference's masks of all
    of them at once would need 10 GB)."""
    valid = D.part_affines(all_real_poses.flip(0), all_real_poses, backend="cpu")[1]
    chunk = 4096
    for start in range(0, len(all_real_poses), chunk):
        kp = all_real_poses[start:start + chunk]
        m = compare_masks(kp, 128 // scale, 64 // scale, float(scale), valid[start:start + chunk])
        assert m[:, 2:].sum() > 0 and (m[:, 0] == 0).any()
    compare_masks(all_real_poses[::16], 128 // scale, 64 // scale, float(scale))  # without `enabled`


@requires_cpu_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(128, 64, 1.0), (37, 23, 1.5), (1, 1, 3.0), (5, 200, 0.7)])
def test_part_masks_cpu_matches_reference_on_random_poses_and_odd_sizes(dtype, size):
    H, W, scale = size
    kp = random_poses(120, 3, dtype)
    enabled = torch.rand(120, 10, generator=torch.Generator().manual_seed(2)) > 0.2
    compare_masks(kp, H, W, scale, enabled)
    compare_masks(kp, H, W, scale)


@requires_cpu_kernels
def test_part_masks_layouts_empty_batch_and_dtypes(all_real_poses):
    kp = all_real_poses[:12]
    ref = D.part_masks(kp, 32, 16, 4.0, backend="cpu")
    nc = torch.stack([kp, kp], -1)[..., 1]
    assert not nc.is_contiguous()
    assert torch.equal(D.part_masks(nc, 32, 16, 4.0, backend="cpu"), ref)
    assert torch.equal(D.part_masks(kp.view(3, 4, 18, 2), 32, 16, 4.0, backend="cpu"), ref.view(3, 4, 10, 32, 16))
    assert D.part_masks(kp[:0], 32, 16, backend="cpu").shape == (0, 10, 32, 16)
    bf = D.part_masks(kp.bfloat16(), 32, 16, 4.0, backend="cpu")
    assert bf.dtype == torch.bfloat16 and torch.equal(bf.float(), ref)
    enabled_int = torch.ones(12, 10, dtype=torch.int64)
    enabled_int[:, 3] = 0
    m = D.part_masks(kp, 32, 16, 4.0, enabled_int, backend="cpu")
    assert m[:, 3].sum() == 0 and torch.equal(m[:, 2], ref[:, 2])


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=requires_cpu_kernels)])
def test_degenerate_limb_rectangle_gives_an_empty_mask(backend):
    kp = torch.full((1, 18, 2), -1.0)
    # torso size 0 (hips on shoulders) makes every limb rectangle a zero-area segment
    for j, xy in ((2, (20, 30)), (8, (20, 30)), (5, (40, 30)), (11, (40, 30)), (9, (20, 60)), (12, (40, 60))):
        kp[0, j] = torch.tensor(xy, dtype=torch.float32)
    m = D.part_masks(kp, 128, 64, backend=backend)
    assert m[0, 2:].sum().item() == 0
    assert m[0, 0].min().item() == 1  # the torso is still on


@requires_cpu_kernels
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_out_forms_write_into_the_given_buffers(all_real_poses, backend):
    kp = all_real_poses[:6]
    out = torch.full((6, 10, 64, 32), 7.0)
    r = D.part_masks(kp, 64, 32, 2.0, out=out, backend=backend)
    assert r is out and torch.equal(out, D.part_masks(kp, 64, 32, 2.0, backend="reference"))
    heat = torch.full((6, 18, 128, 64), 7.0)
    r = D.keypoint_heatmaps(kp, 128, 64, 6.0, out=heat, backend=backend)
    assert r is heat
    torch.testing.assert_close(heat, D.keypoint_heatmaps(kp, 128, 64, 6.0, backend="reference"))
    with pytest.raises(ValueError, match=r"out must have shape \[6, 18, 128, 64\]"):
        D.keypoint_heatmaps(kp, 128, 64, 6.0, out=torch.empty(6, 18, 64, 64), backend=backend)
    with pytest.raises(TypeError, match="out must have the dtype of keypoints"):
        D.keypoint_heatmaps(kp, 128, 64, 6.0, out=heat.double(), backend=backend)
    with pytest.raises(ValueError, match="out must be contiguous"):
        D.part_masks(kp, 64, 32, 2.0, out=torch.empty(6, 10, 32, 64).transpose(2, 3), backend=backend)
    with pytest.raises(RuntimeError, match="does not support autograd"):
        D.keypoint_heatmaps(kp.clone().requires_grad_(), 128, 64, 6.0, out=heat, backend=backend)


@requires_cpu_kernels
def test_opcheck_geometry_and_out_forms(all_real_poses):
    kp = all_real_poses[:5]
    on = torch.rand(5, 10) > 0.3
    ops = torch.ops.deformgan_ops
    torch.library.opcheck(ops.part_masks.default, (kp, 16, 8, 8.0, on))
    torch.library.opcheck(ops.part_masks.default, (kp.double(), 9, 7, 3.0, None))
    torch.library.opcheck(ops.part_masks.out, (kp, 16, 8, 8.0, on), {"out": torch.empty(5, 10, 16, 8)})
    torch.library.opcheck(ops.part_affines.default, (kp.flip(0), kp))
    torch.library.opcheck(ops.keypoint_heatmaps.out, (kp, 9, 7, 2.0), {"out": torch.empty(5, 18, 9, 7)})


@requires_cpu_kernels
def test_geometry_under_torch_compile(all_real_poses):
    src, tgt = all_real_poses[:4], all_real_poses[4:8]

    def f(s, t):
        theta, valid = D.part_affines(s, t)
        return theta, D.part_masks(t, 32, 16, 4.0, valid)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for a, b in zip(compiled(src, tgt), f(src, tgt)):
        assert torch.equal(a, b)


BAD_MASKS = [
    (dict(kp=torch.zeros(2, 17, 2)), ValueError, r"target_keypoints must have shape \[..., 18, 2\]"),
    (dict(kp=torch.zeros(2, 18, 2, dtype=torch.int64)), TypeError, "target_keypoints must be a floating point"),
    (dict(height=0), ValueError, "height must be a positive int"),
    (dict(width=3.5), ValueError, "width must be a positive int"),
    (dict(scale=0.0), ValueError, "scale must be a positive finite number"),
    (dict(scale=float("inf")), ValueError, "scale must be a positive finite number"),
    (dict(enabled=torch.ones(2, 9, dtype=torch.bool)), ValueError, r"enabled must have shape \[2, 10\]"),
    (dict(enabled=[True] * 10), TypeError, "enabled must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=requires_cpu_kernels)])
@pytest.mark.parametrize("change,exc,msg", BAD_MASKS)
def test_part_masks_bad_input(backend, change, exc, msg):
    a = dict(kp=torch.zeros(2, 18, 2), height=16, width=8, scale=1.0, enabled=None)
    a.update(change)
    with pytest.raises(exc, match=msg):
        D.part_masks(a["kp"], a["height"], a["width"], a["scale"], a["enabled"], backend=backend)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=requires_cpu_kernels)])
def test_part_affines_bad_input(backend):
    with pytest.raises(ValueError, match="must have the same shape"):
        D.part_affines(torch.zeros(2, 18, 2), torch.zeros(3, 18, 2), backend=backend)
    with pytest.raises(TypeError, match="target_keypoints must have the dtype of source_keypoints"):
        D.part_affines(torch.zeros(2, 18, 2), torch.zeros(2, 18, 2, dtype=torch.float64), backend=backend)
    with pytest.raises(ValueError, match=r"source_keypoints must have shape \[..., 18, 2\]"):
        D.part_affines(torch.zeros(2, 18, 3), torch.zeros(2, 18, 3), backend=backend)


@requires_cpu_kernels
def test_cpp_checks_name_the_argument():
    ops = torch.ops.deformgan_ops
    with pytest.raises(RuntimeError, match=r"keypoints must have shape \[N, 18, 2\]"):
        ops.part_masks(torch.zeros(2, 17, 2), 8, 8, 1.0, None)
    with pytest.raises(RuntimeError, match="keypoints must be float32 or float64"):
        ops.part_masks(torch.zeros(2, 18, 2, dtype=torch.float16), 8, 8, 1.0, None)
    with pytest.raises(RuntimeError, match="scale must be a positive finite number"):
        ops.part_masks(torch.zeros(2, 18, 2), 8, 8, -1.0, None)
    with pytest.raises(RuntimeError, match=r"enabled must have shape \[N, 10\]"):
        ops.part_masks(torch.zeros(2, 18, 2), 8, 8, 1.0, torch.ones(3, 10, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="enabled must be a bool tensor"):
        ops.part_masks(torch.zeros(2, 18, 2), 8, 8, 1.0, torch.ones(2, 10))
    with pytest.raises(RuntimeError, match=r"out must have shape \[2, 10, 8, 8\]"):
        ops.part_masks.out(torch.zeros(2, 18, 2), 8, 8, 1.0, None, out=torch.empty(2, 10, 8, 9))
    with pytest.raises(RuntimeError, match="target_keypoints must have the shape of source_keypoints"):
        ops.part_affines(torch.zeros(2, 18, 2), torch.zeros(3, 18, 2))
    with pytest.raises(RuntimeError, match="out must be contiguous"):
        ops.keypoint_heatmaps.out(torch.zeros(2, 3, 2), 8, 8, 1.0, out=torch.empty(2, 3, 8, 8).transpose(2, 3))


@requires_cpu_kernels
def test_reference_checks_its_own_arguments_and_defaults(all_real_poses):
    # called directly (as deformgan.pose does), not through the public op's checks
    good, bad = torch.zeros(2, 18, 2), torch.zeros(2, 17, 2)
    with pytest.raises(ValueError, match=r"^source_keypoints must have shape \[\.\.\., 18, 2\] \(x, y\), got \[2, 17, 2\]$"):
        R.part_affines(bad, good)
    with pytest.raises(ValueError, match=r"^target_keypoints must have shape \[\.\.\., 18, 2\] \(x, y\), got \[2, 17, 2\]$"):
        R.part_affines(good, bad)
    with pytest.raises(ValueError, match=r"^source_keypoints \[2, 18, 2\] and target_keypoints \[3, 18, 2\] "
                                         r"must have the same shape$"):
        R.part_affines(good, torch.zeros(3, 18, 2))
    with pytest.raises(ValueError, match=r"^target_keypoints must have shape"):
        R.part_masks(bad, 8, 8)
    with pytest.raises(ValueError, match=r"^keypoints must have shape"):
        R.torso_size(bad)
    # the default scale is 1 and no part is switched off, as the compiled kernel with
    # the arguments spelled out
    kp = all_real_poses[:16]
    assert torch.equal(R.part_masks(kp, 128, 64), D.part_masks(kp, 128, 64, 1.0, None, backend="cpu"))
    # the masks come in the keypoints' dtype (the public op would cast them anyway);
    # `enabled` of any dtype counts nonzero as on
    valid = D.part_affines(kp.flip(0), kp, backend="cpu")[1]
    expected = D.part_masks(kp.double(), 32, 16, 4.0, valid, backend="cpu")
    for dtype in (torch.float32, torch.float64):
        m = R.part_masks(kp.to(dtype), 32, 16, 4.0, valid.to(dtype))
        assert m.dtype == dtype and torch.equal(m.double(), expected)


def test_inside_quads_returns_what_it_writes_into_out(all_real_poses):
    # part_masks always passes out=; the form that returns a new bool tensor must agree
    kp = all_real_poses[:8].double()
    rects, ok = R._limb_rectangles(kp, R.torso_size(kp), for_mask=True)
    out = torch.empty(8, 8, 32, 16)
    R._inside_quads(rects / 4.0, 32, 16, ok, out=out)
    got = R._inside_quads(rects / 4.0, 32, 16, ok)
    assert got.dtype == torch.bool and got.shape == (8, 8, 32, 16) and got.any()
    assert torch.equal(got.float(), out)


def test_reference_is_the_module_deformgan_pose_reexports():
    from deformgan import pose as P
    assert P.torso_size is R.torso_size and P.J is R.J and P.LIMB_PARTS is R.LIMB_PARTS


@requires_cpu_kernels
def test_triton_backend_setting_runs_the_compiled_geometry(all_real_poses):
    # there are no Triton kernels of the geometry: "triton" uses the compiled kernel
    kp = all_real_poses[:4]
    with D.use_backend("triton"):
        m = D.part_masks(kp, 32, 16, 4.0)
        th, v = D.part_affines(kp.flip(0), kp)
    assert torch.equal(m, D.part_masks(kp, 32, 16, 4.0, backend="cpu"))
    assert torch.equal(th, D.part_affines(kp.flip(0), kp, backend="cpu")[0])


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-9), (torch.float32, 2e-3)])
def test_reference_fit_affines_equals_scikit_image_on_noisy_correspondences(dtype, atol):
    """fit_affines against scikit-image's estimator (the original's) where the choice of
    estimator shows: correspondences with noise, 3 to 8 points, some dropped by a zero
    weight. (Exact correspondences give the same affine under any normalisation or
    least-squares flavour; ordinary least squares differs here by ~0.1.) Validity: at
    least 3 points, not collinear."""
    import numpy as np
    from skimage.transform import estimate_transform
    g = torch.Generator().manual_seed(5)
    B, k = 64, 8
    tgt = torch.rand(B, k, 2, generator=g, dtype=torch.float64) * torch.tensor([64.0, 128.0])
    lin = torch.eye(2, dtype=torch.float64) + 0.3 * torch.randn(B, 2, 2, generator=g, dtype=torch.float64)
    shift = 20 * torch.randn(B, 1, 2, generator=g, dtype=torch.float64)
    src = tgt @ lin.transpose(1, 2) + shift + 3 * torch.randn(B, k, 2, generator=g, dtype=torch.float64)
    weights = (torch.rand(B, k, generator=g) > 0.35).to(dtype) * (1 + torch.rand(B, k, generator=g)).to(dtype)
    weights[:4, 3:] = 0  # exactly three points
    weights[4:6, 2:] = 0  # two: not enough
    src[6, 1] = float("nan")  # a dropped point may hold anything
    weights[6, 1] = 0
    theta, valid = R.fit_affines(tgt.to(dtype), src.to(dtype), weights)
    assert theta.dtype == dtype and valid.dtype == torch.bool
    assert not valid[4:6].any() and (theta[4:6] == 0).all()
    checked = 0
    for b in range(B):
        keep = (weights[b] > 0).numpy()
        if keep.sum() < 3:
            continue
        want = estimate_transform("affine", tgt[b, keep].to(dtype).double().numpy(),
                                  src[b, keep].to(dtype).double().numpy()).params
        if not valid[b]:  # only an ill-conditioned fit is refused (condition number >= 1e4)
            assert np.linalg.cond(want) > 0.9 * R.MAX_CONDITION and (theta[b] == 0).all(), b
            continue
        assert np.linalg.cond(want) < 1.1 * R.MAX_CONDITION, b
        np.testing.assert_allclose(theta[b].double().numpy(), want[:2], atol=atol, rtol=0, err_msg=str(b))
        checked += 1
    assert checked >= 45


def test_reference_limb_rectangle_of_short_and_zero_length_segments():
    """docs/method.md (body parts) by hand: a zero-length segment gets the 2 px box around a, corners in the
    rectangle's order (they pair with the other pose's corners in the affine fit); a
    segment shorter than 1 px still gets a unit normal (its width is 0.2 st each side)."""
    f64 = dict(dtype=torch.float64)
    a, st = torch.tensor([[20.0, 30.0]], **f64), torch.tensor([10.0], **f64)
    box = R.limb_rectangle(a, a.clone(), st, 0.1)
    assert torch.equal(box, torch.tensor([[[19.0, 29.0], [21.0, 29.0], [21.0, 31.0], [19.0, 31.0]]], **f64))
    short = R.limb_rectangle(a, a + torch.tensor([0.5, 0.0], **f64), st, 0.0)
    # a' = a - 0.1 (b - a) = (19.95, 30), b' = b; normal (0, 1), half width 0.2 * 10 = 2
    want = torch.tensor([[[19.95, 32.0], [19.95, 28.0], [20.5, 28.0], [20.5, 32.0]]], **f64)
    torch.testing.assert_close(short, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=requires_cpu_kernels)])
def test_a_zero_length_limb_masks_the_3x3_pixels_of_its_box(backend):
    """The right upper arm (part 6, joints 2 -> 3) with the elbow on the shoulder at
    (20, 30): its mask is the pixels whose centres lie in [19, 21] x [29, 31]."""
    kp = torch.full((1, 18, 2), -1.0)
    for j, xy in ((2, (20, 30)), (3, (20, 30)), (4, (15, 60)), (8, (22, 70)), (5, (40, 30)), (11, (38, 70))):
        kp[0, j] = torch.tensor(xy, dtype=torch.float32)
    m = D.part_masks(kp, 128, 64, backend=backend)
    ys, xs = torch.nonzero(m[0, 6], as_tuple=True)
    assert sorted(zip(ys.tolist(), xs.tolist())) == [(y, x) for y in (29, 30, 31) for x in (19, 20, 21)]
    assert m[0, 8].sum() > 100  # the forearm from the elbow is a real rectangle
