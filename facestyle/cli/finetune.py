"""``facestyle finetune``: finetune G into a style generator G' - baseline G*, +SC, +PC or +SC&PC (paper section
3.1, Eq. 3; :mod:`facestyle.method.finetune`).

Every field of :class:`~facestyle.method.finetune.FinetuneConfig` is a flag with the field's default, so the
command, the notebooks and the tests share one set of options.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    # The flags are the config dataclass's fields, so its module loads with the parser; beyond torch, which
    # importing facestyle already loads, it costs tens of milliseconds.
    from ..method.finetune import FinetuneConfig
    from ..runs import add_config_arguments

    add_config_arguments(p, FinetuneConfig)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to <out>/log.jsonl)")


def main_from_args(args) -> int:
    from ..method.finetune import FinetuneConfig, export, finetune
    from ..runs import config_from_args

    cfg = config_from_args(FinetuneConfig, args)
    from ..distributed import ranks, shutdown

    result = finetune(cfg, progress=not getattr(args, "no_progress", False))  # SIGINT: saves, exits 130
    if not ranks().main:  # under torchrun: rank 0 reports and exports
        shutdown()
        return 0
    print(result.path)
    if getattr(args, "export", None):
        print(export(result.path, args.export, result.config))
    return 0


def register(sub) -> None:
    p = sub.add_parser("finetune", help="finetune G into a style: baseline (G*), +SC, +PC or +SC&PC (paper Eq. 3)")
    add_arguments(p)
    p.set_defaults(func=main_from_args)
