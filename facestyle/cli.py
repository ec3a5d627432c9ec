"""The ``facestyle`` command line: one subcommand per task, each with ``--help``.

Subcommands keep their heavy work inside their functions; only argument definitions load at start-up.
Errors that a user can fix (bad input, missing checkpoint, unknown style/profile/device) print one line
and exit with status 2; nothing half-written is left behind.
"""
from __future__ import annotations

import argparse
import importlib
import sys

MODULE_COMMANDS = (
    ("finetune", ".method.finetune", "finetune G into a style: baseline (G*), +SC, +PC or +SC&PC (paper Eq. 3)"),
    ("pairs", ".method.pairs", "multi-level pseudo pairs for a style set (paper Eq. 4-6)"),
    ("embed-ref", ".method.invert", "invert reference images into V space of G' (section 3.3), cached"),
    ("eval", ".eval.study", "paper tables: ablation (Table 4) or pair levels (Table 5), markdown + JSON"),
    ("quality", ".eval.quality", "mini quality numbers: generator FID/frequencies, encoders, finetune drift"),
)
PRETRAIN_COMMANDS = (
    ("generator", ".pretrain.generator", "the 64 px StyleGAN2: supervised warm start, then adversarial"),
    ("oracle", ".pretrain.judges", "the evaluation oracle (factors + domain, all six domains)"),
    ("identity", ".pretrain.judges", "the identity network for the mini identity loss (real domain)"),
    ("encoder", ".pretrain.encoders", "a pSp-style encoder (W, W+ or Z+) against the frozen mini generator"),
    ("perceptual", ".pretrain.perceptual", "the self-supervised AlexNet behind the mini training LPIPS"),
)


