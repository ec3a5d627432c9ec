"""Finetune a pretrained StyleGAN2 G into a style generator G' (paper section 3.1, Fig. 4, Eq. 1-3; Table 4).

G' starts as a copy of G and is trained against a discriminator (also initialised from the pretrained one) on a
small style set. The four variants of the paper's ablation (Table 4) differ only in the generator objective:

=========  ===========================================  =====================================================
variant    objective (Eq. 3 with terms left out)         paper name
=========  ===========================================  =====================================================
baseline   L_adv                                         unconstrained finetune, the G* of Fig. 7 / Table 4
sc         L_adv + lambda_sem * L_sem (Eq. 1)            +SC (semantic preservation constraint)
pc         L_adv + lambda_paired * L_paired (Eq. 2)      +PC (pseudo-paired supervision)
sc_pc      L_adv + lambda_sem L_sem + lambda_paired L_p  +SC&PC, the paper's method
=========  ===========================================  =====================================================

Recipe (section 4.1 and StyleGAN2): Adam with betas (0, 0.99), batch 4, about 1000 iterations, the
non-saturating logistic loss and lazy R1 on the style images every 16 steps; lr 0.002, StyleGAN2's and
Toonify's finetuning rate, where the paper's appendix 6.1 states 0.02 for all its optimisations (not measured
here). Choices the paper leaves open, made here and recorded in the output's meta:

* **noise** - Eq. 1 compares G(z) and G'(z) "using the same noise input". Both generators get the same z *and*
  the same per-layer noise maps: by default the stored constant maps (``noise="const"``, deterministic, which is
  also how facestyle renders stylizations), or fresh per-sample maps drawn once per step and given to both
  (``noise="shared"``). One G' forward serves both L_adv and L_sem.
* **EMA** - the paper does not say whether G' is averaged. We keep a G'_ema with a short half-life (500 images,
  ramped up as in StyleGAN2-ADA: the half-life is at most 5 % of the images seen so far) and save *it* as the
  result: at batch 4 this smooths the last few dozen steps, the usual practice for StyleGAN2 outputs, without
  dragging G' back towards G (which would confound the ablation). ``ema_half_life_imgs=0`` saves the raw G'.
* **pairs** - a pseudo-pair file holds W+ codes and their style images (or indices into the style set) of one
  level (section 3.2). Each step draws ``batch`` pairs uniformly with replacement from a dedicated RNG, so all
  four variants with the same seed see the same z and the same style batches (a fair ablation).
* **mapping network** - trained by default (Fig. 3 shows the W distribution itself shifting during finetuning);
  ``freeze_mapping=True`` keeps W of G' identical to W of G.
* **latent_avg** - the saved G' carries the *pretrained* G's ``latent_avg``: codes fed to G' at test time come
  from G's encoders and mapping network (sections 3.2-3.3), so truncation is centred on G's W.
* Path-length regularisation is not used (the paper does not mention it; 1000 steps barely move it).

Under ``torchrun`` the ranks share the global batch and average their gradients (:mod:`facestyle.distributed`,
docs/distributed.md). Resumable and interrupt-safe like every facestyle trainer (:mod:`facestyle.runs`): the full state
(G', G'_ema, D, both optimisers, step, RNGs) lives in ``<out>/state.pt``; rerunning the same command continues,
and a larger ``iters`` extends a finished run. The result is ``<out>/generator.pt``, a facestyle ``stylegan2``
checkpoint loadable with :func:`facestyle.hub.load_generator`, whose meta holds the full finetune config.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .. import distributed as dist
from .. import hub
from ..config import Profile, check_style, get_profile
from ..images import load_folder
from ..nn.perceptual import resize_for_loss
from ..nn.train_ops import adam, discriminator_step, ema_update, to_floats
from ..runs import Checkpointer, JsonlLog, resolve_path, set_threads
from ..utils import repo_relative
from .latents import to_wplus
from .losses import LossModels, adversarial_g_loss, paired_loss, semantic_loss, total_loss

__all__ = ["VARIANTS", "FinetuneConfig", "FinetuneResult", "finetune", "load_pairs", "load_style_folder",
           "snapshot_samples", "export"]

# Paper Table 4: which terms of Eq. 3 each ablation variant uses, as (semantic, paired).
VARIANTS = {"baseline": (False, False), "sc": (True, False), "pc": (False, True), "sc_pc": (True, True)}
NOISE_MODES = ("const", "shared")
# Fields that must not change when a run resumes (anything else, e.g. iters, may be extended).
# What makes a saved state a different finetune (iters is not here: a larger count extends a finished run).
_RESUME_KEYS = ("profile", "style", "variant", "generator", "batch", "noise", "freeze_mapping", "pairs", "lr",
                "r1_gamma", "lambda_sem", "lambda_paired", "lambda_id", "augment", "freeze_d", "freeze_g", "lpips",
                "lpips_size")


def _base_type(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return text.replace(" ", "").replace("|None", "").replace("Optional[", "").rstrip("]")


def _coerce(value: Any, typ: str) -> Any:
    """CLI strings -> the field's type (``add_config_arguments`` passes optional numbers as strings)."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in ("", "none", "null"):
        return None
    if typ == "int":
        return int(value)
    if typ == "float":
        return float(value)
    if typ == "bool":
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {value!r}")
    return value


