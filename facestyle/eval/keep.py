"""Does a stylization keep its input's content? ``facestyle quality keep`` (the paper's central claim, Figs. 1, 9).

For held-out real renders ``x`` whose true content is known, the oracle reads each stylized output and its
reading is scored against the truth. Three reference rows frame the style rows:

* **ceiling** - the reconstruction ``G(E_w(x))`` (psi 1): the content the W encoder lets any G' keep;
* **ideal** - the mini world's own rendering of the same content in the style: what a perfect stylizer would
  draw, read by the same oracle (so the oracle's errors on the style are in it too);
* **baseline G*** - the unconstrained finetune (Table 4's first row), when its checkpoint is given or found.

Modes (section 3.3): ``general`` renders ``G'(trunc(E_w(x)))``; ``multimodal`` / ``reference`` keep rows
``< layer`` of the content code and take the rest from random Z+ samples / inverted reference images, and every
sample is scored against the input's truth (so an output that ignores its input scores like chance).

Scores (``score``): ``categorical`` - mean over the categorical factors of the share read as the true value;
``continuous`` - mean over the continuous factors of the share within ``KEEP_TOLERANCE`` (0.15 on the [0, 1]
scale) of the truth; ``geometry`` - mean over :data:`GEOMETRY` (pose, shape, hair style, beard, smile, glasses:
what a stylization must keep and a colour change cannot fake); ``style_accuracy`` - share the oracle assigns to
the style; ``diversity`` - mean pairwise pixel L1 between outputs of different inputs divided by the same number
for the ideal renderings (1: outputs differ from each other as much as the inputs' ideal stylizations do; an
output that ignores its input scores near 0).

``targets`` holds the acceptance thresholds of the issue this command was written for (docs/results.md): each
style row's categorical and geometry scores at least 90% of the ceiling's, continuous at least 85%, style
accuracy at least 95%, diversity at least 0.9.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import hub
from ..config import STYLES, check_style, get_profile
from ..utils import atomic_write, get_device, repo_relative
from ..world import DOMAINS, FACTORS, render, sample_content

__all__ = ["SENSITIVITY_CHANGES", "factor_sensitivity", "factor_sensitivity_report", "GEOMETRY", "KEEP_TOLERANCE",
           "KEEP_SEED_BASE", "TARGETS", "score", "diversity", "keep_quality",
           "write_keep_report"]

GEOMETRY = ("face_width", "jaw", "yaw", "tilt", "hair_style", "beard", "smile", "glasses")
KEEP_TOLERANCE = 0.15
# Held-out renders: a seed range no trainer and no other quality target uses (see quality.protocol_seeds).
KEEP_SEED_BASE = 70_000_000
# Ratios to the ceiling (categorical, geometry, continuous) and absolute floors (style accuracy, diversity).
TARGETS = {"categorical": 0.90, "geometry": 0.90, "continuous": 0.85, "style_accuracy": 0.95, "diversity": 0.90}
MODES = ("general", "multimodal", "reference")
_CAT = [i for i, f in enumerate(FACTORS) if f.kind == "categorical"]
_CONT = [i for i, f in enumerate(FACTORS) if f.kind != "categorical"]
_GEO = [i for i, f in enumerate(FACTORS) if f.name in GEOMETRY]


def _per_factor_hits(truth: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``[F]`` share of rows whose reading matches the truth (categorical: same value; continuous: within tol)."""
    t, p = truth.float().cpu(), pred.float().cpu()
    hits = torch.empty(len(FACTORS))
    for i, f in enumerate(FACTORS):
        if f.kind == "categorical":
            hits[i] = (t[:, i].round() == p[:, i].round()).float().mean()
        else:
            hits[i] = ((t[:, i] - p[:, i]).abs() < KEEP_TOLERANCE).float().mean()
    return hits