def _add_common(p: argparse.ArgumentParser, *, style: bool = False) -> None:
    p.add_argument("--profile", default="mini", help="mini (embedded, CPU, offline) or ffhq (official checkpoints)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    if style:
        p.add_argument("--style", default="cartoon", help="cartoon, anime, fantasy, illustration or impasto")


def cmd_bench(args) -> int:
    if args.convergence:
        from .bench_method import convergence, format_convergence

        lrs = [float(v) for v in args.pair_lr.split(",") if v] if args.pair_lr else None
        counts = [int(v) for v in args.invert_counts.split(",") if v]
        print(format_convergence(convergence(args.convergence, args.profile, args.device, iters=args.pair_steps,
                                             invert_counts=counts, pair_lrs=lrs,
                                             pair_precisions=args.pair_precision.split(","),
                                             pair_schedules=args.pair_schedule.split(","))))
        return 0
    if args.method:
        from .bench_method import bench_method, format_method

        print(format_method(bench_method(args.profile, args.device, iters=args.iters, progress=False,
                                         pair_precision=args.pair_precision.split(",")[0],
                                         reduced_size=args.reduced_size, **({} if args.reduced_size is None else
                                         dict(n_style=2, pair_batch=2, n_refs=2, n_stylize=1, stylize_repeats=1)))))
        return 0
    from .bench import main as bench_main

    return bench_main(["--size", str(args.size), "--batch", str(args.batch), "--repeats", str(args.repeats),
                       "--device", args.device])


def cmd_hub(args) -> int:
    from . import hub

    if args.action == "list":
        print(hub.format_entries(hub.list_entries(profile=args.profile)))
    elif args.action == "path":
        print(hub.resolve(args.name, download=False))
    elif args.action == "verify":
        print(hub.verify(args.name))
    return 0


def cmd_world(args) -> int:
    if args.export_style:
        from .runs import resolve_path
        from .world.datasets import export_style_set

        n = args.n
        out = resolve_path(args.out or f"runs/world-{args.export_style}" + (f"-{n}" if n else ""))
        print(export_style_set(args.export_style, out, n=n, size=args.size, seed=args.seed))
        return 0
    from .world.figures import six_domains_figure

    path = six_domains_figure(n=args.n or 6, seed=args.seed or 0, size=args.size, path=args.out)
    print(path)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    path = run_demo(profile=args.profile, device=args.device, seed=args.seed, n=args.n, out=args.out)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facestyle",
        description="StyleGAN-based facial stylization with semantic preservation constraint and pseudo-paired "
                    "supervision (Lu & Zhou). Model commands take --profile mini (default, CPU, offline) or ffhq.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="stylize a set of portraits and write one figure (the main job)")
    _add_common(p)
    p.add_argument("--n", type=int, default=4, help="number of input portraits")
    p.add_argument("--out", default=None, help="figure path (default figures/<profile>/demo.png)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="time the generator forward: shared-conv fast path vs grouped conv; "
                                     "--method: finetune, pairs and reference embedding speed")
    p.add_argument("--method", action="store_true",
                   help="time the method's slow steps (finetune, level-2 pairs, reference embedding) instead")
    p.add_argument("--convergence", metavar="STYLE", default=None,
                   help="loss of the level-2 pair optimisation and of the reference embedding against iterations, "
                        "on the trained models (how many iterations the profile needs)")
    p.add_argument("--pair-steps", type=int, default=1000, help="with --convergence: level-2 steps per run")
    p.add_argument("--pair-lr", default=None,
                   help="with --convergence: level-2 Adam learning rates, a comma list (default: the profile's)")
    p.add_argument("--invert-counts", default="100,200,400,1000",
                   help="with --convergence: V-space step counts, one run each (empty: skip the embedding)")
    p.add_argument("--pair-precision", default="fp32",
                   help="level-2 forward passes: fp32 or bf16 (--method: one; --convergence: a comma list, one run "
                        "each)")
    p.add_argument("--pair-schedule", default="constant",
                   help="with --convergence: level-2 learning-rate schedules (constant, cosine, projector), a comma "
                        "list, one run each")
    p.add_argument("--profile", default="mini", help="with --method: mini or ffhq (random weights, its shapes)")
    p.add_argument("--iters", type=int, default=20, help="with --method: iterations timed per step")
    p.add_argument("--reduced-size", type=int, default=None,
                   help="with --method: the profile's architecture with a generator of this size and batches of 2, "
                        "to check the whole path where the full size does not fit (its speeds are not the profile's)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("hub", help="list, locate and verify registered checkpoints")
    p.add_argument("action", choices=["list", "path", "verify"])
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--profile", default=None)
    p.set_defaults(func=cmd_hub)

    p = sub.add_parser("world", help="render the mini world's six domains side by side, or export a style set")
    p.add_argument("--n", type=int, default=None,
                   help="contents in the figure (default 6); with --export-style, images (default: the paper's count)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=None,
                   help="render seed (default: 0 for the figure, the style set's own seed with --export-style)")
    p.add_argument("--out", default=None, help="figure path, or with --export-style the folder "
                                                "(default runs/world-<style>[-<n>])")
    p.add_argument("--export-style", metavar="STYLE", default=None,
                   help="write the style set of STYLE (images and content.pt) as a folder for --style-images")
    p.set_defaults(func=cmd_world)

    from . import apps

    p = sub.add_parser("align", help="FFHQ-aligned face crops from photos (MTCNN 5 points)")
    apps.add_align_arguments(p)
    p.set_defaults(func=apps.align_main)
    p = sub.add_parser("stylize", help="stylize photos: general, multimodal or reference-guided (paper 3, 3.3)")
    apps.add_stylize_arguments(p)
    p.set_defaults(func=apps.stylize_main)

    # Commands whose module defines its own add_arguments / main_from_args (the module is the single source of
    # truth for its options, so the CLI, notebooks and tests share one parser).
    for name, module, text in MODULE_COMMANDS:
        p = sub.add_parser(name, help=text)
        mod = importlib.import_module(module, __package__)
        mod.add_arguments(p)
        p.set_defaults(func=mod.main_from_args)

    p = sub.add_parser("pretrain", help="train the mini profile's pretrained models (resumable)")
    psub = p.add_subparsers(dest="what", metavar="MODEL", required=True)
    for what, module, text in PRETRAIN_COMMANDS:
        q = psub.add_parser(what, help=text)
        mod = importlib.import_module(module, __package__)
        if what == "encoder":
            q.add_argument("--kind", choices=["w", "wplus", "zplus"], default="wplus")
        mod.add_arguments(q)
        q.set_defaults(func=mod.main_from_args, what=what)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .nn.ops import tune_malloc

    # glibc returning and re-faulting big tensors costs 2-3x in batched CPU work (measured in facestyle.bench)
    tune_malloc()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # User-fixable problems arrive as these; print one line, not a stack trace.
        from .hub import CheckpointError

        if isinstance(exc, (ValueError, FileNotFoundError, CheckpointError)):
            print(f"facestyle {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
