import os

import numpy as np
import pytest
import torch
from skimage.measure import points_in_poly
from skimage.transform import estimate_transform

import deformgan_ops as D
from conftest import requires_cpu_kernels
from deformgan import pose as P
from deformgan.data.market import read_annotations
from helpers import market_file


@pytest.fixture(scope="module")
def real_poses():
    ann = read_annotations(market_file("market-annotation-train.csv"))
    return torch.stack(list(ann.values())[:400])


@pytest.fixture(params=["reference", pytest.param("cpu", marks=requires_cpu_kernels)])
def backend(request):
    """The geometry tests run on the PyTorch reference and on the compiled kernels."""
    with D.use_backend(request.param):
        yield request.param


def test_tables():
    assert len(P.JOINTS) == 18 and P.JOINTS[14] == "r_eye" and P.JOINTS[17] == "l_ear"
    perm = P.FLIP_PERMUTATION
    assert sorted(perm) == list(range(18))
    assert all(perm[perm[i]] == i for i in range(18))
    assert perm[14] == 15 and perm[16] == 17 and perm[2] == 5 and perm[8] == 11


def test_coco17_conversion_with_missing_low_confidence_and_neck():
    xy = torch.arange(34, dtype=torch.float32).view(17, 2) + 1
    conf = torch.ones(17)
    conf[9] = 0.1  # l_wrist, low confidence
    xy[4] = 0  # r_ear at (0, 0): ultralytics' "not found"
    kp = P.coco17_to_openpose18(xy, conf, threshold=0.3)
    assert torch.equal(kp[P.J["nose"]], xy[0])
    assert torch.equal(kp[P.J["l_eye"]], xy[1]) and torch.equal(kp[P.J["r_eye"]], xy[2])
    assert torch.equal(kp[P.J["r_hip"]], xy[12]) and torch.equal(kp[P.J["l_ankle"]], xy[15])
    assert torch.equal(kp[P.J["neck"]], (xy[5] + xy[6]) / 2)
    assert kp[P.J["l_wrist"]].tolist() == [-1, -1]
    assert kp[P.J["r_ear"]].tolist() == [-1, -1]
    conf[6] = 0.0  # r_shoulder missing -> neck missing
    kp = P.coco17_to_openpose18(xy, conf)
    assert kp[P.J["neck"]].tolist() == [-1, -1] and kp[P.J["r_shoulder"]].tolist() == [-1, -1]
    batch = P.coco17_to_openpose18(torch.stack([xy, xy]), torch.stack([conf, conf]))
    assert batch.shape == (2, 18, 2)


def test_select_person_keeps_the_largest_box():
    from deformgan.keypoints import select_person
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 40, 60], [0, 0, 20, 20]], dtype=torch.float32)
    assert select_person(boxes) == 1
    assert select_person(torch.zeros(0, 4)) is None
    tie = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15]], dtype=torch.float32)
    assert select_person(tie, torch.tensor([0.5, 0.9])) == 1


def test_torso_size_formula():
    kp = torch.full((18, 2), -1.0)
    kp[P.J["r_shoulder"]] = torch.tensor([10.0, 20.0])
    kp[P.J["r_hip"]] = torch.tensor([13.0, 24.0])  # length 5
    kp[P.J["l_shoulder"]] = torch.tensor([30.0, 20.0])
    kp[P.J["l_hip"]] = torch.tensor([30.0, 32.0])  # length 12
    assert P.torso_size(kp).item() == pytest.approx(((25 + 144) / 2) ** 0.5)
    kp[P.J["l_hip"]] = -1
    assert P.torso_size(kp).item() == pytest.approx(5.0)  # the present side stands in


def test_flip_swaps_pairs_and_mirrors_x():
    kp = torch.rand(18, 2) * 50
    kp[3] = -1
    f = P.flip_keypoints(kp, 64)
    assert torch.allclose(f[P.J["l_shoulder"]], torch.stack([63 - kp[P.J["r_shoulder"], 0], kp[P.J["r_shoulder"], 1]]))
    assert f[P.J["l_elbow"]].tolist() == [-1, -1]  # r_elbow was missing
    assert torch.allclose(P.flip_keypoints(f, 64), kp)


