"""The operators' Python side (``deformgan_ops/ops/*.py``): every refusal of
``keypoint_heatmaps``, ``nn_loss`` and ``part_affine_warp`` word for word, and the
nn.Module wrappers passing each setting on (their backend included)."""
import pytest
import torch

import deformgan_ops as D
from helpers import assert_refused



def test_keypoint_heatmaps_refusals():
    kp = torch.zeros(1, 18, 2)
    assert_refused(TypeError, "keypoints must be a torch.Tensor [N, K, 2], got list", D.keypoint_heatmaps,
                   [[0.0]], 4, 4)
    assert_refused(ValueError, "keypoints must be a 3-D tensor [N, K, 2], got shape [18, 2]", D.keypoint_heatmaps,
                   kp[0], 4, 4)
    assert_refused(ValueError, "keypoints must have shape [N, K, 2] (x, y), got [1, 18, 3]", D.keypoint_heatmaps,
                   torch.zeros(1, 18, 3), 4, 4)
    assert_refused(TypeError, "keypoints must be a floating point tensor, got torch.int64", D.keypoint_heatmaps,
                   kp.long(), 4, 4)
    assert_refused(ValueError, "width must be a positive int, got 0", D.keypoint_heatmaps, kp, 4, 0)
    assert_refused(ValueError, "sigma must be a positive finite number, got -1.0", D.keypoint_heatmaps, kp, 4, 4, -1.0)


def test_nn_loss_refusals():
    a = torch.zeros(1, 2, 5, 5)
    assert_refused(ValueError, "generated must be a 4-D tensor [N, C, H, W], got shape [2, 5, 5]", D.nn_loss, a[0], a)
    assert_refused(TypeError, "target must be a torch.Tensor [N, C, H, W], got ndarray", D.nn_loss, a, a.numpy())
    assert_refused(TypeError, "target must have the dtype of generated (torch.float32), got torch.float64", D.nn_loss,
                   a, a.double())
    assert_refused(ValueError, "target must have the shape of generated [1, 2, 5, 5], got [1, 2, 5, 4]", D.nn_loss,
                   a, a[..., :4])
    for k in (2, 0, -3, 3.0, True):
        assert_refused(ValueError, f"kernel_size must be an odd positive int, got {k!r}", D.nn_loss, a, a, k)
    assert_refused(ValueError, "reduction must be 'mean', 'sum' or 'none', got 'max'", D.nn_loss, a, a, 3, "max")


def test_part_affine_warp_refusals():
    f = torch.zeros(2, 3, 6, 5)
    theta = torch.zeros(2, 4, 2, 3)
    masks = torch.zeros(2, 4, 7, 8)
    assert_refused(ValueError, "features must be a 4-D tensor [N, C, H, W], got shape [3, 6, 5]", D.part_affine_warp,
                   f[0], theta, masks)
    assert_refused(ValueError, "theta must be a 4-D tensor [N, P, 2, 3], got shape [2, 4, 6]", D.part_affine_warp,
                   f, theta.reshape(2, 4, 6), masks)
    assert_refused(ValueError, "masks must be a 4-D tensor [N, P, Ho, Wo], got shape [2, 4, 7]", D.part_affine_warp,
                   f, theta, masks[..., 0])
    assert_refused(TypeError, "theta must have the dtype of features (torch.float32), got torch.float64",
                   D.part_affine_warp, f, theta.double(), masks)
    assert_refused(TypeError, "masks must have the dtype of features (torch.bfloat16) or float32, got torch.float64",
                   D.part_affine_warp, f.bfloat16(), theta, masks.double())
    assert_refused(ValueError, "theta must have shape [N, P, 2, 3] with N = 2, got [1, 4, 2, 3]", D.part_affine_warp,
                   f, theta[:1], masks)
    assert_refused(ValueError, "theta must have shape [N, P, 2, 3] with N = 2, got [2, 4, 3, 2]", D.part_affine_warp,
                   f, theta.transpose(2, 3), masks)
    assert_refused(ValueError, "theta must have between 1 and 255 parts, got P = 0", D.part_affine_warp,
                   f, theta[:, :0], masks[:, :0])
    assert_refused(ValueError, "theta must have between 1 and 255 parts, got P = 256", D.part_affine_warp,
                   f, torch.zeros(2, 256, 2, 3), torch.zeros(2, 256, 7, 8))
    D.part_affine_warp(f, torch.zeros(2, 255, 2, 3), torch.zeros(2, 255, 2, 2))  # 255 parts: the most
    assert_refused(ValueError, "masks must have shape [N, P, Ho, Wo] with N = 2 and P = 4, got [2, 3, 7, 8]",
                   D.part_affine_warp, f, theta, masks[:, :3])
    assert_refused(ValueError, "masks must have shape [N, P, Ho, Wo] with N = 2 and P = 4, got [1, 4, 7, 8]",
                   D.part_affine_warp, f, theta, masks[:1])
    assert_refused(ValueError, "offsets must be a 4-D tensor [N, 2, Ho, Wo], got shape [2, 7, 8]",
                   D.part_affine_warp, f, theta, masks, torch.zeros(2, 7, 8))
    assert_refused(ValueError, "offsets must have shape [N, 2, Ho, Wo] = [2, 2, 7, 8], got [2, 2, 8, 7]",
                   D.part_affine_warp, f, theta, masks, torch.zeros(2, 2, 8, 7))
    assert_refused(ValueError, "offsets must have shape [N, 2, Ho, Wo] = [2, 2, 7, 8], got [2, 1, 7, 8]",
                   D.part_affine_warp, f, theta, masks, torch.zeros(2, 1, 7, 8))
    assert_refused(TypeError, "offsets must have the dtype of features (torch.float32), got torch.float64",
                   D.part_affine_warp, f, theta, masks, torch.zeros(2, 2, 7, 8, dtype=torch.float64))


