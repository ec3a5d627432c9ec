"""Perceptual and identity distances: the two terms of the paper's semantic-preservation loss (Eq. 1).

Eq. 1 of the paper compares ``G(z)`` and ``G'(z)`` with ``LPIPS + lambda_ID * ID`` after resizing both images
for the loss. This module holds the per-image distances and the modules they need; which weights a profile's
networks get is decided where the weight files are, in :mod:`facestyle.hub.perceptual`:

* :func:`lpips_distance` - LPIPS (Zhang et al. 2018) of an ``lpips.LPIPS`` model
  (:func:`facestyle.hub.build_lpips`). The profile's ``lpips_train_net`` ("vgg") is the training loss,
  ``lpips_eval_net`` ("alex") the evaluation metric (paper section 4.1; docs/reference.md section 5).
* :func:`identity_distance` - pSp's ID-loss form, ``1 - cos(e(a), e(b))``, of a face-identity embedding
  (:func:`facestyle.hub.build_identity`; docs/reference.md section 2).

The mini profile's LPIPS backbone
---------------------------------
ImageNet backbones cannot be had offline, so the mini LPIPS is **the same architecture and the same
shipped linear heads over a backbone whose convolutions are re-initialised from a fixed seed** (a dedicated
``torch.Generator``, He-normal weights, zero biases; independent of the global RNG; :func:`seed_backbone`).
Why this is acceptable:

* random convolutional features are still multi-scale, local colour/edge/texture detectors; LPIPS compares
  their unit-normalised channel vectors at five depths, so it responds to structure and texture differences
  the way a pixel loss does not. They are not calibrated to human judgements (the heads were fitted to
  ImageNet features, so over random features they are only a fixed non-negative weighting of channels);
* the shipped heads' weights are non-negative, so the result is still a pseudo-distance: ``d(x, x) = 0``,
  ``d >= 0`` and ``d(x, y) = d(y, x)``;
* seeded weights make the number the same on every machine and in every run, which is what a metric and a
  training loss in CI need. Mini LPIPS values are therefore only comparable with other mini LPIPS values,
  never with published LPIPS numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MINI_LPIPS_SEED", "PSP_FACE_CROP", "FACENET_SIZE", "lpips_distance", "resize_for_loss", "seed_backbone",
    "FaceNetIdentity", "identity_distance", "lpips_features", "lpips_to_features", "identity_embedding",
    "identity_to_embedding",
]

# Seed of the mini profile's random LPIPS backbone; changing it changes every mini LPIPS number.
MINI_LPIPS_SEED = 20180401
# pSp's ArcFace crop of an FFHQ-aligned 256 px image, rows 35:223, cols 32:220 (docs/reference.md section 2).
PSP_FACE_CROP = (35, 223, 32, 220)
FACENET_SIZE = 160  # InceptionResnetV1 was trained on 160x160 crops (docs/reference.md section 5)


@torch.no_grad()
def seed_backbone(net: nn.Module, seed: int = MINI_LPIPS_SEED) -> nn.Module:
    """Re-initialise every convolution of ``net`` from a dedicated generator (mini LPIPS; see module docstring).

    He-normal weights (std ``sqrt(2 / fan_in)``) keep activations at a similar scale through the ReLU stack, so
    deep layers neither vanish nor explode; biases are zero. Modules are visited in registration order, so the
    weights depend only on (architecture, seed).
    """
    g = torch.Generator().manual_seed(int(seed))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            w = torch.randn(tuple(m.weight.shape), generator=g, dtype=torch.float32) * math.sqrt(2.0 / fan_in)
            m.weight.copy_(w.to(m.weight))
            if m.bias is not None:
                m.bias.zero_()
    return net


def resize_for_loss(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` images to ``size x size`` for a loss (paper Eq. 1: images are resized).

    Downsampling averages pixel areas, as pSp's ``AdaptiveAvgPool2d`` face pool does (1024 -> 256 is an exact
    4x4 box filter); upsampling is bilinear. ``None`` or the current size returns ``x`` unchanged.
    """
    if size is None:
        return x
    size = int(size)
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h >= size and w >= size:
        return F.adaptive_avg_pool2d(x, (size, size))
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _model_device(model: nn.Module) -> torch.device | None:
    t = next(iter(model.parameters()), None)
    if t is None:
        t = next(iter(model.buffers()), None)
    return None if t is None else t.device