@dataclass
class FinetuneConfig:
    """Options of one finetune; ``None`` means "the profile's value" (filled in by :meth:`resolved`)."""

    profile: str = "mini"
    style: str = "cartoon"
    variant: str = "sc_pc"  # baseline | sc | pc | sc_pc (paper Table 4)
    iters: int | None = None  # profile.finetune_iters (1000, section 4.1)
    batch: int | None = None  # profile.finetune_batch (4)
    lr: float | None = None  # profile.finetune_lr (0.002)
    r1_gamma: float | None = None  # profile.r1_gamma
    r1_every: int = 16
    lambda_sem: float | None = None  # profile.lambda_sem (1)
    lambda_paired: float | None = None  # profile.lambda_paired (1)
    lambda_id: float | None = None  # profile.lambda_id (0.1)
    pairs: str | None = None  # pseudo-pair file (needed by pc / sc_pc)
    pair_level: int | None = None  # recorded; None = the pair file's "level"
    style_images: str | None = None  # folder of style images; None = the mini world's style set
    generator: str | None = None  # hub name or path; profile.generator_ckpt
    discriminator: str | None = None  # hub name or path; None = the generator file's discriminator
    identity: str | None = None  # hub name or path; profile.identity_ckpt
    out: str | None = None  # runs/{profile}-finetune-{style}-{variant}
    noise: str = "const"  # const | shared (see the module docstring)
    freeze_mapping: bool = False
    # Few-shot discriminator remedies (issue "faithful stylization", hypothesis 4): DiffAugment policies applied
    # to everything D sees (facestyle.method.augment), and the number of D's first blocks kept frozen (FreezeD).
    augment: str = ""
    freeze_d: int = 0
    # Number of G''s first synthesis layers kept frozen (the constant input and the StyledConvs from 4 px up,
    # with their style affines; the ToRGB layers stay trainable). Not in the paper: tried against the geometry G'
    # loses, since the coarse rows carry pose and shape; it kept no more of it (docs/faithful-stylization.md).
    freeze_g: int = 0
    # Resolution of the LPIPS terms (Eq. 1, Eq. 2); None: the profile's lpips_size (or loss_size).
    lpips_size: int | None = None
    # The LPIPS of Eq. 1 and Eq. 2: None = the profile's lpips_train_net (a hub name or path may name another
    # backbone, e.g. the mini profile's self-supervised one).
    lpips: str | None = None
    # Every N steps, log the gradient norm each weighted term of Eq. 3 sends into G' (0: never; 3 extra
    # backward passes on those steps).
    grad_norm_every: int = 0
    ema_half_life_imgs: float = 500.0
    ema_rampup: float = 0.05
    sample_every: int = 100  # 0 = no sample grids
    n_samples: int = 8
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    ckpt_every_s: float = 300.0
    log_every: int = 10

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(getattr(self, f.name), _base_type(f.type)))

    def resolved(self, profile: Profile | None = None) -> "FinetuneConfig":
        """A copy with every ``None`` replaced by the profile's value; validates the choices.

        ``profile`` is the already resolved profile of an entry point (a variant such as the bench's reduced-size
        ffhq, which no name lookup finds); its name must be ``self.profile``, which is what the run records."""
        prof = _profile_for(self, profile)
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}: choose one of {', '.join(VARIANTS)} "
                             f"(paper Table 4: baseline = adversarial only, +SC, +PC, +SC&PC)")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {self.noise!r}: choose one of {', '.join(NOISE_MODES)}")
        if self.style_images is None:
            check_style(self.style)  # the mini world only knows the paper's five styles
        defaults = {"iters": prof.finetune_iters, "batch": prof.finetune_batch, "lr": prof.finetune_lr,
                    "r1_gamma": prof.r1_gamma, "lambda_sem": prof.lambda_sem, "lambda_paired": prof.lambda_paired,
                    "lambda_id": prof.lambda_id, "generator": prof.generator_ckpt, "identity": prof.identity_ckpt,
                    "out": f"runs/{prof.name}-finetune-{self.style}-{self.variant}"}
        if VARIANTS.get(self.variant, (False, False)) != (False, False):
            # Recorded, so that a state made under another profile recipe is not resumed as if it were this one.
            defaults.update(lpips_size=prof.lpips_size or prof.loss_size, lpips=prof.lpips_train_weights)
        out = dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
        from .augment import parse_policy

        parse_policy(out.augment)
        if out.iters < 0 or out.batch < 1 or out.r1_every < 1 or out.log_every < 1:
            raise ValueError("iters must be >= 0 and batch, r1_every, log_every >= 1")
        return out

    @property
    def uses_semantic(self) -> bool:
        return VARIANTS[self.variant][0]

    @property
    def uses_paired(self) -> bool:
        return VARIANTS[self.variant][1]


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns after ``iters`` steps (an interrupted run raises ``loop.Interrupted``)."""

    path: Path  # <out>/generator.pt
    out: Path
    step: int
    iters: int
    parts: dict = field(default_factory=dict)  # loss parts: means over the last logged window
    samples: list = field(default_factory=list)
    log: Path | None = None
    config: FinetuneConfig | None = None


# --------------------------------------------------------------------------------------------------------------
# data: style images and pseudo pairs
# --------------------------------------------------------------------------------------------------------------

def load_style_folder(folder: str | Path, size: int) -> torch.Tensor:
    """Every image file of ``folder`` (sorted by name) as ``[N, 3, size, size]`` in [-1, 1]; paper section 4.1
    resizes the style images to the generator's resolution (conversions: :func:`facestyle.images.to_tensor`)."""
    return load_folder(folder, size, what="style image folder", todo="put the style set there")