def test_torso_and_limb_affines_match_skimage_on_real_rows(real_poses, backend):
    src, tgt = real_poses[:100], real_poses[100:200]
    theta, valid = P.part_affines(src, tgt)
    checked = 0
    for n in range(100):
        # torso: least squares over its four joints
        idx = list(P.TORSO_JOINTS)
        if valid[n, 0]:
            tr = estimate_transform("affine", tgt[n, idx].double().numpy(), src[n, idx].double().numpy())
            np.testing.assert_allclose(theta[n, 0].double().numpy(), tr.params[:2], rtol=1e-4, atol=1e-3)
            checked += 1
        # a limb: least squares from the 4 target corners to the 4 source corners
        a, b, inc, _, _ = P.LIMB_PARTS[6]
        if valid[n, 6] and P.present(src[n, [a, b]]).all():
            t_rect = P.limb_rectangle(tgt[n, a], tgt[n, b], P.torso_size(tgt[n]), inc)
            s_rect = P.limb_rectangle(src[n, a], src[n, b], P.torso_size(src[n]), inc)
            tr = estimate_transform("affine", t_rect.double().numpy(), s_rect.double().numpy())
            np.testing.assert_allclose(theta[n, 6].double().numpy(), tr.params[:2], rtol=1e-4, atol=1e-3)
            checked += 1
    assert checked > 100


def test_condition_number_disables_a_degenerate_head_fit(real_poses, backend):
    src = torch.full((1, 18, 2), -1.0)
    tgt = torch.full((1, 18, 2), -1.0)
    # target: shoulders 2 px apart and one eye; source: shoulders 26 px apart -> a wild fit
    for kp, pts in ((tgt, {14: (40, 15), 16: (34, 17), 2: (28, 28), 5: (30, 28)}),
                    (src, {14: (49, 15), 16: (45, 18), 2: (50, 39), 5: (24, 35)})):
        for j, (x, y) in pts.items():
            kp[0, j] = torch.tensor([float(x), float(y)])
    theta, valid = P.part_affines(src, tgt)
    tr = estimate_transform("affine", tgt[0, [14, 16, 2, 5]].numpy(), src[0, [14, 16, 2, 5]].numpy())
    assert np.linalg.cond(tr.params) >= 1e4
    assert not valid[0, 1] and theta[0, 1].abs().max() == 0


def test_mirror_limb_fallback_and_disabled_parts(real_poses, backend):
    full = real_poses[[P.present(k[:14]).all().item() for k in real_poses]]
    src, tgt = full[0:1].clone(), full[1:2].clone()
    src[0, P.J["r_knee"]] = -1  # r upper and lower leg missing in the source
    theta, valid = P.part_affines(src, tgt)
    # both right-leg parts are fitted from the source's left leg (or disabled when
    # that fit's condition number reaches 1e4, as the original did)
    for part in (2, 4):
        a, b, inc, _, mirror = P.LIMB_PARTS[part]
        la, lb = P.LIMB_PARTS[mirror][:2]
        t_rect = P.limb_rectangle(tgt[0, a], tgt[0, b], P.torso_size(tgt[0]), inc)
        s_rect = P.limb_rectangle(src[0, la], src[0, lb], P.torso_size(src[0]), inc)
        tr = estimate_transform("affine", t_rect.double().numpy(), s_rect.double().numpy())
        if np.linalg.cond(tr.params) < 1e4:
            assert valid[0, part]
            np.testing.assert_allclose(theta[0, part].double().numpy(), tr.params[:2], rtol=1e-4, atol=1e-3)
        else:
            assert not valid[0, part]
    assert valid[0, 2]
    # a part missing in the target is disabled and its mask is zero
    tgt[0, P.J["l_elbow"]] = -1
    theta, valid = P.part_affines(src, tgt)
    assert not valid[0, 7] and not valid[0, 9]
    masks = P.part_masks(tgt, 128, 64)
    assert masks[0, 7].sum() == 0 and masks[0, 9].sum() == 0
    assert masks[0, 0].min() == 1  # torso: all ones
    # a head with no joint common to both poses is disabled
    src[0, list(P.HEAD_JOINTS)] = -1
    theta, valid = P.part_affines(src, tgt)
    assert not valid[0, 1]


