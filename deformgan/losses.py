"""Losses of Deformable GAN (docs/method.md: losses and training): non-saturating adversarial losses, the
nearest-neighbour loss on VGG19 relu1_2 features (deformgan_ops.nn_loss), pixel L1,
perceptual loss, offset smoothness.

VGG19 weights: torchvision's ImageNet weights, through torchvision's normal mechanism
(the torch hub cache; a download where the machine is online) or a ``.pth`` path. When
they cannot be had, :class:`VGGFeatures` refuses loudly unless ``allow_random=True``,
in which case it warns and uses random weights (the tests do; the numbers then mean
little).
"""
import os
import warnings
from typing import Dict, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import deformgan_ops

# indices of the ReLU outputs in torchvision's vgg19().features
VGG19_LAYERS = {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13,
                "relu3_3": 15, "relu3_4": 17, "relu4_1": 20, "relu4_2": 22}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedWeightsMissing(RuntimeError):
    pass


def load_vgg19_features(weights: Optional[str] = "imagenet", allow_random: bool = False) -> nn.Sequential:
    """torchvision's VGG19 ``features``: ImageNet weights (``"imagenet"``: torchvision's
    cache or download), a state-dict path, or ``None`` for random weights."""
    from torchvision.models import VGG19_Weights, vgg19

    model = vgg19(weights=None)
    if weights is None:
        if not allow_random:
            raise PretrainedWeightsMissing("VGG19 weights=None needs allow_random=True")
        warnings.warn("VGG19 with RANDOM weights: perceptual and nearest-neighbour losses are not the paper's",
                      RuntimeWarning, stacklevel=2)
        return model.features
    try:
        if weights == "imagenet":
            state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        else:
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"VGG19 weights file not found: {weights}")
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
        model.load_state_dict(state)
        return model.features
    except Exception as exc:
        msg = (f"pretrained VGG19 weights are not available ({type(exc).__name__}: {exc}). Put torchvision's "
               "vgg19-dcbb9e9d.pth in the torch hub cache (TORCH_HOME/hub/checkpoints), pass a path with "
               "--vgg-weights, or allow random weights (--allow-random-vgg) for a smoke test")
        if not allow_random:
            raise PretrainedWeightsMissing(msg) from exc
        warnings.warn("PRETRAINED VGG19 WEIGHTS MISSING: using RANDOM weights. " + msg, RuntimeWarning, stacklevel=2)
        return model.features


class VGGFeatures(nn.Module):
    """Frozen VGG19 activations at ``layers`` for images in [-1, 1] (mapped to
    ImageNet normalisation). Returns ``{layer: [N, C, H, W]}``."""

    def __init__(self, layers: Sequence[str] = ("relu1_2",), weights: Optional[str] = "imagenet",
                 allow_random: bool = False):
        super().__init__()
        unknown = [l for l in layers if l not in VGG19_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; known: {sorted(VGG19_LAYERS)}")
        self.layers = list(layers)
        depth = max(VGG19_LAYERS[l] for l in layers) + 1
        self.features = load_vgg19_features(weights, allow_random)[:depth].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # always frozen
        return self

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = ((images + 1) / 2 - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        out = {}
        wanted = {VGG19_LAYERS[l]: l for l in self.layers}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
            if len(out) == len(wanted):
                break
        return out


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN, D side: real -> 1, fake -> 0 (BCE with logits)."""
    return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
        F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN, G side: fake -> 1."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def pixel_l1(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (generated - target).abs().mean()


def offset_smoothness(offsets: Iterable[torch.Tensor]) -> torch.Tensor:
    """Total variation (L1 of spatial differences) of every offset field, summed over fields."""
    total = None
    for o in offsets:
        tv = (o[..., 1:, :] - o[..., :-1, :]).abs().mean() + (o[..., :, 1:] - o[..., :, :-1]).abs().mean()
        total = tv if total is None else total + tv
    if total is None:
        raise ValueError("offset_smoothness needs at least one offset field")
    return total


class GeneratorLoss(nn.Module):
    """The weighted sum of the generator's losses; returns (total, {name: value}).

    weights: ``adv`` (1), ``l1`` (pixel L1), ``nn`` (nearest-neighbour loss on VGG19
    relu1_2, kernel ``nn_kernel``), ``perceptual`` (L1 of VGG19 features at
    ``perceptual_layers``), ``smooth`` (offset smoothness). VGG is built only when a
    VGG-based weight is nonzero.
    """

    def __init__(self, adv: float = 1.0, l1: float = 0.0, nn_weight: float = 0.0, perceptual: float = 0.0,
                 smooth: float = 0.0, nn_kernel: int = 3, perceptual_layers: Sequence[str] = ("relu1_2", "relu2_2",
                                                                                               "relu3_2"),
                 vgg_weights: Optional[str] = "imagenet", allow_random_vgg: bool = False,
                 ops_backend: Optional[str] = None):
        super().__init__()
        self.w = dict(adv=adv, l1=l1, nn=nn_weight, perceptual=perceptual, smooth=smooth)
        self.nn_kernel, self.ops_backend = nn_kernel, ops_backend
        self.perceptual_layers = list(perceptual_layers)
        layers = set()
        if nn_weight:
            layers.add("relu1_2")
        if perceptual:
            layers.update(self.perceptual_layers)
        self.vgg = VGGFeatures(sorted(layers, key=VGG19_LAYERS.get), vgg_weights, allow_random_vgg) if layers else None

    def forward(self, generated, target, fake_logits=None, offsets: Sequence[torch.Tensor] = ()):
        terms = {}
        if self.w["adv"] and fake_logits is not None:
            terms["adv"] = generator_adversarial_loss(fake_logits)
        if self.w["l1"]:
            terms["l1"] = pixel_l1(generated, target)
        if self.vgg is not None:
            both = self.vgg(torch.cat([generated, target]))
            n = generated.shape[0]
            if self.w["nn"]:
                f = both["relu1_2"]
                terms["nn"] = deformgan_ops.nn_loss(f[:n], f[n:].detach(), self.nn_kernel, backend=self.ops_backend)
            if self.w["perceptual"]:
                terms["perceptual"] = sum((both[l][:n] - both[l][n:].detach()).abs().mean()
                                          for l in self.perceptual_layers)
        if self.w["smooth"] and len(offsets):
            terms["smooth"] = offset_smoothness(offsets)
        total = sum(self.w[k] * v for k, v in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}
