"""The paper's comparison experiments as functions: the ablation of Table 4, the pair-level study of Table 5 and
the per-factor drift of Fig. 5 / Fig. 10, each ending in a results table (markdown + JSON) under ``figures/``.

``facestyle eval ablation --style all`` and ``facestyle eval pairs --style all`` are the one-command versions.

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

import argparse
import dataclasses
import statistics
import time
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
        from ..nn.perceptual import build_identity, build_lpips

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
    batches, measured by :func:`evaluate_finetune`; pairs of ``pair_level`` (default :func:`paper_pair_level`); writes ``figures/<profile>/table4_ablation.{md,json}`` and
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


# --------------------------------------------------------------------------------------------------------------
# command line: `facestyle eval ablation|pairs --style all`
# --------------------------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", choices=("ablation", "pairs", "seeds"),
                   help="ablation: Table 4; pairs: Table 5; seeds: baseline vs +SC&PC over --seeds")
    p.add_argument("--style", default="all", help="one style, a comma list, or all")
    p.add_argument("--pair-level", type=int, default=None,
                   help="pair level of the ablation's +PC / +SC&PC runs (default: the paper's, anime 1, others 2)")
    p.add_argument("--levels", default="1,2,3", help="levels of the pair study")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the seed study (each an independent replicate)")
    p.add_argument("--name", default=None,
                   help="file name of the table under figures/<profile>/ (default: table4_ablation, "
                        "table5_pair_levels, table4_seeds)")
    for f in dataclasses.fields(StudySettings):
        if f.name in ("progress",):
            continue
        typ = {"int | None": int, "int": int, "float | None": float, "str | None": str, "str": str}.get(str(f.type), str)
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=f.default)
    p.add_argument("--no-progress", action="store_true")


def main_from_args(args) -> int:
    styles = list(STYLES) if args.style == "all" else [check_style(x) for x in args.style.split(",") if x]
    s = StudySettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(StudySettings)
                         if f.name != "progress"}, progress=not args.no_progress)
    if not styles:
        raise ValueError("--style names no style: give one, a comma list, or all")
    seeds = [int(v) for v in args.seeds.split(",") if v]
    if args.study == "seeds" and not seeds:
        raise ValueError("--seeds names no seed: give a comma list such as 0,1,2")
    named = {} if args.name is None else {"name": args.name}
    t0 = time.perf_counter()
    if args.study == "ablation":
        res = ablation(styles, s, pair_level=args.pair_level, **named)
    elif args.study == "pairs":
        res = pair_level_study(styles, s, levels=[int(v) for v in args.levels.split(",") if v], **named)
    else:
        res = seed_study(styles, s, seeds=seeds, **named)
    print(Path(res["markdown"]).read_text())
    print(f"wrote {res['markdown']} and {res['json']} in {time.perf_counter() - t0:.0f} s")
    return 0


# --------------------------------------------------------------------------------------------------------------
# latent shift over finetuning iterations (paper section 3.1, Fig. 3 and Fig. 5)
# --------------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------------
# pseudo-pair quality (paper section 3.2 / 4.5)
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def pair_quality(style_images: torch.Tensor, content: torch.Tensor | None, levels: dict, judges: Judges,
                 batch: int = 100) -> list[dict]:
    """How real, and how faithful to S, each level's pseudo-real images P_k are.

    ``levels`` maps a label (e.g. ``"P1"``) to images ``[N, 3, H, W]`` paired with ``style_images``. Per label:
    ``lpips_to_s`` (LPIPS-alex between S and P_k: how far the pair moves from the style image),
    ``real_share`` (share the oracle calls real: is P_k a real-domain portrait?), and, when the true ``content``
    of S is known (mini), ``agreement_categorical`` / ``agreement_continuous`` between it and the oracle's
    reading of P_k (does the pair keep S's content?).
    """
    from ..nn.perceptual import lpips_distance

    rows = []
    for label, p in levels.items():
        p = p.float().cpu()
        lp = torch.cat([lpips_distance(style_images[i:i + batch], p[i:i + batch], judges.lpips).cpu()
                        for i in range(0, len(p), batch)])
        _, c, d = _read(judges.oracle, p, batch)
        row = {"pairs": label, "lpips_to_s": float(lp.mean()),
               "real_share": float((d.cpu() == world.DOMAINS.index("real")).float().mean())}
        if content is not None:
            agr = M.attribute_agreement(content[:len(p)], c.cpu())
            row.update(agreement_categorical=agr["mean_categorical"], agreement_continuous=agr["mean_continuous"])
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------------------
# stylization of inputs: metrics, method comparison (Tables 1, 3, 6), mixing levels (section 4.4)
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def stylization_metrics(inputs: torch.Tensor, outputs: torch.Tensor, style: str, judges: Judges,
                        content: torch.Tensor | None = None, batch: int = 100) -> dict:
    """Metrics of stylized ``outputs`` of real ``inputs`` (same order), the paper's Table 1 / 6 columns in mini:

    ``lpips_in_out`` (LPIPS-alex input vs output, the paper's "Dis."), ``id_distance`` (1 - cos of the identity
    embeddings), ``style_accuracy`` (oracle domain = style), ``fid_oracle`` (vs the style's distribution, as in
    :func:`evaluate_finetune`) and, with the inputs' true ``content`` (mini), ``agreement_*`` (oracle reading of
    the output vs the true content) and ``ideal_distance`` (LPIPS-alex to the world's own stylization).
    """
    from ..nn.perceptual import identity_distance, lpips_distance

    x, y = inputs.float().cpu(), outputs.float().clamp(-1, 1).cpu()
    dev = next(judges.lpips.parameters(), torch.empty(0)).device
    lp = torch.cat([lpips_distance(x[i:i + batch].to(dev), y[i:i + batch].to(dev), judges.lpips).cpu()
                    for i in range(0, len(x), batch)])
    idd = torch.cat([identity_distance(x[i:i + batch].to(dev), y[i:i + batch].to(dev), judges.identity).cpu()
                     for i in range(0, len(x), batch)])
    fy, cy, dy = _read(judges.oracle, y, batch)
    ref_content = world.sample_content(max(len(y), 64), seed=_FID_SEED, bias=world.STYLE_BIAS[style])
    fr, _, _ = _read(judges.oracle, world.render(ref_content, style, size=y.shape[-1], seed=_FID_SEED), batch)
    out = {"lpips_in_out": float(lp.mean()), "id_distance": float(idd.mean()),
           "style_accuracy": float((dy.cpu() == world.DOMAINS.index(style)).float().mean()),
           "fid_oracle": M.frechet_distance(fy.cpu(), fr.cpu())}
    if content is not None:
        agr = M.attribute_agreement(content, cy.cpu())
        out.update(agreement_categorical=agr["mean_categorical"], agreement_continuous=agr["mean_continuous"],
                   ideal_distance=M.ideal_distance(y, content, style, judges.lpips))
    return out


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def compare_methods(style: str, settings: StudySettings | None = None, n_inputs: int = 200,
                    judges: Judges | None = None, g_prime: Any = None, toonify_switch_res: int = 16) -> dict:
    """Paper Tables 1, 3 and 6 in mini: the method against the in-repo baselines on the same real inputs.

    Inputs: ``n_inputs`` held-out real renders (seed 777, content known). Every method gets the same content
    codes - the W encoder's, truncated with the style's psi - so the comparison isolates the generator:

    * **Ours**: G' finetuned with +SC&PC (``g_prime``, default :func:`finetune_variant`);
    * **G* (finetune)**: the unconstrained finetune;
    * **Toonify**: :func:`~facestyle.method.baselines.layer_swap`, layers below ``toonify_switch_res`` from G*,
      the rest from G;
    * **UI2I**: :func:`~facestyle.method.baselines.ui2i_pipeline` (G's layers below 32 px swapped into G*).

    Returns ``{"rows", "images", "inputs"}``: per method the metrics of :func:`stylization_metrics`, the
    generator's parameter count, the finetune's wall time and the measured stylization throughput
    (images/s on this machine, encoder included).
    """
    from ..method.baselines import layer_swap, ui2i_generator
    from ..method.stylize import Stylizer

    s = settings or StudySettings()
    style = check_style(style)
    prof = get_profile(s.profile)
    dev = get_device(s.device)
    judges = judges or Judges.build(s.profile, dev, oracle=s.oracle, identity=s.identity)
    ours = g_prime if g_prime is not None else finetune_variant(style, "sc_pc", s).path
    star = finetune_variant(style, "baseline", s)
    base = hub.load_generator(s.generator or prof.generator_ckpt, dev, expected_size=prof.generator.size)
    g_star = hub.load_generator(star.path, dev).g_ema
    content = world.sample_content(n_inputs, seed=777)
    inputs = world.render(content, "real", size=prof.generator.size, seed=777)
    methods = {"Ours (+SC&PC)": ours, "G* (finetune)": g_star,
               "Toonify (layer swap)": layer_swap(base.g_ema, g_star, toonify_switch_res),
               "UI2I (layer swap + V)": ui2i_generator(base.g_ema, g_star)}
    wall = {"Ours (+SC&PC)": _wall_of(ours), "G* (finetune)": _wall_of(star.path)}
    rows, images = [], {}
    for name, gen in methods.items():
        st = Stylizer(s.profile, style, dev, generator=gen, base_generator=base)
        st.general(inputs[:2])  # warm-up: loads the models before timing
        t0 = time.perf_counter()
        out = st.general(inputs).cpu()
        dt = time.perf_counter() - t0
        images[name] = out
        rows.append({"style": style, "method": name, **stylization_metrics(inputs, out, style, judges, content),
                     "params_M": _n_params(st.g_style) / 1e6, "resolution": int(out.shape[-1]),
                     "finetune_s": wall.get(name), "images_per_s": len(inputs) / dt})
    return {"rows": rows, "images": images, "inputs": inputs}


def _wall_of(ckpt) -> float | None:
    if isinstance(ckpt, nn.Module):
        return None
    try:
        return hub.load_facestyle_checkpoint(ckpt, kind="stylegan2")["meta"].get("wall_s")
    except Exception:  # a generator file without facestyle meta (e.g. an official one) has no training time
        return None


@torch.no_grad()
def mixing_study(stylizer, inputs: torch.Tensor, content: torch.Tensor | None, judges: Judges,
                 layers: Sequence[int] | None = None, n_samples: int = 6, seed: int = 0) -> dict:
    """Section 4.4 as numbers: for each mixing layer (native rows; default the profile's), the multimodal
    outputs' ``diversity`` (mean LPIPS-alex between the samples of one input) and their content agreement with
    the input (oracle reading vs true content). Low layers should vary more and keep less; high layers only
    recolour. Returns ``{"rows", "images": {layer: [B, n_samples, 3, H, W]}}``."""
    from ..nn.perceptual import lpips_distance

    layers = list(layers) if layers is not None else stylizer.mix_layers()
    rows, images = [], {}
    for layer in layers:
        out = stylizer.multimodal(inputs, n_samples=n_samples, layer=layer, seed=seed, units="native").cpu()
        images[layer] = out
        b, k = out.shape[:2]
        ia, ib = torch.triu_indices(k, k, 1)
        div = torch.stack([lpips_distance(out[i, ia], out[i, ib], judges.lpips).mean() for i in range(b)]).mean()
        row = {"layer": int(layer), "diversity": float(div)}
        if content is not None:
            _, c, _ = _read(judges.oracle, out.flatten(0, 1), 100)
            agr = M.attribute_agreement(content.repeat_interleave(k, 0), c.cpu())
            row.update(agreement_categorical=agr["mean_categorical"], agreement_continuous=agr["mean_continuous"])
        rows.append(row)
    return {"rows": rows, "images": images}


def style_encoding_study(stylizer, refs: torch.Tensor, inputs: torch.Tensor, judges: Judges, *,
                         content: torch.Tensor | None = None, spaces: Sequence[str] = ("wplus", "zplus", "w", "v"),
                         layer: int | None = None, iters: int | None = None, cache_dir=None) -> dict:
    """Appendix 6.3 (Fig. 15): references embedded in W+, Z+, W or V space of G' by the same optimisation
    (:func:`~facestyle.method.invert.invert_v`), then mixed into the inputs' content codes from ``layer``
    (native rows; default the profile's second mixing level). Per space: ``ref_lpips`` (how well G' redraws the
    reference from its code) and the reference-guided outputs' metrics of :func:`stylization_metrics`.
    Returns ``{"rows", "images": {space: [B, R, 3, H, W]}, "recon": {space: [R, 3, H, W]}}``."""
    from ..method.latents import to_wplus
    from ..method.stylize import make_invert_fn
    from ..nn.perceptual import lpips_distance

    layer = stylizer.mix_layers()[1] if layer is None else int(layer)
    opts = {} if iters is None else {"iters": int(iters)}
    rows, images, recon = [], {}, {}
    for space in spaces:
        fn = make_invert_fn(stylizer.profile, stylizer.device, cache_dir=cache_dir, space=space, **opts)
        codes = stylizer.reference_codes(refs, fn)
        with torch.no_grad():
            rec = stylizer.synthesize(to_wplus(codes, stylizer.n_latent)).clamp(-1, 1).cpu()
            out = stylizer.reference(inputs, ref_codes=codes, layer=layer, units="native").cpu()
        recon[space], images[space] = rec, out
        k = out.shape[1]
        with torch.no_grad():
            ref_lp = float(lpips_distance(rec, refs.cpu(), judges.lpips).mean())
            m = stylization_metrics(inputs.repeat_interleave(k, 0), out.flatten(0, 1), stylizer.style, judges,
                                    None if content is None else content.repeat_interleave(k, 0))
        rows.append({"space": space, "layer": layer, "ref_lpips": ref_lp, **m})
    return {"rows": rows, "images": images, "recon": recon}
