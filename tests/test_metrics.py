import os

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from deformgan import metrics as MT
from deformgan import pose as P
from deformgan.data.market import read_annotations

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "market")
if not os.path.isdir(SHARED):
    SHARED = "/work/shared/data/market"


def skimage_ssim(g, t):
    g = g.permute(1, 2, 0).numpy()
    t = t.permute(1, 2, 0).numpy()
    return structural_similarity(g, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=-1, data_range=float(g.max()) - float(g.min()))


@pytest.mark.parametrize("shape", [(4, 3, 128, 64), (2, 3, 37, 29)])
def test_ssim_matches_scikit_image(shape):
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    noisy = (target.float() + torch.randn(shape, generator=g) * 40).clamp(0, 255).round().to(torch.uint8)
    smooth = torch.nn.functional.avg_pool2d(target.float(), 3, 1, 1).round().to(torch.uint8)
    for gen in (noisy, smooth, target):
        ours = MT.ssim(gen, target)
        ref = torch.tensor([skimage_ssim(a, b) for a, b in zip(gen, target)], dtype=torch.float64)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)
    assert torch.allclose(MT.ssim(target, target), torch.ones(shape[0], dtype=torch.float64))
    flat = torch.zeros((1,) + shape[1:], dtype=torch.uint8)
    assert torch.isnan(MT.ssim(flat, flat)).all()  # data range 0: NaN, as scikit-image


def test_pose_mask_on_real_rows():
    ann = read_annotations(os.path.join(SHARED, "market-annotation-test.csv"))
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


def test_mask_ssim_matches_scikit_image_on_masked_images():
    ann = read_annotations(os.path.join(SHARED, "market-annotation-test.csv"))
    kp = torch.stack([k for k in list(ann.values())[:40] if P.present(k).sum() >= 10][:3])
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (3, 3, 128, 64), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 3, 128, 64), generator=g, dtype=torch.uint8)
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


def test_inception_score_fid_and_lpips_code_paths_with_random_networks(tmp_path):
    uniform = torch.full((20, 10), 0.1)
    assert MT.inception_score(uniform, splits=2)[0] == pytest.approx(1.0)
    onehot = torch.eye(10).repeat(2, 1)
    assert MT.inception_score(onehot, splits=2)[0] == pytest.approx(10.0, rel=1e-6)
    f = torch.randn(200, 8, dtype=torch.float64)
    mu, s = MT.feature_statistics(f)
    assert MT.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-6)
    assert MT.frechet_distance(mu, s, mu + 1, s) == pytest.approx(8.0, rel=1e-6)
    torch.manual_seed(0)
    inc = MT.InceptionFeatures(weights=None, allow_random=True)
    imgs = torch.rand(2, 3, 128, 64) * 2 - 1
    pool, probs = inc(imgs)
    assert pool.shape == (2, 2048) and probs.shape == (2, 1000)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    lp = MT.LPIPS(alexnet_weights=None, linear_weights=None, allow_random=True)
    d = lp(imgs, imgs.flip(0))
    assert d.shape == (2,) and (d > 0).all() and lp(imgs, imgs).abs().max() < 1e-6
    from torchvision.models import alexnet
    torch.save(alexnet(weights=None).state_dict(), tmp_path / "alex.pth")
    with pytest.raises(RuntimeError, match="linear-layer weights"):
        MT.LPIPS(alexnet_weights=str(tmp_path / "alex.pth"), linear_weights=None, allow_random=False)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(MT.LPIPS.CHANNELS)}
    torch.save(lin, tmp_path / "lin.pth")
    loaded = MT.LPIPS(alexnet_weights=str(tmp_path / "alex.pth"), linear_weights=str(tmp_path / "lin.pth"))
    torch.testing.assert_close(loaded.lins[2].data, lin["lin2.model.1.weight"])
