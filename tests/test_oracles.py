"""deformgan/ functions against independent oracles: answers worked out by
hand, properties that must hold, or a different computation, never the code under test
compared with itself. Each test names the deliberate bug it catches."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import deformgan_ops
from deformgan import losses as L
from deformgan import metrics as MT
from deformgan import pose as P
from deformgan.data.market import read_annotations
from deformgan.geometry import render
from deformgan.models import WARPED_LEVELS, Generator
from helpers import market_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def real_poses(n=2):
    """The first ``n`` real Market test poses with every torso and leg joint present."""
    ann = read_annotations(market_file("market-annotation-test.csv"))
    need = [P.J[j] for j in ("neck", "r_shoulder", "l_shoulder", "r_hip", "l_hip", "r_knee", "l_knee")]
    out = [kp for kp in ann.values() if bool(P.present(kp[need]).all())]
    return torch.stack(out[:n])


# ---------------------------------------------------------------- pose
def test_flip_moves_each_joint_to_its_mirror_partner():
    """Bug caught: the flip pairing a knee with the opposite ankle (or any wrong pair)."""
    W = 64
    kp = torch.stack([torch.arange(18, dtype=torch.float32) * 3 + 1, torch.arange(18, dtype=torch.float32) * 7 + 2],
                     -1)
    kp[P.J["l_ear"]] = -1
    f = P.flip_keypoints(kp, W)
    for name, i in P.J.items():
        partner = name.replace("l_", "@").replace("r_", "l_").replace("@", "r_")  # by name, not the table
        j = P.J[partner]
        if name == "r_ear":  # its partner l_ear is missing: so is the flipped r_ear
            assert (f[i] == -1).all()
            continue
        assert f[i, 0] == W - 1 - kp[j, 0] and f[i, 1] == kp[j, 1], (name, partner)
    torch.testing.assert_close(P.flip_keypoints(f, W), kp)


def test_global_affine_maps_target_joints_onto_source_joints():
    """Bug caught: the affine fitted in the wrong direction (source -> target)."""
    tgt = real_poses(1)
    A = torch.tensor([[1.1, 0.2, 5.0], [-0.1, 0.9, -3.0]])
    src = tgt.clone()
    ok = P.present(tgt)
    src[ok] = tgt[ok] @ A[:, :2].T + A[:, 2]
    theta, valid = P.global_affine(src, tgt)
    assert bool(valid[0])
    torch.testing.assert_close(theta[0], A, atol=1e-4, rtol=0)


def test_pg2_pose_mask_of_a_two_joint_pose_drawn_by_hand():
    """Bug caught: the mask without its erosion (a dilation only is 2 px wider), or no limb."""
    kp = torch.full((18, 2), -1.0)
    kp[P.J["neck"]] = torch.tensor([20.0, 30.0])        # (x, y)
    kp[P.J["r_shoulder"]] = torch.tensor([20.0, 50.0])  # a vertical limb x = 20, y 30..50
    m = MT.pose_mask(kp, 128, 64)
    # a stadium of half width 4 around the segment: columns 16..24, rows 26..54
    assert m[30:51, 16:25].all(), "the limb's quadrilateral"
    assert not m[:, :15].any() and not m[:, 26:].any(), "wider than half width 4 (+1 px raster tolerance)"
    assert not m[:25].any() and not m[56:].any(), "longer than the disks of radius 4 at the ends"
    assert m.sum() < 9 * 21 + 2 * np.pi * 16, "no more than the stadium's area"


def test_pg2_pose_mask_closes_gaps_with_a_5x5_square_and_draws_every_present_limb():
    """Two parallel legs 13 px apart: stadiums of half width 4 at x 16..24 and 29..37
    leave a gap of 4 columns (25..28), which the 5 x 5 closing (dilation then erosion)
    fills and a 3 x 3 one would not. The legs come after limbs whose joints are missing
    (the neck is absent): those are skipped, not the end of the drawing. A diagonal limb
    is as wide across as a vertical one (the quadrilateral is offset along the normal)."""
    kp = torch.full((18, 2), -1.0)
    kp[P.J["r_hip"]], kp[P.J["r_knee"]] = torch.tensor([20.0, 60.0]), torch.tensor([20.0, 100.0])
    kp[P.J["l_hip"]], kp[P.J["l_knee"]] = torch.tensor([33.0, 60.0]), torch.tensor([33.0, 100.0])
    m = MT.pose_mask(kp, 128, 64)
    assert m[70:91, 16:38].all(), "both legs and the closed gap between them"
    assert not m[70:91, :14].any() and not m[70:91, 40:].any()
    kp = torch.full((18, 2), -1.0)
    kp[P.J["r_elbow"]], kp[P.J["r_wrist"]] = torch.tensor([10.0, 10.0]), torch.tensor([50.0, 50.0])
    m = MT.pose_mask(kp, 128, 64)
    for t in range(20, 41, 5):  # along the segment, 2.8 px off it on either side
        assert m[t - 2, t + 2] and m[t + 2, t - 2], t
        assert not m[t - 5, t + 5] and not m[t + 5, t - 5], t  # 7.1 px off: outside


# ---------------------------------------------------------------- metrics on known images
def test_l1_and_psnr_of_known_images():
    """Bug caught: L1 / PSNR computed between the generated image and itself."""
    a = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    b = torch.full((1, 3, 4, 4), 51, dtype=torch.uint8)
    assert MT.l1(a, b).item() == pytest.approx(51 / 255)
    assert MT.psnr(a, b).item() == pytest.approx(10 * np.log10(255 ** 2 / 51 ** 2))


# ---------------------------------------------------------------- losses
def test_pixel_l1_is_the_mean_absolute_error():
    """Bug caught: the L1 loss replaced by a squared error."""
    gen = torch.zeros(1, 1, 1, 2)
    tgt = torch.tensor([[[[0.5, -2.0]]]])
    assert L.pixel_l1(gen, tgt).item() == pytest.approx(1.25)
    total, terms = L.GeneratorLoss(adv=0.0, l1=3.0)(gen, tgt)
    assert total.item() == pytest.approx(3.75) and terms["l1"].item() == pytest.approx(1.25)


@pytest.mark.parametrize("term", ["perceptual", "nn_weight"])
def test_vgg_losses_do_not_reach_the_target(term):
    """Bug caught: the perceptual / NN target features not detached."""
    loss = L.GeneratorLoss(adv=0.0, **{term: 1.0}, vgg_weights=None, allow_random_vgg=True)
    gen = torch.rand(1, 3, 16, 8, requires_grad=True)
    tgt = torch.rand(1, 3, 16, 8, requires_grad=True)
    total, _ = loss(gen * 2 - 1, tgt * 2 - 1)
    total.backward()
    assert gen.grad is not None and gen.grad.abs().sum() > 0
    assert tgt.grad is None or tgt.grad.abs().sum() == 0


# ---------------------------------------------------------------- generator geometry
def test_generator_masks_follow_the_target_pose_at_every_level():
    """Bugs caught: part masks rendered from the source pose, or at scale 1 on every level."""
    tgt = real_poses(1)
    src = tgt.clone()
    src[..., 0] = src[..., 0] + 30  # the source stands 30 px to the right
    G = Generator(variant="parts", width_mult=0.0625)
    geo = G.render_geometry(src, tgt)
    leg = geo.masks[0][0, 2]  # the right upper leg: hip -> knee
    hip, knee = tgt[0, P.J["r_hip"]], tgt[0, P.J["r_knee"]]
    mx, my = ((hip + knee) / 2).round().long().tolist()
    assert leg[my, mx] == 1, "the leg mask covers the target leg's midpoint"
    cols = leg.nonzero()[:, 1].float()
    assert abs(cols.mean().item() - (hip[0] + knee[0]).item() / 2) < 3, "centred on the target leg"
    base = geo.masks[0][0, 1:]  # part 0 (torso) is the whole image at every level
    for lv in WARPED_LEVELS[1:]:
        s = 1 << lv
        m = geo.masks[lv][0, 1:]
        assert m.shape[-2:] == (128 // s, 64 // s)
        blocks = base[:, :m.shape[1] * s, :m.shape[2] * s].reshape(9, m.shape[1], s, m.shape[2], s)
        full, empty = blocks.amin((2, 4)) == 1, blocks.amax((2, 4)) == 0
        # where a whole block of the level-0 mask agrees, the level's mask agrees
        assert (m[full] == 1).float().mean() > 0.97 and (m[empty] == 0).float().mean() > 0.97, lv
        assert full.sum() > 0


def test_render_heatmaps_peak_at_their_own_pose():
    """Bug caught: render with source and target swapped."""
    tgt = real_poses(1)
    src = tgt.clone()
    src[..., 0] = (src[..., 0] + 11).clamp(max=63)
    out = render(src, tgt, (128, 64), levels=(0,))
    j = P.J["neck"]
    for key, kp in (("source_heatmaps", src), ("target_heatmaps", tgt)):
        h = getattr(out, key)[0, j]
        y, x = divmod(int(h.argmax()), h.shape[1])
        assert (x, y) == (round(float(kp[0, j, 0])), round(float(kp[0, j, 1]))), key


# ---------------------------------------------------------------- network inputs
def test_inception_and_lpips_normalise_their_inputs():
    """Bug caught: LPIPS / Inception fed images without their normalisation."""
    seen = {}
    inc = MT.InceptionFeatures(None, allow_random=True)
    inc.net.Conv2d_1a_3x3.register_forward_pre_hook(lambda m, a: seen.__setitem__("inception", a[0]))
    lp = MT.LPIPS(None, None, allow_random=True)
    lp.features[0].register_forward_pre_hook(lambda m, a: seen.__setitem__("lpips", a[0]))
    v = 0.5  # a constant image in [-1, 1]
    img = torch.full((1, 3, 64, 64), v)
    inc(img)
    lp(img, img)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(seen["inception"][0, :, 100, 100], ((v + 1) / 2 - mean) / std)
    shift, scale = torch.tensor([-0.030, -0.088, -0.188]), torch.tensor([0.458, 0.448, 0.450])
    torch.testing.assert_close(seen["lpips"][0, :, 30, 30], (v - shift) / scale)


# ---------------------------------------------------------------- operator backend choice
def test_the_environment_variable_chooses_the_backend():
    """Bug caught: DEFORMGAN_OPS_BACKEND ignored."""
    code = ("import torch, deformgan_ops as D; from deformgan_ops.backend import resolve; "
            "print(D.get_backend(), resolve('part_masks', torch.device('cpu'), None))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, DEFORMGAN_OPS_BACKEND="reference"),
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out == ["reference", "reference"]


def test_the_generators_backend_reaches_the_geometry(monkeypatch):
    """Bug caught: --ops-backend never reaching part_affines / part_masks."""
    import dataclasses

    from deformgan_ops import _registry
    calls = []
    for name in ("part_masks", "part_affines", "keypoint_heatmaps", "part_affine_warp"):
        decl = deformgan_ops.operator(name)
        monkeypatch.setitem(_registry._OPS, name, dataclasses.replace(
            decl, reference=lambda *a, _n=name, _f=decl.reference: (calls.append(_n), _f(*a))[1]))
    tgt = real_poses(1)
    G = Generator(variant="parts", width_mult=0.0625, ops_backend="reference")
    G(torch.zeros(1, 3, 128, 64), tgt, tgt)
    assert calls.count("part_affines") == 1 and calls.count("part_masks") == len(WARPED_LEVELS)
    assert calls.count("keypoint_heatmaps") == 1 and calls.count("part_affine_warp") == len(WARPED_LEVELS)
    calls.clear()
    if "cpu" in deformgan_ops.available_backends("cpu"):
        Generator(variant="parts", width_mult=0.0625, ops_backend="cpu")(torch.zeros(1, 3, 128, 64), tgt, tgt)
        assert calls == []
        with deformgan_ops.use_backend("reference"):  # the process-wide choice, as --ops-backend sets it
            Generator(variant="parts", width_mult=0.0625)(torch.zeros(1, 3, 128, 64), tgt, tgt)
        assert calls.count("part_masks") == len(WARPED_LEVELS) and calls.count("part_affine_warp") == 4


def test_dataset_flip_mirrors_images_and_keypoints_together(tmp_path):
    """Bug caught: --flip mirroring the images without the poses (or the reverse)."""
    from deformgan.data.market import MarketPoseDataset
    from deformgan.data.synthetic import make_dataset
    make_dataset(str(tmp_path / "d"), ids=3, images_per_id=2, seed=1, test_fraction=0.34, progress=False)
    root = str(tmp_path / "d")
    plain = MarketPoseDataset(root, os.path.join(root, "annotations-train.csv"), os.path.join(root, "pairs-train.csv"),
                              heatmaps=True)
    flipped = MarketPoseDataset(root, os.path.join(root, "annotations-train.csv"),
                                os.path.join(root, "pairs-train.csv"), heatmaps=True, flip=1.0)
    a, b = plain[0], flipped[0]
    assert torch.equal(b["source_image"], a["source_image"].flip(-1))
    assert torch.equal(b["target_image"], a["target_image"].flip(-1))
    W = a["source_image"].shape[-1]
    for name, i in P.J.items():
        j = P.J[name.replace("l_", "@").replace("r_", "l_").replace("@", "r_")]
        kp, fk = a["source_keypoints"][j], b["source_keypoints"][i]
        if P.present(kp):
            assert fk[0] == W - 1 - kp[0] and fk[1] == kp[1], name
    # the heatmaps follow the flipped joints: each channel is its partner's channel mirrored
    hm = a["source_heatmaps"]
    torch.testing.assert_close(b["source_heatmaps"][P.J["l_knee"]], hm[P.J["r_knee"]].flip(-1), atol=1e-5, rtol=0)
