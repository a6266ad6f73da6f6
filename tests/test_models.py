import pytest
import torch

import deformgan_ops as D
from deformgan import models as M
from deformgan import pose as P
from deformgan.data.synthetic import jitter_pose, load_pose_bank


def batch(n=2, seed=0):
    import random
    rng = random.Random(seed)
    bank = load_pose_bank()
    src = torch.stack([jitter_pose(bank[rng.randrange(len(bank))], rng) for _ in range(n)])
    tgt = torch.stack([jitter_pose(bank[rng.randrange(len(bank))], rng) for _ in range(n)])
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 128, 64, generator=g) * 2 - 1, src, tgt


# exact parameter counts of the full-size (width 1) networks, from the architecture
FULL_COUNTS = {"none": 36_076_373, "global": 61_114_845, "parts": 61_114_845, "parts+offsets": 61_902_773}


@pytest.mark.parametrize("variant", M.VARIANTS)
def test_full_size_parameter_counts(variant):
    assert M.count_parameters(M.Generator(variant)) == FULL_COUNTS[variant]


def test_discriminator_shape_and_count():
    d = M.Discriminator()
    assert M.count_parameters(d) == 2_804_679
    x = torch.zeros(2, 3, 128, 64)
    h = torch.zeros(2, 18, 128, 64)
    assert d(x, h, x, h).shape == (2, 1, 3, 1)  # 3 patch scores at 128x64


@pytest.mark.parametrize("variant", M.VARIANTS)
@pytest.mark.parametrize("norm", M.NORMS)
def test_small_variants_output_shape_and_range(variant, norm):
    g = M.Generator(variant, norm=norm, width_mult=0.0625)
    x, s, t = batch()
    y = g(x, s, t)
    assert y.shape == (2, 3, 128, 64) and y.abs().max() <= 1


def test_instance_norm_all_matches_its_definition():
    n = M.InstanceNormAll()
    x = torch.randn(3, 5, 4, 2) * 3 + 1
    y = n(x)
    flat = x.reshape(3, -1)
    ref = (x - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1, unbiased=False).view(-1, 1, 1, 1) + 1e-3)
    torch.testing.assert_close(y, ref)


def test_skips_go_through_part_affine_warp_at_four_levels_with_scaled_affines(monkeypatch):
    calls = []
    real = D.part_affine_warp

    def spy(features, theta, masks, offsets=None, **kw):
        calls.append((features.shape, theta.clone(), masks.shape))
        return real(features, theta, masks, offsets, **kw)

    monkeypatch.setattr(M.deformgan_ops, "part_affine_warp", spy)
    g = M.Generator("parts", width_mult=0.0625)
    x, s, t = batch()
    g(x, s, t)
    assert len(calls) == 4
    theta, _ = P.part_affines(s, t)
    for level, (fshape, th, mshape) in enumerate(calls):
        assert fshape[-2:] == (128 >> level, 64 >> level) and mshape == (2, 10, 128 >> level, 64 >> level)
        torch.testing.assert_close(th, P.scale_affines(theta, 2.0 ** level))
    calls.clear()
    M.Generator("none", width_mult=0.0625)(x, s, t)
    assert calls == []


def test_gradients_reach_every_parameter():
    g = M.Generator("parts+offsets", width_mult=0.0625, dropout=0.0)
    x, s, t = batch()
    g(x, s, t).square().mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None, name
        # the offset heads' hidden layer sits behind a zero-initialised output layer,
        # so only it gets exactly zero gradient at initialisation
        if not (name.startswith("offset_heads") and ".0." in name):
            assert p.grad.abs().sum() > 0, name


def test_parts_plus_offsets_starts_equal_to_parts():
    off = M.Generator("parts+offsets", width_mult=0.0625).eval()
    parts = M.Generator("parts", width_mult=0.0625).eval()
    missing, unexpected = parts.load_state_dict(off.state_dict(), strict=False)
    assert not missing and all(k.startswith("offset_heads") for k in unexpected)
    x, s, t = batch()
    image, offsets = off(x, s, t, return_offsets=True)
    torch.testing.assert_close(image, parts(x, s, t))
    assert all(o.abs().max() == 0 for o in offsets) and len(offsets) == 4
    assert [o.shape[-2:] for o in offsets] == [(128 >> lv, 64 >> lv) for lv in range(4)]
    assert parts(x, s, t, return_offsets=True)[1] == []


def test_bad_options():
    with pytest.raises(ValueError, match="variant must be one of"):
        M.Generator("deformable")
    with pytest.raises(ValueError, match="norm must be one of"):
        M.Generator("parts", norm="batch")


