"""Perceptual and identity distances: the two terms of the paper's semantic-preservation loss (Eq. 1).

Eq. 1 of the paper compares ``G(z)`` and ``G'(z)`` with ``LPIPS + lambda_ID * ID`` after resizing both images
for the loss. This module builds the two networks for either profile and exposes the per-image distances:

* :func:`build_lpips` / :func:`lpips_distance` - LPIPS (Zhang et al. 2018) through the ``lpips`` package.
  The profile's ``lpips_train_net`` ("vgg") is the training loss, ``lpips_eval_net`` ("alex") the evaluation
  metric (paper section 4.1; docs/reference.md section 5).
* :func:`build_identity` / :func:`identity_distance` - a face-identity embedding and pSp's ID-loss form,
  ``1 - cos(e(a), e(b))`` (docs/reference.md section 2).

Where the weights come from
---------------------------
``ffhq``: LPIPS is constructed with ``pretrained=True`` (the calibrated linear heads ship inside the ``lpips``
package) and ``pnet_rand=True``, so torchvision never downloads anything at construction; the ImageNet backbone
(``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``) is then resolved through :func:`facestyle.hub.resolve`
(facestyle cache, torch's cache, ``$FACESTYLE_CKPT_LPIPS_VGG16`` ...) and its torchvision ``features.N.*`` keys
are copied into lpips's ``slice{k}.N.*`` layout. Identity is facenet-pytorch's ``InceptionResnetV1`` with the
VGGFace2 state dict resolved the same way (``facenet-vggface2``).

``mini``: ImageNet backbones cannot be had offline, so the mini LPIPS is **the same architecture and the same
shipped linear heads over a backbone whose convolutions are re-initialised from a fixed seed** (a dedicated
``torch.Generator``, He-normal weights, zero biases; independent of the global RNG). Why this is acceptable:

* random convolutional features are still multi-scale, local colour/edge/texture detectors; LPIPS compares
  their unit-normalised channel vectors at five depths, so it responds to structure and texture differences
  the way a pixel loss does not. They are not calibrated to human judgements (the heads were fitted to
  ImageNet features, so over random features they are only a fixed non-negative weighting of channels);
* the shipped heads' weights are non-negative, so the result is still a pseudo-distance: ``d(x, x) = 0``,
  ``d >= 0`` and ``d(x, y) = d(y, x)``;
* seeded weights make the number the same on every machine and in every run, which is what a metric and a
  training loss in CI need. Mini LPIPS values are therefore only comparable with other mini LPIPS values,
  never with published LPIPS numbers.

The mini identity network is facestyle's own ``IdentityNet`` trained on the real domain
(:func:`facestyle.hub.load_identity`). :func:`build_identity` decides what to build from the checkpoint file
itself (facestyle ``identity`` checkpoint -> IdentityNet; a facenet state dict -> InceptionResnetV1), so the
code path does not branch on the profile name.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import hub
from ..config import Profile, get_profile
from ..utils import get_device

__all__ = [
    "LPIPS_CKPT", "MINI_LPIPS_SEED", "PSP_FACE_CROP", "FACENET_SIZE", "build_lpips", "build_train_lpips", "lpips_distance",
    "resize_for_loss", "load_lpips_backbone", "seed_backbone", "FaceNetIdentity", "build_identity",
    "identity_distance", "lpips_features", "lpips_to_features", "identity_embedding", "identity_to_embedding",
]

# Registry names of the torchvision backbones (facestyle.hub entries), per lpips net name.
LPIPS_CKPT = {"vgg": "lpips-vgg16", "alex": "lpips-alexnet"}
# Seed of the mini profile's random LPIPS backbone; changing it changes every mini LPIPS number.
MINI_LPIPS_SEED = 20180401
# pSp's ArcFace crop of an FFHQ-aligned 256 px image, rows 35:223, cols 32:220 (docs/reference.md section 2).
PSP_FACE_CROP = (35, 223, 32, 220)
FACENET_SIZE = 160  # InceptionResnetV1 was trained on 160x160 crops (docs/reference.md section 5)


def _profile(profile: str | Profile) -> Profile:
    return get_profile(profile) if not isinstance(profile, Profile) else profile


def _net_name(net: str) -> str:
    net = {"vgg16": "vgg", "alexnet": "alex"}.get(net, net)
    if net not in LPIPS_CKPT:
        raise ValueError(f"unknown LPIPS net {net!r}: choose one of {', '.join(LPIPS_CKPT)}")
    return net


def _backbone_mode(prof: Profile, backbone: str | None) -> str:
    mode = backbone or prof.lpips_backbone
    if mode not in ("seeded", "pretrained"):
        raise ValueError(f"unknown LPIPS backbone mode {mode!r}: choose 'seeded' or 'pretrained'")
    return mode


@contextlib.contextmanager
def _quiet_construction():
    """Build torchvision/lpips modules without touching the global RNG or printing deprecation noise.

    Their constructors initialise weights from the global RNG (which would shift every later random draw of the
    caller) and lpips passes the deprecated ``pretrained=`` keyword to torchvision.
    """
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


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


def _unwrap_state_dict(obj: Any, path) -> dict:
    if isinstance(obj, dict) and obj.get("format") == hub.FORMAT_TAG:
        obj = obj.get("state_dict")
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise hub.CheckpointError(f"{path} is not a state dict of tensors (got {type(obj).__name__})")
    return obj


@torch.no_grad()
def load_lpips_backbone(model: nn.Module, path: str | os.PathLike, net: str) -> nn.Module:
    """Copy a torchvision ``vgg16`` / ``alexnet`` state dict into an ``lpips.LPIPS`` backbone, in place.

    lpips keeps torchvision's layer indices inside its slices (``slice2.5.weight`` is ``features.5.weight``), so
    every backbone parameter has exactly one torchvision key; keys already in lpips layout are accepted too.
    The classifier weights in the file are not needed and are ignored.
    """
    sd = _unwrap_state_dict(hub.safe_load(path), path)
    sd = {k[len("module."):] if str(k).startswith("module.") else k: v for k, v in sd.items()}
    target = model.net.state_dict()
    mapped, missing, bad = {}, [], []
    for key, ref in target.items():
        _, idx, leaf = key.split(".", 2)  # "slice{k}", layer index, "weight"/"bias"
        src = next((c for c in (f"features.{idx}.{leaf}", key) if c in sd), None)
        if src is None:
            missing.append(f"features.{idx}.{leaf}")
            continue
        if tuple(sd[src].shape) != tuple(ref.shape):
            bad.append(f"{src} {tuple(sd[src].shape)} vs {tuple(ref.shape)}")
            continue
        mapped[key] = sd[src].to(ref.dtype)
    if missing or bad:
        arch = {"vgg": "VGG16", "alex": "AlexNet"}[net]
        detail = "; ".join(p for p in (f"missing {', '.join(missing[:4])}" if missing else "",
                                       f"shape mismatch {', '.join(bad[:4])}" if bad else "") if p)
        raise hub.CheckpointError(f"{path} is not a torchvision {arch} state dict usable as the LPIPS-{net} "
                                  f"backbone: {detail}")
    model.net.load_state_dict(mapped, strict=True)
    return model


def build_lpips(net: str = "vgg", profile: str | Profile = "mini", device: Any = "auto", *,
                backbone: str | None = None, weights: str | os.PathLike | None = None,
                seed: int = MINI_LPIPS_SEED, download: bool | None = None) -> nn.Module:
    """A frozen ``lpips.LPIPS`` module in eval mode (the LPIPS term of paper Eq. 1 and Eq. 2).

    ``net`` is ``"vgg"`` (training loss) or ``"alex"`` (evaluation). ``backbone`` overrides the profile's choice:
    ``"pretrained"`` loads torchvision ImageNet weights via :func:`facestyle.hub.resolve` (``weights`` may name a
    file or registry entry instead of ``lpips-vgg16`` / ``lpips-alexnet``), ``"seeded"`` uses the mini profile's
    seeded random backbone. Parameters are frozen; gradients still flow to the inputs.
    """
    import lpips

    net = _net_name(net)
    prof = _profile(profile)
    mode = _backbone_mode(prof, backbone)
    with _quiet_construction():
        # pnet_rand=True: torchvision builds the backbone without downloading; the heads load from the package.
        model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
    if mode == "pretrained":
        path = hub.resolve(weights or LPIPS_CKPT[net], download=download)
        load_lpips_backbone(model, path, net)
    else:
        seed_backbone(model.net, seed)
    model.backbone_mode = mode
    model.net_name = net
    model = model.to(get_device(device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_train_lpips(profile: str | Profile = "mini", device: Any = "auto", *,
                      weights: str | os.PathLike | None = None, download: bool | None = None) -> nn.Module:
    """The profile's *training* LPIPS: ``lpips_train_net`` over ``weights`` or ``profile.lpips_train_weights``
    when one is named (loaded as a pretrained backbone), else over the profile's default backbone mode."""
    prof = _profile(profile)
    weights = weights or prof.lpips_train_weights
    return build_lpips(prof.lpips_train_net, prof, device, backbone="pretrained" if weights else None,
                       weights=weights, download=download)


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


