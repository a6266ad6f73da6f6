"""deformgan/scoring.py, function by function, against independent oracles: hashes and
file lists computed here with hashlib / literal answers, FID statistics with numpy on the
images read back here, and the Scorer's accumulation with small recording stand-ins for
the networks (so that every number it reports can be worked out from what they saw).
The real networks go through the same paths in tests/test_evaluate_folders.py."""
import hashlib
import math
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import keypoints as K
from deformgan import metrics as MT
from deformgan import scoring as S
from helpers import assert_refused

CPU = torch.device("cpu")


def unit(img_uint8):
    """uint8 -> [-1, 1], written out here (not the module's to_unit)."""
    return np.asarray(img_uint8, dtype=np.float64) * (2.0 / 255.0) - 1.0


# ---------------------------------------------------------------- small functions
def test_to_unit_maps_the_uint8_range_onto_minus_one_one():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    y = S.to_unit(x)
    assert y.dtype == torch.float32
    assert y.tolist() == pytest.approx([-1.0, -0.6, 1.0], abs=1e-7)


def test_image_files_by_extension_case_insensitive_sorted_files_only(tmp_path):
    for name in ("g.JPG", "f.webp", "e.bmp", "d.jpeg", "c.txt", "b.PNG", "a.jpg", "i.gif", "jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "h.png").mkdir()  # a folder named like an image is not an image
    assert S.image_files(str(tmp_path)) == ["a.jpg", "b.PNG", "d.jpeg", "e.bmp", "f.webp", "g.JPG"]


def test_file_digest_is_the_sha256_of_the_whole_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (5 << 19) + 7, dtype=np.uint8).tobytes()  # 2.5 MiB + 7
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert S._file_digest(str(path)) == hashlib.sha256(data).hexdigest()


def test_folder_key_digests_every_name_and_its_bytes(tmp_path):
    (tmp_path / "a.png").write_bytes(b"first")
    (tmp_path / "b.png").write_bytes(b"second")
    h = hashlib.sha256()
    for name, data in (("a.png", b"first"), ("b.png", b"second")):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).hexdigest().encode())
    key = S.folder_key(str(tmp_path), ["a.png", "b.png"])
    assert key == h.hexdigest()
    (tmp_path / "b.png").write_bytes(b"changed")
    assert S.folder_key(str(tmp_path), ["a.png", "b.png"]) != key


