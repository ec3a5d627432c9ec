"""Quality numbers of the mini profile's pretrained models, measured by one command: ``facestyle quality``.

Each target is a function returning a plain dict, with (through :func:`write_report`) a markdown + JSON report
under ``figures/<profile>/``, for some a figure next to it, optionally merged into the checkpoint manifest:

* :func:`generator_quality` - is G a faithful model of the real domain? FID in the oracle's feature space
  against real renders, next to the FID between two independent real sets (the noise floor), and the
  frequency of every categorical content value in G's samples against the real distribution.
* :func:`encoder_quality` - how well do the W / W+ / Z+ encoders invert held-out real renders through G?
  LPIPS (the registry's ``lpips_alex``) and oracle attribute agreement between input and reconstruction,
  next to the oracle's own agreement with the ground truth (its ceiling).
* :func:`drift_quality` - how much content does a finetuned G' lose? Oracle attribute agreement between
  G(w) and G'(w) for the same w, the share of G'(w) the oracle puts in the target style, and which way each
  categorical factor moves (confusion of G's values against G''s).
* :func:`pair_faithfulness` - do the pseudo pairs (section 3.2) keep their style image's content? Oracle
  agreement between the true content of S and each level's P_k, with value shares and confusion.
* :func:`oracle_quality` - how well does the instrument itself read each factor in each domain? Held-out
  accuracy per factor and domain, and the recall of every categorical value.

(:func:`generator_sweep` compares several generator checkpoints on a validation seed.)

Conventions shared by all (each function's docstring states its full protocol):

* every random draw comes from a dedicated CPU ``torch.Generator`` seeded from the ``seed`` argument
  (:func:`protocol_seeds`), so a number is the same on every device and never depends on the global RNG;
* generated and reconstructed images are clamped to [-1, 1] before any judge sees them - the image a user
  would see or save - while real renders are already in that range;
* the oracle reads images through :meth:`Oracle.predict` (content codes, domain) and its penultimate
  features (:meth:`Oracle.features`, the ``fid_oracle`` space), both from one forward pass per batch.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

from .. import hub
from ..config import check_style, get_profile
from ..utils import atomic_write, get_device, repo_relative
from ..world import DOMAINS, FACTORS, content_from_z, render, sample_content, style_content, style_dataset
from . import metrics as M

__all__ = [
    "FREQ_TOLERANCE_POINTS", "CATEGORICAL_TARGET", "protocol_seeds", "oracle_read", "generate",
    "generator_quality", "content_fidelity", "confusion", "generator_sweep", "encoder_quality", "drift_quality",
    "pair_faithfulness", "oracle_quality", "write_report", "add_arguments",
    "main_from_args",
    "main",
]

# The acceptance thresholds: categorical value frequencies of G's samples within 5 percentage points of
# the real distribution; the W+ encoder keeping >= 90% of categorical factors (oracle(x) vs oracle(recon)).
FREQ_TOLERANCE_POINTS = 5.0
CATEGORICAL_TARGET = 0.90
# A categorical value the oracle reads back less often than this is listed in the oracle report.
ORACLE_WEAK_RECALL = 0.80
ENCODER_KINDS = ("w", "wplus", "zplus")
_KIND_LABEL = {"w": "W", "wplus": "W+", "zplus": "Z+"}
# Per-sample noise seeds live far above every other seed used here (see protocol_seeds).
_NOISE_BASE = 10 ** 12


def protocol_seeds(seed: int = 0) -> dict[str, int]:
    """The seeds every target derives from ``seed`` (recorded in each result under ``"seeds"``).

    ``z``: generator latents ``randn(n, style_dim)``; ``noise``: sample ``i``'s noise maps come from a generator
    seeded ``noise + i`` (per sample, so the set does not depend on ``batch``); ``real_a`` / ``real_b``: the two
    independent real sets, ``render(sample_content(n, seed=s), "real", seed=s)``; ``heldout``: the encoders'
    test renders, same form; ``oracle``: the oracle target's renders (the same contents in every domain). The
    offsets keep all of them far from the seeds the mini trainers use (the oracle's
    data: 0-5 and 1,010,000-1,010,005; the encoder trainer's content streams: multiples of 7 below 7 x steps;
    the trainers' texture seeds: the step index), so held-out really is held out. The drift target uses
    ``seed`` itself, as the registry's ``semantic_distance`` protocol does (``semantic_latents``).
    """
    seed = int(seed)
    return {"z": 20_000_000 + seed, "noise": _NOISE_BASE + seed * 10 ** 7, "real_a": 30_000_000 + seed,
            "real_b": 40_000_000 + seed, "heldout": 50_000_000 + seed, "oracle": 60_000_000 + seed, "drift_w": seed}


# --------------------------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------------------------

def _device_of(model: nn.Module) -> torch.device:
    t = next(iter(model.parameters()), None)
    return t.device if t is not None else torch.device("cpu")


@torch.no_grad()
def oracle_read(oracle: nn.Module, images: torch.Tensor, batch: int = 250, features: bool = True
                ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(features [N, D] or None, content [N, F], domain [N])`` of images in [-1, 1], all on the CPU.

    Content and domain are exactly :meth:`Oracle.predict`'s. Features are :meth:`Oracle.features` (the trunk's
    output); they are captured by a forward hook on ``oracle.trunk`` during ``predict`` so the trunk - nearly all
    of the oracle's cost - runs once per image instead of twice. Oracles without a ``trunk`` get a second pass.
    """
    dev = _device_of(oracle)
    feats, contents, domains = [], [], []
    trunk = getattr(oracle, "trunk", None) if features else None
    hook = trunk.register_forward_hook(lambda m, i, o: feats.append(o.float().cpu())) if trunk is not None \
        else None
    try:
        for i in range(0, len(images), batch):
            x = images[i:i + batch].to(dev)
            c, d = oracle.predict(x, batch=len(x))
            contents.append(c.cpu())
            domains.append(d.cpu())
            if features and trunk is None:
                feats.append(oracle.features(x).float().cpu())
    finally:
        if hook is not None:
            hook.remove()
    f = torch.cat(feats) if features else None
    return f, torch.cat(contents), torch.cat(domains)


def _sample_noise(g: nn.Module, start: int, count: int, base: int) -> list[torch.Tensor]:
    """Noise maps ``[count, 1, r, r]`` for samples ``start .. start + count - 1``; sample i from seed ``base + i``.

    One small generator per sample (a loop over samples, not pixels: ~10 draws each) makes sample i's noise
    independent of how the set is cut into batches, so a number does not change with ``--batch``.
    """
    shapes = [tuple(t.shape[-2:]) for t in g.const_noise()]
    maps = [torch.empty(count, 1, *s) for s in shapes]
    gen = torch.Generator()
    for j in range(count):
        gen.manual_seed(base + start + j)
        for m, s in zip(maps, shapes):
            m[j, 0] = torch.randn(s, generator=gen)
    return [m.to(g.device) for m in maps]


@torch.no_grad()
def generate(g: nn.Module, z: torch.Tensor, *, start: int = 0, noise_base: int | None = None,
             truncation: float = 1.0, latent_avg: torch.Tensor | None = None) -> torch.Tensor:
    """``G(z)`` clamped to [-1, 1]: ``w = mapping(z)``, truncated towards ``latent_avg`` when ``truncation < 1``.

    Noise: per-sample seeded maps (:func:`_sample_noise`, samples numbered from ``start``) with ``noise_base``;
    G's constant buffers when ``noise_base`` is None.
    """
    w = g.mapping(z.to(g.device))
    if truncation < 1:
        if latent_avg is None:
            raise ValueError("truncation < 1 needs latent_avg")
        avg = latent_avg.reshape(1, -1).to(w)
        w = avg + float(truncation) * (w - avg)
    noise = g.const_noise() if noise_base is None else _sample_noise(g, start, len(z), noise_base)
    return g.synthesis(w, noise=noise).clamp(-1, 1)


def _ref(x: Any) -> str:
    return os.fspath(x) if isinstance(x, (str, os.PathLike)) else type(x).__name__


def _load_oracle(oracle, device) -> nn.Module:
    return oracle if isinstance(oracle, nn.Module) else hub.load_oracle(oracle, device=device)


def _render_real(n: int, seed: int, size: int) -> torch.Tensor:
    return render(sample_content(n, seed=seed), "real", size=size, seed=seed)


def _agreement_summary(agr: dict[str, float]) -> dict[str, float]:
    return {k: agr[k] for k in ("mean_categorical", "mean_continuous", "mean_all")}


def _per_factor(agr: dict[str, float]) -> dict[str, float]:
    return {f.name: agr[f.name] for f in FACTORS}


# --------------------------------------------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def generator_quality(g_ckpt: Any = "mini-stylegan2-64", oracle: Any = "mini-oracle", n: int = 5000, seed: int = 0,
                      batch: int = 250, device: Any = "auto", truncation: float = 1.0, *, profile: str = "mini",
                      real_seeds: tuple[int, int] | None = None, figure: bool = True,
                      real_cache: dict | None = None) -> dict:
    """FID and categorical frequencies of G against the real domain; writes ``mini_generator_samples.png``.

    Protocol (seeds from :func:`protocol_seeds` of ``seed``):

    * generated set: ``n`` images ``G(z)``, ``z = randn(n, style_dim)`` from a CPU generator seeded
      ``seeds["z"]``, ``w = mapping(z)`` truncated towards the file's ``latent_avg`` by ``truncation`` (1: none),
      random noise drawn per sample (sample i from seed ``seeds["noise"] + i``), clamped to [-1, 1];
    * real set A: ``render(sample_content(n, seed=a), "real", size=G.size, seed=a)`` with ``a = seeds["real_a"]``;
      real set B: the same with ``b = seeds["real_b"]`` (``real_seeds=(a, b)`` overrides both);
    * ``fid_gen_vs_real`` = ``fid_oracle``(generated, A); ``fid_real_vs_real`` = ``fid_oracle``(B, A), the
      noise floor of n-sample FID in this space (float64 statistics, :func:`metrics.frechet_distance`);
    * frequencies: per categorical factor and value, the share of generated images whose oracle-predicted code is
      that value (``generated``), the world's ``real_probs`` (``real``), and the oracle's frequencies on real set A
      (``oracle_on_real``: how far the oracle alone is from ``real_probs``); ``gap_points`` = 100 x (generated -
      real); a factor passes when every value's ``|gap_points| <= FREQ_TOLERANCE_POINTS`` (5);
    * content fidelity (where a frequency gap comes from): the mini G was trained to draw, for each z, the content
      ``c = world.content_from_z(z)``; per categorical factor, the share of G(z) whose oracle-read value is c's
      (``g``), next to the same share for ``render(c, "real", seed=seeds["heldout"])`` (``render``: the oracle's
      ceiling on this content), with both confusion matrices (rows: c's value, columns: the oracle's);
    * the figure: the first 64 generated images as an 8 x 8 grid, upscaled x2 (the same images as in the set).

    ``real_cache``: a dict shared between calls keeps the real sets' oracle reads (same ``n``, seeds, size and
    oracle), as :func:`generator_sweep` does.

    Returns a dict with ``target="generator"``, the two FIDs, ``frequencies`` {factor: {value: {...}}},
    ``freq_gap`` (:func:`metrics.frequency_gap` of generated vs ``real_probs``, per factor + ``max``),
    ``content_fidelity`` {factor: {"g", "render", "confusion_g", "confusion_render"}},
    ``freq_gap_oracle_on_real``, ``freq_pass``, ``domain_real_share`` (oracle puts G(z) in the real domain),
    ``seeds``, ``checkpoints``, ``figure``, ``runtime_s``.
    """
    t0 = time.perf_counter()
    dev = get_device(device)
    n, batch = int(n), max(1, int(batch))
    if n < 2:
        raise ValueError(f"n must be >= 2 for FID statistics, got {n}")
    loaded = hub.load_generator(g_ckpt, device=dev)
    g = loaded.g_ema
    orc = _load_oracle(oracle, dev)
    seeds = protocol_seeds(seed)
    if real_seeds is not None:
        seeds["real_a"], seeds["real_b"] = (int(s) for s in real_seeds)

    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(seeds["z"]))
    gen_feats, gen_content, gen_dom, grid = [], [], [], []
    for i in range(0, n, batch):
        x = generate(g, z[i:i + batch], start=i, noise_base=seeds["noise"], truncation=truncation,
                     latent_avg=loaded.latent_avg)
        if sum(len(t) for t in grid) < 64:
            grid.append(x[:64].cpu())
        f, c, d = oracle_read(orc, x, batch)
        gen_feats.append(f), gen_content.append(c), gen_dom.append(d)
    gen_feats, gen_content, gen_dom = torch.cat(gen_feats), torch.cat(gen_content), torch.cat(gen_dom)

    # Real sets are rendered whole: a render's texture depends on (seed, index in the batch), so rendering in
    # one call is what makes set A exactly render(sample_content(n, seed=a), "real", seed=a).
    key = (n, seeds["real_a"], seeds["real_b"], g.size, _ref(oracle))
    if real_cache is not None and key in real_cache:  # a sweep reads the same real sets for every checkpoint
        feats_a, content_a, feats_b = real_cache[key]
    else:
        feats_a, content_a, _ = oracle_read(orc, _render_real(n, seeds["real_a"], g.size), batch)
        feats_b, _, _ = oracle_read(orc, _render_real(n, seeds["real_b"], g.size), batch)
        if real_cache is not None:
            real_cache[key] = (feats_a, content_a, feats_b)
    fid_gen = M.fid_from_features(gen_feats, feats_a)
    fid_real = M.fid_from_features(feats_b, feats_a)

    truth = content_from_z(z)
    tkey = ("truth", n, seeds["z"], seeds["heldout"], g.size, _ref(oracle))
    if real_cache is not None and tkey in real_cache:
        truth_read = real_cache[tkey]
    else:
        _, truth_read, _ = oracle_read(orc, render(truth, "real", size=g.size, seed=seeds["heldout"]), batch,
                                       features=False)
        if real_cache is not None:
            real_cache[tkey] = truth_read
    fidelity = content_fidelity(truth, gen_content, truth_read)

    freq_gen = M.category_frequencies(gen_content)
    freq_orc = M.category_frequencies(content_a)
    frequencies: dict[str, dict] = {}
    for f in FACTORS:
        if f.kind != "categorical":
            continue
        frequencies[f.name] = {
            v: {"generated": freq_gen[f.name][k], "real": f.real_probs[k], "oracle_on_real": freq_orc[f.name][k],
                "gap_points": 100.0 * (freq_gen[f.name][k] - f.real_probs[k]),
                "gap_vs_oracle_on_real_points": 100.0 * (freq_gen[f.name][k] - freq_orc[f.name][k]),
                "pass": abs(100.0 * (freq_gen[f.name][k] - f.real_probs[k])) <= FREQ_TOLERANCE_POINTS}
            for k, v in enumerate(f.values)}
    gap = M.frequency_gap(gen_content)
    out = {
        # The same comparison read through one instrument: G's frequencies against the oracle's on real renders,
        # which cancels the oracle's own misreadings (e.g. the first oracle read grey eyes as green).
        "freq_gap_vs_oracle_on_real": M.frequency_gap(gen_content, freq_orc),
        "target": "generator", "profile": profile, "n": n, "seed": int(seed), "batch": batch,
        "truncation": float(truncation), "seeds": seeds,
        "checkpoints": {"generator": _ref(g_ckpt), "oracle": _ref(oracle)},
        "fid_gen_vs_real": fid_gen, "fid_real_vs_real": fid_real,
        "fid_ratio": fid_gen / fid_real if fid_real > 0 else float("nan"),
        "frequencies": frequencies, "freq_gap": gap, "freq_gap_oracle_on_real": M.frequency_gap(content_a),
        "freq_tolerance_points": FREQ_TOLERANCE_POINTS,
        "freq_pass": all(v["pass"] for vals in frequencies.values() for v in vals.values()),
        "domain_real_share": float((gen_dom == DOMAINS.index("real")).float().mean()),
        "content_fidelity": fidelity,
    }
    if figure:
        from ..viz import figure_path, save_grid

        out["figure"] = str(save_grid(torch.cat(grid)[:64], figure_path(profile, f"{profile}_generator_samples.png"),
                                      nrow=8, scale=2))
    out["runtime_s"] = time.perf_counter() - t0
    return out


