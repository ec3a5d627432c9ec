"""``facestyle quality pairs``: does each level of pseudo pairs (paper section 3.2, Eq. 4-6) keep the content of
its style image?

The oracle reads each level's pseudo-real images P_k and is scored against the true content the mini world
rendered the style images from, beside two reference rows (S itself, and S's content rendered real).
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from .. import hub
from ..config import check_style
from ..utils import get_device, repo_relative
from ..world import FACTORS, render, style_dataset
from . import metrics as M
from .quality import _agreement_summary, _load_oracle, _per_factor, _ref, confusion, oracle_read

__all__ = ["pair_faithfulness"]


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
