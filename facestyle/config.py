"""Profiles: one typed place for sizes, truncation per style, loss weights, iteration counts and checkpoints.

Two profiles share every code path (docs/design.md section 2):

* ``mini`` - the embedded default: a 64 px StyleGAN2 and small encoders trained by facestyle on its synthetic
  portrait world (``facestyle.world``); checkpoints ship inside the package, everything runs offline on a CPU.
* ``ffhq`` - the paper's setting: official 1024 px checkpoints (rosinality StyleGAN2, pSp), facenet identity,
  LPIPS with torchvision backbones, on a GPU.

Named configs override typed defaults, as nanoGPT's config files do: ``get_profile("mini", finetune_iters=50)``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

STYLES = ("cartoon", "anime", "fantasy", "illustration", "impasto")

# Paper section 4.1: sizes of the style sets used for finetuning.
PAPER_STYLE_SET_SIZES = {"cartoon": 317, "anime": 174, "fantasy": 137, "illustration": 156, "impasto": 120}

# Paper section 4.1 / docs/design.md section 4: truncation per style at test time.
PAPER_TRUNCATION = {"cartoon": 0.7, "anime": 0.6, "fantasy": 0.9, "illustration": 0.9, "impasto": 0.9}


@dataclass(frozen=True)
class GeneratorConfig:
    """StyleGAN2 hyper-parameters in rosinality's vocabulary (docs/reference.md section 1)."""

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    lr_mlp: float = 0.01
    # Optional explicit {resolution: channels}; None means rosinality's default table.
    channels: dict | None = None


@dataclass(frozen=True)
class EncoderConfig:
    """pSp encoder backbone (docs/reference.md section 2); the mini profile shrinks depth and width."""

    input_size: int = 256
    num_layers: int = 50  # IR-SE50
    mode: str = "ir_se"
    # Optional explicit backbone: ((in_channel, depth, num_units), ...) per block; None = IR-SE50.
    blocks: tuple | None = None


