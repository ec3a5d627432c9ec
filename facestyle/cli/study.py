"""``facestyle eval ablation|pairs|seeds --style all``: the paper's tables in one command - the ablation of
Table 4, the pair levels of Table 5, and Table 4's two ends over seeds (:mod:`facestyle.eval.study`), each as
markdown + JSON under ``figures/<profile>/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ..config import STYLES, check_style


def add_arguments(p: argparse.ArgumentParser) -> None:
    # One flag per StudySettings field, so its module loads with the parser.
    from ..eval.study import StudySettings

    p.add_argument("study", choices=("ablation", "pairs", "seeds", "files"),
                   help="ablation: Table 4; pairs: Table 5; seeds: baseline vs +SC&PC over --seeds (all three in the "
                        "mini world); files: the paper's metrics of a given G' for any profile (--g-prime, "
                        "--style-images, optional --photos)")
    p.add_argument("--g-prime", default=None, help="files: the finetuned generator G' to measure")
    p.add_argument("--style-images", default=None, help="files: the style set FID is measured against")
    p.add_argument("--photos", nargs="*", default=None, help="files: aligned photos to stylize (facestyle align)")
    p.add_argument("--n", type=int, default=256, help="files: samples of G and G'")
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
        types = {"int | None": int, "int": int, "float | None": float, "str | None": str, "str": str}
        typ = types.get(str(f.type), str)
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=f.default)
    p.add_argument("--no-progress", action="store_true")


def main_from_args(args) -> int:
    from ..eval.study import StudySettings, ablation, pair_level_study, seed_study

    if args.study == "files":  # a style of one's own is fine here: nothing is looked up by the style's name
        return _files(args, time.perf_counter())
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


def _files(args, t0: float) -> int:
    from ..eval.metrics import results_table
    from ..eval.paper import paper_metrics
    from ..viz import figure_path

    if not args.g_prime or not args.style_images:
        raise ValueError("eval files needs --g-prime G'.pt and --style-images DIR")
    style = args.style if args.style != "all" else "cartoon"
    row = paper_metrics(args.g_prime, args.style_images, profile=args.profile, style=style, photos=args.photos,
                        generator=args.generator, n=args.n, seed=args.seed, device=args.device)
    name = args.name or f"paper_metrics_{style}"
    md, js = results_table([row], figure_path(row["profile"], f"{name}.md"),
                           figure_path(row["profile"], f"{name}.json"),
                           title=f"The paper's metrics of {args.g_prime}", meta={"g_prime": str(args.g_prime)})
    print(Path(md).read_text())
    print(f"wrote {md} and {js} in {time.perf_counter() - t0:.0f} s")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="paper tables: ablation (Table 4) or pair levels (Table 5), markdown + JSON")
    add_arguments(p)
    p.set_defaults(func=main_from_args)