def score(truth: torch.Tensor, pred: torch.Tensor, domain: torch.Tensor | None = None,
          style: str | None = None) -> dict:
    """The keep scores of one set of oracle readings ``pred [N, F]`` against the true content ``truth [N, F]``."""
    h = _per_factor_hits(truth, pred)
    out = {"categorical": float(h[_CAT].mean()), "continuous": float(h[_CONT].mean()),
           "geometry": float(h[_GEO].mean()), "per_factor": {f.name: float(h[i]) for i, f in enumerate(FACTORS)}}
    if domain is not None and style is not None:
        out["style_accuracy"] = float((domain.cpu() == DOMAINS.index(style)).float().mean())
    return out


def diversity(images: torch.Tensor, n: int = 200) -> float:
    """Mean pixel L1 between all pairs of the first ``n`` images (images in [-1, 1])."""
    x = images[:n].float().cpu().flatten(1)
    d = torch.cdist(x, x, p=1) / x.shape[1]
    k = len(x)
    return float(d.sum() / max(k * (k - 1), 1))


def _read(oracle, images: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    from .quality import oracle_read

    _, content, domain = oracle_read(oracle, images.clamp(-1, 1), batch, features=False)
    return content, domain


def _style_outputs(stylizer, x: torch.Tensor, mode: str, layer: int | None, n_samples: int, seed: int,
                   refs: torch.Tensor | None, batch: int) -> torch.Tensor:
    """``[S, N, 3, H, W]``: S = 1 for general, else one slice per random sample / reference."""
    outs = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if mode == "general":
            outs.append(stylizer.general(xb).unsqueeze(0))
        elif mode == "multimodal":
            outs.append(stylizer.multimodal(xb, n_samples=n_samples, layer=layer, seed=seed, units="native")
                        .transpose(0, 1))
        else:
            with torch.no_grad():
                outs.append(stylizer.reference(xb, ref_codes=refs, layer=layer, units="native").transpose(0, 1))
    return torch.cat(outs, 1).float().cpu().clamp(-1, 1)


def _row(label: str, truth: torch.Tensor, outs: torch.Tensor, oracle, style: str, batch: int,
         ideal_div: float) -> dict:
    """Score every slice of ``outs [S, N, ...]`` and average (the scores of a multimodal row are per sample)."""
    rows = []
    for s in range(outs.shape[0]):
        content, domain = _read(oracle, outs[s], batch)
        r = score(truth, content, domain, style)
        r["diversity"] = diversity(outs[s]) / max(ideal_div, 1e-8)
        rows.append(r)
    out = {k: sum(r[k] for r in rows) / len(rows) for k in ("categorical", "continuous", "geometry",
                                                              "style_accuracy", "diversity")}
    out["per_factor"] = {f.name: sum(r["per_factor"][f.name] for r in rows) / len(rows) for f in FACTORS}
    out["label"] = label
    return out


def _default_baseline(profile: str, style: str) -> str | None:
    """The study's G* of this style when it was trained here (runs/study/...), else None."""
    from ..runs import resolve_path

    path = resolve_path(f"runs/study/{profile}-finetune-{style}-baseline/generator.pt")
    return str(path) if path.exists() else None


def _verdict(row: dict, ceiling: dict) -> dict:
    ratios = {k: row[k] / max(ceiling[k], 1e-8) for k in ("categorical", "geometry", "continuous")}
    ok = {k: ratios[k] >= TARGETS[k] for k in ratios}
    ok["style_accuracy"] = row["style_accuracy"] >= TARGETS["style_accuracy"]
    ok["diversity"] = row["diversity"] >= TARGETS["diversity"]
    return {"ratio_to_ceiling": ratios, "meets": ok, "meets_all": all(ok.values())}


@torch.no_grad()
def keep_quality(styles: Sequence[str] = STYLES, *, generators: dict[str, Any] | None = None,
                 baselines: dict[str, Any] | None = None, mode: str = "general", layer: int | None = None,
                 n: int = 500, seed: int = 0, n_samples: int = 4, n_refs: int = 4, psi: float | None = None,
                 oracle: Any = "mini-oracle", batch: int = 100, device: Any = "auto", profile: str = "mini",
                 baseline: bool = True) -> dict:
    """Measure how much of each input's content every style's G' keeps (protocol in the module docstring).

    ``generators`` / ``baselines`` map a style to a G' / G* (hub name or path); default the profile's shipped
    ``mini-style-<style>`` and, when it exists, the study's G* under ``runs/study``. Inputs are
    ``render(sample_content(n, seed=70,000,000 + seed), "real")``. ``mode`` multimodal / reference mixes at
    native row ``layer`` (default the profile's finest content-keeping level, ``mix_layers[-1]``) with
    ``n_samples`` random codes of seed ``seed`` / the W codes of ``n_refs`` style references (rendered from
    held-out content and inverted into G''s V space as section 3.3 does).
    """
    from ..method.stylize import Stylizer

    t0 = time.perf_counter()
    prof = get_profile(profile)
    dev = get_device(device)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    styles = [check_style(s) for s in styles]
    if mode != "general" and layer is None:
        layer = int(prof.mix_layers[-1])
    orc = hub.load_oracle(oracle, device=dev).eval()
    h = KEEP_SEED_BASE + int(seed)
    truth = sample_content(int(n), seed=h)
    size = prof.generator.size
    x = render(truth, "real", size=size, seed=h)
    base = Stylizer(prof, "cartoon", dev, generator=prof.generator_ckpt, psi=1.0)
    recon = _style_outputs(base, x, "general", None, 1, seed, None, batch)
    c_rec, d_rec = _read(orc, recon[0], batch)
    ceiling = score(truth, c_rec)
    ceiling["diversity_raw"] = diversity(recon[0])
    n_fig = min(8, int(n))
    fig_rows = [("input", x[:n_fig]), ("G(E_w(x))", recon[0][:n_fig])]
    result = {"target": "keep", "profile": prof.name, "mode": mode, "layer": layer, "n": int(n), "seed": int(seed),
              "heldout_seed": h, "tolerance": KEEP_TOLERANCE, "geometry_factors": list(GEOMETRY),
              "targets": TARGETS, "ceiling": ceiling, "styles": {}}
    for style in styles:
        ideal = render(truth, style, size=size, seed=h)
        c_id, d_id = _read(orc, ideal, batch)
        ideal_div = diversity(ideal)
        entry = {"ideal": {**score(truth, c_id, d_id, style), "diversity": 1.0}}
        g_ref = (generators or {}).get(style, prof.style_generator_ckpt.format(style=style))
        refs = None
        st = Stylizer(prof, style, dev, generator=g_ref, psi=psi)
        if mode == "reference":
            rc = sample_content(int(n_refs), seed=h + 1, bias=style)
            with torch.enable_grad():
                refs = st.reference_codes(render(rc, style, size=size, seed=h + 1))
        outs = _style_outputs(st, x, mode, layer, n_samples, seed, refs, batch)
        outs_fig = {"ours": outs[0][:n_fig]}
        entry["ours"] = _row("ours", truth, outs, orc, style, batch, ideal_div)
        entry["ours"].update(checkpoint=repo_relative(g_ref) if Path(str(g_ref)).exists() else str(g_ref),
                             psi=st.psi, **_verdict(entry["ours"], ceiling))
        b_ref = (baselines or {}).get(style) or (_default_baseline(prof.name, style) if baseline else None)
        if b_ref is not None and baseline:
            sb = Stylizer(prof, style, dev, generator=b_ref, psi=psi)
            outs = _style_outputs(sb, x, mode, layer, n_samples, seed, refs, batch)
            outs_fig["baseline"] = outs[0][:n_fig]
            entry["baseline"] = _row("baseline G*", truth, outs, orc, style, batch, ideal_div)
            entry["baseline"].update(checkpoint=repo_relative(b_ref), psi=sb.psi)
        result["styles"][style] = entry
        fig_rows.append((f"ideal {style}", ideal[:n_fig]))
        for key in ("ours", "baseline"):
            if key in entry:
                fig_rows.append((f"{'G' + chr(39) if key == 'ours' else 'G*'} {style}", outs_fig[key]))
    result["meets_all"] = all(e["ours"]["meets_all"] for e in result["styles"].values())
    result["figure_rows"] = fig_rows
    result["runtime_s"] = time.perf_counter() - t0
    return result


# One factor changed at a time (continuous: +-delta on the [0, 1] scale, away from the nearer bound; categorical:
# the next value): what the semantic constraint of Eq. 1 must see to make G' keep it.
SENSITIVITY_CHANGES = (("yaw", 0.35), ("smile", 0.5), ("glasses", None), ("beard", None), ("hair_style", None),
                       ("hair_color", None), ("background", None), ("skin_tone", 0.4), ("face_width", 0.4))


def _changed(content: torch.Tensor, name: str, delta: float | None) -> torch.Tensor:
    from ..world import factor_index

    i = factor_index(name)
    out = content.clone()
    f = FACTORS[i]
    if delta is None:
        out[:, i] = (out[:, i].round() + 1) % len(f.values)
    else:
        v = out[:, i]
        out[:, i] = torch.where(v < 0.5, v + delta, v - delta).clamp(0, 1)
    return out


@torch.no_grad()
def factor_sensitivity(lpips_model, id_model=None, domains: Sequence[str] = ("real", "cartoon"), n: int = 64,
                       seed: int = 0, size: int = 64, lpips_size: int | None = None) -> dict:
    """Mean distance between renders before and after one factor changes, under the training LPIPS (and the
    identity distance when ``id_model`` is given), with pixel L1 for scale: ``{domain: {factor: {...}}}``.
    Renders are ``size`` px (the generator's, as G and G' make them); the LPIPS compares them resized to
    ``lpips_size`` (default ``size``), as the finetune's ``lpips_size`` does; the identity net stays at ``size``.
    The content seed is the keep protocol's held-out range plus 5,000,000."""
    from ..nn.perceptual import identity_distance, lpips_distance

    h = KEEP_SEED_BASE + 5_000_000 + int(seed)
    base = sample_content(int(n), seed=h)
    out = {}
    for dom in domains:
        x = render(base, dom, size=size, seed=h)
        rows = {}
        for name, delta in SENSITIVITY_CHANGES:
            y = render(_changed(base, name, delta), dom, size=size, seed=h)
            r = {"lpips": float(lpips_distance(x, y, lpips_model, lpips_size or size).mean()),
                 "l1": float((x - y).abs().mean())}
            if id_model is not None:
                r["id"] = float(identity_distance(x, y, id_model, size).mean())
            rows[name] = r
        out[dom] = rows
    return out


def factor_sensitivity_report(lpips_weights: Any = None, profile: str = "mini", device: Any = "cpu",
                              n: int = 64, size: int | None = None) -> dict:
    """:func:`factor_sensitivity` of the seeded-backbone LPIPS beside a trained backbone (``lpips_weights``: a
    hub name, a path, or a module with AlexNet ``features``), both with the lpips package's AlexNet heads, compared
    at ``size`` px (default the generator's)."""
    from ..hub import build_lpips

    prof = get_profile(profile)
    seeded = build_lpips("alex", prof, device, backbone="seeded")
    res = {"seeded": factor_sensitivity(seeded, n=n, size=prof.generator.size, lpips_size=size)}
    if lpips_weights is not None:
        if hasattr(lpips_weights, "features"):
            trained = build_lpips("alex", prof, device, backbone="seeded")
            sd = lpips_weights.features.state_dict()
            for k, v in trained.net.state_dict().items():  # lpips keeps torchvision's indices: sliceK.N.leaf
                _, idx, leaf = k.split(".", 2)
                v.copy_(sd[f"{idx}.{leaf}"])
        else:
            trained = build_lpips("alex", prof, device, backbone="pretrained", weights=lpips_weights)
        res["trained"] = factor_sensitivity(trained, n=n, size=prof.generator.size, lpips_size=size)
    return res


def _fmt(v: float) -> str:
    return f"{100 * v:.0f}%"


def write_keep_report(res: dict, name: str | None = None, command: str | None = None) -> dict:
    """``figures/<profile>/<name>.md`` (one table, rows per style) and ``.json`` (everything, per factor)."""
    from ..manifest import invoked_command
    from ..viz import figure_path

    command = command or invoked_command()
    mode = res["mode"] + (f" (layer {res['layer']})" if res["layer"] is not None else "")
    name = name or f"{res['profile']}_quality_keep_{res['mode']}" + (f"_layer{res['layer']}" if res["layer"] else "")
    c = res["ceiling"]
    lines = [f"# Content kept by stylization: {mode}", "",
             f"Held-out real renders (n = {res['n']}, content seed {res['heldout_seed']}); the oracle reads each "
             f"output and is scored against the true content (continuous within {res['tolerance']}). Ratios in "
             f"brackets are to the reconstruction ceiling; targets: categorical and geometry >= "
             f"{_fmt(TARGETS['categorical'])}, continuous >= {_fmt(TARGETS['continuous'])} of the ceiling, style "
             f"accuracy >= {_fmt(TARGETS['style_accuracy'])}, diversity >= {TARGETS['diversity']}.", "",
             "| style | row | categorical | continuous | geometry | style acc. | diversity | meets |",
             "|---|---|---|---|---|---|---|---|",
             f"| - | reconstruction G(E_w(x)), ceiling | {_fmt(c['categorical'])} | {_fmt(c['continuous'])} | "
             f"{_fmt(c['geometry'])} | - | - | |"]
    for style, e in res["styles"].items():
        for key in ("ours", "baseline", "ideal"):
            if key not in e:
                continue
            r = e[key]
            label = {"ours": f"G' ({Path(str(r.get('checkpoint', ''))).name}, psi {r.get('psi')})",
                     "baseline": f"baseline G* (psi {r.get('psi')})", "ideal": "ideal rendering"}[key]
            rat = r.get("ratio_to_ceiling") or {k: r[k] / max(c[k], 1e-8) for k in ("categorical", "continuous",
                                                                                    "geometry")}
            meets = "" if key != "ours" else ("yes" if r["meets_all"] else
                                              "no: " + ", ".join(k for k, v in r["meets"].items() if not v))
            lines.append(f"| {style} | {label} | {_fmt(r['categorical'])} ({_fmt(rat['categorical'])}) | "
                         f"{_fmt(r['continuous'])} ({_fmt(rat['continuous'])}) | {_fmt(r['geometry'])} "
                         f"({_fmt(rat['geometry'])}) | {_fmt(r['style_accuracy'])} | {r['diversity']:.2f} | "
                         f"{meets} |")
    geo = list(res["geometry_factors"])
    lines += ["", "Geometry factors, share kept per factor (G' rows):", "",
              "| style | " + " | ".join(geo) + " |", "|---|" + "---|" * len(geo)]
    lines.append("| ceiling | " + " | ".join(_fmt(c["per_factor"][f]) for f in geo) + " |")
    for style, e in res["styles"].items():
        lines.append(f"| {style} | " + " | ".join(_fmt(e["ours"]["per_factor"][f]) for f in geo) + " |")
    lines += ["", f"Measured by `{command}` in {res['runtime_s']:.0f} s (protocol: facestyle/eval/keep.py)."]
    md, js = figure_path(res["profile"], f"{name}.md"), figure_path(res["profile"], f"{name}.json")
    res = dict(res)
    fig_rows = res.pop("figure_rows", None)
    if fig_rows:
        from ..viz import labelled_grid

        png = labelled_grid([r for _, r in fig_rows], figure_path(res["profile"], f"{name}.png"),
                            row_titles=[t for t, _ in fig_rows],
                            col_titles=[f"input {i + 1}" for i in range(len(fig_rows[0][1]))],
                            title=f"Content kept, {mode}: held-out inputs (top), first sample per row")
        res["figure"] = repo_relative(png)
        lines[-1:-1] = [f"![keep]({png.name})", ""]
    with atomic_write(md, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with atomic_write(js, "w") as fh:
        json.dump({**res, "command": command}, fh, indent=1)
        fh.write("\n")
    return {"md": str(md), "json": str(js)}