@dataclass(frozen=True)
class Profile:
    """Everything that differs between ``mini`` and ``ffhq``; code paths never branch on the name."""

    name: str
    generator: GeneratorConfig
    encoder: EncoderConfig
    # Checkpoint names resolved through facestyle.hub.
    generator_ckpt: str
    w_encoder_ckpt: str
    wplus_encoder_ckpt: str
    zplus_encoder_ckpt: str
    identity_ckpt: str
    style_generator_ckpt: str  # format string with {style}
    # Losses (paper Eq. 1-3; lambda_sem = lambda_paired = 1, lambda_ID = 0.1 in section 4.1).
    lambda_sem: float = 1.0
    lambda_paired: float = 1.0
    lambda_id: float = 0.1
    r1_gamma: float = 10.0
    loss_size: int = 256  # images are resized to this before LPIPS / identity (Eq. 1)
    # The resolution of the finetune's LPIPS terms (Eq. 1, Eq. 2) when it is not loss_size (None: loss_size, as
    # in the paper); the identity term, the pairs and the reference inversion stay at loss_size.
    lpips_size: int | None = None
    lpips_train_net: str = "vgg"
    lpips_eval_net: str = "alex"
    # "pretrained": torchvision ImageNet weights through the hub (the paper); "seeded": the lpips package's
    # linear heads over a seeded random backbone, because the mini profile must run offline
    # (facestyle.nn.perceptual explains the choice).
    lpips_backbone: str = "pretrained"
    # The training LPIPS's backbone (Eq. 1, Eq. 2, the pair and reference optimisations) when it is not the
    # backbone mode's default: a hub name or path of a torchvision-layout state dict. The evaluation LPIPS never
    # uses it, so a training loss is never also the yardstick.
    lpips_train_weights: str | None = None
    # Finetuning (section 4.1): Adam, batch 4, about 1000 iterations. The appendix (6.1) states one learning
    # rate, 0.02, for all of the paper's optimisations (pairs, finetuning, reference encoding); finetuning here
    # keeps StyleGAN2's and Toonify's 0.002 (not measured at 0.02), and the pair optimisation uses 0.01, with
    # which every pair set and table was made; 0.02 ends 5% lower after 200 steps on 32 images
    # (`facestyle bench --convergence STYLE --pair-lr 0.01,0.02`, docs/speed.md, "A higher learning rate").
    finetune_iters: int = 1000
    finetune_batch: int = 4
    finetune_lr: float = 0.002
    # Pseudo pairs (Eq. 5) and reference inversion (docs/reference.md section 3).
    pair_opt_iters: int = 1000
    pair_opt_lr: float = 0.01
    invert_iters: int = 1000
    invert_lr: float = 0.1
    truncation: dict = field(default_factory=lambda: dict(PAPER_TRUNCATION))
    # Printed once when a user stylizes their own photos with this profile ("" = nothing to say).
    photo_note: str = ""
    # Multimodal mixing layers (paper: 3, 6, 9, 12 of 18).
    mix_layers: tuple = (3, 6, 9, 12)

    def replace(self, **overrides) -> "Profile":
        """Return a copy with some fields overridden (unknown names raise with the list of valid ones)."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - valid
        if unknown:
            raise ValueError(f"unknown profile field(s) {sorted(unknown)}; valid: {sorted(valid)}")
        return dataclasses.replace(self, **overrides)


MINI_CHANNELS = {4: 128, 8: 128, 16: 96, 32: 64, 64: 32}
# lr_mlp 0.1 for mini (rosinality default 0.01): with 0.01 the mapping network barely moves during the
# supervised warm start on CPU (docs/design.md section 3), so W would stay a random transform of Z.

PROFILES = {
    "mini": Profile(
        name="mini",
        generator=GeneratorConfig(size=64, style_dim=128, n_mlp=4, channel_multiplier=1, lr_mlp=0.1,
                                  channels=MINI_CHANNELS),
        encoder=EncoderConfig(input_size=64, num_layers=0, mode="ir_se",
                              blocks=((32, 32, 1), (32, 64, 1), (64, 96, 1), (96, 128, 1))),
        generator_ckpt="mini-stylegan2-64",
        w_encoder_ckpt="mini-encoder-w",
        wplus_encoder_ckpt="mini-encoder-wplus",
        zplus_encoder_ckpt="mini-encoder-zplus",
        identity_ckpt="mini-identity",
        style_generator_ckpt="mini-style-{style}",
        loss_size=64,
        photo_note=("note: the mini profile is a synthetic 64 px portrait world trained by facestyle; a photo "
                    "comes back as a small drawing of that world. For photos use the paper's setting: "
                    "--profile ffhq with the official checkpoints (facestyle hub list --profile ffhq)."),
        lpips_backbone="seeded",
        lpips_train_net="alex",  # VGG LPIPS costs ~5 s per batch of 32 at 64 px on a 2-core CPU; alex ~10x less
        # The mini world has no ImageNet: its training LPIPS stands on an AlexNet trained self-supervised on renders
        # of all six domains (never on the oracle's labels), compared on 64 px images resized up, because at 64 px
        # AlexNet's deepest maps are 1-3 cells wide and miss a turned head; with these, Eq. 1 needs 5x the paper's
        # weight to hold pose and shape. 192 px rather than the paper's 256: at 256 px 1000 steps take 13 min on
        # the 2-core CPU, over the 10-minute budget (docs/faithful-stylization.md, rows F-Q).
        lpips_train_weights="mini-lpips-alexnet",
        lpips_size=192,
        lambda_sem=5.0,
        # StyleGAN2's (and Toonify's) 10, not the ADA heuristic 0.0002 * res^2 / batch = 0.2: with 0.2 the
        # cartoon discriminator wins within a few hundred steps (D loss 0.27, adversarial term ~3.3 against
        # semantic 0.2 + paired 0.08) and even +SC&PC collapses to one face (oracle agreement 47.7%); with 10,
        # D stays near 1.0 and agreement is 69.2% (docs/results.md, "The discriminator's R1 weight").
        r1_gamma=10.0,
        mix_layers=(2, 3, 5, 7),  # the paper's 3/6/9/12 of 18 rows at the same relative depth of 10 rows
                                  # (facestyle.method.latents.scale_mix_layer)
        # Fewer optimisation steps than the paper's 1000 (made for 1024 px), measured on the trained mini models
        # with `facestyle bench --convergence cartoon` (docs/speed.md, "How many steps the mini profile needs":
        # 200 level-2 steps reach 93% of the loss decrease of 1000; 200 V-space steps at a fifth of the time).
        pair_opt_iters=200,
        invert_iters=200,
    ),
    "ffhq": Profile(
        name="ffhq",
        generator=GeneratorConfig(size=1024),
        encoder=EncoderConfig(),
        generator_ckpt="stylegan2-ffhq-config-f",
        w_encoder_ckpt="psp-ffhq-encode-w",
        wplus_encoder_ckpt="psp-ffhq-encode",
        zplus_encoder_ckpt="psp-ffhq-encode-zplus",
        identity_ckpt="facenet-vggface2",
        style_generator_ckpt="ffhq-style-{style}",
    ),
}
# The paper's setting in everything but size, for CI and for a first run on a new machine: config-f's channel table,
# an IR-SE50 pSp encoder, facenet's InceptionResnetV1, LPIPS-VGG and the FID Inception, with a 32 px generator and
# 64 px loss and encoder inputs. It reads the ffhq profile's files by the same names, from the same places, so a
# set of random-weight files in the official formats (facestyle.rehearsal.write_official_files) walks every path
# the real files will; its numbers say nothing about quality.
PROFILES["rehearsal"] = PROFILES["ffhq"].replace(
    name="rehearsal", generator=GeneratorConfig(size=32), encoder=EncoderConfig(input_size=64), loss_size=64,
    photo_note="note: the rehearsal profile runs the paper's architectures at 32 px on whatever weights it finds "
               "under the ffhq names; it checks the pipeline, not the pictures.")


def get_profile(name: str = "mini", **overrides) -> Profile:
    """Look up a profile by name, optionally overriding fields; unknown names fail with the valid list."""
    if isinstance(name, Profile):
        return name.replace(**overrides) if overrides else name
    try:
        prof = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: choose one of {sorted(PROFILES)}") from None
    return prof.replace(**overrides) if overrides else prof


def check_style(style: str) -> str:
    """Validate a style name with a message that lists the valid ones."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: choose one of {', '.join(STYLES)}")
    return style
