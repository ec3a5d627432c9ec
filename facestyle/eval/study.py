"""The paper's comparison experiments as functions: the ablation of Table 4, the pair-level study of Table 5 and
the per-factor drift of Fig. 5 / Fig. 10, each ending in a results table (markdown + JSON) under ``figures/``.

``facestyle eval ablation --style all`` and ``facestyle eval pairs --style all`` are the one-command versions.
The latent shift of Fig. 3 / Fig. 5 is in :mod:`facestyle.eval.shift`, the numbers of stylized inputs
(Tables 1, 3, 6, section 4.4, appendix 6.3) and of pseudo pairs in :mod:`facestyle.eval.stylization`.

Protocol of :func:`evaluate_finetune` (every G' of a study is measured on the same latents):

* latents: ``z = randn(n, style_dim)`` from a CPU generator seeded ``seed``, ``w = G.mapping(z)`` (truncation 1,
  the w set of :func:`metrics.semantic_latents`); G and G' render every w with G's constant noise;
* ``semantic_distance``: :func:`metrics.semantic_distance` of G vs G' on those w (Eq. 1's form, LPIPS-alex);
* ``agreement_*``: :func:`metrics.attribute_agreement` of the oracle's reading of G(w) vs G'(w) - the content
  a stylization keeps (categorical: share equal; continuous: share within 0.1);
* ``style_accuracy``: share of G'(w) the oracle assigns to the target style;
* ``fid_oracle``: FID in the oracle's feature space between the n G'(w) and n renders of the style drawn from
  the style set's own (biased) content distribution, with a texture seed disjoint from the training set - the
  mini stand-in for the paper's FID against the style data;
* ``ideal_distance`` (mini only): LPIPS-alex between G'(w) and the world's rendering of ``content_from_z(z)`` in
  the style, the content G was trained to draw for that z - the distance to the perfect stylization.
"""
from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .. import hub, world
from ..config import STYLES, check_style, get_profile
from ..utils import get_device, repo_relative
from ..viz import figure_path, save_figure
from . import metrics as M

VARIANT_NAMES = {"baseline": "baseline (G*)", "sc": "+SC", "pc": "+PC", "sc_pc": "+SC&PC"}
TABLE_COLUMNS = ("style", "variant", "pair_level", "iters", "semantic_distance", "agreement_categorical",
                 "agreement_continuous", "style_accuracy", "fid_oracle", "ideal_distance", "finetune_s")
PAPER_PAIR_LEVEL = {"anime": 1}  # appendix: W_1^+ for anime, W_2^+ for the other styles
_FID_SEED = 9_001  # texture/content seed of the style reference set: disjoint from world.STYLE_SEEDS


@dataclasses.dataclass
class Judges:
    """The evaluation networks, built once per study: the oracle and the LPIPS-alex / identity pair of the
    semantic distance."""

    oracle: nn.Module
    lpips: nn.Module
    identity: nn.Module

    @classmethod
    def build(cls, profile: str = "mini", device: Any = "auto", *, oracle: Any = "mini-oracle",
              identity: Any = None) -> "Judges":
        from ..hub import build_identity, build_lpips

        prof = get_profile(profile)
        dev = get_device(device)
        orc = oracle if isinstance(oracle, nn.Module) else hub.load_oracle(oracle, device=dev)
        return cls(oracle=orc.eval(), lpips=build_lpips(prof.lpips_eval_net, prof, device=dev),
                   identity=build_identity(prof, device=dev, ckpt=identity))