def test_the_module_wrappers_pass_every_setting_on():
    g = torch.Generator().manual_seed(0)
    kp = torch.rand(2, 18, 2, generator=g) * 5
    m = D.KeypointHeatmaps(6, 5, 2.0, backend="reference")
    assert (m.height, m.width, m.sigma, m.backend) == (6, 5, 2.0, "reference")
    assert repr(m) == "KeypointHeatmaps(height=6, width=5, sigma=2.0)"
    torch.testing.assert_close(m(kp), D.keypoint_heatmaps(kp, 6, 5, 2.0), rtol=0, atol=1e-6)
    assert D.KeypointHeatmaps(6, 5).sigma == 6.0
    a, b = torch.randn(2, 3, 6, 5, generator=g), torch.randn(2, 3, 6, 5, generator=g)
    theta = torch.eye(2, 3).expand(2, 3, 2, 3).contiguous()
    masks = torch.ones(2, 3, 6, 5)
    plain = D.NNLoss()
    assert (plain.kernel_size, plain.reduction, plain.backend) == (3, "mean", None)
    assert repr(D.NNLoss(5, "sum")) == "NNLoss(kernel_size=5, reduction='sum')"
    assert torch.equal(D.NNLoss(5, "none")(a, b), D.nn_loss(a, b, 5, "none"))
    offsets = torch.randn(2, 2, 6, 5, generator=g)
    warped = D.PartAffineWarp()(a, theta, masks, offsets)
    assert torch.equal(warped, D.part_affine_warp(a, theta, masks, offsets))
    assert not torch.equal(warped, D.part_affine_warp(a, theta, masks))  # the offsets did move the samples
    # a backend that cannot run on CPU tensors: refused, so the wrapper did pass it on
    for module, args in ((D.KeypointHeatmaps(6, 5, 2.0, backend="cuda"), (kp,)),
                         (D.NNLoss(3, backend="cuda"), (a, b)), (D.PartAffineWarp(backend="cuda"), (a, theta, masks))):
        with pytest.raises(RuntimeError, match="backend 'cuda' needs cuda tensors, got tensors on cpu"):
            module(*args)
    with D.use_backend("cuda"):  # a wrapper's own backend wins over the process-wide one
        assert torch.equal(D.KeypointHeatmaps(6, 5, 2.0, backend="cpu")(kp), D.keypoint_heatmaps(kp, 6, 5, 2.0,
                                                                                                   backend="cpu"))
        D.NNLoss(3, backend="cpu")(a, b)
        D.PartAffineWarp(backend="cpu")(a, theta, masks)


# ------------------------------------------------------------------ sample inputs
def _samples(op):
    return D.operator(op).sample_inputs(torch.device("cpu"), torch.float64)


def test_keypoint_heatmaps_samples_cover_what_their_docstring_says():
    """Joints inside, on the border, outside the image, missing (-1, NaN, inf); two
    image sizes, one of them wider than tall."""
    samples = _samples("keypoint_heatmaps")
    assert len(samples) == 2 and all(kw == {} for _, kw in samples)
    (kp, h, w, sigma), _ = samples[0]
    assert kp.dtype == torch.float64 and kp.shape == (2, 5, 2) and (h, w) == (11, 9) and sigma == 2.5
    flat = kp.reshape(-1, 2)
    assert bool(torch.isnan(flat).any()) and bool(torch.isinf(flat).any()) and bool((flat == -1).all(-1).any())
    finite = flat[torch.isfinite(flat).all(-1) & (flat >= 0).all(-1)]
    assert bool(((finite[:, 0] < w) & (finite[:, 1] < h)).any())  # inside
    assert bool(((flat[:, 0] >= w) & torch.isfinite(flat[:, 0])).any())  # outside, to the right
    assert bool(((flat[:, 1] < 0) & (flat[:, 1] > -1)).any())  # a fraction above the top: missing too
    (kp2, h2, w2, sigma2), _ = samples[1]
    assert kp2.shape == (1, 3, 2) and (h2, w2, sigma2) == (4, 13, 6.0) and torch.equal(kp2, kp[:1, :3])


