"""pSp encoders: pixel2style2pixel's ``{state_dict, opts, latent_avg}`` files and facestyle's own ``encoder`` /
``psp`` checkpoints. pSp's opts do not record the backbone's depth, so it is read from the weights' shapes, as
the decoder's config is; :func:`save_psp_checkpoint` writes what :func:`load_psp` reads.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import EncoderConfig
from ..utils import get_device
from .checkpoint import _check_facestyle, _plain, save_checkpoint
from .errors import CheckpointError
from .legacy import (_build_loaded_generator, _check_state_dict, _finish, _mean_latent, generator_config_of,
                     infer_generator_config, load_generator)
from .safe import _describe, _is_facestyle, _load

_PSP_TYPES = {"GradualStyleEncoder": "wplus", "BackboneEncoderUsingLastLayerIntoW": "w"}
_IR_UNITS = {50: 24, 100: 49, 152: 50}  # bottleneck units of IR-50/100/152 (blocks 3+4+14+3, 3+13+30+3, 3+8+36+3)


def _infer_backbone(esd: dict, opts: dict) -> dict:
    """num_layers / mode / blocks of an IR(-SE) body from its shapes (pSp opts do not store them)."""
    unit_ids = sorted({int(m.group(1)) for k in esd if (m := re.match(r"body\.(\d+)\.res_layer\.", str(k)))})
    if not unit_ids or "input_layer.0.weight" not in esd:
        raise CheckpointError(f"no IR(-SE) backbone found in the encoder weights: {_describe(esd)}")
    mode = "ir_se" if any(re.match(r"body\.\d+\.res_layer\.\d+\.fc1\.", str(k)) for k in esd) else "ir"
    units = []
    for u in unit_ids:
        convs = sorted((k for k in esd if re.fullmatch(rf"body\.{u}\.res_layer\.\d+\.weight", str(k))
                        and esd[k].ndim == 4), key=lambda s: int(s.split(".")[3]))
        w = esd[convs[0]]
        units.append((int(w.shape[1]), int(w.shape[0])))
    n = len(units)
    std = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
    for layers, counts in std.items():
        depths = [64, 128, 256, 512]
        expect = []
        in_c = 64
        for d, c in zip(depths, counts):
            expect += [(in_c, d)] + [(d, d)] * (c - 1)
            in_c = d
        if units == expect:
            return {"num_layers": layers, "mode": mode, "blocks": None}
    # custom backbone: a block starts at unit 0 and wherever the width changes
    blocks, start = [], 0
    for i in range(1, n + 1):
        if i == n or units[i][0] != units[i][1]:
            blocks.append((units[start][0], units[start][1], i - start))
            start = i
    return {"num_layers": int(opts.get("num_layers", 0) or 0), "mode": mode, "blocks": tuple(blocks)}


def load_psp(name_or_path: str | os.PathLike, device: Any = "auto", *, expected_size: int | None = None,
             requires_grad: bool = False, download: bool | None = None):
    """A ready pSp model (encoder + decoder + latent_avg) from ``{state_dict, opts, latent_avg}``.

    Encoder type comes from ``opts['encoder_type']`` (GradualStyleEncoder -> W+, BackboneEncoderUsingLastLayerIntoW
    -> W); n_styles, backbone depth / custom blocks and the decoder size come from the weights' shapes (opts values,
    when present, are used for what shapes cannot tell). facestyle's own ``encoder`` / ``psp`` checkpoints, whose
    config carries the encoder kind and sizes, load here too.
    """
    from ..nn.encoders import PSP, build_encoder

    dev = get_device(device)
    path, obj = _load(name_or_path, download)
    if _is_facestyle(obj):
        ck = _check_facestyle(obj, path, ("psp", "encoder"))
        sd, cfg = ck["state_dict"], dict(ck["config"] or {})
        opts = {**cfg, **(cfg.get("opts") or {})}
        latent_avg = ck["extra"].get("latent_avg", sd.get("latent_avg"))
        kind = cfg.get("encoder_kind") or cfg.get("kind") or _PSP_TYPES.get(cfg.get("encoder_type"), None)
    elif isinstance(obj, dict) and "state_dict" in obj:
        sd, opts = obj["state_dict"], obj.get("opts") or {}
        if isinstance(opts, argparse.Namespace):
            opts = vars(opts)
        latent_avg = obj.get("latent_avg")
        etype = opts.get("encoder_type", "GradualStyleEncoder")
        kind = opts.get("encoder_kind") or _PSP_TYPES.get(etype)
        if kind is None:
            raise CheckpointError(f"{path}: pSp encoder_type {etype!r} is not supported; facestyle reads "
                                  f"{', '.join(_PSP_TYPES)}")
    else:
        raise CheckpointError(f"{path} is not a pSp checkpoint: it is {_describe(obj)}")
    if not isinstance(sd, dict) or not any(str(k).startswith("encoder.") for k in sd):
        what = _describe(sd if isinstance(sd, dict) else obj)
        raise CheckpointError(f"{path} has no encoder.* weights: it is {what}")
    esd = {k[len("encoder."):]: v for k, v in sd.items() if str(k).startswith("encoder.")}
    dsd = {k[len("decoder."):]: v for k, v in sd.items() if str(k).startswith("decoder.")}
    decoder, gcfg = None, None
    if not dsd:
        ref = opts.get("decoder_ckpt")
        if not ref:
            raise CheckpointError(f"{path} has encoder weights but no decoder.* weights (and no 'decoder_ckpt' in its "
                                  f"config); pass a full pSp checkpoint")
        loaded = load_generator(ref, device="cpu", download=download)
        decoder, gcfg = loaded.g_ema, loaded.config
        if latent_avg is None:
            latent_avg = loaded.latent_avg
    else:
        try:
            gcfg = infer_generator_config(dsd, None, opts.get("generator") if isinstance(opts.get("generator"), dict)
                                          else {})
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: decoder: {exc}") from None
    if opts.get("output_size") and int(opts["output_size"]) != gcfg.size:
        raise CheckpointError(f"{path}: opts say output_size {opts['output_size']} but the decoder weights are "
                              f"{gcfg.size} px")
    if expected_size is not None and gcfg.size != int(expected_size):
        raise CheckpointError(f"{path} holds a pSp model for {gcfg.size} px, but {expected_size} px is expected here")
    n_latent = int(math.log2(gcfg.size)) * 2 - 2
    style_ids = {int(m.group(1)) for k in esd if (m := re.match(r"styles\.(\d+)\.", str(k)))}
    n_styles = int(opts.get("n_styles") or (len(style_ids) if style_ids else n_latent))
    ecfg_d = opts.get("encoder") if isinstance(opts.get("encoder"), dict) else {}
    bb = {}
    if not ecfg_d.get("blocks") and not ecfg_d.get("num_layers"):
        bb = _infer_backbone(esd, opts)
    blocks = _tupled(ecfg_d.get("blocks", bb.get("blocks")))
    input_size = ecfg_d.get("input_size") or opts.get("input_size")
    if not input_size:
        # heads of the coarse rows halve c3 down to 1x1: c3 is 2**n_down, and every backbone block halves the input
        n_down = sum(1 for k in esd if re.fullmatch(r"styles\.0\.convs\.\d+\.weight", str(k)))
        n_blocks = len(blocks) if blocks else 4
        input_size = 2 ** n_down * 2 ** n_blocks if n_down else 256
    ecfg = EncoderConfig(input_size=int(input_size),
                         num_layers=int(ecfg_d.get("num_layers", bb.get("num_layers", 50)) or 0),
                         mode=str(ecfg_d.get("mode") or bb.get("mode") or "ir_se"), blocks=blocks)
    try:
        with torch.random.fork_rng(devices=[]):
            encoder = build_encoder(kind, ecfg, n_styles, gcfg.style_dim)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot build a {kind!r} encoder from it ({exc})") from None
    encoder.load_state_dict(_check_state_dict(encoder, esd, path, f"pSp {kind} encoder ({n_styles} styles)"))
    if decoder is None:
        decoder = _build_loaded_generator(dsd, path, gcfg, "pSp decoder")
    if latent_avg is None:
        latent_avg = _mean_latent(decoder)
    start = bool(opts.get("start_from_latent_avg", True))
    model = PSP(encoder, decoder, latent_avg.detach().float(), start_from_latent_avg=start)
    model = _finish(model, dev, requires_grad)
    model.opts = dict(opts)
    model.encoder_config = ecfg
    model.generator_config = gcfg
    model.checkpoint_path = path
    return model


# --------------------------------------------------------------------------------------------------------------
# writing facestyle checkpoints of pSp models
# --------------------------------------------------------------------------------------------------------------

def save_psp_checkpoint(path: str | os.PathLike, model: nn.Module, *, kind: str, encoder_config: EncoderConfig,
                        meta: dict | None = None, half: bool = False, decoder_ckpt: str | None = None) -> Path:
    """facestyle ``encoder`` checkpoint of a PSP model; with ``decoder_ckpt`` (a hub name or path) the decoder
    weights are not duplicated and :func:`load_psp` loads that generator instead."""
    sd = model.state_dict()
    if decoder_ckpt:
        sd = {k: v for k, v in sd.items() if k.startswith("encoder.")}
    config = {"encoder_kind": kind, "n_styles": int(getattr(model.encoder, "n_styles", 0) or model.n_styles),
              "encoder": _plain(encoder_config), "generator": _plain(generator_config_of(model.decoder)),
              "start_from_latent_avg": bool(model.start_from_latent_avg), "input_size": int(model.input_size),
              "decoder_ckpt": decoder_ckpt}
    extra = {} if model.latent_avg is None else {"latent_avg": model.latent_avg}
    return save_checkpoint(path, kind="encoder", state_dict=sd, config=config, meta=meta, half=half, **extra)


def _tupled(x):
    if x is None:
        return None
    return tuple(tuple(int(v) for v in b) for b in x)
