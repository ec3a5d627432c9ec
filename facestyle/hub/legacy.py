"""StyleGAN2 generators and discriminators from the files of the projects facestyle builds on, the way NVlabs'
stylegan3 ``legacy.py`` reads theirs: rosinality's converted official weights, training files and bare state
dicts, and facestyle's own checkpoints. The config is inferred from the weights' shapes, because these files do
not store one. Also here: the writers of facestyle checkpoints for those models and the loaders of the mini
world's judges. pSp encoders are in :mod:`facestyle.hub.psp`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import GeneratorConfig
from ..utils import get_device
from .checkpoint import FORMAT_TAG, _check_facestyle, load_facestyle_checkpoint, save_checkpoint
from .errors import CheckpointError
from .safe import _describe, _is_facestyle, _load, _looks_like_d


# --------------------------------------------------------------------------------------------------------------
# checking weights against the model they are for
# --------------------------------------------------------------------------------------------------------------

def _check_state_dict(model: nn.Module, sd: dict, path: Path, what: str, tolerate_missing: str | None = None) -> dict:
    """Every key and shape of ``sd`` must match ``model``; returns the dict to load (float32)."""
    ref = model.state_dict()
    missing = [k for k in ref if k not in sd and not (tolerate_missing and k.startswith(tolerate_missing))]
    unexpected = [k for k in sd if k not in ref]
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(ref[k].shape)}" for k in ref
           if k in sd and isinstance(sd[k], torch.Tensor) and tuple(sd[k].shape) != tuple(ref[k].shape)]
    if missing or unexpected or bad:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad)):
            if items:
                parts.append(f"{len(items)} {label} ({', '.join(items[:4])}{', ...' if len(items) > 4 else ''})")
        raise CheckpointError(f"{path} does not match a {what}: {'; '.join(parts)}")
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and ref[k].is_floating_point():
            v = v.to(ref[k].dtype)
        out[k] = v
    return out


def _finish(model: nn.Module, device: torch.device, requires_grad: bool) -> nn.Module:
    model = model.to(device).eval()
    for prm in model.parameters():
        prm.requires_grad_(requires_grad)
    return model


def _get(args: Any, name: str, default=None):
    if args is None:
        return default
    if isinstance(args, dict):
        return args.get(name, default)
    return getattr(args, name, default)


# --------------------------------------------------------------------------------------------------------------
# StyleGAN2 generator / discriminator
# --------------------------------------------------------------------------------------------------------------

def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's channel table (docs/reference.md section 1)."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
            1024: 16 * cm}


def _match_cm(channels: dict[int, int]) -> int | None:
    for cm in (2, 1, 4, 3):
        table = default_channels(cm)
        if all(table.get(r) == c for r, c in channels.items()):
            return cm
    return None


def _kernel_1d(k2d: torch.Tensor) -> tuple:
    """Recover the 1-D FIR taps (up to scale) from a stored separable 2-D kernel buffer."""
    k = k2d.detach().float().sum(dim=1)
    k = k / k.min().clamp_min(1e-12)
    k = [round(float(v), 6) for v in k]
    return tuple(int(v) if float(v).is_integer() else v for v in k)


def _blur_from(sd: dict, key: str) -> tuple:
    """The 1-D blur kernel behind the 2-D buffer ``sd[key]``; StyleGAN2's (1, 3, 3, 1) when the file has none."""
    kbuf = sd.get(key)
    if kbuf is None or kbuf.ndim != 2:
        return (1, 3, 3, 1)
    blur = _kernel_1d(kbuf)
    return (1, 3, 3, 1) if list(blur) == [1, 3, 3, 1] else blur