def _looks_like_facenet(sd: Any) -> bool:
    return isinstance(sd, dict) and "conv2d_1a.conv.weight" in sd and "last_linear.weight" in sd


def _build_facenet(sd: dict, path) -> FaceNetIdentity:
    from facenet_pytorch import InceptionResnetV1

    with _quiet_construction():
        # pretrained=None: facenet would otherwise download its weights itself (URLError offline).
        net = InceptionResnetV1(pretrained=None, classify=False)
    # facenet's released file also holds the 8631-way VGGFace2 classifier (logits.*), unused for embeddings.
    sd = {k: v for k, v in sd.items() if not str(k).startswith("logits.")}
    net.load_state_dict(hub._check_state_dict(net, sd, path, "facenet InceptionResnetV1"))
    return FaceNetIdentity(net)


def build_identity(profile: str | Profile = "mini", device: Any = "auto", *,
                   ckpt: str | os.PathLike | None = None, download: bool | None = None) -> nn.Module:
    """A frozen module mapping images in [-1, 1] to unit identity embeddings (the ID term of paper Eq. 1).

    ``ckpt`` (a path or registry name) overrides the profile's ``identity_ckpt``. What is built follows the
    file: a facestyle ``identity`` checkpoint gives the mini :class:`~facestyle.nn.judges.IdentityNet`, a facenet
    state dict (e.g. ``20180402-114759-vggface2.pt``) gives :class:`FaceNetIdentity`.
    """
    prof = _profile(profile)
    path = hub.resolve(ckpt or prof.identity_ckpt, download=download)
    obj = hub.safe_load(path)
    dev = get_device(device)
    if isinstance(obj, dict) and obj.get("format") == hub.FORMAT_TAG:
        model = hub.load_identity(path, device=dev)
    else:
        sd = obj.get("state_dict") if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
        if not _looks_like_facenet(sd):
            raise hub.CheckpointError(
                f"{path} is neither a facestyle identity checkpoint nor a facenet InceptionResnetV1 state dict "
                f"(expected keys such as conv2d_1a.conv.weight); pass the facenet-vggface2 file or a mini identity "
                f"checkpoint")
        model = _build_facenet(sd, path)
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


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