@torch.no_grad()
def _read(oracle: nn.Module, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from .quality import oracle_read

    return oracle_read(oracle, x, batch, features=True)


@torch.no_grad()
def evaluate_finetune(g: nn.Module, g_prime: nn.Module, style: str, judges: Judges, *, n: int = 500,
                      seed: int = 0, batch: int = 100, profile: str = "mini") -> dict:
    """Measure one finetuned G' against its G (protocol in the module docstring). Returns a flat dict of the
    table's numbers plus ``agreement_per_factor``."""
    style = check_style(style)
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(int(seed)))
    ws = g.mapping(z.to(g.device))
    noise = g.const_noise()
    noise_p = [t.to(g_prime.device) for t in noise]
    xa = torch.cat([g.synthesis(ws[i:i + batch], noise=noise).clamp(-1, 1).cpu() for i in range(0, n, batch)])
    xb = torch.cat([g_prime.synthesis(ws[i:i + batch].to(g_prime.device), noise=noise_p).clamp(-1, 1).cpu()
                    for i in range(0, n, batch)])
    sd = M.semantic_distance(g, g_prime, ws, judges.lpips, judges.identity, profile=profile, batch=batch)
    _, ca, _ = _read(judges.oracle, xa, batch)
    fb, cb, db = _read(judges.oracle, xb, batch)
    agr = M.attribute_agreement(ca, cb)
    ref_content = world.sample_content(n, seed=_FID_SEED, bias=world.STYLE_BIAS[style])
    ref = world.render(ref_content, style, size=g.size, seed=_FID_SEED)
    fr, _, _ = _read(judges.oracle, ref, batch)
    out = {"semantic_distance": sd["semantic_distance"], "sd_lpips": sd["lpips"], "sd_id": sd["id"],
           "agreement_categorical": agr["mean_categorical"], "agreement_continuous": agr["mean_continuous"],
           "style_accuracy": float((db.cpu() == world.DOMAINS.index(style)).float().mean()),
           "fid_oracle": M.frechet_distance(fb.cpu(), fr.cpu()), "n_eval": n,
           "agreement_per_factor": {f.name: agr[f.name] for f in world.FACTORS}}
    if profile == "mini":
        out["ideal_distance"] = M.ideal_distance(xb, world.content_from_z(z), style, judges.lpips, seed=seed)
    return out


def evaluate_run(g_prime: Any, style: str, s: "StudySettings", *, seed: int = 0) -> dict:
    """Notebook 03's numbers for one finished finetune (a path or hub name): the oracle protocol of
    :func:`evaluate_finetune` in the mini world; in any other profile, which has no oracle, the paper's own
    metrics (:func:`facestyle.eval.paper.paper_metrics`: semantic distance and Inception FID of G''s samples to
    the style set it was finetuned on)."""
    prof = get_profile(s.profile)
    dev = get_device(s.device)
    if prof.name == "mini":
        g = hub.load_generator(s.generator or prof.generator_ckpt, dev, expected_size=prof.generator.size).g_ema
        gp = hub.load_generator(g_prime, dev, expected_size=prof.generator.size).g_ema
        judges = Judges.build(prof.name, dev, oracle=s.oracle, identity=s.identity)
        return evaluate_finetune(g, gp, style, judges, n=s.n_eval, seed=seed, profile=prof.name)
    from .paper import paper_metrics

    style_set = world.style_dataset(style, size=prof.generator.size, n=s.n_style)[0]
    return paper_metrics(g_prime, style_set, profile=prof.name, style=style, generator=s.generator, n=s.n_eval,
                         seed=seed, device=dev, batch=min(16, s.n_eval))


@dataclasses.dataclass
class StudySettings:
    """What every finetune of a study shares; ``None`` fields take the profile's values (as the finetune does)."""

    profile: str = "mini"
    iters: int | None = None
    generator: str | None = None
    identity: str | None = None
    zplus_encoder: str | None = None
    wplus_encoder: str | None = None
    oracle: str = "mini-oracle"
    pair_iters: int | None = None  # level-2 optimisation steps (Eq. 5); profile.pair_opt_iters
    pair_lr: float | None = None  # level-2 Adam learning rate; profile.pair_opt_lr
    n_style: int | None = None  # first n images of the style set (None: the paper-sized set)
    n_eval: int = 500
    seed: int = 0
    device: str = "auto"
    root: str = "runs/study"
    progress: bool = True


def _n_tag(s: StudySettings) -> str:
    """Runs on a subset of the style set live in their own folders (a finished run is reused by name)."""
    return "" if s.n_style is None else f"-n{s.n_style}"


def _run_tag(s: StudySettings) -> str:
    """A finetune's folder also names its seed, so a replicate never reuses another seed's finished run (seed 0
    keeps the plain name of the runs made before seeds were studied)."""
    return _n_tag(s) + ("" if s.seed == 0 else f"-seed{s.seed}")


def _pair_tag(s: StudySettings) -> str:
    """Pairs made with other level-2 settings than the profile's, and the finetunes trained on them, live in
    their own folders (a finished pair set or run is reused by name, so it must name what made it)."""
    prof = get_profile(s.profile)
    tag = ""
    if s.pair_iters is not None and s.pair_iters != prof.pair_opt_iters:
        tag += f"-p{s.pair_iters}"
    if s.pair_lr is not None and s.pair_lr != prof.pair_opt_lr:
        tag += f"-lr{s.pair_lr:g}"
    return tag