def infer_generator_config(sd: dict, args: Any = None, hints: dict | None = None) -> GeneratorConfig:
    """Size, style_dim, n_mlp, channel table and blur kernel of a rosinality generator state dict.

    Shapes decide; ``args`` / ``hints`` only supply what shapes cannot show (``lr_mlp``). Raises CheckpointError
    (with a description of the file) when ``sd`` is not a StyleGAN2 generator.
    """
    hints = hints or {}
    style_ids = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", str(k))))
    n_rgb = sum(1 for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", str(k)))
    if not style_ids or "input.input" not in sd or "conv1.conv.weight" not in sd:
        raise CheckpointError(f"not a StyleGAN2 generator: {_describe(sd)}")
    style_dim = int(sd[f"style.{style_ids[0]}.weight"].shape[1])
    log_size = n_rgb + 2
    size = 2 ** log_size
    channels = {4: int(sd["input.input"].shape[1])}
    for k in range(n_rgb):
        w = sd.get(f"convs.{2 * k}.conv.weight")
        if w is None:
            raise CheckpointError(f"not a complete StyleGAN2 generator: convs.{2 * k}.conv.weight is missing")
        channels[2 ** (k + 3)] = int(w.shape[1])
    cm = _match_cm(channels)
    blur = _blur_from(sd, "convs.0.conv.blur.kernel")
    lr_mlp = float(hints.get("lr_mlp", _get(args, "lr_mlp", 0.01)) or 0.01)
    cfg = GeneratorConfig(size=size, style_dim=style_dim, n_mlp=len(style_ids),
                          channel_multiplier=cm if cm is not None else int(hints.get("channel_multiplier", 2) or 2),
                          lr_mlp=lr_mlp, channels=None if cm is not None else channels)
    if blur != (1, 3, 3, 1):
        object.__setattr__(cfg, "_blur_kernel", blur)  # rare; carried beside the frozen config
    return cfg


def _blur_of(cfg) -> tuple:
    return getattr(cfg, "_blur_kernel", (1, 3, 3, 1))


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """A freshly initialised Generator for ``cfg`` (the global RNG stream is left untouched)."""
    from ..nn.stylegan2 import Generator

    with torch.random.fork_rng(devices=[]):
        return Generator(cfg.size, style_dim=cfg.style_dim, n_mlp=cfg.n_mlp,
                         channel_multiplier=cfg.channel_multiplier, blur_kernel=_blur_of(cfg), lr_mlp=cfg.lr_mlp,
                         channels=dict(cfg.channels) if cfg.channels else None)


def infer_discriminator_config(sd: dict) -> dict:
    """Size, channel multiplier / table and blur kernel of a rosinality discriminator state dict."""
    if not _looks_like_d(sd):
        raise CheckpointError(f"not a StyleGAN2 discriminator: {_describe(sd)}")
    n_res = sum(1 for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", str(k)))
    log_size = n_res + 2
    size = 2 ** log_size
    channels = {size: int(sd["convs.0.0.weight"].shape[0])}
    for j in range(1, n_res + 1):
        w = sd.get(f"convs.{j}.conv2.1.weight")
        if w is None:
            raise CheckpointError(f"not a complete StyleGAN2 discriminator: convs.{j}.conv2.1.weight is missing")
        channels[2 ** (log_size - j)] = int(w.shape[0])
    cm = _match_cm(channels)
    blur = _blur_from(sd, "convs.1.conv2.0.kernel")
    return {"size": size, "channel_multiplier": cm if cm is not None else 2,
            "channels": None if cm is not None else channels, "blur_kernel": blur}


def build_discriminator(dcfg: dict) -> nn.Module:
    from ..nn.stylegan2 import Discriminator

    with torch.random.fork_rng(devices=[]):
        return Discriminator(dcfg["size"], channel_multiplier=dcfg.get("channel_multiplier", 2),
                             blur_kernel=tuple(dcfg.get("blur_kernel", (1, 3, 3, 1))),
                             channels=dict(dcfg["channels"]) if dcfg.get("channels") else None)


@dataclass
class LoadedGenerator:
    """A ready generator and what came with it.

    ``latent_avg`` is the file's (``latent_avg_source == "file"``) or, for files without one (the FFHQ-256
    ``550000.pt`` style), the mean of 4096 mapped z computed at load time (``latent_avg_source`` says so).
    ``g`` / ``d`` / ``extras`` (optimiser states, ``ada_aug_p``) are filled only with ``training=True``.
    """

    g_ema: nn.Module
    latent_avg: torch.Tensor
    d: nn.Module | None = None
    g: nn.Module | None = None
    args: Any = None
    path: Path | None = None
    config: GeneratorConfig | None = None
    latent_avg_source: str = "file"
    format: str = ""
    meta: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)


def _unwrap_generator(obj: Any, path: Path) -> dict:
    """Find the generator parts in any supported layout."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a pickled {type(obj).__name__}, not a StyleGAN2 generator checkpoint")
    if _is_facestyle(obj):
        ck = _check_facestyle(obj, path)
        if ck["kind"] not in ("stylegan2", "stylegan2-train", "generator"):
            raise CheckpointError(f"{path} is a facestyle '{ck['kind']}' checkpoint, not a StyleGAN2 generator")
        ex = ck["extra"]
        return {"g_ema": ck["state_dict"], "latent_avg": ex.get("latent_avg"), "g": ex.get("g"), "d": ex.get("d"),
                "args": None, "hints": ck["config"], "meta": ck["meta"], "format": FORMAT_TAG,
                "extras": {k: v for k, v in ex.items() if k not in ("latent_avg", "g", "d")},
                "d_config": ck["config"].get("discriminator") if isinstance(ck["config"], dict) else None}
    if "g_ema" in obj:
        training = any(k in obj for k in ("g_optim", "d_optim", "args"))
        fmt = ("rosinality-train" if training else
               "rosinality-converted" if obj.get("latent_avg") is not None else "rosinality (g_ema only)")
        extras = {k: obj[k] for k in ("g_optim", "d_optim", "ada_aug_p") if k in obj}
        return {"g_ema": obj["g_ema"], "latent_avg": obj.get("latent_avg"), "g": obj.get("g"), "d": obj.get("d"),
                "args": obj.get("args"), "hints": {}, "meta": {}, "format": fmt, "extras": extras}
    if "style.1.weight" in obj and "input.input" in obj:
        return {"g_ema": obj, "latent_avg": None, "g": None, "d": None, "args": None, "hints": {}, "meta": {},
                "format": "bare generator state dict", "extras": {}}
    if "g" in obj and isinstance(obj["g"], dict) and "style.1.weight" in obj["g"]:
        return {"g_ema": obj["g"], "latent_avg": obj.get("latent_avg"), "g": None, "d": obj.get("d"),
                "args": obj.get("args"), "hints": {}, "meta": {}, "format": "rosinality (g only, no g_ema)",
                "extras": {}}
    raise CheckpointError(f"{path} is not a StyleGAN2 generator checkpoint: {_describe(obj)}")


def _mean_latent(g: nn.Module, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Mean of ``n`` mapped z (fixed seed, global RNG untouched), shape ``[style_dim]`` like ``latent_avg``."""
    first = next(g.parameters())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(n, g.style_dim, generator=gen).to(first.device)
        return g.style(z).mean(0)


def _build_loaded_generator(sd: dict, path: Path, cfg: GeneratorConfig, what: str = "StyleGAN2 generator") -> nn.Module:
    g = build_generator(cfg)
    g.load_state_dict(_check_state_dict(g, sd, path, f"{what} (size {cfg.size}, style_dim {cfg.style_dim}, "
                                                      f"n_mlp {cfg.n_mlp})", tolerate_missing="noises."),
                      strict=False)
    return g


def load_generator(name_or_path: str | os.PathLike, device: Any = "auto", *, expected_size: int | None = None,
                   training: bool = False, requires_grad: bool = False, download: bool | None = None
                   ) -> LoadedGenerator:
    """Load a StyleGAN2 generator from any supported file into a ready module (eval mode, frozen by default).

    Accepts: the converted official file ``{g_ema, latent_avg}`` (+ ``g``, ``d``); ``{g_ema}`` without
    ``latent_avg`` (mean latent computed); a rosinality training file ``{g, d, g_ema, g_optim, d_optim, args,
    ada_aug_p}``; a bare generator state dict; facestyle's own ``stylegan2`` checkpoints. ``training=True`` also
    builds ``g`` and ``d`` (when present) and keeps optimiser states in ``extras``.
    """
    dev = get_device(device)
    path, obj = _load(name_or_path, download)
    parts = _unwrap_generator(obj, path)
    sd = parts["g_ema"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'g_ema' holds a {type(sd).__name__}, not a state dict")
    try:
        cfg = infer_generator_config(sd, parts["args"], parts["hints"] if isinstance(parts["hints"], dict) else {})
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if expected_size is not None and cfg.size != int(expected_size):
        raise CheckpointError(f"{path} holds a {cfg.size} px generator, but {expected_size} px is expected here "
                              f"(wrong checkpoint for this profile?)")
    g_ema = _finish(_build_loaded_generator(sd, path, cfg), dev, requires_grad)
    latent_avg, source = parts["latent_avg"], "file"
    if latent_avg is None:
        latent_avg = _mean_latent(g_ema)
        source = "computed: mean of 4096 mapped z (seed 0) because the file has no latent_avg"
    latent_avg = latent_avg.detach().float().to(dev)
    out = LoadedGenerator(g_ema=g_ema, latent_avg=latent_avg, args=parts["args"], path=path, config=cfg,
                          latent_avg_source=source, format=parts["format"], meta=dict(parts["meta"] or {}))
    if training:
        if parts["g"] is not None:
            out.g = _finish(_build_loaded_generator(parts["g"], path, cfg, "StyleGAN2 generator (g)"), dev,
                            requires_grad)
        if parts["d"] is not None:
            out.d = _finish(_build_d(parts["d"], path), dev, requires_grad)
        out.extras = dict(parts["extras"])
    return out


def _build_d(sd: dict, path: Path) -> nn.Module:
    try:
        dcfg = infer_discriminator_config(sd)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    d = build_discriminator(dcfg)
    d.load_state_dict(_check_state_dict(d, sd, path, f"StyleGAN2 discriminator (size {dcfg['size']})"))
    return d


def load_discriminator(name_or_path: str | os.PathLike, device: Any = "auto", *, expected_size: int | None = None,
                       requires_grad: bool = False, download: bool | None = None) -> nn.Module:
    """A StyleGAN2 discriminator from a rosinality training / converted file (``d``), facestyle's own
    ``discriminator`` checkpoint, a facestyle generator file with ``extra['d']``, or a bare state dict."""
    dev = get_device(device)
    path, obj = _load(name_or_path, download)
    sd = None
    if _is_facestyle(obj):
        ck = _check_facestyle(obj, path)
        sd = ck["state_dict"] if ck["kind"] == "discriminator" else ck["extra"].get("d")
    elif isinstance(obj, dict):
        sd = obj.get("d") if isinstance(obj.get("d"), dict) else (obj if _looks_like_d(obj) else None)
    if sd is None:
        raise CheckpointError(f"{path} holds no StyleGAN2 discriminator: it is {_describe(obj)} "
                              f"(discriminators come with rosinality training files or converted files made "
                              f"with --disc)")
    d = _build_d(sd, path)
    size = infer_discriminator_config(sd)["size"]
    if expected_size is not None and size != int(expected_size):
        raise CheckpointError(f"{path} holds a {size} px discriminator, but {expected_size} px is expected here")
    return _finish(d, dev, requires_grad)


# --------------------------------------------------------------------------------------------------------------
# writing facestyle checkpoints of the models above
# --------------------------------------------------------------------------------------------------------------

def generator_config_of(g: nn.Module) -> GeneratorConfig:
    """The GeneratorConfig that rebuilds ``g`` (read from its weights)."""
    cfg = infer_generator_config(g.state_dict())
    lr = getattr(g.style[1], "lr_mul", None) if len(g.style) > 1 else None
    return dataclasses.replace(cfg, lr_mlp=float(lr)) if lr is not None else cfg


def save_generator_checkpoint(path: str | os.PathLike, g_ema: nn.Module, *, latent_avg: torch.Tensor | None = None,
                              d: nn.Module | None = None, meta: dict | None = None, half: bool = False,
                              kind: str = "stylegan2", **extra) -> Path:
    """facestyle ``stylegan2`` checkpoint of a generator (+ latent_avg, + discriminator as ``extra['d']``)."""
    if latent_avg is not None:
        extra["latent_avg"] = latent_avg.reshape(-1) if latent_avg.dim() == 2 and latent_avg.shape[0] == 1 \
            else latent_avg
    if d is not None:
        extra["d"] = d
    return save_checkpoint(path, kind=kind, state_dict=g_ema, config=generator_config_of(g_ema), meta=meta, half=half,
                           **extra)


# --------------------------------------------------------------------------------------------------------------
# the mini world's judges (facestyle's own checkpoints)
# --------------------------------------------------------------------------------------------------------------

def load_oracle(name_or_path: str | os.PathLike = "mini-oracle", device: Any = "auto") -> nn.Module:
    """The mini world's evaluation oracle (factor + domain predictor); never used as a training loss."""
    from ..nn.judges import Oracle

    ck = load_facestyle_checkpoint(name_or_path, kind="oracle")
    cfg = ck["config"]
    model = Oracle([tuple(k) for k in cfg["factor_kinds"]], n_domains=cfg["n_domains"], input_size=cfg["size"])
    model.load_state_dict(_check_state_dict(model, ck["state_dict"], ck["path"], "mini oracle"))
    return _finish(model, get_device(device), False)


def load_identity(name_or_path: str | os.PathLike = "mini-identity", device: Any = "auto") -> nn.Module:
    """The mini profile's identity network (unit-norm embedding; the role facenet plays in ffhq)."""
    from ..nn.judges import IdentityNet

    ck = load_facestyle_checkpoint(name_or_path, kind="identity")
    model = IdentityNet(input_size=ck["config"]["size"])
    model.load_state_dict(_check_state_dict(model, ck["state_dict"], ck["path"], "mini identity network"))
    return _finish(model, get_device(device), False)
