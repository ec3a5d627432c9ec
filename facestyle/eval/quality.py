"""The shared protocol of ``facestyle quality``: seeds, the oracle's reading of images, G's samples, thresholds.

``facestyle quality TARGET`` measures the mini profile's pretrained models, one module per target, each a
function returning a plain dict that :func:`facestyle.eval.quality_report.write_report` turns into a markdown +
JSON report under ``figures/<profile>/`` (for some a figure next to it), optionally merged into the checkpoint
manifest:

* :func:`~facestyle.eval.quality_generator.generator_quality` - is G a faithful model of the real domain? FID in
  the oracle's feature space against real renders, next to the FID between two independent real sets (the noise
  floor), and the frequency of every categorical content value in G's samples against the real distribution
  (:func:`~facestyle.eval.quality_generator.generator_sweep` compares several generator checkpoints on a
  validation seed).
* :func:`~facestyle.eval.quality_encoders.encoder_quality` - how well do the W / W+ / Z+ encoders invert
  held-out real renders through G? LPIPS (the registry's ``lpips_alex``) and oracle attribute agreement between
  input and reconstruction, next to the oracle's own agreement with the ground truth (its ceiling).
* :func:`~facestyle.eval.quality_drift.drift_quality` - how much content does a finetuned G' lose? Oracle
  attribute agreement between G(w) and G'(w) for the same w, the share of G'(w) the oracle puts in the target
  style, and which way each categorical factor moves (confusion of G's values against G''s).
* :func:`~facestyle.eval.quality_pairs.pair_faithfulness` - do the pseudo pairs (section 3.2) keep their style
  image's content? Oracle agreement between the true content of S and each level's P_k, with value shares and
  confusion.
* :func:`~facestyle.eval.quality_oracle.oracle_quality` - how well does the instrument itself read each factor in
  each domain? Held-out accuracy per factor and domain, and the recall of every categorical value.

Conventions shared by all (each function's docstring states its full protocol):

* every random draw comes from a dedicated CPU ``torch.Generator`` seeded from the ``seed`` argument
  (:func:`protocol_seeds`), so a number is the same on every device and never depends on the global RNG;
* generated and reconstructed images are clamped to [-1, 1] before any judge sees them - the image a user
  would see or save - while real renders are already in that range;
* the oracle reads images through :meth:`Oracle.predict` (content codes, domain) and its penultimate
  features (:meth:`Oracle.features`, the ``fid_oracle`` space), both from one forward pass per batch.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from .. import hub
from ..world import FACTORS, render, sample_content

__all__ = ["FREQ_TOLERANCE_POINTS", "CATEGORICAL_TARGET", "ORACLE_WEAK_RECALL", "ENCODER_KINDS", "protocol_seeds",
           "oracle_read", "generate", "confusion"]

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


def confusion(rows: torch.Tensor, cols: torch.Tensor, factor_index: int) -> list[list[int]]:
    """Counts of (value in ``rows``, value in ``cols``) for one categorical factor of two content tensors
    ``[N, F]`` (value codes in the order of ``FACTORS[factor_index].values``)."""
    k = len(FACTORS[factor_index].values)
    a, b = rows[:, factor_index].round().long().cpu(), cols[:, factor_index].round().long().cpu()
    return torch.bincount(a * k + b, minlength=k * k).reshape(k, k).tolist()
