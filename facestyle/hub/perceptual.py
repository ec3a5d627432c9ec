"""Building the two networks of the paper's semantic-preservation loss (Eq. 1) for a profile: which weight
files, which backbone. The modules and the per-image distances are in :mod:`facestyle.nn.perceptual`; this
module is where they meet the hub and the Profile.

* :func:`build_lpips` - LPIPS (Zhang et al. 2018) through the ``lpips`` package. The profile's
  ``lpips_train_net`` ("vgg") is the training loss (:func:`build_train_lpips`), ``lpips_eval_net`` ("alex") the
  evaluation metric (paper section 4.1; docs/reference.md section 5).
* :func:`build_identity` - a face-identity embedding for pSp's ID-loss form (docs/reference.md section 2).

Where the weights come from
---------------------------
``ffhq``: LPIPS is constructed with ``pretrained=True`` (the calibrated linear heads ship inside the ``lpips``
package) and ``pnet_rand=True``, so torchvision never downloads anything at construction; the ImageNet backbone
(``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``) is then resolved through :func:`facestyle.hub.resolve`
(facestyle cache, torch's cache, ``$FACESTYLE_CKPT_LPIPS_VGG16`` ...) and its torchvision ``features.N.*`` keys
are copied into lpips's ``slice{k}.N.*`` layout. Identity is facenet-pytorch's ``InceptionResnetV1`` with the
VGGFace2 state dict resolved the same way (``facenet-vggface2``).

``mini``: the same LPIPS architecture and heads over a backbone re-initialised from a fixed seed
(:func:`facestyle.nn.perceptual.seed_backbone`; that module says why this is acceptable). The mini identity
network is facestyle's own ``IdentityNet`` trained on the real domain (:func:`facestyle.hub.load_identity`).
:func:`build_identity` decides what to build from the checkpoint file itself (facestyle ``identity`` checkpoint ->
IdentityNet; a facenet state dict -> InceptionResnetV1), so the code path does not branch on the profile name.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import torch
import torch.nn as nn

from ..config import Profile, get_profile
from ..nn.perceptual import MINI_LPIPS_SEED, FaceNetIdentity, seed_backbone
from ..utils import get_device
from .checkpoint import FORMAT_TAG
from .errors import CheckpointError
from .legacy import _check_state_dict, load_identity
from .safe import safe_load
from .store import record_first_use, resolve

__all__ = ["LPIPS_CKPT", "build_lpips", "build_train_lpips", "load_lpips_backbone", "build_identity"]

# Registry names of the torchvision backbones (facestyle.hub entries), per lpips net name.
LPIPS_CKPT = {"vgg": "lpips-vgg16", "alex": "lpips-alexnet"}


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


def _unwrap_state_dict(obj: Any, path) -> dict:
    if isinstance(obj, dict) and obj.get("format") == FORMAT_TAG:
        obj = obj.get("state_dict")
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors (got {type(obj).__name__})")
    return obj


@torch.no_grad()
def load_lpips_backbone(model: nn.Module, path: str | os.PathLike, net: str) -> nn.Module:
    """Copy a torchvision ``vgg16`` / ``alexnet`` state dict into an ``lpips.LPIPS`` backbone, in place.

    lpips keeps torchvision's layer indices inside its slices (``slice2.5.weight`` is ``features.5.weight``), so
    every backbone parameter has exactly one torchvision key; keys already in lpips layout are accepted too.
    The classifier weights in the file are not needed and are ignored.
    """
    sd = _unwrap_state_dict(safe_load(path), path)
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
        raise CheckpointError(f"{path} is not a torchvision {arch} state dict usable as the LPIPS-{net} "
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
        path = resolve(weights or LPIPS_CKPT[net], download=download)
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


def _looks_like_facenet(sd: Any) -> bool:
    return isinstance(sd, dict) and "conv2d_1a.conv.weight" in sd and "last_linear.weight" in sd


def _build_facenet(sd: dict, path) -> FaceNetIdentity:
    from facenet_pytorch import InceptionResnetV1

    with _quiet_construction():
        # pretrained=None: facenet would otherwise download its weights itself (URLError offline).
        net = InceptionResnetV1(pretrained=None, classify=False)
    # facenet's released file also holds the 8631-way VGGFace2 classifier (logits.*), unused for embeddings.
    sd = {k: v for k, v in sd.items() if not str(k).startswith("logits.")}
    net.load_state_dict(_check_state_dict(net, sd, path, "facenet InceptionResnetV1"))
    return FaceNetIdentity(net)


def build_identity(profile: str | Profile = "mini", device: Any = "auto", *,
                   ckpt: str | os.PathLike | None = None, download: bool | None = None) -> nn.Module:
    """A frozen module mapping images in [-1, 1] to unit identity embeddings (the ID term of paper Eq. 1).

    ``ckpt`` (a path or registry name) overrides the profile's ``identity_ckpt``. What is built follows the
    file: a facestyle ``identity`` checkpoint gives the mini :class:`~facestyle.nn.judges.IdentityNet`, a facenet
    state dict (e.g. ``20180402-114759-vggface2.pt``) gives :class:`~facestyle.nn.perceptual.FaceNetIdentity`.
    """
    prof = _profile(profile)
    path = resolve(ckpt or prof.identity_ckpt, download=download)
    obj = safe_load(path)
    dev = get_device(device)
    if isinstance(obj, dict) and obj.get("format") == FORMAT_TAG:
        model = load_identity(path, device=dev)
    else:
        sd = obj.get("state_dict") if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
        if not _looks_like_facenet(sd):
            raise CheckpointError(
                f"{path} is neither a facestyle identity checkpoint nor a facenet InceptionResnetV1 state dict "
                f"(expected keys such as conv2d_1a.conv.weight); pass the facenet-vggface2 file or a mini identity "
                f"checkpoint")
        model = _build_facenet(sd, path)
        record_first_use(ckpt or prof.identity_ckpt, path)
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