# The generator under bf16 autocast (bf16 features, float32 geometry into the warp):
# tests/test_autocast.py.


def test_instance_norm_all_applies_its_scalar_scale_and_shift_after_normalising():
    """keras-contrib InstanceNormalization(axis=None): (x - mean) / (std + 1e-3) over all of
    C, H, W per sample, then * weight + bias (set away from 1 and 0 here)."""
    norm = M.InstanceNormAll()
    with torch.no_grad():
        norm.weight.fill_(2.5)
        norm.bias.fill_(-0.75)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    expected = torch.empty_like(x)
    for i in range(3):
        v = x[i].flatten()
        mean = v.sum() / v.numel()
        std = ((v - mean) ** 2).sum().div(v.numel()).sqrt()  # population std
        expected[i] = (x[i] - mean) / (std + 1e-3) * 2.5 - 0.75
    torch.testing.assert_close(norm.double()(x), expected, rtol=1e-12, atol=1e-12)


def test_float64_generator_warps_with_float64_geometry(monkeypatch):
    """Only float16/bfloat16 features get float32 geometry beside them (see
    test_autocast.py); float64 features get theta, masks and offsets in float64."""
    seen = []
    real = D.part_affine_warp

    def spy(features, theta, masks, offsets=None, **kw):
        seen.append((features.dtype, theta.dtype, masks.dtype, None if offsets is None else offsets.dtype))
        return real(features, theta, masks, offsets, **kw)

    monkeypatch.setattr(D, "part_affine_warp", spy)
    g = M.Generator("parts+offsets", width_mult=0.0625).double().eval()
    x, s, t = batch(1)
    with torch.no_grad():
        out = g(x.double(), s.double(), t.double())
    assert out.dtype == torch.float64
    assert len(seen) == len(M.WARPED_LEVELS) and all(d == (torch.float64,) * 4 for d in seen), seen


def test_bfloat16_generator_runs_in_bfloat16():
    """A generator cast to bfloat16 (no autocast) takes bfloat16 images: the heatmaps
    are cast to the images' dtype before they are concatenated with them."""
    g = M.Generator("parts+offsets", width_mult=0.0625).to(torch.bfloat16).eval()
    x, s, t = batch(1)
    with torch.no_grad():
        out = g(x.bfloat16(), s, t)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 128, 64)


def test_generator_defaults():
    g = M.Generator(width_mult=0.0625)
    assert (g.variant, g.warp, g.use_offsets, g.norm) == ("parts", "parts", False, "instance_all")
    assert (g.image_size, g.sigma, g.ops_backend, g.levels) == ((128, 64), 6.0, None, 6)
    assert [m.p for m in g.modules() if isinstance(m, torch.nn.Dropout)] == [0.5] * 3


def test_generator_uses_the_geometry_it_is_given():
    """With ``geometry`` the keypoints are not rendered again: the output is the one of
    the keypoints the geometry was rendered from."""
    g = M.Generator("parts", width_mult=0.0625).eval()
    x, s, t = batch(2)
    s2, t2 = batch(2, seed=5)[1:]
    with torch.no_grad():
        given = g(x, s2, t2, geometry=g.render_geometry(s, t))
        assert torch.equal(given, g(x, s, t))
        assert not torch.allclose(given, g(x, s2, t2))


def layers(module):
    """The leaf layers of ``module`` in order, each as a short string."""
    out = []
    for m in module.modules():
        if list(m.children()):
            continue
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            kind = "convT" if isinstance(m, torch.nn.ConvTranspose2d) else "conv"
            out.append(f"{kind}{m.kernel_size[0]} {m.in_channels}->{m.out_channels} s{m.stride[0]} p{m.padding[0]}")
        elif isinstance(m, torch.nn.LeakyReLU):
            out.append(f"lrelu{m.negative_slope}")
        elif isinstance(m, torch.nn.Dropout):
            out.append(f"dropout{m.p}")
        elif isinstance(m, torch.nn.InstanceNorm2d):
            out.append(f"inorm{m.num_features}")
        else:
            out.append({"ReLU": "relu", "Tanh": "tanh", "Identity": "id", "InstanceNormAll": "norm"}[type(m).__name__])
    return out