def test_nn_loss_samples_cover_what_their_docstring_says():
    """Odd sizes, windows 1, 3 and 5 (clipped at the border and by a tiny image), every reduction."""
    samples = _samples("nn_loss")
    windows = [args[2] for args, _ in samples]
    assert sorted(windows) == [1, 3, 5, 7]
    assert sorted(kw.get("reduction", "mean") for _, kw in samples) == ["mean", "mean", "none", "sum"]
    for (a, b, k), _ in samples:
        assert a.shape == b.shape and a.dtype == b.dtype == torch.float64 and not torch.equal(a, b)
    assert any(min(a.shape[-2:]) < k for (a, _, k), _ in samples)  # the window clipped by a tiny image
    assert any(a.shape[-1] % 2 == 1 or a.shape[-2] % 2 == 1 for (a, _, _), _ in samples)
    assert [tuple(a.shape) for (a, _, _), _ in samples] == [(2, 3, 7, 5), (1, 2, 6, 9), (2, 1, 3, 2), (1, 4, 2, 3)]


def test_part_affine_warp_samples_cover_what_their_docstring_says():
    """Odd sizes; parts of zero mask; affines that sample outside the image; with and
    without offsets; one output larger than the input."""
    samples = _samples("part_affine_warp")
    assert len(samples) == 3 and all(kw == {} for _, kw in samples)
    assert [o is None for (_, _, _, o), _ in samples] == [True, False, False]
    outside = larger = zero_mask = 0
    for (f, theta, masks, off), _ in samples:
        N, C, H, W = f.shape
        P, Ho, Wo = masks.shape[1:]
        assert theta.shape == (N, P, 2, 3) and masks.shape[0] == N and f.dtype == torch.float64
        assert off is None or off.shape == (N, 2, Ho, Wo)
        larger += Ho * Wo > H * W
        zero_mask += bool((masks == 0).any()) and bool((masks > 0).any())
        assert bool((masks >= 0).all()) and bool((masks <= 1).all())
        ys, xs = torch.meshgrid(torch.arange(Ho, dtype=f.dtype), torch.arange(Wo, dtype=f.dtype), indexing="ij")
        pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)
        loc = torch.einsum("npij,kj->npki", theta, pts)  # (x, y) sampled for every output pixel
        outside += bool(((loc[..., 0] < 0) | (loc[..., 0] > W - 1) | (loc[..., 1] < 0) | (loc[..., 1] > H - 1)).any())
        assert not torch.allclose(theta[..., :2], torch.eye(2, dtype=f.dtype).expand_as(theta[..., :2]))
    assert larger >= 1 and zero_mask == 3 and outside == 3
    assert [tuple(f.shape) for (f, _, _, _), _ in samples] == [(2, 3, 9, 7), (1, 2, 5, 6), (3, 1, 4, 4)]
    assert [tuple(m.shape) for (_, _, m, _), _ in samples] == [(2, 4, 9, 7), (1, 3, 7, 5), (3, 1, 4, 4)]


@pytest.mark.parametrize("op", ["keypoint_heatmaps", "nn_loss", "part_affine_warp", "part_masks", "part_affines"])
def test_samples_are_seeded_and_in_the_dtype_asked_for(op):
    def tensors(samples):
        return [t for args, _ in samples for t in args if isinstance(t, torch.Tensor)]

    first, again = tensors(_samples(op)), tensors(_samples(op))
    assert len(first) == len(again) > 0
    assert all(torch.equal(a, b) or (torch.isnan(a).any() and torch.equal(a.nan_to_num(), b.nan_to_num()))
               for a, b in zip(first, again))
    for dtype in (torch.float32, torch.float16):
        floats = {t.dtype for t in tensors(D.operator(op).sample_inputs(torch.device("cpu"), dtype))
                  if t.is_floating_point()}
        assert floats == {dtype}
    if op == "part_masks":  # one sample switches parts off with ``enabled``, some on and some off
        enabled = [args[4] for args, _ in _samples(op) if len(args) > 4]
        assert len(enabled) == 1 and bool(enabled[0].any()) and not bool(enabled[0].all())


def test_pose_geometry_refusals():
    src = torch.zeros(2, 18, 2)
    assert_refused(ValueError, "target_keypoints must have shape [..., 18, 2] (x, y), got [2, 17, 2]", D.part_affines,
                   src, torch.zeros(2, 17, 2))
    assert_refused(ValueError, "source_keypoints [2, 18, 2] and target_keypoints [1, 18, 2] must have the same shape",
                   D.part_affines, src, src[:1])
    assert_refused(TypeError, "enabled must be a torch.Tensor [..., 10], got list", D.part_masks, src, 4, 4, 1.0,
                   [True] * 10)
    assert_refused(ValueError, "enabled must have shape [2, 10], got [10]", D.part_masks, src, 4, 4, 1.0,
                   torch.ones(10, dtype=torch.bool))
    assert_refused(ValueError, "enabled must be on the device of target_keypoints (cpu), got meta", D.part_masks,
                   src, 4, 4, 1.0, torch.ones(2, 10, dtype=torch.bool, device="meta"))