def test_write_json_replaces_the_file_in_one_step(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    obj = {"ssim": 0.5, "skipped": {"FID": "why"}, "list": [1, 2]}
    S.write_json(str(path), obj)
    assert path.read_text() == json.dumps(obj, indent=1)
    assert os.listdir(tmp_path) == ["metrics.json"]


# ---------------------------------------------------------------- build_networks
class _Net(torch.nn.Module):
    """Stands in for LPIPS / InceptionFeatures: records its arguments and the device it
    was moved to; raises ``fail`` if given one; warns on construction."""
    made = []
    fail = {}

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args, self.kwargs, self.device = args, kwargs, None
        type(self).made.append(self)
        warnings.warn("a library warning while loading")
        if type(self).__name__ in self.fail:
            raise self.fail[type(self).__name__]

    def to(self, device):
        self.device = device
        return self


class _LPIPS(_Net):
    pass


class _Inception(_Net):
    pass


@pytest.fixture
def stub_networks(monkeypatch):
    _Net.made, _Net.fail = [], {}
    poses = []

    def load_pose_model(weights):
        poses.append(weights)
        if "_Pose" in _Net.fail:
            raise _Net.fail["_Pose"]
        return ("pose model", weights)

    monkeypatch.setattr(MT, "LPIPS", _LPIPS)
    monkeypatch.setattr(MT, "InceptionFeatures", _Inception)
    monkeypatch.setattr(K, "load_pose_model", load_pose_model)
    return poses


def built(kind):
    return [n for n in _Net.made if isinstance(n, kind)]


def test_build_networks_defaults(stub_networks):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loaders' warnings are silenced, not raised
        nets = S.build_networks("cpu")
    assert nets.device == CPU and nets.skipped == {}
    (lp,), (inc,) = built(_LPIPS), built(_Inception)
    assert lp.args == ("imagenet", None) and lp.kwargs == {"allow_random": False} and lp.device == CPU
    assert inc.args == ("imagenet",) and inc.kwargs == {"allow_random": False} and inc.device == CPU
    assert nets.lpips is lp and nets.inception is inc and nets.inception_key == "torchvision-IMAGENET1K_V1"
    assert stub_networks == ["yolo11n-pose.pt"] and nets.pose_model == ("pose model", "yolo11n-pose.pt")


def test_build_networks_random_for_tests(stub_networks):
    nets = S.build_networks("cpu", inception_weights="random", alexnet_weights="random", lpips_weights="random",
                            pose_weights="pose.yaml", allow_random=True)
    (lp,), (inc,) = built(_LPIPS), built(_Inception)
    assert lp.args == (None, None) and lp.kwargs == {"allow_random": True}
    assert inc.args == (None,) and inc.kwargs == {"allow_random": True}
    assert nets.inception_key == "random-seed0" and stub_networks == ["pose.yaml"] and nets.skipped == {}
    # random AlexNet with given LPIPS layers; lpips_weights None is random too
    S.build_networks("cpu", alexnet_weights="random", lpips_weights="lin.pth", allow_random=True)
    S.build_networks("cpu", alexnet_weights="alex.pth", lpips_weights=None, allow_random=True)
    assert [n.args for n in built(_LPIPS)[1:]] == [(None, "lin.pth"), ("alex.pth", None)]
    # without allow_random, "random" is just a name passed on (and fails to load there)
    _Net.fail = {"_Inception": FileNotFoundError("random")}
    nets = S.build_networks("cpu", inception_weights="random", alexnet_weights="random", lpips_weights="random")
    assert built(_LPIPS)[-1].args == ("random", "random") and built(_Inception)[-1].args == ("random",)
    assert nets.skipped == {"IS/FID": "FileNotFoundError: random"} and nets.inception_key is None


def test_build_networks_inception_file_key_is_its_sha256(stub_networks, tmp_path):
    path = tmp_path / "inception.pth"
    path.write_bytes(b"weights")
    nets = S.build_networks(CPU, inception_weights=str(path))
    assert built(_Inception)[0].args == (str(path),)
    assert nets.inception_key == "sha256-" + hashlib.sha256(b"weights").hexdigest()


def test_build_networks_none_disables_each_group(stub_networks):
    nets = S.build_networks("cpu", inception_weights="none", lpips_weights="none", pose_weights="none")
    assert nets.skipped == {"LPIPS": "disabled (weights 'none')", "IS/FID": "disabled (weights 'none')",
                            "PCKh": "disabled (weights 'none')"}
    assert (nets.lpips, nets.inception, nets.pose_model, nets.inception_key) == (None, None, None, None)
    assert _Net.made == [] and stub_networks == []
    nets = S.build_networks("cpu", alexnet_weights="none", lpips_weights="lin.pth", allow_random=True)
    assert nets.skipped == {"LPIPS": "disabled (weights 'none')"} and built(_LPIPS) == []


def test_build_networks_failures_are_skipped_with_the_reason(stub_networks):
    long = "x" * 250
    _Net.fail = {"_LPIPS": RuntimeError("LPIPS needs its linear-layer weights (linear_weights=PATH)"),
                 "_Inception": OSError(long), "_Pose": FileNotFoundError("no yolo")}
    nets = S.build_networks("cpu")
    assert nets.skipped == {
        "LPIPS": "no --lpips-weights (the LPIPS linear layers) given; "
                 "RuntimeError: LPIPS needs its linear-layer weights (linear_weights=PATH)",
        "IS/FID": "OSError: " + "x" * 200,
        "PCKh": "FileNotFoundError: no yolo"}
    assert (nets.lpips, nets.inception, nets.pose_model, nets.inception_key) == (None, None, None, None)
    # with the LPIPS layers given (or random networks allowed), the failure is reported as it is
    for kw in (dict(lpips_weights="lin.pth"), dict(allow_random=True)):
        assert S.build_networks("cpu", **kw).skipped["LPIPS"] == \
            "RuntimeError: LPIPS needs its linear-layer weights (linear_weights=PATH)"


# ---------------------------------------------------------------- reference_statistics
class FeatureNet(torch.nn.Module):
    """An 'Inception' whose pool features are the per-channel means and the mean of
    squares (4 numbers) and whose class probabilities come from the channel means;
    records every batch it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        x = x.double()
        feats = torch.cat([x.mean((2, 3)), (x * x).mean((1, 2, 3))[:, None]], 1)
        probs = torch.softmax(40 * torch.cat([x.mean((2, 3)), -x.mean((1, 2, 3))[:, None]], 1), 1)
        return feats.float(), probs.float()


def oracle_features(img_uint8):
    """FeatureNet's features worked out in numpy from an HxWx3 uint8 image."""
    u = unit(img_uint8)
    return np.concatenate([u.mean((0, 1)), [(u * u).mean()]])


def oracle_probs(img_uint8):
    u = unit(img_uint8)
    z = 40 * np.concatenate([u.mean((0, 1)), [-u.mean()]])
    e = np.exp(z - z.max())
    return e / e.sum()


def _save(folder, name, img):
    Image.fromarray(img).save(folder / name)


@pytest.fixture
def reference_folder(tmp_path):
    """Seven PNG images of two sizes, interleaved by name."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "ref"
    folder.mkdir()
    sizes = {"a": (8, 6), "b": (8, 6), "c": (10, 4), "d": (8, 6), "e": (8, 6), "f": (8, 6), "g": (10, 4)}
    images = {}
    for k, (h, w) in sizes.items():
        images[f"{k}.png"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        _save(folder, f"{k}.png", images[f"{k}.png"])
    (folder / "notes.txt").write_text("not an image")
    return folder, images


def test_reference_statistics_match_numpy_batches_split_at_size_changes(reference_folder, capsys):
    folder, images = reference_folder
    net = FeatureNet()
    nets = S.Networks(CPU, inception=net, inception_key="stub")
    mu, sigma, count, cached = S.reference_statistics(str(folder), nets, batch_size=2, progress=False)
    feats = np.stack([oracle_features(images[n]) for n in sorted(images)])
    assert count == 7 and cached is False
    np.testing.assert_allclose(mu, feats.mean(0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(feats.T), rtol=0, atol=1e-6)
    assert [tuple(x.shape) for x in net.seen] == [(2, 3, 8, 6), (1, 3, 10, 4), (2, 3, 8, 6), (1, 3, 8, 6),
                                                  (1, 3, 10, 4)]
    np.testing.assert_allclose(net.seen[1][0].numpy(), unit(images["c.png"]).transpose(2, 0, 1), atol=1e-6)
    assert capsys.readouterr().err == ""
    S.reference_statistics(str(folder), S.Networks(CPU, inception=FeatureNet()))  # progress shown by default
    err = capsys.readouterr().err
    assert "FID reference: " in err and "7/7" in err and "img/s" in err


def test_reference_statistics_default_batch_is_32(tmp_path):
    rng = np.random.default_rng(4)
    for i in range(33):
        _save(tmp_path, f"{i:02d}.png", rng.integers(0, 256, (4, 3, 3), dtype=np.uint8))
    net = FeatureNet()
    S.reference_statistics(str(tmp_path), S.Networks(CPU, inception=net), progress=False)
    assert [len(x) for x in net.seen] == [32, 1]


def test_reference_statistics_default_batch_and_cache(reference_folder, tmp_path):
    folder, images = reference_folder
    for name in ("c.png", "g.png"):  # one size only: one batch of five at the default batch size
        os.remove(folder / name)
    net = FeatureNet()
    nets = S.Networks(CPU, inception=net, inception_key="stub")
    cache = tmp_path / "cache" / "fid"
    mu, sigma, count, cached = S.reference_statistics(str(folder), nets, cache_dir=str(cache), progress=False)
    assert [len(x) for x in net.seen] == [5] and (count, cached) == (5, False)
    names = sorted(images)[:2] + sorted(images)[3:6]
    key = hashlib.sha256((S.folder_key(str(folder), names) + "|stub").encode()).hexdigest()[:32]
    assert os.listdir(cache) == [f"fid-reference-{key}.npz"]
    with np.load(cache / f"fid-reference-{key}.npz") as z:
        assert str(z["folder"]) == os.path.abspath(folder) and int(z["count"]) == 5
    # the second call reads the cache and runs no network
    mu2, sigma2, count2, cached2 = S.reference_statistics(str(folder), nets, cache_dir=str(cache), progress=False)
    assert len(net.seen) == 1 and (count2, cached2) == (5, True)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    # other Inception weights are another key
    other = S.Networks(CPU, inception=FeatureNet(), inception_key="other")
    assert S.reference_statistics(str(folder), other, cache_dir=str(cache), progress=False)[3] is False
    assert len(os.listdir(cache)) == 2


def test_reference_statistics_refuses_an_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    assert_refused(FileNotFoundError, f"no images in the FID reference folder {tmp_path}",
                   S.reference_statistics, str(tmp_path), S.Networks(CPU, inception=FeatureNet()), progress=False)


# ---------------------------------------------------------------- Scorer
class DistanceNet(torch.nn.Module):
    """An 'LPIPS': per-image mean squared difference of its two inputs; records them."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, a, b):
        self.seen.append((a.clone(), b.clone()))
        return ((a.double() - b.double()) ** 2).mean((1, 2, 3)).float()


class PoseModel:
    """An ultralytics-like model: ``predict`` returns, for each image, its index in the call."""

    def __init__(self):
        self.calls = []

    def predict(self, images, **kwargs):
        self.calls.append(([im.copy() for im in images], kwargs))
        return list(range(len(images)))


def _pose(shift):
    kp = torch.tensor([[3, 2], [3, 5], [1, 5], [1, 7], [1, 9], [5, 5], [5, 7], [5, 9], [2, 9], [2, 11], [2, 13],
                       [4, 9], [4, 11], [4, 13], [2, 1], [4, 1], [1, 1], [5, 1]], dtype=torch.float32)
    kp = kp * 3  # a 40x24 person
    kp[:, 1] += shift
    return kp


def _batch(seed, n, H=40, W=24):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 256, (n, 3, H, W), dtype=np.uint8)
    g = np.clip(t.astype(np.int64) + rng.integers(-40, 41, t.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(g), torch.from_numpy(t)


@pytest.fixture
def scored(monkeypatch):
    """Two batches (7 and 13 images: the mean over images differs from the mean of the two
    batch means; 20 images make two per Inception-score split) scored with every stand-in
    network and target keypoints."""
    confs = []

    def result_to_keypoints(result, conf):
        confs.append(conf)
        return _pose(12 * (result % 2))  # odd images of a batch: 12 pixels lower than the target pose

    monkeypatch.setattr(K, "result_to_keypoints", result_to_keypoints)
    nets = S.Networks(CPU, lpips=DistanceNet(), inception=FeatureNet(), pose_model=PoseModel(),
                      skipped={"X": "given reason"})
    scorer = S.Scorer(nets)
    batches = [_batch(1, 7), _batch(2, 13)]
    kps = [torch.stack([_pose(0)] * 7), torch.stack([_pose(2 * (i % 3 == 2)) for i in range(13)])]
    for (g, t), k in zip(batches, kps):
        scorer.add(g, t, k)
    return scorer, nets, batches, kps, confs


def test_scorer_per_image_scores_are_means_over_all_images(scored):
    scorer, nets, batches, kps, _ = scored
    g = torch.cat([b[0] for b in batches])
    t = torch.cat([b[1] for b in batches])
    k = torch.cat(kps)
    out = scorer.result()
    assert out["pairs"] == 20
    expect = {"ssim": MT.ssim(g, t), "l1": MT.l1(g, t), "psnr": MT.psnr(g, t),
              "mask_ssim": MT.mask_ssim(g, t, k), "mask_l1": MT.mask_l1(g, t, k)}
    for name, per_image in expect.items():
        assert out[name] == pytest.approx(per_image.double().mean().item(), rel=1e-12), name
    lp = [((unit(a) - unit(b)) ** 2).mean() for a, b in zip(g.numpy(), t.numpy())]
    assert out["lpips"] == pytest.approx(np.mean(lp), rel=1e-5)
    assert all(type(out[k]) is float for k in ("ssim", "l1", "psnr", "mask_ssim", "mask_l1", "lpips"))


def test_scorer_networks_see_the_images_in_minus_one_one(scored):
    scorer, nets, batches, kps, _ = scored
    (g, t) = batches[1]
    a, b = nets.lpips.seen[1]
    np.testing.assert_allclose(a.numpy(), unit(g.numpy()), atol=1e-6)
    np.testing.assert_allclose(b.numpy(), unit(t.numpy()), atol=1e-6)
    # Inception: the image, then the image with everything outside the target's pose mask set to -1
    full, masked = nets.inception.seen[2], nets.inception.seen[3]
    np.testing.assert_allclose(full.numpy(), unit(g.numpy()), atol=1e-6)
    for i in range(13):
        m = MT.pose_mask(kps[1][i], 40, 24)
        assert 0 < m.sum() < m.size
        expect = np.where(m[None], unit(g[i].numpy()), -1.0)
        np.testing.assert_allclose(masked[i].numpy(), expect, atol=1e-6)


def test_scorer_inception_score_and_fid(scored):
    scorer, nets, batches, kps, _ = scored
    g = np.concatenate([b[0].numpy() for b in batches]).transpose(0, 2, 3, 1)
    k = torch.cat(kps)
    probs = torch.tensor(np.stack([oracle_probs(x) for x in g]))
    masked = [np.where(MT.pose_mask(k[i], 40, 24)[..., None], g[i], 0) for i in range(20)]
    # masked pixels are -1 = unit(0): the mask-IS images are the images blacked out outside the mask
    mask_probs = torch.tensor(np.stack([oracle_probs(x) for x in masked]))
    feats = np.stack([oracle_features(x) for x in g])
    ref_mu, ref_sigma = np.full(4, 0.1), np.eye(4) * 0.2
    out = scorer.result(fid_reference=(ref_mu, ref_sigma))
    assert (out["is"], out["is_std"]) == pytest.approx(MT.inception_score(probs), rel=1e-5)
    assert (out["mask_is"], out["mask_is_std"]) == pytest.approx(MT.inception_score(mask_probs), rel=1e-5)
    assert out["is"] != pytest.approx(out["mask_is"], rel=1e-3)
    assert out["fid"] == pytest.approx(MT.frechet_distance(feats.mean(0), np.cov(feats.T), ref_mu, ref_sigma),
                                       rel=1e-5)
    assert out["skipped"] == {"X": "given reason"}
    no_ref = scorer.result()
    assert "fid" not in no_ref and no_ref["skipped"] == {
        "X": "given reason", "FID": "no reference set (give --fid-reference DIR: the training images)"}
    assert nets.skipped == {"X": "given reason"}  # the networks' own list is not changed


def test_scorer_pckh_from_the_pose_model_on_bgr_images(scored):
    scorer, nets, batches, kps, confs = scored
    out = scorer.result()
    pred = torch.stack([_pose(12 * (i % 2)) for n in (7, 13) for i in range(n)])
    assert (out["pckh"], out["pckh_joints"]) == MT.pckh(pred, torch.cat(kps))
    assert 0.3 < out["pckh"] < 0.8 and confs == [0.3] * 20
    images, kwargs = nets.pose_model.calls[1]
    assert kwargs == {"verbose": False} and len(images) == 13
    for im, x in zip(images, batches[1][0]):
        assert im.shape == (40, 24, 3) and im.dtype == np.uint8
        np.testing.assert_array_equal(im[:, :, ::-1], x.permute(1, 2, 0).numpy())  # BGR, as OpenCV reads


def test_scorer_without_keypoints_skips_the_mask_metrics(monkeypatch):
    nets = S.Networks(CPU, lpips=DistanceNet(), inception=FeatureNet(), pose_model=PoseModel())
    scorer = S.Scorer(nets)
    g, t = _batch(5, 2)
    scorer.add(g, t)
    out = scorer.result()
    assert nets.pose_model.calls == [] and len(nets.inception.seen) == 1  # no masked pass
    assert set(out) == {"pairs", "ssim", "l1", "psnr", "lpips", "is", "is_std", "skipped"}
    assert out["skipped"] == {
        "mask-SSIM/mask-L1/mask-IS/PCKh": "no target keypoints (give --annotations)",
        "FID": "no reference set (give --fid-reference DIR: the training images)"}
    # one batch without keypoints among batches with them: the mask metrics would cover only
    # part of the images, so they are not reported
    monkeypatch.setattr(K, "result_to_keypoints", lambda r, conf: _pose(0))
    scorer.add(g, t, torch.stack([_pose(0), _pose(0)]))
    out = scorer.result()
    assert not {"mask_ssim", "mask_l1", "mask_is"} & set(out) and "pckh" in out and out["pairs"] == 4


def test_scorer_without_networks_reports_only_the_image_metrics():
    scorer = S.Scorer(S.Networks(CPU, skipped={"IS/FID": "disabled"}))
    g, t = _batch(6, 2)
    scorer.add(g, t, torch.stack([_pose(0), _pose(0)]))
    out = scorer.result(fid_reference=(np.zeros(4), np.eye(4)))
    assert set(out) == {"pairs", "ssim", "l1", "psnr", "mask_ssim", "mask_l1", "skipped"}
    assert out["skipped"] == {"IS/FID": "disabled"}
    # a reason the networks already give for FID is kept
    s2 = S.Scorer(S.Networks(CPU, inception=FeatureNet(), skipped={"FID": "own reason"}))
    s2.add(g, t)
    assert s2.result()["skipped"]["FID"] == "own reason"


def test_scorer_refuses_other_dtypes_and_shapes():
    scorer = S.Scorer(S.Networks(CPU))
    g, t = _batch(7, 2)
    for a, b in ((g.float(), t), (g, t.float())):
        assert_refused(TypeError, "Scorer.add expects uint8 images", scorer.add, a, b)
    assert_refused(ValueError, "generated (2, 3, 40, 24) and target (2, 3, 40, 7) must both be [N, 3, H, W]",
                   scorer.add, g, t[..., :7])
    assert_refused(ValueError, "generated (3, 40, 24) and target (3, 40, 24) must both be [N, 3, H, W]",
                   scorer.add, g[0], t[0])
    assert_refused(ValueError, "generated (2, 1, 40, 24) and target (2, 1, 40, 24) must both be [N, 3, H, W]",
                   scorer.add, g[:, :1], t[:, :1])
    assert scorer.count == 0 and scorer.scores["ssim"] == []


class DeviceNet(torch.nn.Module):
    """Records the device of every input; answers with CPU tensors of the right shapes."""

    def __init__(self):
        super().__init__()
        self.devices = []

    def forward(self, x, y=None):
        self.devices += [t.device for t in (x, y) if t is not None]
        n = x.shape[0]
        if y is not None:
            return torch.zeros(n)
        return torch.rand(n, 4, dtype=torch.float64), torch.full((n, 5), 0.2)


def test_the_networks_get_their_inputs_on_the_networks_device(tmp_path):
    """Networks on another device (here "meta", the only other device a CPU machine has)
    receive every input there: the images, the targets, the masked images."""
    meta = torch.device("meta")
    lp, inc = DeviceNet(), DeviceNet()
    scorer = S.Scorer(S.Networks(meta, lpips=lp, inception=inc))
    g, t = _batch(8, 2)
    scorer.add(g, t, torch.stack([_pose(0), _pose(0)]))
    assert lp.devices == [meta, meta] and inc.devices == [meta, meta]
    assert scorer.result()["mask_is"] == pytest.approx(1.0)
    _save(tmp_path, "a.png", np.zeros((4, 3, 3), dtype=np.uint8))
    _save(tmp_path, "b.png", np.ones((4, 3, 3), dtype=np.uint8))
    inc.devices.clear()
    S.reference_statistics(str(tmp_path), S.Networks(meta, inception=inc), progress=False)
    assert inc.devices == [meta]


def test_undefined_scores_are_left_out_of_the_means_and_counted(tmp_path):
    """A target pose with no joint (an empty pose mask: 3,445 rows of the real Market test
    annotations) and a black generated image make some per-image SSIMs undefined: they
    are left out of the means and counted with the reason; metrics.json holds no NaN."""
    import json

    from deformgan.evaluate import markdown_table
    from deformgan_ops.skeleton import example_poses
    nets = S.build_networks("cpu", inception_weights="none", alexnet_weights="none", pose_weights="none")
    scorer = S.Scorer(nets)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 256, (3, 3, 128, 64), generator=g, dtype=torch.uint8)
    generated = torch.randint(0, 256, (3, 3, 128, 64), generator=g, dtype=torch.uint8)
    generated[2] = 0  # a black generated image: SSIM and mask-SSIM undefined
    kps = example_poses()[:3].float()
    kps[1] = -1  # no joint: the pose mask is empty, mask-SSIM undefined
    scorer.add(generated, target, kps)
    res = scorer.result()
    assert scorer.scores["ssim"][2] == 0.0 and res["ssim"] == pytest.approx(np.mean(scorer.scores["ssim"]))
    want_mask = [v for v in scorer.scores["mask_ssim"] if not math.isnan(v)]
    assert len(want_mask) == 1 and res["mask_ssim"] == pytest.approx(want_mask[0])
    assert res["left_out"] == {"mask_ssim": {"count": 2, "of": 3, "reason": S.UNDEFINED["mask_ssim"]}}
    assert "empty pose mask" in res["left_out"]["mask_ssim"]["reason"]
    S.write_json(str(tmp_path / "metrics.json"), dict(res, odd=float("nan")))
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["odd"] is None
    table = markdown_table([res], names=["run"])
    assert "- mask-SSIM (run): 2 of 3 images left out of the mean: undefined where" in table
    all_undefined = S.Scorer(nets)  # black against black: SSIM 0/0 everywhere
    black = torch.zeros(1, 3, 128, 64, dtype=torch.uint8)
    all_undefined.add(black, black, kps[:1])
    out = all_undefined.result()
    assert out["ssim"] is None and out["left_out"]["ssim"] == {"count": 1, "of": 1, "reason": S.UNDEFINED["ssim"]}