def _pairs(style: str, level: int, s: StudySettings) -> Path:
    """The style's pseudo pairs of ``level``, made once and shared by every seed: a pair set is training data, and
    level-2 pairs (Eq. 5) would cost a G* and ~12 min of optimisation per replicate. Level 2 always starts from
    the seed-0 G*, so the pairs do not depend on which seed happened to ask first."""
    from ..method.pairs import make_pairs
    from ..runs import resolve_path

    out = resolve_path(f"{s.root}/{s.profile}-pairs-{style}{_pair_tag(s) if level == 2 else ''}{_n_tag(s)}")
    path = out / f"pairs_level{level}.pt"
    if not path.exists():
        g_star = _finetune(style, "baseline", dataclasses.replace(s, seed=0), None, None).path if level == 2 \
            else None
        prof = get_profile(s.profile)
        make_pairs(style, s.profile, (level,), n=s.n_style, g=s.generator, g_star=g_star,
                   zplus_psp=s.zplus_encoder, wplus_psp=s.wplus_encoder, identity_ckpt=s.identity,
                   iters=s.pair_iters if s.pair_iters is not None else prof.pair_opt_iters,
                   lr=s.pair_lr if s.pair_lr is not None else prof.pair_opt_lr, out_dir=out,
                   device=s.device, progress=s.progress,
                   # next to the pairs: one level's figure must not overwrite notebook 02's three-level Fig. 8
                   figure=out / f"fig08_pairs_level{level}.png")
    return path


def paper_pair_level(style: str) -> int:
    """The pair level the paper uses per style (appendix, hyperparameters): W_1^+ for anime, W_2^+ otherwise."""
    return PAPER_PAIR_LEVEL.get(check_style(style), 2)


def finetune_variant(style: str, variant: str = "sc_pc", settings: StudySettings | None = None,
                     pair_level: int | None = None):
    """Finetune one variant of one style as the studies do (same seed, same style batches; the pairs it needs
    and the baseline G* that level-2 pairs need are made first). Finished runs are reused, interrupted ones
    resume. Returns the :class:`~facestyle.method.finetune.FinetuneResult`."""
    s = settings or StudySettings()
    style = check_style(style)
    if variant not in VARIANT_NAMES:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANT_NAMES)}")
    if variant in ("pc", "sc_pc"):
        level = paper_pair_level(style) if pair_level is None else int(pair_level)
        return _finetune(style, variant, s, _pairs(style, level, s), level)
    return _finetune(style, variant, s, None, None)


def _finetune(style: str, variant: str, s: StudySettings, pairs: Path | None, level: int | None,
              prefix: str = "finetune"):
    from ..method.finetune import FinetuneConfig, finetune

    tag = f"{variant}" + (f"-L{level}" if pairs is not None else "") + (_pair_tag(s) if level == 2 else "")
    cfg = FinetuneConfig(profile=s.profile, style=style, variant=variant, iters=s.iters, generator=s.generator,
                         identity=s.identity, pairs=str(pairs) if pairs is not None else None, pair_level=level,
                         out=f"{s.root}/{s.profile}-{prefix}-{style}-{tag}{_run_tag(s)}", seed=s.seed,
                         device=s.device, sample_every=0)
    style_images = world.style_dataset(style, size=get_profile(s.profile).generator.size, n=s.n_style)[0] \
        if s.n_style is not None else None
    res = finetune(cfg, progress=s.progress, style_images=style_images)
    return res


def run_variants(style: str, runs: Sequence[tuple[str, int | None]], s: StudySettings,
                 judges: Judges | None = None) -> list[dict]:
    """Finetune and evaluate each ``(variant, pair_level)`` of ``runs`` for one style (finished runs are reused,
    interrupted ones resume). The baseline G* is always trained first: level-2 pairs (Eq. 5) need it."""
    style = check_style(style)
    prof = get_profile(s.profile)
    dev = get_device(s.device)
    judges = judges or Judges.build(s.profile, dev, oracle=s.oracle, identity=s.identity)
    g = hub.load_generator(s.generator or prof.generator_ckpt, dev, expected_size=prof.generator.size).g_ema
    finetune_variant(style, "baseline", s)
    rows = []
    for variant, level in runs:
        level = level if variant in ("pc", "sc_pc") else None
        res = finetune_variant(style, variant, s, pair_level=level)  # finished runs are reused
        g_prime = hub.load_generator(res.path, dev).g_ema
        ev = evaluate_finetune(g, g_prime, style, judges, n=s.n_eval, seed=s.seed, profile=s.profile)
        meta = hub.load_facestyle_checkpoint(res.path, kind="stylegan2")["meta"]
        rows.append({"style": style, "variant": VARIANT_NAMES[variant], "pair_level": level, "iters": res.iters,
                     **ev, "finetune_s": meta.get("wall_s"), "checkpoint": str(res.path)})
    return rows


