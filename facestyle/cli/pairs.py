"""``facestyle pairs --style cartoon --levels 1,2,3 --g-star PATH``: the multi-level pseudo pairs of a style set
(paper section 3.2, Eq. 4-6; :mod:`facestyle.method.pairs`).
"""
from __future__ import annotations

import argparse

from ..config import get_profile


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``facestyle pairs`` (all of them, like ``facestyle finetune``: no common options needed)."""
    # The choices live beside the code that checks them; that module loads with the parser.
    from ..method.pairs import LEVEL3_SOURCES, PRECISIONS, SCHEDULES

    p.add_argument("--profile", default="mini", help="mini, ffhq or rehearsal")
    p.add_argument("--style", default="cartoon", help="cartoon, anime, fantasy, illustration or impasto")
    p.add_argument("--levels", default="1,2,3", help="comma-separated subset of 1,2,3 (paper Eq. 4, 5, 6)")
    p.add_argument("--g-star", default=None, help="G*, the unconstrained (variant baseline) finetune, for level 2; "
                                                  "default runs/<profile>-finetune-<style>-baseline/generator.pt")
    p.add_argument("--generator", default=None, help="pretrained G (default: the profile's)")
    p.add_argument("--zplus-encoder", default=None, help="E_z+ (default: the profile's)")
    p.add_argument("--wplus-encoder", default=None, help="E_w+ (default: the profile's)")
    p.add_argument("--identity", default=None, help="identity network for Eq. 1's ID term (default: the profile's)")
    p.add_argument("--style-images", default=None, help="folder of style images (default: the mini world's set)")
    p.add_argument("--n", type=int, default=None, help="use only the first N style images")
    p.add_argument("--iters", type=int, default=None, help="level-2 steps (default: profile.pair_opt_iters)")
    p.add_argument("--lr", type=float, default=None, help="level-2 Adam lr (default: profile.pair_opt_lr)")
    p.add_argument("--batch", type=int, default=32, help="style images optimised together")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="level 2's forward passes: fp32 (default) or bf16 autocast (faster where bf16 is native)")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="level 2's learning rate over the run: constant (default, the paper), cosine or projector")
    p.add_argument("--level3-source", choices=LEVEL3_SOURCES, default="style",
                   help="style: w3+ = E_w+(S) (Eq. 6 as written); p2: w3+ = E_w+(P2) ('refine P2')")
    p.add_argument("--out", default=None, help="output folder (default runs/<profile>-pairs-<style>)")
    p.add_argument("--no-figure", action="store_true", help="skip figures/<profile>/fig08_pseudo_pairs_<style>.png")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def main_from_args(args) -> int:
    from ..method.pairs import make_pairs
    from ..runs import set_threads

    from ..distributed import init

    set_threads(args.threads)
    prof = get_profile(args.profile)
    ranks, device = init(args.device)  # under torchrun: join the ranks; level 2 is shared out among them
    res = make_pairs(args.style, prof, args.levels, style_dir=args.style_images, n=args.n,
                     g=args.generator, g_star=args.g_star, zplus_psp=args.zplus_encoder,
                     wplus_psp=args.wplus_encoder, identity_ckpt=args.identity, iters=args.iters, lr=args.lr,
                     batch=args.batch, level3_source=args.level3_source, out_dir=args.out, device=device,
                     progress=not args.no_progress, figure=not args.no_figure, precision=args.precision,
                     schedule=args.schedule)
    if not ranks.main:
        return 0
    for k, lvl in res.levels.items():
        extra = ""
        if k == 2:
            extra = f" (Eq. 1 loss {lvl.meta['loss_start_mean']:.4f} -> {lvl.meta['loss_end_mean']:.4f})"
        print(f"level {k}: {res.files.get(k, '(not written)')}{extra}")
    if res.figure:
        print(res.figure)
    return 0


def register(sub) -> None:
    p = sub.add_parser("pairs", help="multi-level pseudo pairs for a style set (paper Eq. 4-6)")
    add_arguments(p)
    p.set_defaults(func=main_from_args)
