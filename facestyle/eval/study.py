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
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .. import hub, world
from ..config import STYLES, check_style, get_profile
from ..utils import get_device
from ..viz import figure_path
from . import metrics as M

VARIANT_NAMES = {"baseline": "baseline (G*)", "sc": "+SC", "pc": "+PC", "sc_pc": "+SC&PC"}
TABLE_COLUMNS = ("style", "variant", "pair_level", "iters", "semantic_distance", "agreement_categorical",
                 "agreement_continuous", "style_accuracy", "fid_oracle", "ideal_distance", "finetune_s")
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
    n_style: int | None = None  # first n images of the style set (None: the paper-sized set)
    n_eval: int = 500
    seed: int = 0
    device: str = "auto"
    root: str = "runs/study"
    progress: bool = True


def _pairs(style: str, level: int, s: StudySettings, g_star: Path | None) -> Path:
    from ..method.pairs import make_pairs
    from ..pretrain.loop import resolve_path

    out = resolve_path(f"{s.root}/{s.profile}-pairs-{style}")
    path = out / f"pairs_level{level}.pt"
    if not path.exists():
        prof = get_profile(s.profile)
        make_pairs(style, s.profile, (level,), n=s.n_style, g=s.generator, g_star=g_star,
                   zplus_psp=s.zplus_encoder, wplus_psp=s.wplus_encoder, identity_ckpt=s.identity,
                   iters=s.pair_iters if s.pair_iters is not None else prof.pair_opt_iters, out_dir=out,
                   device=s.device, progress=s.progress, figure=figure_path(s.profile, f"fig08_pairs_{style}.png"))
    return path


def _finetune(style: str, variant: str, s: StudySettings, pairs: Path | None, level: int | None):
    from ..method.finetune import FinetuneConfig, finetune

    tag = f"{variant}" + (f"-L{level}" if pairs is not None else "")
    cfg = FinetuneConfig(profile=s.profile, style=style, variant=variant, iters=s.iters, generator=s.generator,
                         identity=s.identity, pairs=str(pairs) if pairs is not None else None, pair_level=level,
                         out=f"{s.root}/{s.profile}-finetune-{style}-{tag}", seed=s.seed, device=s.device,
                         sample_every=0)
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
    trained: dict[tuple[str, int | None], Any] = {}
    baseline = _finetune(style, "baseline", s, None, None)
    trained[("baseline", None)] = baseline
    rows = []
    for variant, level in runs:
        key = (variant, level if variant in ("pc", "sc_pc") else None)
        if key not in trained:
            pairs = _pairs(style, level, s, baseline.path) if key[1] is not None else None
            trained[key] = _finetune(style, variant, s, pairs, key[1])
        res = trained[key]
        g_prime = hub.load_generator(res.path, dev).g_ema
        ev = evaluate_finetune(g, g_prime, style, judges, n=s.n_eval, seed=s.seed, profile=s.profile)
        meta = hub.load_facestyle_checkpoint(res.path, kind="stylegan2")["meta"]
        rows.append({"style": style, "variant": VARIANT_NAMES[variant], "pair_level": key[1], "iters": res.iters,
                     **ev, "finetune_s": meta.get("wall_s"), "checkpoint": str(res.path)})
    return rows


def _write(rows: list[dict], name: str, title: str, s: StudySettings) -> tuple[Path, Path]:
    per_factor = {f"{r['style']}/{r['variant']}/L{r['pair_level']}": r.pop("agreement_per_factor") for r in rows}
    md, js = M.results_table(rows, figure_path(s.profile, f"{name}.md"), figure_path(s.profile, f"{name}.json"),
                             columns=TABLE_COLUMNS, title=title,
                             meta={"settings": dataclasses.asdict(s), "agreement_per_factor": per_factor,
                                   "protocol": __doc__.split("Protocol of")[1].strip()})
    for r, (k, v) in zip(rows, per_factor.items()):
        r["agreement_per_factor"] = v
    return md, js


def ablation(styles: Sequence[str] = STYLES, settings: StudySettings | None = None, pair_level: int = 3,
             name: str = "table4_ablation") -> dict:
    """Paper Table 4: baseline, +SC, +PC and +SC&PC finetunes of every style from the same G, seed and style
    batches, measured by :func:`evaluate_finetune`; writes ``figures/<profile>/table4_ablation.{md,json}`` and
    the per-factor drift figure ``fig10_drift_per_factor.png`` (baseline vs +SC&PC)."""
    s = settings or StudySettings()
    runs = [("baseline", None), ("sc", None), ("pc", pair_level), ("sc_pc", pair_level)]
    judges = Judges.build(s.profile, s.device, oracle=s.oracle, identity=s.identity)
    rows = [r for st in styles for r in run_variants(st, runs, s, judges)]
    fig = drift_figure(rows, figure_path(s.profile, "fig10_drift_per_factor.png"))
    md, js = _write(rows, name, f"Table 4 (mini remake): ablation, pair level {pair_level}", s)
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..utils import atomic_write

    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------------------
# command line: `facestyle eval ablation|pairs --style all`
# --------------------------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", choices=("ablation", "pairs"), help="ablation: Table 4; pairs: Table 5")
    p.add_argument("--style", default="all", help="one style, a comma list, or all")
    p.add_argument("--pair-level", type=int, default=3, help="pair level of the ablation's +PC / +SC&PC runs")
    p.add_argument("--levels", default="1,2,3", help="levels of the pair study")
    for f in dataclasses.fields(StudySettings):
        if f.name in ("progress",):
            continue
        typ = {"int | None": int, "int": int, "str | None": str, "str": str}.get(str(f.type), str)
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=f.default)
    p.add_argument("--no-progress", action="store_true")


def main_from_args(args) -> int:
    styles = list(STYLES) if args.style == "all" else [check_style(x) for x in args.style.split(",") if x]
    s = StudySettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(StudySettings)
                         if f.name != "progress"}, progress=not args.no_progress)
    t0 = time.perf_counter()
    if args.study == "ablation":
        res = ablation(styles, s, pair_level=args.pair_level)
    else:
        res = pair_level_study(styles, s, levels=[int(v) for v in args.levels.split(",") if v])
    print(Path(res["markdown"]).read_text())
    print(f"wrote {res['markdown']} and {res['json']} in {time.perf_counter() - t0:.0f} s")
    return 0
