"""``facestyle pretrain MODEL``: train the mini profile's pretrained models (:mod:`facestyle.pretrain`), the
roles the official FFHQ checkpoints play in the ffhq profile. Every run resumes from ``<out>/state.pt``.

Each model's flags are the fields of its training-config dataclass (:func:`facestyle.runs.add_config_arguments`,
with ``--export`` to write the shippable file), so the trainer modules load with the parser.
"""
from __future__ import annotations

import argparse
import json


def add_generator_arguments(p: argparse.ArgumentParser) -> None:
    from ..pretrain.generator import GeneratorTrainConfig
    from ..runs import add_config_arguments

    add_config_arguments(p, GeneratorTrainConfig, skip=())


def generator_main(args) -> int:
    from ..pretrain.generator import GeneratorTrainConfig, export_generator, train
    from ..runs import config_from_args, resolve_path

    cfg = config_from_args(GeneratorTrainConfig, args)
    train(cfg)
    if args.export:
        export_generator(resolve_path(cfg.out) / "state.pt", args.export, cfg.profile)
    return 0


def add_judge_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``pretrain oracle`` and ``pretrain identity``; which one is ``args.what``, set by the parser."""
    from ..pretrain.judges import JudgeTrainConfig
    from ..runs import add_config_arguments

    add_config_arguments(p, JudgeTrainConfig, skip=('what',))


def judge_main(args) -> int:
    import torch

    from ..pretrain.judges import JudgeTrainConfig, evaluate_identity, evaluate_oracle, export, train
    from ..runs import config_from_args, resolve_path

    cfg = config_from_args(JudgeTrainConfig, args)
    model = train(cfg)
    data = torch.load(resolve_path(cfg.out.format(what=cfg.what)) / "data.pt", weights_only=True)
    report = (evaluate_oracle if cfg.what == "oracle" else evaluate_identity)(model, data["test"])
    print(json.dumps(report, indent=1))
    if args.export:
        export(model, cfg, report, args.export)
    return 0


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    from ..pretrain.encoders import EncoderTrainConfig
    from ..runs import add_config_arguments

    p.add_argument("--kind", choices=["w", "wplus", "zplus"], default="wplus")
    add_config_arguments(p, EncoderTrainConfig, skip=('kind',))


def encoder_main(args) -> int:
    from ..pretrain.encoders import EncoderTrainConfig, export, train
    from ..runs import config_from_args

    cfg = config_from_args(EncoderTrainConfig, args)
    psp = train(cfg)
    if args.export:
        export(psp, cfg, args.export)
    return 0


def add_perceptual_arguments(p: argparse.ArgumentParser) -> None:
    from ..pretrain.perceptual import PerceptualConfig
    from ..runs import add_config_arguments

    add_config_arguments(p, PerceptualConfig)


def perceptual_main(args) -> int:
    from ..pretrain.perceptual import PerceptualConfig, export, train
    from ..runs import config_from_args

    cfg = config_from_args(PerceptualConfig, args)
    model = train(cfg)
    report = {}
    try:
        from ..eval.keep import factor_sensitivity_report

        report = factor_sensitivity_report(lpips_weights=model)
        print(json.dumps(report, indent=1))
    except ImportError:
        pass
    if getattr(args, "export", None):
        print(export(model, cfg, args.export, report))
    return 0


# (name, help, options, runner), in the order `facestyle pretrain --help` lists them.
MODELS = (
    ("generator", "the 64 px StyleGAN2: supervised warm start, then adversarial", add_generator_arguments,
     generator_main),
    ("oracle", "the evaluation oracle (factors + domain, all six domains)", add_judge_arguments, judge_main),
    ("identity", "the identity network for the mini identity loss (real domain)", add_judge_arguments, judge_main),
    ("encoder", "a pSp-style encoder (W, W+ or Z+) against the frozen mini generator", add_encoder_arguments,
     encoder_main),
    ("perceptual", "the self-supervised AlexNet behind the mini training LPIPS", add_perceptual_arguments,
     perceptual_main),
)


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="train the mini profile's pretrained models (resumable)")
    psub = p.add_subparsers(dest="what", metavar="MODEL", required=True)
    for what, text, add, run in MODELS:
        q = psub.add_parser(what, help=text)
        add(q)
        q.set_defaults(func=run, what=what)
