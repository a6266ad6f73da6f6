import pytest
import torch

import deformgan_ops as D
from deformgan import losses as L
from helpers import warned_at


def test_vgg_refuses_without_pretrained_weights(monkeypatch, tmp_path):
    from torchvision.models import VGG19_Weights

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(VGG19_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline, raising=False)
    with pytest.raises(L.PretrainedWeightsMissing, match="pretrained VGG19 weights are not available"):
        L.VGGFeatures(("relu1_2",), weights="imagenet")
    with pytest.raises(L.PretrainedWeightsMissing, match="not found"):
        L.VGGFeatures(("relu1_2",), weights=str(tmp_path / "missing.pth"))
    with pytest.warns(RuntimeWarning, match="RANDOM weights"):
        L.VGGFeatures(("relu1_2",), weights="imagenet", allow_random=True)


@pytest.fixture(scope="module")
def vgg_state():
    from torchvision.models import vgg19
    torch.manual_seed(0)
    return vgg19(weights=None).state_dict()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory, vgg_state):
    """One saved VGG19 state dict (~550 MB) shared by the tests that load a file."""
    path = tmp_path_factory.mktemp("vgg") / "vgg.pth"
    torch.save(vgg_state, path)
    yield path
    path.unlink()


def test_vgg_loads_a_state_dict_file(vgg_file, vgg_state):
    from torchvision.models import vgg19
    model = vgg19(weights=None)
    model.load_state_dict(vgg_state)
    path = vgg_file
    feats = L.VGGFeatures(("relu1_2", "relu2_2"), weights=str(path))
    x = torch.rand(1, 3, 32, 16) * 2 - 1
    out = feats(x)
    assert out["relu1_2"].shape == (1, 64, 32, 16) and out["relu2_2"].shape == (1, 128, 16, 8)
    norm = ((x + 1) / 2 - torch.tensor(L.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(L.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out["relu1_2"], model.features[:4](norm))
    assert not any(p.requires_grad for p in feats.parameters())


def test_adversarial_losses():
    real, fake = torch.full((2, 1, 3, 1), 10.0), torch.full((2, 1, 3, 1), -10.0)
    assert L.discriminator_loss(real, fake).item() < 1e-3
    assert L.generator_adversarial_loss(fake).item() == pytest.approx(10.0, abs=1e-3)


def test_offset_smoothness_known_answer():
    o = torch.zeros(1, 2, 4, 4)
    o[..., :, 2:] = 1.0  # one vertical step of height 1 in every row
    # mean |dx| = (1 step per row of 3 differences) / 3; dy = 0
    assert L.offset_smoothness([o]).item() == pytest.approx(1 / 3)
    assert L.offset_smoothness([torch.zeros(1, 2, 3, 3)]).item() == 0


def test_generator_loss_terms():
    with pytest.warns(RuntimeWarning, match="RANDOM weights"):
        loss = L.GeneratorLoss(adv=1, l1=100, nn_weight=0.01, perceptual=0.1, smooth=0.1,
                               vgg_weights=None, allow_random_vgg=True)
    gen = torch.rand(2, 3, 32, 16) * 2 - 1
    tgt = torch.rand(2, 3, 32, 16) * 2 - 1
    logits = torch.zeros(2, 1, 3, 1)
    off = [torch.rand(2, 2, 8, 4)]
    total, terms = loss(gen, tgt, logits, off)
    assert set(terms) == {"adv", "l1", "nn", "perceptual", "smooth"}
    f = loss.vgg(torch.cat([gen, tgt]))["relu1_2"]
    torch.testing.assert_close(terms["nn"], D.nn_loss(f[:2], f[2:], 3))
    expected = terms["adv"] + 100 * terms["l1"] + 0.01 * terms["nn"] + 0.1 * terms["perceptual"] + 0.1 * terms["smooth"]
    torch.testing.assert_close(total.detach(), expected)


# ---------------------------------------------------------------- found by mutation testing
def softplus(x):
    import math
    return math.log1p(math.exp(x))


def test_discriminator_loss_is_the_sum_of_the_two_bce_terms():
    """BCE with logits of a real score r against 1 is softplus(-r); of a fake score f
    against 0 it is softplus(f); the D loss is their sum (hand-computed values)."""
    real, fake = torch.full((2, 1, 3, 1), 2.0), torch.full((2, 1, 3, 1), -1.0)
    assert L.discriminator_loss(real, fake).item() == pytest.approx(softplus(-2.0) + softplus(-1.0), rel=1e-6)
    zero = torch.zeros(1, 1, 3, 1)
    assert L.discriminator_loss(zero, zero).item() == pytest.approx(2 * softplus(0.0), rel=1e-6)
    assert L.generator_adversarial_loss(torch.full((1, 1, 3, 1), 0.5)).item() == pytest.approx(softplus(-0.5))


def test_pixel_l1_of_two_nonzero_images():
    gen = torch.tensor([[[[1.0, -1.0]]]])
    tgt = torch.tensor([[[[0.5, 2.0]]]])
    assert L.pixel_l1(gen, tgt).item() == pytest.approx((0.5 + 3.0) / 2)


def test_offset_smoothness_sums_the_fields_and_both_directions():
    a = torch.zeros(1, 2, 4, 3)
    a[:, :, :, 0] = torch.tensor([0.0, 1.0, 3.0, 6.0])  # column 0 grows down: dy 1, 2, 3
    # |dy|: (1 + 2 + 3) per channel in column 0 of 3 columns x 3 row pairs -> 6 / 9;
    # |dx|: rows y of column 0 vs 1: (0 + 1 + 3 + 6) per channel / (4 rows x 2 pairs) -> 10 / 8
    tv_a = 6 / 9 + 10 / 8
    b = torch.zeros(1, 2, 2, 2)
    b[:, 1, 1, 1] = 4.0  # channel 1 only: |dy| 4 / (2 ch x 1 x 2) = 1, |dx| 4 / (2 x 2 x 1) = 1
    assert L.offset_smoothness([a]).item() == pytest.approx(tv_a)
    assert L.offset_smoothness([a, b]).item() == pytest.approx(tv_a + 2.0)
    assert L.offset_smoothness([b, a]).item() == pytest.approx(tv_a + 2.0)
    with pytest.raises(ValueError, match="^offset_smoothness needs at least one offset field$"):
        L.offset_smoothness([])


def test_generator_loss_defaults_are_the_papers():
    """adv weight 1, every other weight 0, ImageNet VGG weights, random weights refused."""
    loss = L.GeneratorLoss()
    assert loss.vgg is None
    gen, tgt = torch.zeros(1, 3, 4, 2), torch.ones(1, 3, 4, 2)
    logits = torch.full((1, 1, 3, 1), 0.5)
    offsets = [torch.rand(1, 2, 4, 2)]
    total, terms = loss(gen, tgt, logits, offsets=offsets)
    assert set(terms) == {"adv"} and total.item() == pytest.approx(softplus(-0.5))


def test_generator_loss_asks_for_imagenet_weights_by_default(monkeypatch):
    """The default VGG weights are torchvision's ImageNet ones (not a file path), and
    random weights are refused unless allowed."""
    from torchvision.models import VGG19_Weights
    asked = []

    def offline(self, *a, **k):
        asked.append(self)
        raise OSError("no network")

    monkeypatch.setattr(VGG19_Weights, "get_state_dict", offline)
    with pytest.raises(L.PretrainedWeightsMissing, match="pretrained VGG19 weights are not available"):
        L.GeneratorLoss(nn_weight=1.0)
    assert asked == [VGG19_Weights.IMAGENET1K_V1]


def test_load_vgg19_features_asks_torchvision_for_imagenet_without_a_progress_bar(monkeypatch, vgg_state):
    from torchvision.models import VGG19_Weights
    calls = []

    def cached(self, **kwargs):
        calls.append((self, kwargs))
        return vgg_state

    monkeypatch.setattr(VGG19_Weights, "get_state_dict", cached)
    features = L.load_vgg19_features()  # the defaults: ImageNet weights, random refused
    assert calls == [(VGG19_Weights.IMAGENET1K_V1, {"progress": False})]
    assert torch.equal(features[0].weight, vgg_state["features.0.weight"])
    assert torch.equal(features[34].bias, vgg_state["features.34.bias"])


def test_load_vgg19_features_refuses_random_weights_by_default_and_warns_at_the_caller():
    with pytest.raises(L.PretrainedWeightsMissing, match=r"^VGG19 weights=None needs allow_random=True$"):
        L.load_vgg19_features(None)
    with pytest.warns(RuntimeWarning) as caught:
        L.load_vgg19_features(None, allow_random=True)
    # stacklevel: the warning names the caller's line, not one inside deformgan/losses.py
    assert len(caught) == 1 and warned_at(caught[0], __file__)
    assert str(caught[0].message) == ("VGG19 with RANDOM weights: perceptual and nearest-neighbour losses are not "
                                      "the paper's")


def test_load_vgg19_features_reads_a_file_safely_onto_the_cpu(monkeypatch, tmp_path, vgg_state):
    """A weights file is read with weights_only=True (no code runs from a pickle) and
    mapped to the CPU (a file saved from a GPU loads here); a checkpoint-style file
    holding {"state_dict": ...} works too."""
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": vgg_state}, path)
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    features = L.load_vgg19_features(str(path))
    assert seen == [{"map_location": "cpu", "weights_only": True}]
    assert torch.equal(features[2].weight, vgg_state["features.2.weight"])


def test_generator_loss_terms_against_independent_computations(vgg_file, vgg_state):
    """Each term recomputed from the loss's own VGG outside GeneratorLoss: the NN loss with
    the configured window on relu1_2, the perceptual L1 summed over the layers; the VGG
    weights come from the given file; no adversarial term without weight or logits."""
    path = vgg_file
    loss = L.GeneratorLoss(adv=0.0, nn_weight=2.0, perceptual=0.5, nn_kernel=5, vgg_weights=str(path),
                           perceptual_layers=("relu2_2", "relu1_2"))
    assert torch.equal(loss.vgg.features[0].weight, vgg_state["features.0.weight"])
    g = torch.Generator().manual_seed(3)
    gen, tgt = torch.rand(2, 3, 16, 8, generator=g) * 2 - 1, torch.rand(2, 3, 16, 8, generator=g) * 2 - 1
    total, terms = loss(gen, tgt, fake_logits=torch.zeros(2, 1, 3, 1))
    assert set(terms) == {"nn", "perceptual"}
    fg, ft = loss.vgg(gen), loss.vgg(tgt)
    nn5 = D.nn_loss(fg["relu1_2"], ft["relu1_2"], 5, backend="reference")
    perc = sum((fg[l] - ft[l]).abs().mean() for l in ("relu1_2", "relu2_2"))
    torch.testing.assert_close(terms["nn"], nn5, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["perceptual"], perc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, 2.0 * nn5 + 0.5 * perc, rtol=1e-5, atol=1e-6)
    # adv weight 1 but no logits: no adversarial term (and no crash)
    _, terms = L.GeneratorLoss(adv=1.0, l1=1.0)(gen, tgt)
    assert set(terms) == {"l1"}


def test_generator_loss_runs_the_nn_loss_on_its_ops_backend(vgg_file):
    path = vgg_file
    loss = L.GeneratorLoss(adv=0.0, nn_weight=1.0, vgg_weights=str(path), ops_backend="cuda")
    with pytest.raises(RuntimeError, match="backend 'cuda' needs cuda tensors"):
        loss(torch.zeros(1, 3, 8, 4), torch.zeros(1, 3, 8, 4))


def test_missing_pretrained_weights_message_and_warning_say_what_to_do(monkeypatch):
    from torchvision.models import VGG19_Weights

    def offline(self, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(VGG19_Weights, "get_state_dict", offline)
    hint = ("pretrained VGG19 weights are not available (OSError: no network). Put torchvision's "
            "vgg19-dcbb9e9d.pth in the torch hub cache (TORCH_HOME/hub/checkpoints), pass a path with "
            "--vgg-weights, or allow random weights (--allow-random-vgg) for a smoke test")
    with pytest.raises(L.PretrainedWeightsMissing) as err:
        L.load_vgg19_features("imagenet")
    assert str(err.value) == hint
    with pytest.warns(RuntimeWarning) as caught:
        L.load_vgg19_features("imagenet", allow_random=True)
    assert len(caught) == 1 and str(caught[0].message) == "PRETRAINED VGG19 WEIGHTS MISSING: using RANDOM weights. " + hint
    assert warned_at(caught[0], __file__)


def test_vgg_features_defaults_layers_depth_buffers_and_mode(monkeypatch, vgg_state):
    from torchvision.models import VGG19_Weights
    asked = []

    def cached(self, **kwargs):
        asked.append(self)
        return vgg_state

    monkeypatch.setattr(VGG19_Weights, "get_state_dict", cached)
    feats = L.VGGFeatures()  # relu1_2 of the ImageNet weights
    assert asked == [VGG19_Weights.IMAGENET1K_V1] and feats.layers == ["relu1_2"]
    # only the layers up to the deepest one asked for are kept
    assert len(feats.features) == L.VGG19_LAYERS["relu1_2"] + 1
    assert len(L.VGGFeatures(("relu3_1", "relu1_1"), weights=None, allow_random=True).features) == \
        L.VGG19_LAYERS["relu3_1"] + 1
    # the normalisation constants are not part of a checkpoint
    assert not any(k in feats.state_dict() for k in ("mean", "std"))
    # always frozen in eval mode, whatever the parent's mode
    feats.train()
    assert feats.training and not feats.features.training
    feats.eval()
    assert not feats.training
    with pytest.raises(ValueError, match=r"^unknown VGG19 layers \['relu9_9'\]; known: \['relu1_1', 'relu1_2', "):
        L.VGGFeatures(("relu1_2", "relu9_9"), weights=None, allow_random=True)


def test_vgg_features_normalise_to_imagenet_statistics_in_the_images_dtype():
    feats = L.VGGFeatures(("relu1_1",), weights=None, allow_random=True)
    feats.features = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Identity())  # relu1_1 = the input
    mean, std = torch.tensor(L.IMAGENET_MEAN), torch.tensor(L.IMAGENET_STD)
    # an all-zero image in [-1, 1] is grey 0.5 in [0, 1]: (0.5 - mean) / std per channel
    got = feats(torch.zeros(2, 3, 4, 3))["relu1_1"]
    assert torch.allclose(got, ((0.5 - mean) / std).view(1, 3, 1, 1).expand(2, 3, 4, 3), rtol=0, atol=1e-6)
    # a low-precision batch (under autocast) is normalised in its own dtype, not promoted to float32
    img = torch.linspace(-1, 1, 2 * 3 * 4 * 3).view(2, 3, 4, 3).to(torch.bfloat16)
    got = feats(img)["relu1_1"]
    expect = ((img + 1) / 2 - mean.view(1, 3, 1, 1).to(torch.bfloat16)) / std.view(1, 3, 1, 1).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expect)
