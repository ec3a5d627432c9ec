"""The small commands: ``facestyle demo``, ``bench``, ``hub``, ``world``, ``align`` and ``stylize``.

``align`` and ``stylize`` take their options from :mod:`facestyle.apps`, the photo-in, images-out front end
whose per-file error handling they share; the others are defined here.
"""
from __future__ import annotations

import argparse

from .. import apps


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="mini", help="mini (embedded, CPU, offline) or ffhq (official checkpoints)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)


def cmd_bench(args) -> int:
    if args.convergence:
        from ..bench_method import convergence, format_convergence

        lrs = [float(v) for v in args.pair_lr.split(",") if v] if args.pair_lr else None
        counts = [int(v) for v in args.invert_counts.split(",") if v]
        print(format_convergence(convergence(args.convergence, args.profile, args.device, iters=args.pair_steps,
                                             invert_counts=counts, pair_lrs=lrs,
                                             pair_precisions=args.pair_precision.split(","),
                                             pair_schedules=args.pair_schedule.split(","))))
        return 0
    if args.method:
        from ..bench_method import bench_method, format_method

        print(format_method(bench_method(args.profile, args.device, iters=args.iters, progress=False,
                                         pair_precision=args.pair_precision.split(",")[0],
                                         reduced_size=args.reduced_size, **({} if args.reduced_size is None else
                                         dict(n_style=2, pair_batch=2, n_refs=2, n_stylize=1, stylize_repeats=1)))))
        return 0
    from ..bench import main as bench_main

    return bench_main(["--size", str(args.size), "--batch", str(args.batch), "--repeats", str(args.repeats),
                       "--device", args.device])


def cmd_hub(args) -> int:
    from .. import hub

    if args.action == "list":
        print(hub.format_entries(hub.list_entries(profile=args.profile)))
    elif args.action == "path":
        print(hub.resolve(args.name, download=False))
    elif args.action == "verify":
        print(hub.verify(args.name))
    elif args.action == "forget":
        forgot = hub.forget(args.name)
        print(f"{args.name}: first-use pin removed; the next successful load pins the file then in place" if forgot
              else f"{args.name}: no first-use pin recorded")
    return 0


def cmd_world(args) -> int:
    if args.export_style:
        from ..runs import resolve_path
        from ..world.datasets import export_style_set

        n = args.n
        out = resolve_path(args.out or f"runs/world-{args.export_style}" + (f"-{n}" if n else ""))
        print(export_style_set(args.export_style, out, n=n, size=args.size, seed=args.seed))
        return 0
    from ..world.figures import six_domains_figure

    path = six_domains_figure(n=args.n or 6, seed=args.seed or 0, size=args.size, path=args.out)
    print(path)
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo

    path = run_demo(profile=args.profile, device=args.device, seed=args.seed, n=args.n, out=args.out)
    print(path)
    return 0


def gpu_check_main(args) -> int:
    from ..gpu_check import format_gpu_check, gpu_check, write_json

    res = gpu_check(args.device, args.profile, progress=not args.no_progress)
    print(format_gpu_check(res))
    if args.json:
        print(write_json(res, args.json))
    return 0


def register(sub) -> None:
    """Add demo, bench, hub, world, align and stylize to ``sub``, in the order ``facestyle --help`` lists them."""
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
    p.add_argument("action", choices=["list", "path", "verify", "forget"],
                   help="list (with how each entry is checked), path NAME, verify NAME, forget NAME (drop the "
                        "hash pinned on first use)")
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

    p = sub.add_parser("gpu-check", help="time the ffhq profile on one GPU on random weights (on a CPU: the "
                                         "rehearsal profile); one table and JSON")
    p.add_argument("--device", default="auto")
    p.add_argument("--profile", default=None, help="default: ffhq on a GPU, rehearsal on a CPU")
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=gpu_check_main)
    p = sub.add_parser("align", help="FFHQ-aligned face crops from photos (MTCNN 5 points)")
    apps.add_align_arguments(p)
    p.set_defaults(func=apps.align_main)
    p = sub.add_parser("stylize", help="stylize photos: general, multimodal or reference-guided (paper 3, 3.3)")
    apps.add_stylize_arguments(p)
    p.set_defaults(func=apps.stylize_main)