def _style_set(cfg: FinetuneConfig, size: int, style_images: torch.Tensor | None) -> torch.Tensor:
    if style_images is not None:
        x = style_images
    elif cfg.style_images:
        x = load_style_folder(resolve_path(cfg.style_images), size)
    else:
        if size > 256:
            raise ValueError(f"no style images given for a {size} px generator: the synthetic mini world renders "
                             f"small portraits only; pass a folder of style images (--style-images DIR)")
        from .. import world

        x, _ = world.style_dataset(cfg.style, size=size)
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3 or len(x) == 0:
        raise ValueError(f"style images must be a non-empty [N, 3, H, W] tensor, got "
                         f"{list(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    # The discriminator sees images at the generator's resolution.
    return resize_for_loss(x.detach().float().cpu(), size)


def load_pairs(pairs: str | Path | dict, style_set: torch.Tensor | None = None, *, n_latent: int | None = None,
               style_dim: int | None = None) -> dict:
    """Read a pseudo-pair set (section 3.2) into ``{"wplus": [N, n_latent, dim], "style": [N, 3, H, W], "level"}``.

    ``pairs`` is a torch file (loaded safely, ``weights_only``) or an in-memory dict holding ``wplus`` and either
    ``style`` (images in [-1, 1]) or ``index`` (rows of ``style_set``), plus an optional ``level`` (1-3, Eq. 4-6).
    W codes ``[N, dim]`` are repeated into W+. Shapes are checked against the generator when given.
    """
    src = pairs
    if not isinstance(pairs, dict):
        path = resolve_path(pairs)
        obj = hub.safe_load(path)
        if not isinstance(obj, dict):
            raise ValueError(f"{path} is not a pseudo-pair file (expected a dict with 'wplus' and 'style' or "
                             f"'index', got {type(obj).__name__})")
        if "wplus" not in obj and isinstance(obj.get("state_dict"), dict):  # a facestyle-format wrapper
            obj = {**obj.get("meta", {}), **obj.get("extra", {}), **obj["state_dict"]}
        pairs, src = obj, str(path)
    if "wplus" not in pairs:
        raise ValueError(f"pseudo pairs ({src}) have no 'wplus' codes; keys: {sorted(pairs)}")
    wplus = torch.as_tensor(pairs["wplus"]).detach().float().cpu()
    if n_latent is not None and wplus.ndim == 2:
        wplus = to_wplus(wplus, n_latent)
    if wplus.ndim != 3 or (n_latent is not None and wplus.shape[1] != n_latent) or \
            (style_dim is not None and wplus.shape[2] != style_dim):
        raise ValueError(f"pseudo-pair codes ({src}) have shape {list(wplus.shape)}; this generator needs "
                         f"[N, {n_latent}, {style_dim}] (were the pairs made for another profile?)")
    if pairs.get("style") is not None:
        style = torch.as_tensor(pairs["style"]).detach().float().cpu()
    elif pairs.get("index") is not None:
        if style_set is None:
            raise ValueError(f"pseudo pairs ({src}) refer to style images by index, but no style set was given")
        index = torch.as_tensor(pairs["index"]).long().cpu().reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(style_set)):
            raise ValueError(f"pseudo-pair indices ({src}) run to {int(index.max())}, but the style set has "
                             f"{len(style_set)} images (pairs made for another style?)")
        style = style_set[index]
    else:
        raise ValueError(f"pseudo pairs ({src}) hold neither 'style' images nor 'index' into the style set")
    if style.ndim != 4 or style.shape[1] != 3 or len(style) != len(wplus) or len(wplus) == 0:
        raise ValueError(f"pseudo pairs ({src}): {len(wplus)} codes but style images of shape {list(style.shape)}")
    level = pairs.get("level")
    level = int(level.item() if torch.is_tensor(level) else level) if level is not None else None
    return {"wplus": wplus, "style": style, "level": level, "source": src}