def test_limb_mask_is_exactly_its_rectangles_pixel_centres(real_poses, backend):
    kp = real_poses[:20]
    masks = P.part_masks(kp, 128, 64)
    st = P.torso_size(kp)
    ys, xs = np.mgrid[0:128, 0:64]
    centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    checked = 0
    for n in range(20):
        for part in range(2, 10):
            a, b, _, inc_mask, _ = P.LIMB_PARTS[part]
            if not P.present(kp[n, [a, b]]).all():
                assert masks[n, part].sum() == 0
                continue
            rect = P.limb_rectangle(kp[n, a].double(), kp[n, b].double(), st[n].double(), inc_mask).numpy()
            inside = points_in_poly(centres, rect).reshape(128, 64)
            got = masks[n, part].numpy() > 0
            # the only disagreements allowed are centres on an edge (to rounding)
            for y, x in np.argwhere(got != inside):
                dist = min(_distance_to_segment(np.array([x, y], float), rect[i], rect[(i + 1) % 4]) for i in range(4))
                assert dist < 1e-3, (n, part, x, y, dist)
            checked += 1
    assert checked > 50


def _distance_to_segment(p, a, b):
    d = b - a
    t = np.clip(np.dot(p - a, d) / max(np.dot(d, d), 1e-12), 0, 1)
    return float(np.linalg.norm(p - (a + t * d)))


def test_head_mask_square(backend):
    kp = torch.full((18, 2), -1.0)
    kp[P.J["r_shoulder"]] = torch.tensor([20.0, 30.0])
    kp[P.J["l_shoulder"]] = torch.tensor([40.0, 30.0])
    kp[P.J["r_hip"]] = torch.tensor([22.0, 70.0])
    kp[P.J["l_hip"]] = torch.tensor([38.0, 70.0])
    kp[P.J["nose"]] = torch.tensor([31.0, 15.0])
    kp[P.J["r_eye"]] = torch.tensor([28.0, 12.0])
    m = P.part_masks(kp, 128, 64)[1]
    st = P.torso_size(kp).item()
    e = int(0.4 * st)
    cx, cy = int((31 + 28) / 2), int((15 + 12) / 2)
    expected = torch.zeros(128, 64)
    expected[max(cy - e, 0):cy + e + 1, max(cx - e, 0):cx + e + 1] = 1
    assert torch.equal(m, expected)


def test_masks_at_a_downsampled_level_follow_the_scaled_geometry(real_poses, backend):
    kp = real_poses[:4]
    full = P.part_masks(kp, 128, 64)
    half = P.part_masks(kp, 64, 32, scale=2.0)
    # pixel (x, y) of the half level is pixel (2x, 2y) of the full one
    assert (half != full[..., ::2, ::2]).float().mean() < 0.01


def test_batched_results_equal_per_sample_results(real_poses, backend):
    src, tgt = real_poses[:16], real_poses[16:32]
    theta, valid = P.part_affines(src, tgt)
    masks = P.part_masks(tgt, 128, 64)
    for n in range(16):
        t1, v1 = P.part_affines(src[n:n + 1], tgt[n:n + 1])
        assert torch.equal(v1[0], valid[n])
        torch.testing.assert_close(t1[0], theta[n], rtol=1e-5, atol=1e-4)
        assert torch.equal(P.part_masks(tgt[n], 128, 64), masks[n])


def test_global_affine_and_scaling(real_poses, backend):
    theta, valid = P.global_affine(real_poses[:10], real_poses[10:20])
    assert theta.shape == (10, 2, 3) and valid.any()
    same, ok = P.global_affine(real_poses[:3], real_poses[:3])
    torch.testing.assert_close(same[ok], torch.eye(2, 3).expand(int(ok.sum()), 2, 3), atol=1e-4, rtol=0)
    s = P.scale_affines(theta, 4.0)
    assert torch.equal(s[..., :2], theta[..., :2]) and torch.allclose(s[..., 2], theta[..., 2] / 4)


def test_bad_keypoints_shape(backend):
    with pytest.raises(ValueError, match=r"must have shape \[..., 18, 2\]"):
        P.part_masks(torch.zeros(2, 17, 2), 128, 64)
    with pytest.raises(ValueError, match="same shape"):
        P.part_affines(torch.zeros(2, 18, 2), torch.zeros(3, 18, 2))


