"""Latent shift over finetuning iterations (paper section 3.1, Fig. 3 and Fig. 5; notebook 01).

An unconstrained finetune moves W itself: the same z decodes to other content as training proceeds. These
functions finetune variants from the same G, seed and style batches (the runs of :mod:`facestyle.eval.study`)
and look at them at several step counts: the semantic distance to G, samples for fixed z, and G''s mapping of
fixed z projected on the principal axes of G's W.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import torch

from .. import hub
from ..config import check_style, get_profile
from ..utils import get_device
from ..viz import save_figure
from . import metrics as M
from .study import VARIANT_NAMES, Judges, StudySettings, _finetune, _run_tag

__all__ = ["latent_shift", "shift_samples_figure", "shift_curves_figure", "w_shift"]


def _shift_step(style: str, variant: str, s: StudySettings, t: int) -> Path:
    """G' after ``t`` iterations of the shift study's own run (not the ablation's finished one, which cannot go
    back to fewer steps); each step's G' is kept as ``generator_<t>.pt`` so a rerun reuses it."""
    import shutil

    from ..runs import resolve_path

    keep = resolve_path(f"{s.root}/{s.profile}-shift-{style}-{variant}{_run_tag(s)}") / f"generator_{t:06d}.pt"
    if not keep.exists():
        res = _finetune(style, variant, dataclasses.replace(s, iters=t), None, None, prefix="shift")
        shutil.copyfile(res.path, keep.with_suffix(".tmp"))
        keep.with_suffix(".tmp").replace(keep)
    return keep


def latent_shift(style: str, settings: StudySettings | None = None, variants: Sequence[str] = ("baseline", "sc"),
                 steps: Sequence[int] = (0, 250, 500, 1000), n_samples: int = 6, n_latents: int = 512,
                 judges: Judges | None = None) -> dict:
    """Finetune ``variants`` from the same G, seed and style batches and look at them at each of ``steps``.

    Each step extends the same resumable run (``finetune`` with a larger ``iters`` continues a finished run, and
    equals an uninterrupted one), so a step costs only its new iterations. Per variant and step this records:
    ``semantic_distance`` (protocol of :func:`evaluate_finetune`, ``settings.n_eval`` latents), ``samples``
    (G'_t(z) for ``n_samples`` fixed z, with G's constant noise: paper Fig. 5), and ``w`` (G'_t's mapping of
    ``n_latents`` fixed z: the W distribution whose shift Fig. 3 shows; the mapping network is trained).
    """
    s = settings or StudySettings()
    style = check_style(style)
    prof = get_profile(s.profile)
    dev = get_device(s.device)
    judges = judges or Judges.build(s.profile, dev, oracle=s.oracle, identity=s.identity)
    g = hub.load_generator(s.generator or prof.generator_ckpt, dev, expected_size=prof.generator.size).g_ema
    gen = torch.Generator().manual_seed(s.seed + 12_345)
    z_show = torch.randn(n_samples, g.style_dim, generator=gen).to(dev)
    z_w = torch.randn(n_latents, g.style_dim, generator=gen).to(dev)
    with torch.no_grad():
        ws_eval = M.semantic_latents(g, n=s.n_eval, seed=s.seed)
    noise = g.const_noise()
    out = {"style": style, "steps": [int(t) for t in steps], "variants": {}}
    for v in variants:
        rec = {"semantic_distance": [], "samples": [], "w": []}
        for t in steps:
            if t == 0:
                gp = g
            else:
                gp = hub.load_generator(_shift_step(style, v, s, int(t)), dev).g_ema
            with torch.no_grad():
                sd = M.semantic_distance(g, gp, ws_eval, judges.lpips, judges.identity, profile=s.profile)
                rec["semantic_distance"].append(sd["semantic_distance"])
                rec["samples"].append(gp.synthesis(gp.mapping(z_show), noise=noise).clamp(-1, 1).cpu())
                rec["w"].append(gp.mapping(z_w).cpu())
        out["variants"][VARIANT_NAMES[v]] = rec
    return out


def shift_samples_figure(shift: dict, path) -> Path:
    """Paper Fig. 5 remade: per variant, G'_t(z) for the same z at every recorded step (rows: variant x step)."""
    from ..viz import make_grid

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(v, t, x) for v, r in shift["variants"].items() for t, x in zip(shift["steps"], r["samples"])]
    fig, axes = plt.subplots(len(items), 1, figsize=(1.3 * len(items[0][2]) + 1.2, 1.35 * len(items)))
    for ax, (v, t, x) in zip(list(getattr(axes, "flat", [axes])), items):
        ax.imshow(make_grid(x, nrow=len(x)))
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(f"{v}\nstep {t}", rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def shift_curves_figure(shift: dict, path) -> Path:
    """Semantic distance SD(G, G'_t) over finetuning steps (left) and the W distribution shift (right): G'_t's
    mapping of fixed z projected on the two principal axes of G's W (paper Fig. 3: latents that should decode
    to the same content move away as the unconstrained finetune proceeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = shift["steps"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for v, r in shift["variants"].items():
        a.plot(steps, r["semantic_distance"], marker="o", label=v)
    a.set_xlabel("finetuning iteration"), a.set_ylabel("semantic distance SD(G, G')"), a.legend()
    first = next(iter(shift["variants"].values()))
    w0 = first["w"][0]
    mean = w0.mean(0)
    _, _, vh = torch.linalg.svd(w0 - mean, full_matrices=False)
    axes2 = vh[:2].T
    b.scatter(*((w0 - mean) @ axes2).T, s=4, c="0.6", label="G (step 0)")
    for v, r in shift["variants"].items():
        p = (r["w"][-1] - mean) @ axes2
        b.scatter(*p.T, s=4, alpha=0.6, label=f"{v}, step {steps[-1]}")
    b.set_xlabel("PC 1 of W(G)"), b.set_ylabel("PC 2"), b.legend(markerscale=3, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def w_shift(shift: dict) -> dict[str, list[float]]:
    """Mean distance ||w_G'_t(z) - w_G(z)|| over the fixed z, per variant and step: how far W itself moved."""
    out = {}
    for v, r in shift["variants"].items():
        w0 = r["w"][0]
        out[v] = [float((w - w0).norm(dim=1).mean()) for w in r["w"]]
    return out