def test_generator_and_discriminator_layers_follow_the_spec():
    """docs/method.md (generator, discriminator) written out at width 1/16 (encoder 4, 8, 16, 32, 32, 32; decoder 32,
    32, 32, 16, 8): encoder levels LeakyReLU(0.2) -> 4x4 stride-2 conv -> norm (none on the
    last); decoder ReLU -> 4x4 stride-2 transposed conv -> norm -> dropout 0.5 on the first
    three blocks; last ReLU -> 3x3 conv -> tanh; the offsets' heads 3x3 conv -> ReLU -> 3x3
    conv to 2; the discriminator 4x4 stride-2 convs, LeakyReLU(0.2), a valid last conv."""
    g = M.Generator("parts+offsets", width_mult=0.0625)

    def encoder(cin):
        down = [["lrelu0.2", f"conv4 {a}->{b} s2 p1", "norm"] for a, b in ((4, 8), (8, 16), (16, 32), (32, 32))]
        return [f"conv3 {cin}->4 s1 p1"] + sum(down, []) + ["lrelu0.2", "conv4 32->32 s2 p1", "id"]
    assert layers(g.appearance) == encoder(3 + 18) and layers(g.pose) == encoder(18)
    ups = [("64->32", "dropout0.5"), ("96->32", "dropout0.5"), ("96->32", "dropout0.5"), ("64->16", "id"),
           ("32->8", "id")]
    assert layers(g.ups) == sum((["relu", f"convT4 {c} s2 p1", "norm", d] for c, d in ups), [])
    assert layers(g.final) == ["relu", "conv3 16->3 s1 p1", "tanh"]
    heads = ([f"conv3 {c}->8 s1 p1", "relu", "conv3 8->2 s1 p1"] for c in (4, 8, 16, 32))
    assert layers(g.offset_heads) == sum(heads, [])
    no_dropout = layers(M.Generator("parts", width_mult=0.0625, dropout=0).ups)
    assert not any(layer.startswith("dropout") for layer in no_dropout)
    assert M.Generator("none", width_mult=0.0625).pose is None
    d = M.Discriminator(norm="instance", width_mult=0.0625)
    assert layers(d) == (["conv4 42->4 s2 p1"] + sum((["lrelu0.2", f"conv4 {a}->{b} s2 p1", f"inorm{b}"]
                                                       for a, b in ((4, 8), (8, 16), (16, 32))), [])
                         + ["lrelu0.2", "conv4 32->1 s2 p0"])


# ---------------------------------------------------------------- variants and depth
def test_depth_for_accepts_exactly_the_sizes_the_docstring_names():
    """The longer side BOTTLENECK * 2^k with k >= 4 (the warped levels), the shorter a
    multiple of 2^k: 64x64 is the smallest; a longer side that is not BOTTLENECK * 2^k
    is refused even when both sides halve k times."""
    assert M.depth_for((64, 64)) == 5 and M.depth_for((64, 32)) == 5
    assert M.depth_for((48, 64)) == 5 and M.depth_for((64, 48)) == 5  # 3 * 2^4: a multiple, not a power
    assert M.depth_for((128, 64)) == 6 and M.depth_for((256, 256)) == 7
    for bad in ((96, 64), (32, 32), (128, 48)):
        with pytest.raises(ValueError, match="image_size"):
            M.depth_for(bad)
    with pytest.raises(ValueError) as err:
        M.depth_for((96, 64))
    assert str(err.value) == ("image_size 96x64: the generator needs the longer side to be 4 * 2^k (k >= 4) and "
                              "the shorter side a multiple of 2^k, e.g. 128x64 or 256x256")


def test_render_geometry_refills_the_geometry_it_is_given():
    """render_geometry(out=previous) writes the new pair's heatmaps and masks into the
    previous Geometry's buffers (no fresh batch), with the values of a fresh render."""
    g = M.Generator("parts", width_mult=0.0625)
    s1, t1 = batch(2, seed=1)[1:]
    s2, t2 = batch(2, seed=2)[1:]
    first = g.render_geometry(s1, t1)
    buffers = [first.heatmaps.data_ptr()] + [m.data_ptr() for m in first.masks.values()]
    again = g.render_geometry(s2, t2, out=first)
    assert [again.heatmaps.data_ptr()] + [m.data_ptr() for m in again.masks.values()] == buffers
    fresh = g.render_geometry(s2, t2)
    torch.testing.assert_close(again.heatmaps, fresh.heatmaps, rtol=0, atol=0)
    for level in fresh.masks:
        torch.testing.assert_close(again.masks[level], fresh.masks[level], rtol=0, atol=0)


def test_parse_variant_message_names_every_accepted_spelling():
    with pytest.raises(ValueError) as err:
        M.parse_variant("affine")
    assert str(err.value) == ("variant must be one of ('none', 'global', 'parts', 'parts+offsets') (or "
                              "'<warp>+offsets' with a warp in ('global', 'parts')), got 'affine'")