def test_pose_detection_leaves_the_torch_thread_count_alone():
    """Bug caught: ultralytics' predict sets torch.set_num_threads(1) on the CPU, which left
    training after a detection single-threaded (and its numbers changed)."""
    import numpy as np

    from deformgan.keypoints import load_pose_model, predict
    model = load_pose_model("yolo11n-pose.yaml")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        predict(model, [np.zeros((128, 64, 3), np.uint8)], verbose=False, device="cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- found by mutation testing
def test_coco17_threshold_default_is_0_3_inclusive_and_each_joint_is_judged_alone():
    xy = torch.arange(34, dtype=torch.float32).view(17, 2) + 1
    conf = torch.ones(17)
    conf[0], conf[1] = 0.3, 0.299  # nose exactly at the default threshold: kept; l_eye under: dropped
    kp = P.coco17_to_openpose18(xy, conf)  # the default threshold
    assert torch.equal(kp[P.J["nose"]], xy[0]) and kp[P.J["l_eye"]].tolist() == [-1.0, -1.0]
    # one non-finite coordinate drops that joint only, and missing joints are exactly -1
    xy2 = xy.clone()
    xy2[9, 1] = float("nan")
    kp2 = P.coco17_to_openpose18(xy2)
    assert kp2[P.J["l_wrist"]].tolist() == [-1.0, -1.0]
    assert int(P.present(kp2).sum()) == 17  # the 16 other joints and the neck
    assert kp2.dtype == torch.float32


def test_coco17_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"^xy must have shape \[\.\.\., 17, 2\], got \[2, 16, 2\]$"):
        P.coco17_to_openpose18(torch.zeros(2, 16, 2))
    with pytest.raises(ValueError, match=r"^conf must have shape \[2, 17\], got \[2, 16\]$"):
        P.coco17_to_openpose18(torch.ones(2, 17, 2), torch.ones(2, 16))


def test_flip_of_a_batch_with_missing_joints():
    kp = torch.rand(3, 18, 2) * 50 + 1
    kp[0, P.J["r_knee"]] = -1
    kp[2, P.J["nose"]] = -1
    f = P.flip_keypoints(kp, 64)
    assert f.shape == kp.shape
    assert f[0, P.J["l_knee"]].tolist() == [-1.0, -1.0] and f[2, P.J["nose"]].tolist() == [-1.0, -1.0]
    assert torch.equal(f[1, P.J["l_knee"]], torch.stack([63 - kp[1, P.J["r_knee"], 0], kp[1, P.J["r_knee"], 1]]))
    assert int(P.missing(f).sum()) == 2


def test_global_affine_uses_only_joints_present_in_both_poses(real_poses):
    """A joint missing in the target (but present in the source) must not enter the fit:
    the result equals the fit over the other joints, computed independently with
    scikit-image (target -> source, the original's estimator)."""
    src, tgt = real_poses[:40], real_poses[40:80]
    both = P.present(src) & P.present(tgt)
    n = int(torch.nonzero((both[:, list(P.GLOBAL_JOINTS)].sum(1) >= 5)).flatten()[0])
    s, t = src[n].clone(), tgt[n].clone()
    drop = next(j for j in P.GLOBAL_JOINTS if both[n, j])
    t[drop] = -1  # now missing in the target only
    theta, valid = P.global_affine(s[None], t[None])
    keep = [j for j in P.GLOBAL_JOINTS if bool(P.present(s)[j] and P.present(t)[j])]
    want = estimate_transform("affine", t[keep].double().numpy(), s[keep].double().numpy()).params[:2]
    assert bool(valid[0])
    np.testing.assert_allclose(theta[0].double().numpy(), want, atol=1e-4)


def test_global_affine_errors_name_the_argument():
    good = torch.zeros(1, 18, 2)
    with pytest.raises(ValueError, match="^source_keypoints must"):
        P.global_affine(torch.zeros(1, 17, 2), good)
    with pytest.raises(ValueError, match="^target_keypoints must"):
        P.global_affine(good, torch.zeros(1, 17, 2))
