import os

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from deformgan import metrics as MT
from deformgan import pose as P
from deformgan.data.market import read_annotations
from helpers import market_file, saved_as_on_cuda


def skimage_ssim(g, t):
    g = g.permute(1, 2, 0).numpy()
    t = t.permute(1, 2, 0).numpy()
    return structural_similarity(g, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=-1, data_range=float(g.max()) - float(g.min()))


@pytest.mark.parametrize("shape", [(4, 3, 128, 64), (2, 3, 37, 29), (2, 3, 11, 13), (2, 3, 13, 11)])
def test_ssim_matches_scikit_image(shape):
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    noisy = (target.float() + torch.randn(shape, generator=g) * 40).clamp(0, 255).round().to(torch.uint8)
    smooth = torch.nn.functional.avg_pool2d(target.float(), 3, 1, 1).round().to(torch.uint8)
    # each image its own data range (SSIM's constants are per image)
    ranged = noisy // torch.arange(1, shape[0] + 1, dtype=torch.uint8).view(-1, 1, 1, 1)
    for gen in (noisy, smooth, target, ranged):
        ours = MT.ssim(gen, target)
        ref = torch.tensor([skimage_ssim(a, b) for a, b in zip(gen, target)], dtype=torch.float64)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)
    assert torch.allclose(MT.ssim(target, target), torch.ones(shape[0], dtype=torch.float64))
    flat = torch.zeros((1,) + shape[1:], dtype=torch.uint8)
    assert torch.isnan(MT.ssim(flat, flat)).all()  # data range 0: NaN, as scikit-image
    # smaller than the 11 x 11 window (scikit-image refuses): no pixel to average, NaN
    for small in ((2, 3, 10, 40), (2, 3, 40, 10)):
        img = torch.randint(0, 256, small, generator=g, dtype=torch.uint8)
        out = MT.ssim(img, img)
        assert out.isnan().all() and out.shape == (2,) and out.dtype == torch.float64


def test_pose_mask_on_real_rows():
    ann = read_annotations(market_file("market-annotation-test.csv"))
    kps = [kp for kp in list(ann.values())[:50] if P.present(kp[:14]).all()][:10]
    assert kps
    for kp in kps:
        m = MT.pose_mask(kp)
        for a, b in ((P.J["r_hip"], P.J["r_knee"]), (P.J["l_shoulder"], P.J["l_elbow"]), (P.J["neck"], P.J["r_hip"])):
            x, y = ((kp[a] + kp[b]) / 2).round().long().tolist()
            assert m[y, x], (a, b)
        ys, xs = np.nonzero(~m)
        assert len(ys) > 0
        # pixels more than 12 px from every joint and limb are outside
        pts = kp[P.present(kp)]
        for y, x in [(0, 0), (127, 63), (0, 63), (127, 0)]:
            if float((pts - torch.tensor([x, y])).norm(dim=1).min()) > 12:
                assert not m[y, x]


def real_poses_and_images(n, seed):
    """``n`` real Market test poses (10 or more joints) and two random uint8 batches."""
    ann = read_annotations(market_file("market-annotation-test.csv"))
    kp = torch.stack([k for k in list(ann.values())[:40] if P.present(k).sum() >= 10][:n])
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, (n, 3, 128, 64), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (n, 3, 128, 64), generator=g, dtype=torch.uint8)
    return kp, a, b, g


def test_mask_ssim_matches_scikit_image_on_masked_images():
    kp, a, b, _ = real_poses_and_images(3, 1)
    ours = MT.mask_ssim(a, b, kp)
    for i in range(3):
        m = torch.from_numpy(MT.pose_mask(kp[i])).to(torch.uint8)
        ref = skimage_ssim(a[i] * m, b[i] * m)
        assert ours[i].item() == pytest.approx(ref, abs=1e-9)


def test_pckh_known_answers():
    tgt = torch.full((1, 18, 2), -1.0)
    tgt[0, P.J["nose"]] = torch.tensor([30.0, 10.0])
    tgt[0, P.J["neck"]] = torch.tensor([30.0, 18.0])  # head box 0 x 8: size 8, threshold 4
    tgt[0, P.J["r_hip"]] = torch.tensor([25.0, 60.0])
    tgt[0, P.J["l_hip"]] = torch.tensor([35.0, 60.0])
    pred = tgt.clone()
    pred[0, P.J["r_hip"]] += torch.tensor([3.0, 0.0])  # within 4: correct
    pred[0, P.J["l_hip"]] += torch.tensor([0.0, 5.0])  # 5 > 4: wrong
    pred[0, P.J["nose"]] = -1  # missing: wrong
    frac, n = MT.pckh(pred, tgt)
    assert n == 4 and frac == pytest.approx(2 / 4)