def confusion(rows: torch.Tensor, cols: torch.Tensor, factor_index: int) -> list[list[int]]:
    """Counts of (value in ``rows``, value in ``cols``) for one categorical factor of two content tensors
    ``[N, F]`` (value codes in the order of ``FACTORS[factor_index].values``)."""
    k = len(FACTORS[factor_index].values)
    a, b = rows[:, factor_index].round().long().cpu(), cols[:, factor_index].round().long().cpu()
    return torch.bincount(a * k + b, minlength=k * k).reshape(k, k).tolist()


def content_fidelity(truth: torch.Tensor, read_g: torch.Tensor, read_render: torch.Tensor) -> dict[str, dict]:
    """Per categorical factor: how often the oracle reads, in G(z) and in the renderer's image of the same content,
    the value the content vector holds; and the two confusion matrices (rows: true value, columns: read value).

    A frequency gap of G (the issue's +-5 point criterion) can come from G drawing the wrong value or from the
    oracle misreading a value G drew right; the render column tells the two apart."""
    out = {}
    for i, f in enumerate(FACTORS):
        if f.kind != "categorical":
            continue
        cg, cr = (torch.tensor(confusion(truth, r, i)) for r in (read_g, read_render))
        out[f.name] = {"g": float(cg.trace() / len(truth)), "render": float(cr.trace() / len(truth)),
                       "values": list(f.values), "confusion_g": cg.tolist(), "confusion_render": cr.tolist()}
    return out


