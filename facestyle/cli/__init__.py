"""The ``facestyle`` command line: one subcommand per task, each with ``--help``.

Subcommands keep their heavy work inside their functions; only argument definitions load at start-up.
Errors that a user can fix (bad input, missing checkpoint, unknown style/profile/device) print one line
and exit with status 2; nothing half-written is left behind.

This package is the top layer: it may import every other part of facestyle, and none of them imports it. One
module per command group - :mod:`.misc` (demo, bench, hub, world, align, stylize), :mod:`.finetune`,
:mod:`.pairs`, :mod:`.invert` (embed-ref), :mod:`.study` (eval), :mod:`.quality` (quality, with keep and
sensitivity) and :mod:`.pretrain` - each with a ``register(sub)`` that adds its subcommands in the order
``facestyle --help`` lists them.
"""
from __future__ import annotations

import argparse
import sys

from . import finetune, invert, misc, pairs, pretrain, quality, study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facestyle",
        description="StyleGAN-based facial stylization with semantic preservation constraint and pseudo-paired "
                    "supervision (Lu & Zhou). Model commands take --profile mini (default, CPU, offline), ffhq "
                    "(the paper's) or rehearsal (ffhq's architectures at 32 px).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (misc, finetune, pairs, invert, study, quality, pretrain):
        group.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..nn.ops import tune_malloc

    # glibc returning and re-faulting big tensors costs 2-3x in batched CPU work (measured in facestyle.bench)
    tune_malloc()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # User-fixable problems arrive as these; print one line, not a stack trace.
        from ..hub import CheckpointError

        if isinstance(exc, (ValueError, FileNotFoundError, CheckpointError)):
            print(f"facestyle {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise
