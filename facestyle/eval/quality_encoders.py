"""``facestyle quality encoders``: how well do the mini W / W+ / Z+ encoders (pSp, paper Eq. 4 and 6) invert
held-out real renders through G?

LPIPS and oracle attribute agreement between each input and ``G(E(x))``, next to the oracle's own agreement
with the ground truth (its ceiling), so what an encoder loses is told apart from what the oracle misreads.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .. import hub
from ..config import get_profile
from ..utils import get_device
from ..world import render, sample_content
from . import metrics as M
from .quality import (_KIND_LABEL, CATEGORICAL_TARGET, ENCODER_KINDS, _agreement_summary, _load_oracle,
                      _per_factor, _ref, oracle_read, protocol_seeds)

__all__ = ["encoder_quality"]


@contextlib.contextmanager
def _registry_override(name: str | None, path: Path | None):
    """Point the registry name ``name`` at ``path`` (``$FACESTYLE_CKPT_<NAME>``) for the duration, but only when
    ``name`` does not resolve by itself. Encoder checkpoints name their decoder (``decoder_ckpt``, usually
    ``mini-stylegan2-64``); while the shipped models are still training that name does not resolve yet, and the
    generator under test replaces the decoder anyway. Yields whether it overrode."""
    var = None
    if name and path is not None:
        try:
            var = hub.get_entry(name).env_var
            hub.resolve(name, download=False)
            var = None  # resolves: load what the encoder names, so the comparison with G is a real one
        except hub.CheckpointError:
            pass
    if var is None or var in os.environ:
        yield False
        return
    os.environ[var] = str(path)
    try:
        yield True
    finally:
        os.environ.pop(var, None)


def _load_encoder(ref: Any, g_loaded, device) -> tuple[nn.Module, bool | None]:
    """A PSP model for ``ref`` whose decoder is ``g_loaded.g_ema`` (when given), and whether the decoder the file
    holds or names has G's weights: None when no G was given or when the named decoder is not available (then
    G stands in for it)."""
    decoder_ref = None
    if g_loaded is not None and isinstance(ref, (str, os.PathLike)):
        with contextlib.suppress(hub.CheckpointError, OSError):
            ck = hub.load_facestyle_checkpoint(ref, kind=("psp", "encoder"))
            decoder_ref = (ck.get("config") or {}).get("decoder_ckpt")
    with _registry_override(decoder_ref if isinstance(decoder_ref, str) else None,
                            g_loaded.path if g_loaded is not None else None) as overridden:
        psp = ref if isinstance(ref, nn.Module) else hub.load_psp(ref, device=device)
    if g_loaded is None:
        return psp, None
    g = g_loaded.g_ema
    same = None
    if not overridden:
        own = psp.decoder.state_dict()
        same = all(k in own and own[k].shape == v.shape and torch.equal(own[k].to(v), v)
                   for k, v in g.state_dict().items() if not k.startswith("noises."))
    psp.decoder = g  # reconstruct through the generator under test (Z+ also maps through its mapping)
    return psp, same


@torch.no_grad()
def encoder_quality(kinds: Sequence[str] = ENCODER_KINDS, encoders: dict[str, Any] | None = None,
                    g_ckpt: Any = "mini-stylegan2-64", oracle: Any = "mini-oracle", n: int = 1000, seed: int = 0,
                    batch: int = 100, device: Any = "auto", *, profile: str = "mini", figure: bool = True) -> dict:
    """Reconstruction quality of each encoder on held-out real renders; writes ``mini_encoder_reconstructions.png``.

    Protocol:

    * inputs: ``x = render(sample_content(n, seed=h), "real", size=G.size, seed=h)`` with
      ``h = protocol_seeds(seed)["heldout"]`` (50,000,000 + seed), a seed no trainer uses;
    * encoders: ``encoders[kind]`` (a hub name or path; default the profile's ``{kind}_encoder_ckpt``), loaded
      with :func:`hub.load_psp`; reconstruction ``G(E(x))`` decodes the W+ codes with G = ``g_ckpt`` and G's
      constant noise (``g_ckpt=None``: the decoder the encoder file holds or names), clamped to [-1, 1].
      ``decoder_matches_g`` says whether the encoder's own decoder has G's weights (None: its named decoder
      does not resolve yet, so G stood in for it);
    * ``lpips_alex``: mean ``lpips_distance(x, recon)`` with the profile's ``lpips_eval_net`` (AlexNet; the mini
      profile's seeded backbone) at ``loss_size``;
    * ``agreement``: :func:`metrics.attribute_agreement` of oracle(x) vs oracle(recon) (categorical: same code;
      continuous: ``|diff| < 0.1``), per factor and means; ``agreement_truth``: oracle(recon) vs the true content;
    * ``oracle_ceiling``: oracle(x) vs the true content of x - the oracle's own error on these inputs, so a
      reader can tell what the encoder lost from what the oracle misreads;
    * ``meets_target``: ``agreement["mean_categorical"] >= 0.90`` (the issue's requirement for W+).

    Returns ``{"target": "encoders", "kinds": {kind: {...}}, "oracle_ceiling", "seeds", ...}``.
    """
    t0 = time.perf_counter()
    prof = get_profile(profile)
    dev = get_device(device)
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in ENCODER_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown encoder kind(s) {bad or kinds}: choose from {', '.join(ENCODER_KINDS)}")
    refs = {k: getattr(prof, f"{k}_encoder_ckpt") for k in kinds}
    refs.update({k: v for k, v in (encoders or {}).items() if k in kinds})
    g_loaded = hub.load_generator(g_ckpt, device=dev) if g_ckpt is not None else None
    orc = _load_oracle(oracle, dev)
    from ..hub import build_lpips
    from ..nn.perceptual import lpips_distance

    lp_model = build_lpips(prof.lpips_eval_net, prof, device=dev)
    seeds = protocol_seeds(seed)
    n, batch = int(n), max(1, int(batch))
    truth = sample_content(n, seed=seeds["heldout"])
    size = g_loaded.g_ema.size if g_loaded is not None else None
    x_all, pred_x = None, None
    results: dict[str, dict] = {}
    rows_fig: dict[str, torch.Tensor] = {}
    for kind in kinds:
        psp, same = _load_encoder(refs[kind], g_loaded, dev)
        if x_all is None:
            size = size or psp.decoder.size
            x_all = render(truth, "real", size=size, seed=seeds["heldout"])
            _, pred_x, _ = oracle_read(orc, x_all, batch, features=False)
        recons, lps = [], []
        for i in range(0, n, batch):
            x = x_all[i:i + batch].to(dev)
            r = psp.decode(psp.encode(x)).clamp(-1, 1)
            if r.shape[-1] != x.shape[-1]:
                raise ValueError(f"encoder {kind} reconstructs {r.shape[-1]} px images from {x.shape[-1]} px inputs")
            lps.append(lpips_distance(x, r, lp_model, prof.loss_size).float().cpu())
            recons.append(r.cpu())
        rec = torch.cat(recons)
        rows_fig[kind] = rec[:8]
        _, pred_r, _ = oracle_read(orc, rec, batch, features=False)
        agr = M.attribute_agreement(pred_x, pred_r)
        agr_t = M.attribute_agreement(truth, pred_r)
        results[kind] = {
            "checkpoint": _ref(refs[kind]), "decoder_matches_g": same, "lpips_alex": float(torch.cat(lps).mean()),
            "agreement": _agreement_summary(agr), "agreement_per_factor": _per_factor(agr),
            "agreement_truth": _agreement_summary(agr_t),
            "meets_target": agr["mean_categorical"] >= CATEGORICAL_TARGET,
        }
        del psp, rec, recons
    ceil = M.attribute_agreement(truth, pred_x)
    out = {
        "target": "encoders", "profile": profile, "n": n, "seed": int(seed), "batch": batch,
        "seeds": {"heldout": seeds["heldout"]},
        "checkpoints": {"generator": _ref(g_ckpt) if g_ckpt is not None else None, "oracle": _ref(oracle),
                        **{f"encoder_{k}": _ref(refs[k]) for k in kinds}},
        "categorical_target": CATEGORICAL_TARGET, "kinds": results,
        "oracle_ceiling": _agreement_summary(ceil), "oracle_ceiling_per_factor": _per_factor(ceil),
    }
    if figure:
        from ..viz import figure_path, save_grid

        imgs = torch.cat([x_all[:8]] + [rows_fig[k] for k in kinds])
        out["figure"] = str(save_grid(imgs, figure_path(profile, f"{profile}_encoder_reconstructions.png"),
                                      nrow=min(8, n), scale=2))
        out["figure_rows"] = ["input"] + [_KIND_LABEL[k] for k in kinds]
    out["runtime_s"] = time.perf_counter() - t0
    return out