def lpips_distance(a: torch.Tensor, b: torch.Tensor, model: nn.Module, size: int | None = None) -> torch.Tensor:
    """Per-image LPIPS ``[B]`` between images in [-1, 1] (the LPIPS term of Eq. 1 / Eq. 2).

    Both batches are first resized to ``size`` (the profile's ``loss_size``: 256 for ffhq, 64 for mini).
    Differentiable with respect to ``a`` and ``b``.
    """
    if a.shape[0] != b.shape[0] and b.shape[0] != 1 and a.shape[0] != 1:
        raise ValueError(f"batch sizes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    dev = _model_device(model)
    a, b = resize_for_loss(a, size), resize_for_loss(b, size)
    if dev is not None:
        a, b = a.to(dev), b.to(dev)
    d = model(a, b)
    return d.reshape(d.shape[0])


# A fixed target (the style images of Eq. 5, the references of the V-space projector) is compared with a new
# image at every optimisation step; its features never change, so computing them once saves one backbone pass
# (and its activations) per step. The two functions below split lpips.LPIPS.forward at that point.

def _check_lpips_model(model: nn.Module) -> None:
    if not (hasattr(model, "net") and hasattr(model, "lins")) or getattr(model, "spatial", False) \
            or not getattr(model, "lpips", True):
        raise TypeError("cached LPIPS features need an lpips.LPIPS model with linear heads and spatial=False")


def _lpips_unit_features(x: torch.Tensor, model: nn.Module) -> list[torch.Tensor]:
    import lpips

    x = model.scaling_layer(x) if model.version == "0.1" else x
    return [lpips.normalize_tensor(f) for f in model.net.forward(x)]


def lpips_features(x: torch.Tensor, model: nn.Module, size: int | None = None) -> list[torch.Tensor]:
    """The unit-normalised per-layer features that LPIPS compares, for a fixed batch of targets ``x`` in
    [-1, 1], resized to ``size`` first; computed without gradients. Use with :func:`lpips_to_features`."""
    _check_lpips_model(model)
    dev = _model_device(model)
    x = resize_for_loss(x, size)
    with torch.no_grad():
        return _lpips_unit_features(x.to(dev) if dev is not None else x, model)


def lpips_to_features(a: torch.Tensor, features: list[torch.Tensor], model: nn.Module,
                      size: int | None = None) -> torch.Tensor:
    """Per-image LPIPS ``[B]`` between ``a`` and the targets whose :func:`lpips_features` are ``features``:
    the same number as ``lpips_distance(a, targets, model, size)`` (tests/test_metrics.py), differentiable
    with respect to ``a``, with one backbone pass instead of two."""
    import lpips

    _check_lpips_model(model)
    dev = _model_device(model)
    a = resize_for_loss(a, size)
    fa = _lpips_unit_features(a.to(dev) if dev is not None else a, model)
    d = sum(lpips.spatial_average(model.lins[k]((fa[k] - features[k]) ** 2), keepdim=True)
            for k in range(len(fa)))
    return d.reshape(d.shape[0])


# --------------------------------------------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------------------------------------------

class FaceNetIdentity(nn.Module):
    """facenet ``InceptionResnetV1`` with the preprocessing the ID loss needs; images in [-1, 1] -> unit ``[B, 512]``.

    1. crop the face region of an FFHQ-aligned image as pSp crops for its ArcFace ID loss: rows 35:223 and
       columns 32:220 of a 256 px image, scaled proportionally for other sizes (docs/reference.md section 2);
    2. resize to 160 px, facenet's training resolution;
    3. facenet's fixed standardisation ``(p - 127.5) / 128`` of 0-255 pixels ``p = 127.5 x + 127.5``, which is
       ``x * 127.5 / 128`` (docs/reference.md section 5).
    """

    def __init__(self, net: nn.Module, crop: tuple[int, int, int, int] = PSP_FACE_CROP, size: int = FACENET_SIZE):
        super().__init__()
        self.net = net
        self.crop = tuple(int(c) for c in crop)
        self.size = int(size)

    def crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        t, b, l, r = self.crop
        return round(t * h / 256), round(b * h / 256), round(l * w / 256), round(r * w / 256)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        t, b, l, r = self.crop_box(*x.shape[-2:])
        x = resize_for_loss(x[:, :, t:b, l:r], self.size)
        return x * (127.5 / 128.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # InceptionResnetV1(classify=False) already L2-normalises; normalising again costs nothing and keeps
        # the contract even if a caller swaps in a network that does not.
        return F.normalize(self.net(self.preprocess(x)), dim=1)


def identity_distance(a: torch.Tensor, b: torch.Tensor, model: nn.Module, size: int | None = None) -> torch.Tensor:
    """Per-image identity distance ``1 - cos(e(a), e(b))`` ``[B]`` (pSp's ID loss form; the ID term of Eq. 1).

    ``model`` returns embeddings (normalised here again, so any embedding network works); ``size`` optionally
    resizes both batches first, like :func:`lpips_distance`. Values lie in [0, 2].
    """
    dev = _model_device(model)
    a, b = resize_for_loss(a, size), resize_for_loss(b, size)
    if dev is not None:
        a, b = a.to(dev), b.to(dev)
    ea, eb = F.normalize(model(a), dim=1), F.normalize(model(b), dim=1)
    return (1.0 - (ea * eb).sum(1)).clamp_min(0.0)


def identity_embedding(x: torch.Tensor, model: nn.Module, size: int | None = None) -> torch.Tensor:
    """Unit identity embeddings ``[B, D]`` of a fixed batch of targets (no gradients), for
    :func:`identity_to_embedding`."""
    dev = _model_device(model)
    x = resize_for_loss(x, size)
    with torch.no_grad():
        return F.normalize(model(x.to(dev) if dev is not None else x), dim=1)


def identity_to_embedding(a: torch.Tensor, embedding: torch.Tensor, model: nn.Module,
                          size: int | None = None) -> torch.Tensor:
    """:func:`identity_distance` between ``a`` and targets given by their :func:`identity_embedding`."""
    dev = _model_device(model)
    a = resize_for_loss(a, size)
    ea = F.normalize(model(a.to(dev) if dev is not None else a), dim=1)
    return (1.0 - (ea * embedding).sum(1)).clamp_min(0.0)
