"""Random-weight files in the official formats, for rehearsing the paper's setting without its weights.

The ``ffhq`` profile reads files that nobody may download at run time here: rosinality's converted
StyleGAN2-FFHQ, pSp's encoders, facenet's VGGFace2 weights, torchvision's ImageNet backbones and the FID
Inception. :func:`write_official_files` writes each one *in the layout its owner publishes* (the same keys, the
same nesting, the same extra fields) with random weights, at the size of a profile: ``rehearsal`` (32 px, what
CI runs) or ``ffhq`` itself (1024 px, what ``make gpu-check`` times). The loaders cannot tell them from the real
files, so every code path the real files take is walked; only the pictures are meaningless.

Where they go is where a user puts the real ones: files the hub verifies by a published hash prefix (the
torchvision backbones, the FID Inception) are handed over by ``FACESTYLE_CKPT_<NAME>`` (a random file cannot
match a published hash, and that variable is the documented way to give a file of one's own); the others are
written into the facestyle cache under their official file names, where ``facestyle hub list`` finds them.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import get_profile
from .hub.registry import get_entry

__all__ = ["write_official_files", "files_environment"]

# Hub names of the pSp-format encoders and the facestyle-format one (no public Z+ encoder exists: facestyle
# trains it and writes its own format, as a user's run would).
_PSP_OFFICIAL = {"w": "BackboneEncoderUsingLastLayerIntoW", "wplus": "GradualStyleEncoder"}


def _generator_files(prof, root: Path, seed: int) -> dict:
    from .hub.legacy import build_generator
    from .nn.stylegan2 import Discriminator

    gc = prof.generator
    torch.manual_seed(seed)
    g = build_generator(gc).eval()
    d = Discriminator(gc.size, channel_multiplier=gc.channel_multiplier, channels=gc.channels)
    with torch.no_grad():
        latent_avg = g.mean_latent(256, generator=torch.Generator().manual_seed(seed))
    # rosinality's convert_weight.py output made with --disc: {g_ema, latent_avg, d}. Finetuning needs the
    # pretrained D (the paper, like Toonify, starts both networks from FFHQ); a file converted without --disc
    # is refused by `facestyle finetune` with a line saying so.
    path = root / get_entry(prof.generator_ckpt).filename
    torch.save({"g_ema": g.state_dict(), "latent_avg": latent_avg, "d": d.state_dict()}, path)
    return {"g": g, "latent_avg": latent_avg, prof.generator_ckpt: path}


def _encoder_files(prof, g, latent_avg, root: Path, seed: int) -> dict:
    from .hub.psp import save_psp_checkpoint
    from .nn.encoders import PSP, build_encoder

    out = {}
    for i, (kind, name) in enumerate((("w", prof.w_encoder_ckpt), ("wplus", prof.wplus_encoder_ckpt),
                                      ("zplus", prof.zplus_encoder_ckpt))):
        torch.manual_seed(seed + 10 + i)
        enc = build_encoder(kind, prof.encoder, n_styles=g.n_latent, style_dim=g.style_dim)
        avg = latent_avg.reshape(1, -1).repeat(g.n_latent, 1)
        model = PSP(enc, g, latent_avg=avg if kind == "wplus" else latent_avg.reshape(-1),
                    start_from_latent_avg=kind != "zplus", input_size=prof.encoder.input_size, n_styles=g.n_latent)
        path = root / get_entry(name).filename
        if kind in _PSP_OFFICIAL:
            # pSp's checkpoint: {state_dict (encoder.* and decoder.*), opts (its argparse options), latent_avg}.
            opts = {"encoder_type": _PSP_OFFICIAL[kind], "output_size": prof.generator.size, "input_nc": 3,
                    "start_from_latent_avg": True, "learn_in_w": kind == "w", "label_nc": 0,
                    "exp_dir": "/experiments/rehearsal", "checkpoint_path": None}
            torch.save({"state_dict": model.state_dict(), "opts": opts,
                        "latent_avg": avg if kind == "wplus" else latent_avg.reshape(-1)}, path)
        else:
            # facestyle's own encoder format, naming its decoder by hub name as a trained encoder does.
            save_psp_checkpoint(path, model, kind=kind, encoder_config=prof.encoder, decoder_ckpt=prof.generator_ckpt)
        out[name] = path
    return out


def _facenet_file(prof, root: Path, seed: int) -> dict:
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(seed + 20)
    # 8631 classes: the VGGFace2 file's logits layer, which the identity loss never reads but the file carries.
    net = InceptionResnetV1(pretrained=None, classify=False, num_classes=8631)
    path = root / get_entry(prof.identity_ckpt).filename
    torch.save(net.state_dict(), path)
    return {prof.identity_ckpt: path}


def _torchvision_files(root: Path, seed: int) -> dict:
    import torchvision

    out = {}
    for name, build in (("lpips-vgg16", torchvision.models.vgg16), ("lpips-alexnet", torchvision.models.alexnet)):
        torch.manual_seed(seed + 30)
        sd = build(weights=None).state_dict()
        # torchvision's own layout (features.N.weight ...). The classifier, which LPIPS never reads, is left out:
        # it is 85% of VGG16's 528 MB, and writing it would be most of the rehearsal's time.
        sd = {k: v for k, v in sd.items() if k.startswith("features.")}
        path = root / get_entry(name).filename
        torch.save(sd, path)
        out[name] = path
    return out


def _inception_file(root: Path, seed: int) -> dict:
    from .hub.inception import fid_inception_architecture

    torch.manual_seed(seed + 40)
    path = root / get_entry("fid-inception").filename
    torch.save(fid_inception_architecture().state_dict(), path)
    return {"fid-inception": path}


def write_official_files(root: str | os.PathLike, profile: str = "rehearsal", *, seed: int = 0,
                         cache: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write random-weight files, each in its owner's format, for every file ``profile`` reads.

    Files whose hub entry has a published hash go to ``root``; hand them over with :func:`files_environment`.
    The others go to ``cache`` (default: ``root``) under their official names; point ``FACESTYLE_HOME`` at the
    folder above it, or pass ``cache=facestyle.hub.cache_dir()``. Returns ``{hub name: path}``.
    """
    prof = get_profile(profile)
    root = Path(root)
    cache = Path(cache) if cache is not None else root
    root.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        gen = _generator_files(prof, cache, seed)
        g, latent_avg = gen.pop("g"), gen.pop("latent_avg")
        files = {**gen, **_encoder_files(prof, g, latent_avg, cache, seed), **_facenet_file(prof, cache, seed),
                 **_torchvision_files(root, seed), **_inception_file(root, seed)}
    return files


def files_environment(files: dict[str, Path]) -> dict[str, str]:
    """``FACESTYLE_CKPT_<NAME>`` settings for the files the hub would otherwise check against a published hash."""
    env = {}
    for name, path in files.items():
        e = get_entry(name)
        if e.sha256 or e.sha256_prefix:
            env[e.env_var] = str(path)
    return env
