"""``facestyle quality drift``: how much content does a finetuned G' lose (the semantic drift of paper section
3.1, Fig. 3)?

Oracle attribute agreement between G(w) and G'(w) for the same w, the share of G'(w) in the target style, and
which way each categorical factor moves (confusion of G's values against G''s).
"""
from __future__ import annotations

import time
from typing import Any

import torch

from .. import hub
from ..config import check_style
from ..utils import get_device
from ..world import DOMAINS, FACTORS, style_content
from . import metrics as M
from .quality import _agreement_summary, _load_oracle, _per_factor, _ref, confusion, oracle_read

__all__ = ["drift_quality"]


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
