"""``facestyle quality TARGET``: the mini profile's quality numbers, one subcommand per target.

generator, sweep, encoders, drift, oracle and pairs (:mod:`facestyle.eval.quality` and its ``quality_*``
siblings) write a report through :func:`facestyle.eval.quality_report.write_report` and print the headline
numbers as JSON; keep and sensitivity (:mod:`facestyle.eval.keep`) print their own markdown tables.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from ..config import STYLES, check_style


def _common(q: argparse.ArgumentParser, n: int | None, batch: int) -> None:
    """Options every target shares; ``n=None`` for a target that reads a fixed set (no --n, --seed, manifest)."""
    q.add_argument("--oracle", default="mini-oracle", help="oracle checkpoint (hub name or path)")
    if n is not None:
        q.add_argument("--n", type=int, default=n, help=f"number of images (default {n})")
        q.add_argument("--seed", type=int, default=0, help="protocol seed (facestyle.eval.quality.protocol_seeds)")
        q.add_argument("--record-manifest", action="store_true",
                       help="merge the headline numbers into the checkpoints' manifest entries")
    q.add_argument("--batch", type=int, default=batch)
    q.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    q.add_argument("--profile", default="mini")
    q.add_argument("--name", default=None, help="report name under figures/<profile>/ (no extension)")
    q.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")


def _kv(text: str) -> tuple[str, str]:
    from ..eval.quality import ENCODER_KINDS

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KIND=CHECKPOINT (e.g. wplus=runs/enc.pt), got {text!r}")
    k, v = text.split("=", 1)
    if k not in ENCODER_KINDS:
        raise argparse.ArgumentTypeError(f"unknown encoder kind {k!r}: choose one of {', '.join(ENCODER_KINDS)}")
    return k, v


def _style_map(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise argparse.ArgumentTypeError(f"expected STYLE=CHECKPOINT, got {it!r}")
        k, v = it.split("=", 1)
        out[check_style(k)] = v
    return out


def add_keep_arguments(q: argparse.ArgumentParser) -> None:
    from ..eval.keep import MODES

    q.add_argument("--style", default="all", help="a style, a comma-separated list, or all (default)")
    q.add_argument("--mode", choices=MODES, default="general")
    q.add_argument("--layer", type=int, default=None,
                   help="native mixing row for multimodal / reference (default: the profile's last mix layer)")
    q.add_argument("--generator", action="append", default=[], metavar="STYLE=CKPT",
                   help="G' per style (repeatable; default the shipped mini-style-<style>)")
    q.add_argument("--baseline", action="append", default=[], metavar="STYLE=CKPT",
                   help="G* per style (default runs/study/<profile>-finetune-<style>-baseline when present)")
    q.add_argument("--no-baseline", action="store_true", help="skip the baseline rows")
    q.add_argument("--psi", type=float, default=None, help="truncation override (default: the profile's per style)")
    q.add_argument("--n", type=int, default=500)
    q.add_argument("--seed", type=int, default=0, help="held-out content seed offset (inputs use 70,000,000 + seed)")
    q.add_argument("--oracle", default="mini-oracle")
    q.add_argument("--batch", type=int, default=100)
    q.add_argument("--device", default="auto")
    q.add_argument("--profile", default="mini")
    q.add_argument("--name", default=None, help="report name under figures/<profile>/ (no extension)")
    q.add_argument("--threads", type=int, default=0)


def add_sensitivity_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--lpips", action="append", default=[], metavar="FILE",
                   help="a trained AlexNet backbone (lpips-backbone file) to compare with the seeded one; repeatable")
    q.add_argument("--n", type=int, default=64)
    q.add_argument("--size", type=int, default=None,
                   help="resolution the LPIPS compares the generator-size renders at (default: the generator "
                        "size, 64 px for mini)")
    q.add_argument("--profile", default="mini")
    q.add_argument("--threads", type=int, default=0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add a required sub-subparser per target (dest ``quality_target``) with all of its options; the caller only
    sets ``func``. Sub-subparsers set no ``func`` of their own, so the parent's default stays in force."""
    # Choices come from the library (its shared module loads with the parser); the measurements load only in
    # main_from_args.
    from ..eval.quality import ENCODER_KINDS

    sub = p.add_subparsers(dest="quality_target", metavar="TARGET", required=True)
    q = sub.add_parser("generator", help="FID vs real renders (+ real-vs-real floor), categorical frequencies, "
                                         "sample grid")
    q.add_argument("--ckpt", default="mini-stylegan2-64", help="generator checkpoint (hub name or path)")
    q.add_argument("--truncation", type=float, default=1.0)
    _common(q, 5000, 250)
    q = sub.add_parser("sweep", help="the generator numbers for several checkpoints of one run, one table "
                                     "(choose a step count on a validation seed)")
    q.add_argument("--ckpt", nargs="+", required=True, help="generator checkpoints (hub names or paths)")
    q.add_argument("--truncation", type=float, default=1.0)
    _common(q, 2000, 250)
    q.set_defaults(seed=1)
    q = sub.add_parser("encoders", help="LPIPS and oracle attribute agreement of G(E(x)) on held-out renders")
    q.add_argument("--ckpt", default="mini-stylegan2-64", help="generator to decode with (hub name or path)")
    q.add_argument("--kinds", nargs="+", choices=ENCODER_KINDS, default=list(ENCODER_KINDS))
    q.add_argument("--encoder", type=_kv, action="append", default=[], metavar="KIND=CKPT",
                   help="encoder checkpoint per kind (repeatable; default the profile's mini-encoder-<kind>)")
    _common(q, 1000, 100)
    q = sub.add_parser("drift", help="oracle attribute agreement between G(w) and a finetuned G'(w)")
    q.add_argument("--ckpt", default="mini-stylegan2-64", help="pretrained generator G (hub name or path)")
    q.add_argument("--finetuned", required=True, help="finetuned generator G' (hub name or path)")
    q.add_argument("--style", required=True, help="target style of G' (cartoon, anime, fantasy, illustration, "
                                                  "impasto)")
    _common(q, 1000, 250)
    q = sub.add_parser("oracle", help="held-out accuracy of the oracle per factor and domain, recall per value")
    q.add_argument("--blur", type=float, default=0.0,
                   help="read the renders after a Gaussian blur of this sigma in pixels (default 0: crisp renders)")
    _common(q, 1000, 250)
    q = sub.add_parser("pairs", help="does each pseudo-pair level keep the true content of its style image? "
                                     "(oracle agreement, value shares, confusion)")
    q.add_argument("--style", required=True, help="style whose pairs to read")
    q.add_argument("--pairs-dir", default=None, help="folder with pairs_level<k>.pt (default: "
                                                     "runs/study/<profile>-pairs-<style>)")
    q.add_argument("--levels", default="1,2,3", help="pair levels to read, comma-separated (missing files skipped)")
    _common(q, None, 250)
    q = sub.add_parser("keep", help="how much of each input's content the style generators keep (general, "
                                    "multimodal, reference), beside the reconstruction ceiling and G*")
    add_keep_arguments(q)
    q = sub.add_parser("sensitivity", help="how strongly the training LPIPS sees each content factor change "
                                           "(seeded backbone vs trained ones)")
    add_sensitivity_arguments(q)


