"""``facestyle quality generator`` / ``sweep``: is the mini G a faithful model of the real domain?

FID in the oracle's feature space against real renders beside the real-vs-real noise floor, the frequency of
every categorical content value in G's samples against the world's ``real_probs`` (the issue's +-5 point
criterion), and content fidelity - does G(z) draw the content z stands for (the mini G is trained on
``world.content_from_z``). The shared seeds and the oracle's reading are in :mod:`facestyle.eval.quality`.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from .. import hub
from ..utils import get_device
from ..world import DOMAINS, FACTORS, content_from_z, render
from . import metrics as M
from .quality import (FREQ_TOLERANCE_POINTS, _load_oracle, _ref, _render_real, confusion, generate, oracle_read,
                      protocol_seeds)

__all__ = ["generator_quality", "content_fidelity", "generator_sweep"]


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