# --------------------------------------------------------------------------------------------------------------
# samples (paper Fig. 5)
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def snapshot_samples(g: nn.Module, g_prime: nn.Module, z: torch.Tensor, path: str | Path,
                     noise_mode: str = "const") -> Path:
    """A grid with G(z) on the top row and G'(z) below, same z and noise (paper Fig. 5 at one training step)."""
    from ..viz import save_grid

    dev = next(g_prime.parameters()).device
    z = z.to(dev)
    top = g.synthesis(g.mapping(z), noise_mode=noise_mode)
    bottom = g_prime.synthesis(g_prime.mapping(z), noise_mode=noise_mode)
    return save_grid(torch.cat([top, bottom]).cpu(), path, nrow=len(z))


# --------------------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------------------

def _ema_beta(cfg: FinetuneConfig, step: int) -> float:
    """Per-step EMA decay for a half-life in images, ramped up as StyleGAN2-ADA does (module docstring)."""
    hl = float(cfg.ema_half_life_imgs)
    if hl <= 0:
        return 0.0
    if cfg.ema_rampup > 0:
        hl = min(hl, (step + 1) * cfg.batch * cfg.ema_rampup)
    return 0.5 ** (cfg.batch / max(hl, 1e-8))


def _grad_norms(params: list, terms: dict, weights: dict) -> dict[str, float]:
    """The L2 norm of the gradient each weighted term of Eq. 3 sends into G' (``gn_<term>``) and each term's share
    of their sum (``share_<term>``): which constraint drives the update (issue "faithful stylization", H3)."""
    out = {}
    for name, term in terms.items():
        if term is None:
            continue
        grads = torch.autograd.grad(float(weights[name]) * term, params, retain_graph=True, allow_unused=True)
        out[f"gn_{name}"] = float(torch.sqrt(sum((gr.float() ** 2).sum() for gr in grads if gr is not None)))
    total = sum(out.values()) or 1.0
    out.update({f"share_{k[3:]}": v / total for k, v in list(out.items())})
    return out