def sensitivity_main(args) -> int:
    """Print the factor-sensitivity table (markdown) of the seeded LPIPS and each ``--lpips`` backbone."""
    from ..eval.keep import SENSITIVITY_CHANGES, factor_sensitivity_report

    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    nets = {"seeded": factor_sensitivity_report(None, args.profile, n=args.n, size=args.size)["seeded"]}
    for f in args.lpips:
        nets[Path(f).parent.name or f] = factor_sensitivity_report(f, args.profile, n=args.n,
                                                                   size=args.size)["trained"]
    doms = list(next(iter(nets.values())))
    head = [f"{d}: {k}" for d in doms for k in nets]
    lines = ["| factor changed | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for name, _ in SENSITIVITY_CHANGES:
        lines.append(f"| {name} | " + " | ".join(f"{nets[k][d][name]['lpips']:.4f}" for d in doms for k in nets)
                     + " |")
    print("\n".join(lines))
    return 0


def keep_main(args) -> int:
    from ..eval.keep import keep_quality, write_keep_report

    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    styles = list(STYLES) if args.style == "all" else [s.strip() for s in args.style.split(",") if s.strip()]
    res = keep_quality(styles, generators=_style_map(args.generator), baselines=_style_map(args.baseline),
                       mode=args.mode, layer=args.layer, n=args.n, seed=args.seed, psi=args.psi,
                       oracle=args.oracle, batch=args.batch, device=args.device, profile=args.profile,
                       baseline=not args.no_baseline)
    paths = write_keep_report(res, args.name)
    print(Path(paths["md"]).read_text())
    return 0


def main_from_args(args) -> int:
    """Run the chosen target, write its report (and figure), print the report paths and headline numbers."""
    import torch

    from ..eval import metrics as M
    from ..eval.quality_drift import drift_quality
    from ..eval.quality_encoders import encoder_quality
    from ..eval.quality_generator import generator_quality, generator_sweep
    from ..eval.quality_oracle import oracle_quality
    from ..eval.quality_pairs import pair_faithfulness
    from ..eval.quality_report import manifest_entry_for, write_report

    if getattr(args, "threads", 0):
        torch.set_num_threads(int(args.threads))
    target = args.quality_target
    if target == "keep":
        return keep_main(args)
    if target == "sensitivity":
        return sensitivity_main(args)
    common = dict(oracle=args.oracle, n=getattr(args, "n", None), seed=getattr(args, "seed", 0), batch=args.batch,
                  device=args.device, profile=args.profile)
    if target == "generator":
        res = generator_quality(args.ckpt, truncation=args.truncation, **common)
        head = {"fid_gen_vs_real": res["fid_gen_vs_real"], "fid_real_vs_real": res["fid_real_vs_real"],
                "freq_gap_max_points": res["freq_gap"]["max"], "freq_pass": res["freq_pass"]}
    elif target == "sweep":
        res = generator_sweep(args.ckpt, truncation=args.truncation, **common)
        head = {r["checkpoints"]["generator"]: {"fid": r["fid_gen_vs_real"], "freq_gap": r["freq_gap"]["max"]}
                for r in res["runs"]}
    elif target == "encoders":
        res = encoder_quality(args.kinds, dict(args.encoder), args.ckpt, **common)
        head = {k: {"lpips_alex": r["lpips_alex"], "categorical": r["agreement"]["mean_categorical"],
                    "continuous": r["agreement"]["mean_continuous"]} for k, r in res["kinds"].items()}
        head["oracle_ceiling_categorical"] = res["oracle_ceiling"]["mean_categorical"]
    elif target == "drift":
        res = drift_quality(args.ckpt, args.finetuned, style=args.style, figure=args.name or True, **common)
        head = {"agreement": res["agreement"], "style_accuracy": res["style_accuracy"]}
    elif target == "oracle":
        if args.blur and getattr(args, "record_manifest", False):
            raise ValueError("--record-manifest records the oracle's reading of crisp renders: drop --blur")
        res = oracle_quality(**common, blur=args.blur)
        head = {dom: round(m["categorical"], 4) for dom, m in res["mean"].items()}
    elif target == "pairs":
        res = pair_faithfulness(args.style, args.pairs_dir, [int(k) for k in args.levels.split(",") if k],
                                oracle=args.oracle, batch=args.batch, device=args.device, profile=args.profile)
        head = {lab: a["mean_categorical"] for lab, a in res["agreement"].items()}
    else:  # argparse's choices make this unreachable from the command line
        raise ValueError(f"unknown quality target {target!r}")
    names = None
    if target == "drift" and manifest_entry_for(res["checkpoints"]["finetuned"]) is None:
        # A G' that is not shipped (e.g. the unconstrained baseline of issue "mini world"): its drift is a
        # property of G's finetuning, so it is recorded under G's entry (the command names the G' measured).
        names = {res["checkpoints"]["finetuned"]: manifest_entry_for(res["checkpoints"]["generator"])}
    paths = write_report(res, args.name, record_manifest=getattr(args, "record_manifest", False),
                         manifest_names=names)
    print(json.dumps({**head, "runtime_s": round(res["runtime_s"], 1), "report": paths["md"],
                      "figure": res.get("figure")}, indent=1, default=M._plain_value))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``facestyle quality TARGET ...`` as a function of its arguments; a user-fixable error raises instead of
    printing one line."""
    from ..nn.ops import tune_malloc

    p = argparse.ArgumentParser(prog="facestyle quality", description=__doc__.splitlines()[0])
    add_arguments(p)
    tune_malloc()  # batched CPU inference is 2-3x faster with it (docs/design.md section 3)
    return main_from_args(p.parse_args(argv))


def register(sub) -> None:
    p = sub.add_parser("quality", help="mini quality numbers: generator FID/frequencies, encoders, finetune drift")
    add_arguments(p)
    p.set_defaults(func=main_from_args)