def test_pckh_skips_targets_without_a_head_size_and_honours_the_ratio():
    tgt = torch.full((4, 18, 2), -1.0)
    tgt[:, P.J["nose"]] = torch.tensor([30.0, 10.0])
    tgt[:, P.J["r_hip"]] = torch.tensor([25.0, 60.0])
    # target 0: one head point only (skipped); target 1: two head points in one place
    # (size 0, skipped); both come before the counted ones, which must still count
    tgt[1, P.J["r_eye"]] = torch.tensor([30.0, 10.0])
    tgt[2, P.J["neck"]] = torch.tensor([30.0, 18.0])  # head size 8
    tgt[3, P.J["neck"]] = torch.tensor([30.0, 10.5])  # head size 0.5: small, still counted
    pred = tgt.clone()
    pred[2, P.J["r_hip"]] += torch.tensor([0.0, 6.0])  # 6 px off: within 0.8 x 8, not within 0.5 x 8
    pred[3, P.J["r_hip"]] += torch.tensor([0.0, 0.2])  # within 0.5 x 0.5
    assert MT.pckh(pred, tgt) == (pytest.approx(5 / 6), 6)
    assert MT.pckh(pred, tgt, ratio=0.8) == (pytest.approx(1.0), 6)
    assert MT.pckh(pred, tgt, ratio=0.75) == (pytest.approx(1.0), 6)  # 6 <= 6: the boundary counts
    frac, n = MT.pckh(pred[:2], tgt[:2])
    assert n == 0 and np.isnan(frac)


def test_mask_l1_and_psnr_against_numpy():
    kp, a, b, g = real_poses_and_images(2, 2)
    ours = MT.mask_l1(a, b, kp)
    for i in range(2):
        m = MT.pose_mask(kp[i])[None].astype(np.float64)
        want = np.abs(a[i].numpy() * m - b[i].numpy() * m).mean() / 255
        assert ours[i].item() == pytest.approx(want, rel=1e-12)
        d = a[i].numpy().astype(np.float64) - b[i].numpy()
        assert MT.psnr(a[i:i + 1], b[i:i + 1]).item() == pytest.approx(10 * np.log10(255 ** 2 / (d ** 2).mean()))
    # another size (DeepFashion's 256 x 176): the mask is drawn at the images' size
    big = kp * torch.tensor([176 / 64, 2.0])
    big[~P.present(kp)] = -1
    a2 = torch.randint(0, 256, (2, 3, 256, 176), generator=g, dtype=torch.uint8)
    b2 = torch.randint(0, 256, (2, 3, 256, 176), generator=g, dtype=torch.uint8)
    m = torch.from_numpy(np.stack([MT.pose_mask(k, 256, 176) for k in big]))[:, None].double()
    torch.testing.assert_close(MT.mask_l1(a2, b2, big), MT.l1(a2 * m, b2 * m), rtol=1e-12, atol=0)
    torch.testing.assert_close(MT.mask_ssim(a2, b2, big), MT.ssim(a2 * m, b2 * m), rtol=1e-12, atol=0)
    assert m[:, :, :, 64:].sum() > 0  # the mask reaches beyond the default width of 64
    # identical images: the squared error is floored at 1e-10, not a division by zero
    assert MT.psnr(a, a).tolist() == pytest.approx([10 * np.log10(255 ** 2 / 1e-10)] * 2)