def _unused_keys(cfg: FinetuneConfig) -> set[str]:
    """Settings of terms the variant leaves out: a G* (baseline) is the same finetune whatever lambda_sem the
    profile now sets, so a new recipe for Eq. 1 does not retrain it."""
    unused = set()
    if not cfg.uses_semantic:
        unused |= {"lambda_sem", "lambda_id"}
    if not cfg.uses_paired:
        unused |= {"lambda_paired", "pairs"}
    if not (cfg.uses_semantic or cfg.uses_paired):  # both Eq. 1 and Eq. 2 measure with the LPIPS
        unused |= {"lpips", "lpips_size"}
    return unused


def _check_resume(saved: dict, cfg: FinetuneConfig, path: Path) -> None:
    unused = _unused_keys(cfg)
    diff = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in _RESUME_KEYS
            if k in saved and k not in unused and saved.get(k) != getattr(cfg, k)]
    if diff:
        raise ValueError(f"{path} holds a different finetune ({'; '.join(diff)}); pass another --out or delete "
                         f"{path.parent} to start over")


def _meta(cfg: FinetuneConfig, step: int, wall: float, pair_level, n_pairs: int, n_style: int, gen_path,
          parts: dict, world: int = 1) -> dict:
    return {"finetune_config": asdict(cfg), "ranks": world, "variant": cfg.variant, "pair_level": pair_level,
            "style": cfg.style, "iters": step, "profile": cfg.profile, "wall_s": round(wall, 1), "n_pairs": n_pairs,
            "n_style_images": n_style, "pretrained_generator": str(gen_path), "final_loss_parts": parts,
            "latent_avg_source": "pretrained G (codes for G' come from G's encoders and mapping network)",
            "saved_weights": "G' EMA" if cfg.ema_half_life_imgs > 0 else "G' (no EMA)"}


def freeze_synthesis_layers(g: nn.Module, n: int) -> list[nn.Module]:
    """Stop gradients into the first ``n`` synthesis layers of ``g`` (conv1, then convs[0], convs[1], ...) and,
    when ``n > 0``, the constant input; returns the frozen layers."""
    layers = [g.conv1, *g.convs]
    if not 0 <= int(n) <= len(layers):
        raise ValueError(f"freeze_g={n}: the generator has {len(layers)} synthesis layers")
    frozen = ([g.input] if n else []) + layers[:int(n)]
    for m in frozen:
        m.requires_grad_(False)
    return frozen


def _profile_for(cfg: FinetuneConfig, profile: Profile | None) -> Profile:
    if profile is None:
        return get_profile(cfg.profile)
    if profile.name != cfg.profile:
        raise ValueError(f"the config names profile {cfg.profile!r} but profile {profile.name!r} was passed")
    return profile