def _settings_record(s: StudySettings) -> dict:
    return {**dataclasses.asdict(s), "root": repo_relative(s.root)}


def _flat(rows: Sequence[dict]) -> list[dict]:
    """Table rows as written: per-factor agreement kept apart, checkpoints named relative to the repository."""
    return [{k: (repo_relative(v) if k == "checkpoint" else v) for k, v in r.items() if k != "agreement_per_factor"}
            for r in rows]


def _write(rows: list[dict], name: str, title: str, s: StudySettings) -> tuple[Path, Path]:
    per_factor = {f"{r['style']}/{r['variant']}/L{r['pair_level']}": r["agreement_per_factor"] for r in rows}
    flat = _flat(rows)
    return M.results_table(flat, figure_path(s.profile, f"{name}.md"), figure_path(s.profile, f"{name}.json"),
                           columns=TABLE_COLUMNS, title=title,
                           meta={"settings": _settings_record(s), "agreement_per_factor": per_factor,
                                 "protocol": __doc__.split("Protocol of")[1].strip()})


def ablation(styles: Sequence[str] = STYLES, settings: StudySettings | None = None, pair_level: int | None = None,
             name: str = "table4_ablation") -> dict:
    """Paper Table 4: baseline, +SC, +PC and +SC&PC finetunes of every style from the same G, seed and style
    batches, measured by :func:`evaluate_finetune`; pairs of ``pair_level`` (default :func:`paper_pair_level`);
    writes ``figures/<profile>/table4_ablation.{md,json}`` and
    the per-factor drift figure ``fig10_drift_per_factor.png`` (baseline vs +SC&PC)."""
    s = settings or StudySettings()
    judges = Judges.build(s.profile, s.device, oracle=s.oracle, identity=s.identity)
    rows = []
    for st in styles:
        lv = paper_pair_level(st) if pair_level is None else int(pair_level)
        rows += run_variants(st, [("baseline", None), ("sc", None), ("pc", lv), ("sc_pc", lv)], s, judges)
    fig = drift_figure(rows, figure_path(s.profile, "fig10_drift_per_factor.png"))
    levels = "the paper's per style (anime 1, others 2)" if pair_level is None else str(pair_level)
    md, js = _write(rows, name, f"Table 4 (mini remake): ablation, pair level {levels}", s)
    return {"rows": rows, "markdown": md, "json": js, "figure": fig}


def pair_level_study(styles: Sequence[str] = STYLES, settings: StudySettings | None = None,
                     levels: Sequence[int] = (1, 2, 3), name: str = "table5_pair_levels") -> dict:
    """Paper Table 5: +SC&PC with pseudo pairs of each level (Eq. 4, 5, 6), next to +SC (no pairs) and the
    baseline; writes ``figures/<profile>/table5_pair_levels.{md,json}``."""
    s = settings or StudySettings()
    runs = [("baseline", None), ("sc", None)] + [("sc_pc", lv) for lv in levels]
    judges = Judges.build(s.profile, s.device, oracle=s.oracle, identity=s.identity)
    rows = [r for st in styles for r in run_variants(st, runs, s, judges)]
    md, js = _write(rows, name, "Table 5 (mini remake): pseudo-pair levels", s)
    return {"rows": rows, "markdown": md, "json": js}


# The conditions on +SC&PC against the baseline G* of the same seed (docs/results.md, "The three checks").
FID_TOLERANCE = 1.10


def _mean_sd(vals: Sequence[float]) -> tuple[float, float]:
    """Mean and sample sd (0 for a single seed)."""
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def seed_study(styles: Sequence[str] = STYLES, settings: StudySettings | None = None, seeds: Sequence[int] = (0, 1, 2),
               name: str = "table4_seeds") -> dict:
    """Run-to-run spread of Table 4's two ends: the baseline G* and +SC&PC (paper's pair level) per style, each
    seed an independent replicate (its own z, style batches, noise and evaluation latents; the pair sets are
    shared, see :func:`_pairs`). Seed 0 is the ablation's own runs, reused.

    Per style and seed it checks the results the method must show against the same seed's G*: semantic distance
    lower, categorical agreement higher, FID at most ``FID_TOLERANCE`` x G*'s. Writes
    ``figures/<profile>/<name>.{md,json}``: one row per run, then mean +- sd over seeds and the checks."""
    s = settings or StudySettings()
    judges = Judges.build(s.profile, s.device, oracle=s.oracle, identity=s.identity)
    rows, res = [], {}
    for st in styles:
        for seed in seeds:
            sk = dataclasses.replace(s, seed=int(seed))
            for r in run_variants(st, [("baseline", None), ("sc_pc", paper_pair_level(st))], sk, judges):
                rows.append({"seed": int(seed), **r})
        # Rewritten after every style: an interrupted study still leaves the styles it finished on disk.
        res = _write_seed_table(rows, seeds, s, name)
    return res