def test_make_norm_and_widths():
    """norm "instance": torch's InstanceNorm2d with a per-channel scale and shift and the
    original's eps 1e-3; widths scaled by the multiplier, rounded, at least 4."""
    norm = M.make_norm("instance", 7)
    assert isinstance(norm, torch.nn.InstanceNorm2d) and norm.affine is True and norm.eps == 1e-3
    assert norm.weight.shape == (7,) and norm.bias.shape == (7,)
    assert isinstance(M.make_norm("instance_all", 7), M.InstanceNormAll)
    assert isinstance(M.make_norm("none", 7), torch.nn.Identity)
    assert M._widths([64, 128, 512], 0.5) == [32, 64, 256]
    assert M._widths([64, 100, 30], 0.0625) == [4, 6, 4]  # 6.25 -> 6; 1.875 -> at least 4


def test_variant_name_inverts_parse_variant():
    for v in M.VARIANTS + ("global+offsets",):
        assert M.variant_name(*M.parse_variant(v)) == v
    assert M.variant_name("parts", False) == "parts" and M.variant_name("none", False) == "none"


def test_warp_and_offsets_are_independent_choices_with_the_old_names_as_aliases():
    assert M.parse_variant("parts+offsets") == ("parts", True) and M.parse_variant("none") == ("none", False)
    g = M.Generator(warp="parts", offsets=True, width_mult=0.0625)
    old = M.Generator("parts+offsets", width_mult=0.0625)
    assert g.variant == "parts+offsets" and list(g.state_dict()) == list(old.state_dict())
    glob = M.Generator(warp="global", offsets=True, width_mult=0.0625).eval()
    assert glob.variant == "global+offsets"
    x, s, t = batch()
    image, offsets = glob(x, s, t, return_offsets=True)
    assert image.shape == x.shape and len(offsets) == len(M.WARPED_LEVELS)
    for bad in ("none+offsets", "parts+flow", "affine"):
        with pytest.raises(ValueError, match="variant must be one of"):
            M.Generator(bad)
    with pytest.raises(ValueError, match="warp must be one of"):
        M.Generator(warp="affine")


@pytest.mark.parametrize("long_side,short_side,depth", [(64, 32, 5), (128, 64, 6), (128, 32, 6), (256, 64, 7),
                                                       (256, 128, 7), (512, 256, 8)])
def test_depth_comes_from_the_longer_side_in_portrait_and_landscape(long_side, short_side, depth):
    """The depth is one more than the halvings that bring the longer side to BOTTLENECK,
    whichever side it is: a portrait size and its landscape transpose have one depth."""
    assert M.depth_for((long_side, short_side)) == depth
    assert M.depth_for((short_side, long_side)) == depth
    assert M.BOTTLENECK << (depth - 1) == long_side


def test_depth_follows_the_image_size():
    assert M.depth_for((128, 64)) == 6 and M.depth_for((256, 256)) == 7 and M.depth_for((256, 128)) == 7
    assert M.encoder_widths(7) == [64, 128, 256, 512, 512, 512, 512]
    for bad in ((100, 64), (128, 48), (32, 16)):
        with pytest.raises(ValueError, match="image_size"):
            M.depth_for(bad)


def test_generator_at_256x256_has_seven_levels_as_the_original():
    g = M.Generator("parts", width_mult=1.0, image_size=(256, 256))
    assert g.levels == 7 and len(g.appearance.blocks) == 6 and len(g.ups) == 6
    assert [b[1].out_channels for b in g.appearance.blocks] == [128, 256, 512, 512, 512, 512]
    # decoder: outputs at levels 5..0 with the widths of encoder levels 6..1
    assert [u[1].out_channels for u in g.ups] == [512, 512, 512, 512, 256, 128]
    small = M.Generator("parts", width_mult=0.0625, image_size=(256, 256), dropout=0.0).eval()
    x, s, t = batch()
    x = torch.nn.functional.interpolate(x, size=(256, 256))
    scale = torch.tensor([4.0, 2.0])
    s, t = [torch.where(P.missing(k).unsqueeze(-1), k, k * scale) for k in (s, t)]
    with torch.no_grad():
        y = small(x, s, t)
    assert y.shape == (2, 3, 256, 256) and torch.isfinite(y).all()
    geo = small.render_geometry(s, t)
    assert [geo.masks[lv].shape[-2:] for lv in M.WARPED_LEVELS] == [(256 >> lv, 256 >> lv) for lv in range(4)]