def test_inception_score_known_answers():
    """IS = exp(mean_i KL(p_i || mean p)) per split, then mean and std over the splits:
    uniform rows give 1, one-hot rows over K classes give K, and a worked two-row case."""
    uniform = torch.full((20, 10), 0.1)
    assert MT.inception_score(uniform, splits=2) == pytest.approx((1.0, 0.0))
    onehot = torch.eye(10).repeat(2, 1)
    assert MT.inception_score(onehot, splits=2) == pytest.approx((10.0, 0.0), rel=1e-6)
    # rows [0.8, 0.2] and [0.4, 0.6]: mean [0.6, 0.4]
    kl_a = 0.8 * np.log(0.8 / 0.6) + 0.2 * np.log(0.2 / 0.4)
    kl_b = 0.4 * np.log(0.4 / 0.6) + 0.6 * np.log(0.6 / 0.4)
    two = torch.tensor([[0.8, 0.2], [0.4, 0.6]], dtype=torch.float64)
    assert MT.inception_score(two, splits=1) == pytest.approx((np.exp((kl_a + kl_b) / 2), 0.0), rel=1e-12)
    # five rows in two splits: rows 0-1 (one-hot, score 2) and rows 2-4 (uniform, score 1);
    # a zero probability is not a NaN (0 log 0 = 0)
    five = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    mean, std = MT.inception_score(five, splits=2)
    assert mean == pytest.approx(1.5, rel=1e-9) and std == pytest.approx(0.5, rel=1e-9)
    # the default is the field's 10 splits: 20 rows alternating two one-hot classes give
    # 10 splits of one row of each (score 2 each); 11 splits would make some of one row
    alternating = torch.eye(2).repeat(10, 1)
    assert MT.inception_score(alternating) == pytest.approx((2.0, 0.0), rel=1e-9)
    # more splits than rows: the empty splits are left out
    assert MT.inception_score(onehot[:3, :3], splits=5) == pytest.approx((1.0, 0.0))


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_frechet_distance_against_the_closed_form_of_diagonal_covariances():
    """For diagonal covariances the matrix square root is elementwise:
    FID = |mu1 - mu2|^2 + sum(s1 + s2 - 2 sqrt(s1 s2))."""
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, -1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert MT.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, rel=1e-9)
    # symmetric in its two Gaussians
    assert MT.frechet_distance(mu2, np.diag(s2), mu1, np.diag(s1)) == pytest.approx(want, rel=1e-9)
    # a singular product (a zero variance): the 1e-6 offset keeps the answer finite
    z1, z2 = np.diag([0.0, 1.0]), np.diag([1.0, 0.0])
    assert MT.frechet_distance(np.zeros(2), z1, np.zeros(2), z2) == pytest.approx(2.0, abs=1e-2)


def test_frechet_distance_retries_a_non_finite_square_root_with_the_offset(monkeypatch):
    """When sqrtm(sigma1 sigma2) is not finite (no natural input was found that does it,
    so sqrtm is made to fail once), FID retries with 1e-6 added to both diagonals, as
    the reference FID code does, and uses that root."""
    from scipy import linalg
    real_sqrtm, seen = linalg.sqrtm, []

    def failing_once(m):
        seen.append(m.copy())
        return np.full_like(m, np.nan) if len(seen) == 1 else real_sqrtm(m)

    monkeypatch.setattr(linalg, "sqrtm", failing_once)
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    got = MT.frechet_distance(np.zeros(2), s1, np.ones(2), s2)
    e = 1e-6 * np.eye(2)
    assert len(seen) == 2
    np.testing.assert_allclose(seen[1], (s1 + e) @ (s2 + e), rtol=1e-15, atol=0)
    root = np.sqrt(np.diag(seen[1]))
    assert got == pytest.approx(2.0 + 10.0 + 5.0 - 2 * root.sum(), rel=1e-12)


def test_feature_statistics_are_the_mean_and_the_unbiased_covariance():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(50, 4, generator=g, dtype=torch.float64)
    mu, sigma = MT.feature_statistics(f)
    np.testing.assert_allclose(mu, f.mean(0).numpy(), rtol=1e-12)
    centred = (f - f.mean(0)).numpy()
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(f) - 1), rtol=1e-10)
    mu, s = MT.feature_statistics(torch.randn(200, 8, generator=g, dtype=torch.float64))
    assert MT.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-6)
    assert MT.frechet_distance(mu, s, mu + 1, s) == pytest.approx(8.0, rel=1e-6)


def test_inception_features_with_random_weights():
    torch.manual_seed(0)
    inc = MT.InceptionFeatures(weights=None, allow_random=True)
    imgs = torch.rand(2, 3, 128, 64) * 2 - 1
    pool, probs = inc(imgs)
    assert pool.shape == (2, 2048) and probs.shape == (2, 1000)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    # the probabilities are the softmax of the saved classifier on the pool features
    torch.testing.assert_close(probs, torch.softmax(pool @ inc.net.fc_saved.weight.T + inc.net.fc_saved.bias, 1))
    # random networks are the same in every process (seeded inside), and tell images apart
    assert not torch.allclose(pool[0], pool[1])
    with pytest.raises(RuntimeError, match=r"^Inception weights=None needs allow_random=True$"):
        MT.InceptionFeatures(weights=None)


def patch_imagenet_weights(monkeypatch, weights_enum, state):
    """torchvision's weights mechanism for ``weights_enum`` (nothing can be downloaded
    here) answering ``state``; returns the list of the calls it gets (member, args, kwargs)."""
    asked = []

    def get_state_dict(self, *args, **kwargs):
        asked.append((self, args, kwargs))
        return state
    monkeypatch.setattr(weights_enum, "get_state_dict", get_state_dict)
    return asked