def finetune(cfg: FinetuneConfig, progress: bool = True, lossmodels: LossModels | None = None, *,
             style_images: torch.Tensor | None = None, pairs: dict | str | None = None,
             profile: Profile | None = None) -> FinetuneResult:
    """Finetune G into G' with the objective of ``cfg.variant`` (paper Eq. 3 / Table 4); resumable.

    ``lossmodels`` reuses already built LPIPS / identity networks (else they are built for the variant's needs);
    ``style_images`` (a ``[N, 3, H, W]`` tensor in [-1, 1]) and ``pairs`` (a dict as in :func:`load_pairs`, or a
    path) override ``cfg.style_images`` / ``cfg.pairs`` for in-memory use (notebooks, tests); ``profile`` is the
    resolved profile named by ``cfg.profile`` (looked up by that name when left out).
    """
    from ..utils import progress_bar as tqdm

    if isinstance(cfg.pairs, dict):  # tolerated: keep tensors out of the recorded config
        pairs, cfg = cfg.pairs, dataclasses.replace(cfg, pairs="<in-memory>")
    prof = _profile_for(cfg, profile)
    cfg = cfg.resolved(prof)
    if pairs is not None:  # the argument wins over cfg.pairs; record what was actually used
        cfg = dataclasses.replace(cfg, pairs="<in-memory>" if isinstance(pairs, dict) else str(pairs))
    set_threads(cfg.threads)
    # Under torchrun: join the ranks, each on its own device; cfg.batch stays the global batch (module docstring).
    ranks, device = dist.init(cfg.device)
    part = dist.local_slice(cfg.batch, ranks)
    out = resolve_path(cfg.out)

    # Models: G frozen (the reference of Eq. 1), G' and D initialised from the pretrained weights.
    loaded = hub.load_generator(cfg.generator, device, expected_size=prof.generator.size)
    g = loaded.g_ema.eval()
    latent_avg = loaded.latent_avg
    g_prime = copy.deepcopy(g).train()
    for p in g_prime.parameters():
        p.requires_grad_(True)
    if cfg.freeze_mapping:
        g_prime.style.requires_grad_(False)
    freeze_synthesis_layers(g_prime, cfg.freeze_g)
    g_ema = copy.deepcopy(g).eval()
    d = hub.load_discriminator(cfg.discriminator or cfg.generator, device, expected_size=g.size,
                               requires_grad=True).train()
    frozen_d = [p for block in list(d.convs)[:max(0, int(cfg.freeze_d))] for p in block.parameters()]
    if cfg.freeze_d > len(d.convs):
        raise ValueError(f"freeze_d={cfg.freeze_d}: the discriminator has only {len(d.convs)} blocks")
    for p in frozen_d:
        p.requires_grad_(False)
    from .augment import diff_augment, parse_policy

    policy = parse_policy(cfg.augment)

    def sync_d() -> None:
        dist.average_gradients(d.parameters(), ranks)

    def critic(x: torch.Tensor) -> torch.Tensor:
        return d(diff_augment(x, policy)) if policy else d(x)

    # Data.
    style_set = _style_set(cfg, g.size, style_images)
    pair_data = None
    if cfg.uses_paired:
        src = pairs if pairs is not None else cfg.pairs
        if src is None:
            raise ValueError(f"variant {cfg.variant!r} uses pseudo-paired supervision (Eq. 2) and needs a pair file:"
                             f" pass --pairs FILE (or choose variant baseline / sc)")
        pair_data = load_pairs(src, style_set, n_latent=g.n_latent, style_dim=g.style_dim)
    pair_level = cfg.pair_level if cfg.pair_level is not None else (pair_data or {}).get("level")
    if cfg.uses_semantic or cfg.uses_paired:
        if lossmodels is None:
            lossmodels = LossModels.build(prof, device, lpips=True, identity=cfg.uses_semantic,
                                          identity_ckpt=cfg.identity, lpips_weights=cfg.lpips)
        lossmodels.need(lpips=True, identity=cfg.uses_semantic and cfg.lambda_id > 0).to(device)
        if cfg.lpips_size:
            lossmodels = dataclasses.replace(lossmodels, lpips_size=int(cfg.lpips_size))
    lambda_id = cfg.lambda_id

    # Optimisers: StyleGAN2's lazy-R1 rescaling keeps D's effective lr/betas those of eager R1.
    g_params = [p for p in g_prime.parameters() if p.requires_grad]
    g_opt = adam(g_params, device, lr=cfg.lr, betas=(0.0, 0.99))
    c = cfg.r1_every / (cfg.r1_every + 1)
    d_opt = adam([p for p in d.parameters() if p.requires_grad], device, lr=cfg.lr * c, betas=(0.0, 0.99 ** c))

    # A dedicated RNG for pair sampling keeps the global stream (z, style batches, noise) identical across
    # variants with the same seed, so the ablation compares objectives, not random draws.
    pair_rng = torch.Generator().manual_seed(cfg.seed + 7_919)
    ckpt = Checkpointer(out / "state.pt", cfg.ckpt_every_s)
    log = JsonlLog(out / "log.jsonl")
    step, wall, last_parts = 0, 0.0, {}
    # A re-shipped pretrained G keeps its hub name: its file hash is what tells an old run from a new one.
    g_sha = hub.sha256_file(loaded.path) if loaded.path is not None else None
    state = ckpt.load()
    if state is not None:
        _check_resume(state.get("config", {}), cfg, ckpt.path)
        if state.get("generator_sha256") and g_sha and state["generator_sha256"] != g_sha:
            raise ValueError(f"{ckpt.path} was finetuned from another file of {cfg.generator!r} (sha256 "
                             f"{state['generator_sha256'][:12]}..., now {g_sha[:12]}...); pass another --out or "
                             f"delete {ckpt.path.parent} to start over")
        g_prime.load_state_dict(state["g_prime"]), g_ema.load_state_dict(state["g_ema"])
        d.load_state_dict(state["d"])
        g_opt.load_state_dict(state["g_opt"]), d_opt.load_state_dict(state["d_opt"])
        step, wall, last_parts = int(state["step"]), float(state.get("wall_s", 0.0)), state.get("parts", {})
        if step > cfg.iters:
            # Saving here would label a G' of `step` iterations as one of `iters`: a finetune cannot go back.
            raise ValueError(f"{ckpt.path} is already at step {step}, past the {cfg.iters} iterations asked for; "
                             f"ask for >= {step} or pass another --out")
        if "rng" in state:
            torch.set_rng_state(state["rng"])
        if "pair_rng" in state:
            pair_rng.set_state(state["pair_rng"])
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if progress and ranks.main:
            print(f"{'reusing finished' if step == cfg.iters else 'resumed'} {repo_relative(out)} at step {step}")
    else:
        torch.manual_seed(cfg.seed)

    def snapshot_state() -> dict:
        s = {"g_prime": g_prime.state_dict(), "g_ema": g_ema.state_dict(), "d": d.state_dict(),
             "g_opt": g_opt.state_dict(), "d_opt": d_opt.state_dict(), "step": step, "wall_s": wall,
             "config": asdict(cfg), "parts": last_parts, "rng": torch.get_rng_state(),
             "pair_rng": pair_rng.get_state(), "generator_sha256": g_sha}
        if device.type == "cuda":
            s["cuda_rng"] = torch.cuda.get_rng_state(device)
        return s

    # Fixed z for the Fig. 5 grids, from their own generator so resuming does not change them.
    sample_z = torch.randn(cfg.n_samples, g.style_dim, generator=torch.Generator().manual_seed(cfg.seed + 1234))
    samples: list[Path] = []

    def maybe_sample(force: bool = False) -> None:
        if ranks.main and cfg.sample_every > 0 and (force or step % cfg.sample_every == 0):
            path = out / f"samples_{step:06d}.png"
            samples.append(snapshot_samples(g, g_ema, sample_z, path))

    def synth(gen: nn.Module, z: torch.Tensor, noise) -> torch.Tensor:
        return gen.synthesis(gen.mapping(z), noise=noise, noise_mode="const")

    def make_noise(n: int):
        if cfg.noise == "const":
            return None  # synthesis falls back to the stored maps (noise_mode="const") in both G and G'
        return [torch.randn(n, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)).to(device) for i in range(g.num_layers)]

    if step == 0:
        maybe_sample()
    ckpt.install_signal_handlers()
    bar = tqdm(total=cfg.iters, initial=min(step, cfg.iters), disable=not progress or not ranks.main,
               desc=f"finetune {cfg.style} {cfg.variant}")
    try:
        while step < cfg.iters:
            t0 = time.perf_counter()
            rec: dict = {}  # detached tensors until the step's end: one host-device sync per step
            # Draw on the CPU so a seed gives the same run on every device. Every rank draws the whole global
            # batch from the same stream and keeps its part, so N ranks see what one process sees.
            z = torch.randn(cfg.batch, g.style_dim)[part].to(device)
            real = style_set[torch.randint(len(style_set), (cfg.batch,))[part]].to(device)
            noise = make_noise(cfg.batch)
            if noise is not None:
                noise = [n[part] for n in noise]

            # ---- discriminator: L_adv on style images vs current G'(z), lazy R1 ----
            for p in d.parameters():
                p.requires_grad_(True)
            for p in frozen_d:
                p.requires_grad_(False)
            with torch.no_grad():
                fake = synth(g_prime, z, noise)
            rec.update(discriminator_step(critic, d_opt, real, fake, step=step, r1_every=cfg.r1_every,
                                          r1_gamma=cfg.r1_gamma, sync=sync_d if ranks.active else None))

            # ---- generator: Eq. 3 with the variant's terms ----
            d.requires_grad_(False)  # D is only a critic here: no parameter gradients needed
            fake = synth(g_prime, z, noise)
            l_adv = adversarial_g_loss(critic(fake))
            l_sem = l_paired = None
            if cfg.uses_semantic:
                with torch.no_grad():
                    ref = synth(g, z, noise)  # G(z): same z, same noise maps
                l_sem, sem_parts = semantic_loss(ref, fake, lossmodels.lpips, lossmodels.identity, lambda_id,
                                                 lossmodels.size, lpips_size=lossmodels.lpips_size)
                rec["sem_lpips"], rec["sem_id"] = sem_parts["lpips"].detach(), sem_parts["id"].detach()
            if cfg.uses_paired:
                j = torch.randint(len(pair_data["wplus"]), (cfg.batch,), generator=pair_rng)[part]
                # Pairs are fixed (code, image) associations, so G'(w+) is rendered with the deterministic maps.
                out_p = g_prime.synthesis(pair_data["wplus"][j].to(device), noise_mode="const")
                l_paired = paired_loss(out_p, pair_data["style"][j].to(device), lossmodels.lpips, lossmodels.lpips_at)
            parts = total_loss(l_adv, l_sem, l_paired, lambda_sem=cfg.lambda_sem, lambda_paired=cfg.lambda_paired)
            if cfg.grad_norm_every and step % cfg.grad_norm_every == 0:
                rec.update(_grad_norms(g_params, {"adv": l_adv, "sem": l_sem, "paired": l_paired},
                                       {"adv": 1.0, "sem": cfg.lambda_sem, "paired": cfg.lambda_paired}))
            g_opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            dist.average_gradients(g_params, ranks)
            g_opt.step()
            ema_update(g_ema, g_prime, _ema_beta(cfg, step))
            rec.update({k: v.detach() for k, v in parts.items()})
            rec = to_floats(rec)

            step += 1
            dt = time.perf_counter() - t0
            wall += dt
            rec["s_per_step"] = dt
            logged = log.accumulate(step, cfg.log_every, force=step == cfg.iters, **rec) if ranks.main else None
            if logged is not None:
                last_parts = logged
            bar.update(1)
            bar.set_postfix(adv=f"{rec['adv']:.3f}", d=f"{rec['d']:.3f}",
                            **({"sem": f"{rec['sem']:.3f}"} if "sem" in rec else {}),
                            **({"paired": f"{rec['paired']:.3f}"} if "paired" in rec else {}))
            if step < cfg.iters:
                maybe_sample()
            if dist.any_rank(ckpt.due(), r=ranks) or step == cfg.iters:
                # After SIGINT/SIGTERM this save raises loop.Interrupted (exit status 130): nothing below runs
                # on a half-finished G', and rerunning the same command resumes from this state. The ranks
                # hold the same state; rank 0 writes it, and a signal to any rank stops them all.
                ckpt.stop_requested = dist.any_rank(ckpt.stop_requested, r=ranks)
                if ranks.main:
                    ckpt.save(snapshot_state())
                else:
                    ckpt.skip()
    finally:
        bar.close()
        ckpt.restore_signal_handlers()

    path = out / "generator.pt"
    if ranks.main:
        if not ckpt.path.exists():  # iters=0: keep the invariant that a finished run has its state
            ckpt.save(snapshot_state())
        maybe_sample(force=True)
        meta = _meta(cfg, step, wall, pair_level, 0 if pair_data is None else len(pair_data["wplus"]),
                     len(style_set), loaded.path, last_parts, world=ranks.world)
        path = hub.save_generator_checkpoint(path, g_ema, latent_avg=latent_avg, meta=meta)
    dist.barrier(ranks)  # every rank returns once the result is on disk
    return FinetuneResult(path=path, out=out, step=step, iters=cfg.iters, parts=last_parts, samples=samples,
                          log=log.path, config=cfg)


# --------------------------------------------------------------------------------------------------------------
# shipping a finished G' (`facestyle finetune --export`, facestyle.cli.finetune)
# --------------------------------------------------------------------------------------------------------------

def export(path: str | Path, export_path: str | Path, cfg: FinetuneConfig, command: str | None = None) -> Path:
    """Copy a finished G' to ``export_path`` in float16; recorded in the mini manifest when shipped there, with
    ``command`` as the command that made it (default: the running command line)."""
    from ..manifest import record_if_shipped

    ck = hub.load_facestyle_checkpoint(path, kind="stylegan2")
    dest = hub.save_checkpoint(resolve_path(export_path), kind=ck["kind"], state_dict=ck["state_dict"],
                               config=ck["config"], meta=ck["meta"], half=True, **ck["extra"])
    name = get_profile(cfg.profile).style_generator_ckpt.format(style=cfg.style)
    record_if_shipped(name, dest, command=command, iterations=ck["meta"].get("iters"),
                      wall_s=ck["meta"].get("wall_s"), variant=cfg.variant, pair_level=ck["meta"].get("pair_level"))
    return dest