def generator_sweep(ckpts: Sequence[Any], oracle: Any = "mini-oracle", n: int = 2000, seed: int = 1,
                    batch: int = 250, device: Any = "auto", truncation: float = 1.0, *,
                    profile: str = "mini") -> dict:
    """:func:`generator_quality` of several checkpoints, to choose e.g. an adversarial step count.

    Meant for the ``g_ema_<step>.pt`` files that ``facestyle pretrain generator --keep-every`` keeps. Same
    protocol as :func:`generator_quality`, with a ``seed`` other than the reports' (default 1; the reports use 0)
    so that the shipped number is not the one the choice was made on.

    Returns ``target="sweep"`` and one result per checkpoint under ``runs`` (no sample figures).
    """
    t0 = time.perf_counter()
    if not ckpts:
        raise ValueError("generator_sweep needs at least one checkpoint")
    real_cache: dict = {}
    runs = [generator_quality(c, oracle, n, seed, batch, device, truncation, profile=profile, figure=False,
                              real_cache=real_cache) for c in ckpts]
    return {"target": "sweep", "profile": profile, "n": int(n), "seed": int(seed), "truncation": float(truncation),
            "checkpoints": {"generators": [_ref(c) for c in ckpts], "oracle": _ref(oracle)}, "runs": runs,
            "runtime_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------------------------

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
    from ..nn.perceptual import build_lpips, lpips_distance

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


# --------------------------------------------------------------------------------------------------------------
# drift
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def drift_quality(g_ckpt: Any, g_prime_ckpt: Any, oracle: Any = "mini-oracle", n: int = 1000, seed: int = 0,
                  style: str = "cartoon", batch: int = 250, device: Any = "auto", *, profile: str = "mini",
                  figure: bool | str = True) -> dict:
    """Semantic drift of a finetuned G' measured by the oracle; writes a G(w) / G'(w) figure.

    Protocol:

    * latents: ``w = metrics.semantic_latents(G, n, seed)`` - G's mapping of ``z = randn(n, style_dim)`` from a CPU
      generator seeded ``seed``, truncation 1 (the same w set as the registry's ``semantic_distance``);
    * images: ``G.synthesis(w)`` and ``G'.synthesis(w)`` with G's constant noise buffers for both (the only
      difference between the pair is the synthesis weights), clamped to [-1, 1];
    * ``agreement``: :func:`metrics.attribute_agreement` of oracle(G(w)) vs oracle(G'(w)), per factor and means
      (1.0 everywhere when G' = G);
    * ``style_accuracy``: share of G'(w) the oracle assigns to domain ``style``; ``g_real_share``: share of G(w)
      it assigns to ``real`` (a sanity check on G);
    * ``freq_gap_vs_g``: :func:`metrics.frequency_gap` of G' outputs against the categorical frequencies of G's
      outputs (points; where drift moves towards the style set's bias), with both frequency tables and the true
      frequencies of the style set G' was finetuned on (``world.style_dataset``);
    * ``confusion``: per categorical factor, counts of (oracle's value in G(w), in G'(w)) - which way a factor
      drifts (values dropped, added or swapped), which the agreement share alone does not say;
    * the figure: G(w) (top row) over G'(w) (bottom row) for the first 8 w, named after the report (``figure``:
      ``<profile>_drift_<style>.png`` unless a name is given).
    """
    t0 = time.perf_counter()
    style = check_style(style)
    dev = get_device(device)
    n, batch = int(n), max(1, int(batch))
    ga = hub.load_generator(g_ckpt, device=dev).g_ema
    gb = hub.load_generator(g_prime_ckpt, device=dev).g_ema
    if (ga.size, ga.style_dim, ga.n_latent) != (gb.size, gb.style_dim, gb.n_latent):
        raise ValueError(f"G ({ga.size} px, style_dim {ga.style_dim}) and G' ({gb.size} px, style_dim "
                         f"{gb.style_dim}) are not the same architecture")
    orc = _load_oracle(oracle, dev)
    ws = M.semantic_latents(ga, n=n, seed=seed)
    noise = ga.const_noise()
    noise_b = [t.to(gb.device) for t in noise]
    ca, cb, da, db, fig_a, fig_b = [], [], [], [], None, None
    for i in range(0, n, batch):
        w = ws[i:i + batch]
        xa = ga.synthesis(w.to(ga.device), noise=noise).clamp(-1, 1)
        xb = gb.synthesis(w.to(gb.device), noise=noise_b).clamp(-1, 1)
        if fig_a is None:
            fig_a, fig_b = xa[:8].cpu(), xb[:8].cpu()
        _, c, d = oracle_read(orc, xa, batch, features=False)
        ca.append(c), da.append(d)
        _, c, d = oracle_read(orc, xb, batch, features=False)
        cb.append(c), db.append(d)
    ca, cb, da, db = torch.cat(ca), torch.cat(cb), torch.cat(da), torch.cat(db)
    agr = M.attribute_agreement(ca, cb)
    freq_a, freq_b = M.category_frequencies(ca), M.category_frequencies(cb)
    out = {
        "target": "drift", "profile": profile, "style": style, "n": n, "seed": int(seed), "batch": batch,
        "seeds": {"drift_w": int(seed)},
        "checkpoints": {"generator": _ref(g_ckpt), "finetuned": _ref(g_prime_ckpt), "oracle": _ref(oracle)},
        "agreement": _agreement_summary(agr), "agreement_per_factor": _per_factor(agr),
        "style_accuracy": float((db == DOMAINS.index(style)).float().mean()),
        "g_real_share": float((da == DOMAINS.index("real")).float().mean()),
        "freq_gap_vs_g": M.frequency_gap(cb, reference_probs=freq_a),
        "frequencies_g": freq_a, "frequencies_g_prime": freq_b,
        "frequencies_style_set": M.category_frequencies(style_content(style)),
        "confusion": {f.name: confusion(ca, cb, i) for i, f in enumerate(FACTORS) if f.kind == "categorical"},
    }
    if figure:
        from ..viz import figure_path, save_grid

        name = figure if isinstance(figure, str) else f"{profile}_drift_{style}"
        out["figure"] = str(save_grid(torch.cat([fig_a, fig_b]), figure_path(profile, f"{name}.png"),
                                      nrow=len(fig_a), scale=2))
    out["runtime_s"] = time.perf_counter() - t0
    return out


@torch.no_grad()
def pair_faithfulness(style: str = "cartoon", pairs_dir: Any = None, levels: Sequence[int] = (1, 2, 3),
                      oracle: Any = "mini-oracle", batch: int = 250, device: Any = "auto", *,
                      profile: str = "mini") -> dict:
    """Does each level of pseudo pairs (paper section 3.2, Eq. 4-6) keep the content of its style image?

    Protocol:

    * pairs: ``<pairs_dir>/pairs_level<k>.pt`` for each k of ``levels`` that exists (default folder: the
      studies' ``runs/study/<profile>-pairs-<style>``), made from ``world.style_dataset(style)``: a file holds
      the rows it used (``index``) or the style images themselves (checked against ``style_dataset(style, n=N)``);
    * truth: the content vectors the world rendered those N style images from (mini only);
    * ``agreement``: :func:`metrics.attribute_agreement` of the truth vs the oracle's reading of each level's
      pseudo-real images P_k, per factor and means; two reference rows through the same oracle: the style images
      S themselves, and ``ideal P`` - the same content rendered in the real domain, the perfect pseudo pair;
    * ``frequencies``: per categorical factor, each value's share in the truth and in the oracle's reading of
      P_k; ``confusion``: counts of (true value, value read in P_k). A value that P_k loses or adds is a value
      pseudo-paired supervision (Eq. 2) then teaches G' to add or remove: G'(w_k+) is pulled towards S whatever
      G(w_k+) shows.
    """
    from ..runs import resolve_path

    t0 = time.perf_counter()
    style = check_style(style)
    dev = get_device(device)
    folder = resolve_path(pairs_dir if pairs_dir is not None else f"runs/study/{profile}-pairs-{style}")
    files = {int(k): folder / f"pairs_level{int(k)}.pt" for k in levels}
    files = {k: f for k, f in files.items() if f.exists()}
    if not files:
        raise FileNotFoundError(f"no pairs_level<k>.pt for levels {list(levels)} in {folder}; make them with "
                                f"`facestyle pairs --style {style}` or `facestyle eval pairs --style {style}`")
    orc = _load_oracle(oracle, dev)
    loaded = {k: hub.safe_load(f) for k, f in files.items()}
    size = int(next(iter(loaded.values()))["pseudo_real"].shape[-1])
    sets: dict = {}  # style_dataset(style, n=N) per N, rendered once for all levels

    def style_set(n_imgs: int | None):
        if n_imgs not in sets:
            sets[n_imgs] = style_dataset(style, size=size, n=n_imgs)
        return sets[n_imgs]

    s_imgs = truth = None
    for k, d in loaded.items():  # a pair file holds the rows of the style set it used, or the style images
        if d.get("index") is not None:
            rows = torch.as_tensor(d["index"]).long()
            s_k, c_k = (x[rows] for x in style_set(None))
        else:  # made from world.style_dataset(style, n=N): the same call gives the same images
            s_k, c_k = style_set(len(d["style"]))
            if (d["style"].float() - s_k).abs().max() > 1e-2:
                raise ValueError(f"{files[k]} was not made from world.style_dataset({style!r}, n={len(s_k)})")
        if truth is not None and not torch.equal(truth, c_k):
            raise ValueError(f"the pair files in {folder} pair different style images; read them one level at "
                             "a time (--levels)")
        s_imgs, truth = s_k, c_k
    n = len(truth)
    readings = {"S (the style images)": s_imgs, "ideal P (S's content rendered real)": render(truth, "real", size)}
    readings.update({f"P{k}": d["pseudo_real"].float() for k, d in sorted(loaded.items())})
    out = {"target": "pairs", "profile": profile, "style": style, "n": n, "batch": batch,
           "checkpoints": {"oracle": _ref(oracle)}, "files": {f"P{k}": repo_relative(f) for k, f in files.items()},
           "frequencies_truth": M.category_frequencies(truth), "agreement": {}, "agreement_per_factor": {},
           "frequencies": {}, "confusion": {}}
    for label, x in readings.items():
        _, c, _ = oracle_read(orc, x.to(dev), batch, features=False)
        c = c.cpu()
        agr = M.attribute_agreement(truth, c)
        out["agreement"][label] = _agreement_summary(agr)
        out["agreement_per_factor"][label] = _per_factor(agr)
        out["frequencies"][label] = M.category_frequencies(c)
        out["confusion"][label] = {f.name: confusion(truth, c, i) for i, f in enumerate(FACTORS)
                                   if f.kind == "categorical"}
    out["runtime_s"] = time.perf_counter() - t0
    return out


@torch.no_grad()
def oracle_quality(oracle: Any = "mini-oracle", n: int = 1000, seed: int = 0, batch: int = 250, device: Any = "auto",
                   *, profile: str = "mini", blur: float = 0.0) -> dict:
    """How well the oracle, the instrument behind every agreement, frequency and FID number, reads each domain.

    Protocol:

    * renders: the same ``n`` contents ``sample_content(n, seed=s)`` drawn in each of the six domains with
      texture seed ``s = protocol_seeds(seed)["oracle"]``, far from the oracle's training seeds;
    * ``accuracy[domain][factor]``: categorical factors - share read exactly; continuous factors - share read
      within 0.1 of the truth (the tolerance of attribute agreement); ``domain_accuracy[domain]``: share put in
      the right domain;
    * ``recall[domain][factor][value]``: for each categorical value, the share of the renders holding it that
      are read as it; ``confusion[domain][factor]``: counts of (true value, value read).

    A low recall marks a value whose frequency the oracle misstates in that domain, in renders and, as far as
    they resemble renders, in generated images. ``blur`` > 0 reads the renders after a Gaussian blur of that
    sigma (pixels): generated images are softer than renders, and this asks which readings depend on crisp
    edges (e.g. an outlined eye against a glasses rim).
    """
    t0 = time.perf_counter()
    dev = get_device(device)
    orc = _load_oracle(oracle, dev)
    s = protocol_seeds(seed)["oracle"]
    truth = sample_content(int(n), seed=s)
    size = int(getattr(orc, "size", 64))
    out = {"target": "oracle", "profile": profile, "n": int(n), "seed": int(seed), "seeds": {"oracle": s},
           "blur": float(blur),
           "batch": batch, "checkpoints": {"oracle": _ref(oracle)}, "accuracy": {}, "mean": {},
           "domain_accuracy": {}, "recall": {}, "confusion": {}}
    groups = {"categorical": [f.name for f in FACTORS if f.kind == "categorical"],
              "continuous": [f.name for f in FACTORS if f.kind != "categorical"]}
    for k, dom in enumerate(DOMAINS):
        x = render(truth, dom, size=size, seed=s)
        if blur > 0:
            from torchvision.transforms.functional import gaussian_blur

            x = gaussian_blur(x, kernel_size=2 * math.ceil(3 * blur) + 1, sigma=float(blur))
        _, c, d = oracle_read(orc, x.to(dev), batch, features=False)
        c, d = c.cpu(), d.cpu()
        out["domain_accuracy"][dom] = float((d == k).float().mean())
        acc, rec, conf = {}, {}, {}
        for i, f in enumerate(FACTORS):
            if f.kind == "categorical":
                m = confusion(truth, c, i)
                acc[f.name] = float(sum(m[j][j] for j in range(len(m))) / len(truth))
                rec[f.name] = {v: (m[j][j] / sum(m[j]) if sum(m[j]) else None) for j, v in enumerate(f.values)}
                conf[f.name] = m
            else:
                acc[f.name] = float(((c[:, i] - truth[:, i]).abs() < 0.1).float().mean())
        out["accuracy"][dom], out["recall"][dom], out["confusion"][dom] = acc, rec, conf
        out["mean"][dom] = {kind: sum(acc[f] for f in names) / len(names) for kind, names in groups.items()}
    out["runtime_s"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------------------------
# reports and the manifest
# --------------------------------------------------------------------------------------------------------------

_PROTOCOLS = {"generator": generator_quality, "sweep": generator_sweep, "encoders": encoder_quality,
              "drift": drift_quality, "pairs": pair_faithfulness, "oracle": oracle_quality}


def _protocol_text(target: str) -> str:
    doc = (_PROTOCOLS[target].__doc__ or "").strip().splitlines()
    body = [line[4:] if line.startswith("    ") else line for line in doc[1:]]
    keep = []
    for line in body:  # the "Protocol:" bullet list only
        if line.startswith("Returns"):
            break
        keep.append(line)
    # Sphinx roles (":func:`x`") mean nothing in a markdown report; keep the name as code
    return re.sub(r":\w+:`", "`", "\n".join(keep).strip())


def _factor_table(header: Sequence[str], rows: Iterable[Sequence[Any]], precision: int = 3) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(M._fmt(v, precision) for v in r) + " |" for r in rows]
    return lines


def _report_parts(res: dict) -> tuple[str, list[dict], list[str], dict]:
    """(title, main rows, extra markdown lines, manifest headline per entry reference)."""
    target = res["target"]
    if target == "generator":
        title = f"Generator quality: {res['checkpoints']['generator']} (n = {res['n']})"
        rows = [
            {"comparison": "generated vs real A", "fid_oracle": res["fid_gen_vs_real"],
             "freq_gap": res["freq_gap"]["max"], "freq_pass": res["freq_pass"]},
            {"comparison": "real B vs real A (noise floor; freq_gap: oracle on real A)",
             "fid_oracle": res["fid_real_vs_real"], "freq_gap": res["freq_gap_oracle_on_real"]["max"],
             "freq_pass": None},
        ]
        extra = ["", f"## Categorical frequencies (pass: every value within +-{res['freq_tolerance_points']:g} points "
                     f"of real_probs)", ""]
        extra += _factor_table(
            ("factor", "value", "generated", "real_probs", "oracle on real A", "gap (points)", "pass",
             "gap vs oracle on real A"),
            [(f, v, d["generated"], d["real"], d["oracle_on_real"], d["gap_points"], d["pass"],
              d.get("gap_vs_oracle_on_real_points"))
             for f, vals in res["frequencies"].items() for v, d in vals.items()])
        extra += ["", f"Oracle puts {100 * res['domain_real_share']:.1f}% of generated samples in the real domain. "
                      f"Truncation {res['truncation']:g}. The last column reads real renders through the same "
                      "oracle (its own misreadings cancel); the pass column is the issue's criterion, against "
                      "real_probs."]
        fid = res.get("content_fidelity")
        if fid:
            extra += ["", "## Content fidelity (does G(z) draw the content z stands for?)", ""]
            extra += _factor_table(("factor", "oracle(G(z)) = content", "oracle(render(content)) = content"),
                                   [(f, d["g"], d["render"]) for f, d in fid.items()])
            failing = [f for f, vals in res["frequencies"].items() if not all(v["pass"] for v in vals.values())]
            for f in failing:
                d = fid[f]
                extra += ["", f"Confusion of {f} (rows: the content's value; columns: the oracle's reading of G(z) "
                              "| of the render):", ""]
                extra += _factor_table(["content"] + [f"G: {v}" for v in d["values"]]
                                       + [f"render: {v}" for v in d["values"]],
                                       [[v] + d["confusion_g"][j] + d["confusion_render"][j]
                                        for j, v in enumerate(d["values"])], precision=0)
        head = {res["checkpoints"]["generator"]: {"generator": {
            "fid_oracle_gen_vs_real": res["fid_gen_vs_real"], "fid_oracle_real_vs_real": res["fid_real_vs_real"],
            "freq_gap_max_points": res["freq_gap"]["max"], "freq_within_5_points": res["freq_pass"],
            "freq_gap_vs_oracle_on_real_max_points": res["freq_gap_vs_oracle_on_real"]["max"],
            "n": res["n"], "seed": res["seed"], "truncation": res["truncation"]}}}
    elif target == "sweep":
        title = f"Generator checkpoints compared (n = {res['n']}, validation seed {res['seed']})"
        rows = []
        for r in res["runs"]:
            gaps = {k: v for k, v in r["freq_gap"].items() if k != "max"}
            worst = max(gaps, key=gaps.get)
            rows.append({"checkpoint": r["checkpoints"]["generator"], "fid_oracle": r["fid_gen_vs_real"],
                         "fid floor": r["fid_real_vs_real"], "freq_gap": r["freq_gap"]["max"],
                         "worst factor": worst, "gap vs oracle on real": r["freq_gap_vs_oracle_on_real"]["max"],
                         "freq_pass": r["freq_pass"]})
        names = [f for f in res["runs"][0]["frequencies"]]
        extra = ["", "## Max frequency gap per factor (points, against real_probs)", ""]
        extra += _factor_table(["checkpoint"] + names,
                               [[r["checkpoints"]["generator"]] + [r["freq_gap"][f] for f in names]
                                for r in res["runs"]], precision=1)
        head = {}
    elif target == "encoders":
        title = f"Encoder reconstruction quality (n = {res['n']} held-out real renders, seed {res['seeds']['heldout']})"
        rows = []
        for k, r in res["kinds"].items():
            rows.append({"encoder": _KIND_LABEL[k], "lpips_alex": r["lpips_alex"],
                         "attr_agreement": r["agreement"]["mean_all"],
                         "categorical": r["agreement"]["mean_categorical"],
                         "continuous": r["agreement"]["mean_continuous"],
                         "categorical vs truth": r["agreement_truth"]["mean_categorical"],
                         f"categorical >= {CATEGORICAL_TARGET:.0%}": r["meets_target"],
                         "decoder = G": r["decoder_matches_g"]})
        c = res["oracle_ceiling"]
        rows.append({"encoder": "oracle ceiling (oracle(x) vs truth)", "attr_agreement": c["mean_all"],
                     "categorical": c["mean_categorical"], "continuous": c["mean_continuous"]})
        kinds = list(res["kinds"])
        extra = ["", "## Agreement per factor (oracle(x) vs oracle(G(E(x))))", ""]
        extra += _factor_table(["factor"] + [_KIND_LABEL[k] for k in kinds] + ["oracle ceiling"],
                               [[f.name] + [res["kinds"][k]["agreement_per_factor"][f.name] for k in kinds]
                                + [res["oracle_ceiling_per_factor"][f.name]] for f in FACTORS])
        extra += ["", f"The issue requires the W+ encoder to reach >= {CATEGORICAL_TARGET:.0%} categorical agreement."]
        head = {r["checkpoint"]: {"reconstruction": {
            "lpips_alex": r["lpips_alex"], "attr_agreement_categorical": r["agreement"]["mean_categorical"],
            "attr_agreement_continuous": r["agreement"]["mean_continuous"],
            "attr_agreement_all": r["agreement"]["mean_all"],
            "oracle_ceiling_categorical": c["mean_categorical"], "n": res["n"],
            "heldout_seed": res["seeds"]["heldout"]}} for r in res["kinds"].values()}
    elif target == "drift":
        title = f"Semantic drift: {res['checkpoints']['finetuned']} vs {res['checkpoints']['generator']} " \
                f"({res['style']}, n = {res['n']})"
        rows = [{"style": res["style"], "attr_agreement": res["agreement"]["mean_all"],
                 "categorical": res["agreement"]["mean_categorical"],
                 "continuous": res["agreement"]["mean_continuous"], "style_accuracy": res["style_accuracy"],
                 "freq_gap": res["freq_gap_vs_g"]["max"]}]
        extra = ["", "## Agreement per factor (oracle(G(w)) vs oracle(G'(w)))", ""]
        extra += _factor_table(("factor", "agreement"), [(f.name, res["agreement_per_factor"][f.name])
                                                         for f in FACTORS])
        extra += ["", "`freq_gap` here is against the frequencies of G's own outputs, not real_probs. "
                      f"Oracle puts {100 * res['g_real_share']:.1f}% of G(w) in the real domain."]
        if res.get("confusion"):
            extra += ["", "## Which way each categorical factor drifts", "",
                      "Rows: the oracle's value in G(w); columns: its value in G'(w) (counts), then each value's "
                      "share of G(w), of G'(w) and of the style set G' was finetuned on (its true content)."]
            for f, m in res["confusion"].items():
                values = next(x.values for x in FACTORS if x.name == f)
                extra += ["", f"**{f}**", ""]
                extra += _factor_table(["G \\ G'"] + list(values) + ["share in G", "share in G'", "style set"],
                                       [[v] + m[j] + [res["frequencies_g"][f][j], res["frequencies_g_prime"][f][j],
                                                      res["frequencies_style_set"][f][j]]
                                        for j, v in enumerate(values)])
        head = {res["checkpoints"]["finetuned"]: {f"drift_{res['style']}": {
            "attr_agreement_categorical": res["agreement"]["mean_categorical"],
            "attr_agreement_continuous": res["agreement"]["mean_continuous"],
            "attr_agreement_all": res["agreement"]["mean_all"], "style_accuracy": res["style_accuracy"],
            "freq_gap_vs_g_points": res["freq_gap_vs_g"]["max"], "n": res["n"], "seed": res["seed"]}}}
    elif target == "pairs":
        title = f"Pseudo-pair faithfulness: {res['style']} (n = {res['n']} style images)"
        labels = list(res["agreement"])
        rows = [{"images read": lab, "categorical": res["agreement"][lab]["mean_categorical"],
                 "continuous": res["agreement"][lab]["mean_continuous"]} for lab in labels]
        extra = ["", "## Agreement with the true content of S, per factor", ""]
        extra += _factor_table(["factor"] + labels, [[f.name] + [res["agreement_per_factor"][lab][f.name]
                                                                 for lab in labels] for f in FACTORS])
        extra += ["", "## Categorical value shares: the truth of S and the oracle's reading of each image set", ""]
        extra += _factor_table(["factor", "value", "truth"] + labels,
                               [[f.name, v, res["frequencies_truth"][f.name][j]]
                                + [res["frequencies"][lab][f.name][j] for lab in labels]
                                for f in FACTORS if f.kind == "categorical" for j, v in enumerate(f.values)])
        extra += ["", "Pair files: " + ", ".join(f"{k} `{v}`" for k, v in res["files"].items()) + "."]
        head = {}
    elif target == "oracle":
        title = f"Oracle reading per domain: {res['checkpoints']['oracle']} (n = {res['n']} contents per domain" + \
            (f", renders blurred with sigma {res['blur']:g} px)" if res.get("blur") else ")")
        rows = [{"domain": dom, "domain_accuracy": res["domain_accuracy"][dom], **res["mean"][dom]}
                for dom in res["accuracy"]]
        doms = list(res["accuracy"])
        extra = ["", "## Accuracy per factor and domain (categorical: exact; continuous: within 0.1)", ""]
        extra += _factor_table(["factor"] + doms, [[f.name] + [res["accuracy"][d][f.name] for d in doms]
                                                   for f in FACTORS])
        weak = []
        for d in doms:
            for f in FACTORS:
                if f.kind != "categorical":
                    continue
                for j, (v, r) in enumerate(res["recall"][d][f.name].items()):
                    if r is None or r >= ORACLE_WEAK_RECALL:
                        continue
                    row = res["confusion"][d][f.name][j]
                    other = max((jj for jj in range(len(row)) if jj != j), key=row.__getitem__)
                    weak.append((d, f.name, v, r, f"{f.values[other]} ({row[other]} of {sum(row)})"))
        extra += ["", "## Recall per categorical value (share of the renders holding it that are read as it)", ""]
        extra += _factor_table(["factor", "value"] + doms,
                               [[f.name, v] + [res["recall"][d][f.name][v] for d in doms]
                                for f in FACTORS if f.kind == "categorical" for v in f.values])
        extra += ["", f"## Values read back less than {ORACLE_WEAK_RECALL:.0%} of the time", ""]
        extra += _factor_table(["domain", "factor", "value", "recall", "most often read as"], weak) if weak \
            else ["none"]
        head = {res["checkpoints"]["oracle"]: {"reading_per_domain": {
            "categorical": {r["domain"]: r["categorical"] for r in rows},
            "continuous_within_0.1": {r["domain"]: r["continuous"] for r in rows}, "n": res["n"],
            "seed": res["seed"]}}}
    else:
        raise ValueError(f"unknown result target {target!r}: expected generator, sweep, encoders, drift, pairs or "
                         "oracle")
    return title, rows, extra, head


def _manifest_entry_for(ref: str | None) -> str | None:
    """The manifest entry a checkpoint reference stands for: the name itself, or the entry whose shipped file is
    that path; None when there is none (e.g. a checkpoint in runs/ or a temporary directory)."""
    from .. import manifest

    if not ref:
        return None
    files = manifest.read().get("files", {})
    if ref in files:
        return ref
    p = Path(ref).expanduser()
    if p.is_file():
        rp = p.resolve()
        for name, e in files.items():
            if isinstance(e, dict) and e.get("file") and (manifest.MINI_DIR / e["file"]).resolve() == rp:
                return name
    return None


def record_in_manifest(head: dict[str, dict], command: str | None = None,
                       names: dict[str, str] | None = None) -> dict[str, str | None]:
    """Merge headline numbers into manifest entries' ``quality`` dicts (other keys of ``quality`` are kept).

    ``head`` maps a checkpoint reference to ``{section: numbers}``; ``names`` may map a reference to an explicit
    manifest entry name. References without an entry are skipped with a message on stderr. Returns
    ``{reference: entry name or None}``.
    """
    from .. import manifest

    done = {}
    for ref, sections in head.items():
        name = (names or {}).get(ref) or _manifest_entry_for(ref)
        data = manifest.read().get("files", {})
        if name is None or name not in data:
            print(f"facestyle quality: {ref} has no manifest entry yet; numbers not recorded in the manifest "
                  f"(they are in the report)", file=sys.stderr)
            done[ref] = None
            continue
        quality = dict(data[name].get("quality") or {})
        for sec, nums in sections.items():
            quality[sec] = {**{k: M._plain_value(v) for k, v in nums.items()},
                            **({"command": command} if command else {})}
        manifest.update(name, quality=quality)
        done[ref] = name
    return done


def write_report(results: dict, name: str | None = None, *, record_manifest: bool = False,
                 manifest_names: dict[str, str] | None = None, command: str | None = None) -> dict:
    """Write ``results`` (one target's dict) as ``figures/<profile>/<name>.md`` and ``.json``.

    The main table goes through :func:`metrics.results_table` (so registered metric columns carry their
    protocol lines); the markdown then gets the target's protocol, per-factor tables and the command that made
    it; the JSON's ``meta`` holds the full results dict. Default names: ``mini_quality_generator``,
    ``mini_quality_encoders``, ``mini_quality_drift_<style>``. With ``record_manifest`` the headline numbers are
    merged into the manifest entries of the checkpoints measured (see :func:`record_in_manifest`).
    Returns ``{"md", "json", "manifest"}``.
    """
    from ..manifest import invoked_command
    from ..viz import figure_path

    target = results.get("target")
    profile = results.get("profile", "mini")
    if name is None:
        name = f"{profile}_quality_" + ("generator_sweep" if target == "sweep" else target) \
            + (f"_{results['style']}" if target in ("drift", "pairs") else "")
    command = command or invoked_command()
    title, rows, extra, head = _report_parts(results)
    md_path = figure_path(profile, f"{name}.md")
    json_path = figure_path(profile, f"{name}.json")
    meta = {**results, "command": command}
    if results.get("figure"):
        meta["figure"] = repo_relative(results["figure"])
    M.results_table(rows, md_path, json_path, title=title, meta=meta)
    lines = [md_path.read_text().rstrip("\n"), ""]
    if results.get("figure"):
        lines += [f"![{target}]({Path(results['figure']).name})", ""]
    lines += ["## Protocol", "", _protocol_text(target)] + extra
    lines += ["", f"Measured by `{command}` in {results.get('runtime_s', float('nan')):.0f} s."]
    with atomic_write(md_path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    out = {"md": str(md_path), "json": str(json_path), "manifest": None}
    if record_manifest:
        out["manifest"] = record_in_manifest(head, command=command, names=manifest_names)
    return out


# --------------------------------------------------------------------------------------------------------------
# command line: facestyle quality {generator,sweep,encoders,drift,oracle,pairs}
# --------------------------------------------------------------------------------------------------------------

def _common(q: argparse.ArgumentParser, n: int | None, batch: int) -> None:
    """Options every target shares; ``n=None`` for a target that reads a fixed set (no --n, --seed, manifest)."""
    q.add_argument("--oracle", default="mini-oracle", help="oracle checkpoint (hub name or path)")
    if n is not None:
        q.add_argument("--n", type=int, default=n, help=f"number of images (default {n})")
        q.add_argument("--seed", type=int, default=0, help="protocol seed (facestyle.eval.quality.protocol_seeds)")
        q.add_argument("--record-manifest", action="store_true",
                       help="merge the headline numbers into the checkpoints' manifest entries")
    q.add_argument("--batch", type=int, default=batch)
    q.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    q.add_argument("--profile", default="mini")
    q.add_argument("--name", default=None, help="report name under figures/<profile>/ (no extension)")
    q.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KIND=CHECKPOINT (e.g. wplus=runs/enc.pt), got {text!r}")
    k, v = text.split("=", 1)
    if k not in ENCODER_KINDS:
        raise argparse.ArgumentTypeError(f"unknown encoder kind {k!r}: choose one of {', '.join(ENCODER_KINDS)}")
    return k, v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add a required sub-subparser per target (dest ``quality_target``) with all of its options; the caller only
    sets ``func``. Sub-subparsers set no ``func`` of their own, so the parent's default stays in force."""
    sub = p.add_subparsers(dest="quality_target", metavar="TARGET", required=True)
    q = sub.add_parser("generator", help="FID vs real renders (+ real-vs-real floor), categorical frequencies, "
                                         "sample grid")
    q.add_argument("--ckpt", default="mini-stylegan2-64", help="generator checkpoint (hub name or path)")
    q.add_argument("--truncation", type=float, default=1.0)
    _common(q, 5000, 250)
    q = sub.add_parser("sweep", help="the generator numbers for several checkpoints of one run, one table "
                                     "(choose a step count on a validation seed)")
    q.add_argument("--ckpt", nargs="+", required=True, help="generator checkpoints (hub names or paths)")
    q.add_argument("--truncation", type=float, default=1.0)
    _common(q, 2000, 250)
    q.set_defaults(seed=1)
    q = sub.add_parser("encoders", help="LPIPS and oracle attribute agreement of G(E(x)) on held-out renders")
    q.add_argument("--ckpt", default="mini-stylegan2-64", help="generator to decode with (hub name or path)")
    q.add_argument("--kinds", nargs="+", choices=ENCODER_KINDS, default=list(ENCODER_KINDS))
    q.add_argument("--encoder", type=_kv, action="append", default=[], metavar="KIND=CKPT",
                   help="encoder checkpoint per kind (repeatable; default the profile's mini-encoder-<kind>)")
    _common(q, 1000, 100)
    q = sub.add_parser("drift", help="oracle attribute agreement between G(w) and a finetuned G'(w)")
    q.add_argument("--ckpt", default="mini-stylegan2-64", help="pretrained generator G (hub name or path)")
    q.add_argument("--finetuned", required=True, help="finetuned generator G' (hub name or path)")
    q.add_argument("--style", required=True, help="target style of G' (cartoon, anime, fantasy, illustration, "
                                                  "impasto)")
    _common(q, 1000, 250)
    q = sub.add_parser("oracle", help="held-out accuracy of the oracle per factor and domain, recall per value")
    q.add_argument("--blur", type=float, default=0.0,
                   help="read the renders after a Gaussian blur of this sigma in pixels (default 0: crisp renders)")
    _common(q, 1000, 250)
    q = sub.add_parser("pairs", help="does each pseudo-pair level keep the true content of its style image? "
                                     "(oracle agreement, value shares, confusion)")
    q.add_argument("--style", required=True, help="style whose pairs to read")
    q.add_argument("--pairs-dir", default=None, help="folder with pairs_level<k>.pt (default: "
                                                     "runs/study/<profile>-pairs-<style>)")
    q.add_argument("--levels", default="1,2,3", help="pair levels to read, comma-separated (missing files skipped)")
    _common(q, None, 250)
    from . import keep

    q = sub.add_parser("keep", help="how much of each input's content the style generators keep (general, "
                                    "multimodal, reference), beside the reconstruction ceiling and G*")
    keep.add_arguments(q)
    q = sub.add_parser("sensitivity", help="how strongly the training LPIPS sees each content factor change "
                                           "(seeded backbone vs trained ones)")
    keep.add_sensitivity_arguments(q)


def main_from_args(args) -> int:
    """Run the chosen target, write its report (and figure), print the report paths and headline numbers."""
    if getattr(args, "threads", 0):
        torch.set_num_threads(int(args.threads))
    target = args.quality_target
    if target == "keep":
        from . import keep

        return keep.main_from_args(args)
    if target == "sensitivity":
        from . import keep

        return keep.sensitivity_main(args)
    common = dict(oracle=args.oracle, n=getattr(args, "n", None), seed=getattr(args, "seed", 0), batch=args.batch,
                  device=args.device, profile=args.profile)
    if target == "generator":
        res = generator_quality(args.ckpt, truncation=args.truncation, **common)
        head = {"fid_gen_vs_real": res["fid_gen_vs_real"], "fid_real_vs_real": res["fid_real_vs_real"],
                "freq_gap_max_points": res["freq_gap"]["max"], "freq_pass": res["freq_pass"]}
    elif target == "sweep":
        res = generator_sweep(args.ckpt, truncation=args.truncation, **common)
        head = {r["checkpoints"]["generator"]: {"fid": r["fid_gen_vs_real"], "freq_gap": r["freq_gap"]["max"]}
                for r in res["runs"]}
    elif target == "encoders":
        res = encoder_quality(args.kinds, dict(args.encoder), args.ckpt, **common)
        head = {k: {"lpips_alex": r["lpips_alex"], "categorical": r["agreement"]["mean_categorical"],
                    "continuous": r["agreement"]["mean_continuous"]} for k, r in res["kinds"].items()}
        head["oracle_ceiling_categorical"] = res["oracle_ceiling"]["mean_categorical"]
    elif target == "drift":
        res = drift_quality(args.ckpt, args.finetuned, style=args.style, figure=args.name or True, **common)
        head = {"agreement": res["agreement"], "style_accuracy": res["style_accuracy"]}
    elif target == "oracle":
        if args.blur and getattr(args, "record_manifest", False):
            raise ValueError("--record-manifest records the oracle's reading of crisp renders: drop --blur")
        res = oracle_quality(**common, blur=args.blur)
        head = {dom: round(m["categorical"], 4) for dom, m in res["mean"].items()}
    elif target == "pairs":
        res = pair_faithfulness(args.style, args.pairs_dir, [int(k) for k in args.levels.split(",") if k],
                                oracle=args.oracle, batch=args.batch, device=args.device, profile=args.profile)
        head = {lab: a["mean_categorical"] for lab, a in res["agreement"].items()}
    else:  # argparse's choices make this unreachable from the command line
        raise ValueError(f"unknown quality target {target!r}")
    command = None
    if sys.argv and sys.argv[0].endswith("quality.py"):  # python -m facestyle.eval.quality: same arguments
        command = shlex.join(["facestyle", "quality"] + sys.argv[1:])
    names = None
    if target == "drift" and _manifest_entry_for(res["checkpoints"]["finetuned"]) is None:
        # A G' that is not shipped (e.g. the unconstrained baseline of issue "mini world"): its drift is a
        # property of G's finetuning, so it is recorded under G's entry (the command names the G' measured).
        names = {res["checkpoints"]["finetuned"]: _manifest_entry_for(res["checkpoints"]["generator"])}
    paths = write_report(res, args.name, record_manifest=getattr(args, "record_manifest", False), command=command,
                         manifest_names=names)
    print(json.dumps({**head, "runtime_s": round(res["runtime_s"], 1), "report": paths["md"],
                      "figure": res.get("figure")}, indent=1, default=M._plain_value))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m facestyle.eval.quality TARGET ...`` (the same as ``facestyle quality TARGET ...``)."""
    from ..nn.ops import tune_malloc

    p = argparse.ArgumentParser(prog="facestyle quality", description=__doc__.splitlines()[0])
    add_arguments(p)
    tune_malloc()  # batched CPU inference is 2-3x faster with it (docs/design.md section 3)
    return main_from_args(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