def test_inception_weights_imagenet_by_default_a_file_or_seeded_random(tmp_path, monkeypatch):
    """The random network is torchvision's Inception v3 (with its auxiliary classifier)
    built under seed 0 without init_weights (the same in every process); a state-dict
    file of torchvision's keys loads; "imagenet", the default, goes through torchvision's
    weights mechanism (patched here: nothing can be downloaded) with no progress bar."""
    from torchvision.models import Inception_V3_Weights, inception_v3
    torch.manual_seed(0)
    ref = inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.manual_seed(123)
    rnd = MT.InceptionFeatures(weights=None, allow_random=True)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))  # the caller's random state untouched
    assert torch.equal(rnd.net.Conv2d_1a_3x3.conv.weight, ref.Conv2d_1a_3x3.conv.weight)
    assert torch.equal(rnd.net.fc_saved.weight, ref.fc.weight)
    # the random network's BatchNorm statistics: one pass in training mode, cumulative
    # averages, over 4 noise images of 299x299 drawn under seed 0 (auxiliary head off)
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    torch.manual_seed(0)
    with torch.no_grad():
        ref.train()._forward(torch.randn(4, 3, 299, 299))
    for name in ("Conv2d_1a_3x3", "Mixed_7c.branch_pool"):
        for stat in ("running_mean", "running_var"):
            assert torch.equal(rnd.net.get_submodule(name).bn.get_buffer(stat), ref.get_submodule(name).bn.get_buffer(stat))
    assert rnd.net.state_dict().keys() == (ref.state_dict().keys() - {"fc.weight", "fc.bias"}) | {"fc_saved.weight", "fc_saved.bias"}
    assert not any(k in rnd.state_dict() for k in ("mean", "std"))  # the normalisation is not saved
    state = {k: v * 0.5 if v.is_floating_point() else v for k, v in ref.state_dict().items()}
    assert any(k.startswith("AuxLogits.") for k in state)
    torch.save(state, tmp_path / "inception.pth")
    loaded = MT.InceptionFeatures(weights=str(tmp_path / "inception.pth"))
    assert torch.equal(loaded.net.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    assert torch.equal(loaded.net.fc_saved.bias, state["fc.bias"])
    # loaded BatchNorm statistics are kept (only random networks get the noise pass)
    assert torch.equal(loaded.net.Conv2d_1a_3x3.bn.running_var, state["Conv2d_1a_3x3.bn.running_var"])
    with saved_as_on_cuda():  # a file written by a GPU run loads on this CPU-only machine
        torch.save(state, tmp_path / "inception_cuda.pth")
    from_gpu = MT.InceptionFeatures(weights=str(tmp_path / "inception_cuda.pth"))
    assert torch.equal(from_gpu.net.Mixed_6a.branch3x3.conv.weight, state["Mixed_6a.branch3x3.conv.weight"])
    import fractions
    import pickle
    torch.save({"Conv2d_1a_3x3.conv.weight": fractions.Fraction(1, 2)}, tmp_path / "pickle.pth")
    with pytest.raises(pickle.UnpicklingError):  # weights only: no arbitrary objects unpickled
        MT.InceptionFeatures(weights=str(tmp_path / "pickle.pth"))
    asked = patch_imagenet_weights(monkeypatch, Inception_V3_Weights, state)
    default = MT.InceptionFeatures()
    assert asked == [(Inception_V3_Weights.IMAGENET1K_V1, (), {"progress": False})]
    assert torch.equal(default.net.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])