def _write_seed_table(rows: list[dict], seeds: Sequence[int], s: StudySettings, name: str) -> dict:
    """The seed study's table: one row per run, mean +- sd per style and variant, the per-seed checks."""
    keys = ("semantic_distance", "agreement_categorical", "fid_oracle", "ideal_distance")
    summary, checks = [], []
    for st in dict.fromkeys(r["style"] for r in rows):
        for v in ("baseline (G*)", "+SC&PC"):
            sel = [r for r in rows if r["style"] == st and r["variant"] == v]
            summary.append({"style": st, "variant": v, "seeds": len(sel),
                            **{k: _mean_sd([r[k] for r in sel]) for k in keys}})
        for seed in seeds:
            base, ours = ({r["variant"]: r for r in rows if r["style"] == st and r["seed"] == seed}[v]
                          for v in ("baseline (G*)", "+SC&PC"))
            checks.append({"style": st, "seed": int(seed),
                           "sd_lower": ours["semantic_distance"] < base["semantic_distance"],
                           "agreement_higher": ours["agreement_categorical"] > base["agreement_categorical"],
                           "fid_ratio": ours["fid_oracle"] / base["fid_oracle"],
                           "fid_within": ours["fid_oracle"] <= FID_TOLERANCE * base["fid_oracle"]})
    lines = ["", "## Mean +- sd over seeds", "", "| style | variant | seeds | " + " | ".join(keys) + " |",
             "|" + "---|" * (3 + len(keys))]
    lines += [f"| {r['style']} | {r['variant']} | {r['seeds']} | "
              + " | ".join(f"{r[k][0]:.4f} +- {r[k][1]:.4f}" for k in keys) + " |" for r in summary]
    lines += ["", f"## +SC&PC vs the same seed's G* (FID bar: {FID_TOLERANCE:.2f} x G*'s)", "",
              "| style | seed | semantic distance lower | agreement higher | FID ratio | FID within bar |",
              "|---|---|---|---|---|---|"]
    yes = {True: "yes", False: "**no**"}
    lines += [f"| {c['style']} | {c['seed']} | {yes[c['sd_lower']]} | {yes[c['agreement_higher']]} | "
              f"{c['fid_ratio']:.3f} | {yes[c['fid_within']]} |" for c in checks]
    flat = _flat(rows)
    md, js = M.results_table(
        flat, figure_path(s.profile, f"{name}.md"), figure_path(s.profile, f"{name}.json"),
        columns=("style", "seed") + TABLE_COLUMNS[1:], title="Table 4 (mini): baseline vs +SC&PC over seeds",
        meta={"settings": _settings_record(s), "seeds": list(seeds), "summary": summary, "checks": checks,
              "fid_tolerance": FID_TOLERANCE, "protocol": __doc__.split("Protocol of")[1].strip()},
        footer="\n".join(lines) + "\n")
    return {"rows": rows, "summary": summary, "checks": checks, "markdown": md, "json": js}


def drift_figure(rows: Sequence[dict], path, variants: Sequence[str] = ("baseline (G*)", "+SC&PC")) -> Path:
    """Per-factor oracle agreement between G(w) and G'(w), averaged over the styles in ``rows``, one bar per
    variant (paper Fig. 5 / Fig. 10 as numbers: which attributes an unconstrained finetune loses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f.name for f in world.FACTORS]
    fig, ax = plt.subplots(figsize=(11, 3.6))
    width = 0.8 / max(1, len(variants))
    for k, v in enumerate(variants):
        sel = [r["agreement_per_factor"] for r in rows if r["variant"] == v]
        if not sel:
            continue
        vals = [sum(d[nm] for d in sel) / len(sel) for nm in names]
        ax.bar([i + k * width for i in range(len(names))], vals, width, label=v)
    ax.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(names))], names, rotation=60, ha="right")
    ax.set_ylabel("oracle agreement G(w) vs G'(w)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path)