def lpips_by_hand(lp, a, b):
    """LPIPS written out from its definition with torchvision's AlexNet layers: the
    five ReLU outputs of each image, unit-normalised over channels, squared
    differences weighted by lin_k, summed over channels, averaged over space, summed
    over the five layers."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    feats = lp.features
    total = torch.zeros(a.shape[0])
    xa, xb = (a - shift) / scale, (b - shift) / scale
    for i in range(12):
        xa, xb = feats[i](xa), feats[i](xb)
        if i in (1, 4, 7, 9, 11):
            k = (1, 4, 7, 9, 11).index(i)
            na = xa / (xa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = xb / (xb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total += ((na - nb) ** 2 * lp.lins[k].data).sum(1).mean((1, 2))
    return total


def test_lpips_against_its_definition_and_its_weight_files(tmp_path):
    lp = MT.LPIPS(alexnet_weights=None, linear_weights=None, allow_random=True)
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    other = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    d = lp(imgs, other)
    torch.testing.assert_close(d, lpips_by_hand(lp, imgs, other), rtol=1e-5, atol=1e-7)
    assert d.shape == (2,) and (d > 0).all() and lp(imgs, imgs).abs().max() < 1e-6
    # one weight per channel, as in the LPIPS package's files; AlexNet cut after relu5
    # (its last max-pool unused); the input normalisation is not part of the state dict
    assert [tuple(w.shape) for w in lp.lins] == [(1, c, 1, 1) for c in MT.LPIPS.CHANNELS]
    assert len(lp.features) == 12 and isinstance(lp.features[11], torch.nn.ReLU)
    assert not any(k in lp.state_dict() for k in ("shift", "scale"))
    with pytest.raises(RuntimeError, match=r"^AlexNet weights=None needs allow_random=True$"):
        MT.LPIPS(alexnet_weights=None, linear_weights=None)
    from torchvision.models import alexnet
    net = alexnet(weights=None)
    torch.save(net.state_dict(), tmp_path / "alex.pth")
    with pytest.raises(RuntimeError, match=r"^LPIPS needs its linear-layer weights \(linear_weights=PATH\)$"):
        MT.LPIPS(alexnet_weights=str(tmp_path / "alex.pth"), linear_weights=None, allow_random=False)
    # the LPIPS package's key names, and plain lin0..lin4
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(MT.LPIPS.CHANNELS)}
    torch.save(lin, tmp_path / "lin.pth")
    loaded = MT.LPIPS(alexnet_weights=str(tmp_path / "alex.pth"), linear_weights=str(tmp_path / "lin.pth"))
    for i in range(5):
        torch.testing.assert_close(loaded.lins[i].data, lin[f"lin{i}.model.1.weight"])
    torch.testing.assert_close(loaded.features[3].weight, net.features[3].weight)
    plain = {f"lin{i}": torch.rand(1, c, 1, 1) for i, c in enumerate(MT.LPIPS.CHANNELS)}
    torch.save(plain, tmp_path / "plain.pth")
    loaded = MT.LPIPS(alexnet_weights=str(tmp_path / "alex.pth"), linear_weights=str(tmp_path / "plain.pth"))
    torch.testing.assert_close(loaded.lins[4].data, plain["lin4"])
    torch.testing.assert_close(loaded(imgs, other), lpips_by_hand(loaded, imgs, other), rtol=1e-5, atol=1e-7)
    with saved_as_on_cuda():  # files written by a GPU run load on this CPU-only machine
        torch.save(net.state_dict(), tmp_path / "alex_cuda.pth")
        torch.save(plain, tmp_path / "plain_cuda.pth")
    from_gpu = MT.LPIPS(alexnet_weights=str(tmp_path / "alex_cuda.pth"), linear_weights=str(tmp_path / "plain_cuda.pth"))
    assert torch.equal(from_gpu.features[8].weight, net.features[8].weight)
    assert torch.equal(from_gpu.lins[2].data, plain["lin2"])
    import fractions
    import pickle
    torch.save({"lin0": fractions.Fraction(1, 2)}, tmp_path / "pickle.pth")
    for files in ({"alexnet_weights": str(tmp_path / "pickle.pth"), "linear_weights": str(tmp_path / "lin.pth")},
                  {"alexnet_weights": str(tmp_path / "alex.pth"), "linear_weights": str(tmp_path / "pickle.pth")}):
        with pytest.raises(pickle.UnpicklingError):  # weights only: no arbitrary objects unpickled
            MT.LPIPS(**files)


def test_lpips_alexnet_from_imagenet_by_default(tmp_path, monkeypatch):
    """alexnet_weights="imagenet", the default, goes through torchvision's weights
    mechanism (patched: nothing can be downloaded here) with no progress bar."""
    from torchvision.models import AlexNet_Weights, alexnet
    state = {k: v * 0.5 for k, v in alexnet(weights=None).state_dict().items()}
    asked = patch_imagenet_weights(monkeypatch, AlexNet_Weights, state)
    torch.save({f"lin{i}": torch.rand(1, c, 1, 1) for i, c in enumerate(MT.LPIPS.CHANNELS)}, tmp_path / "lin.pth")
    lp = MT.LPIPS(linear_weights=str(tmp_path / "lin.pth"))
    assert asked == [(AlexNet_Weights.IMAGENET1K_V1, (), {"progress": False})]
    assert torch.equal(lp.features[10].weight, state["features.10.weight"])
