"""Multi-level pseudo-paired data (paper section 3.2, Fig. 6-8, Eq. 4-6; appendix 6.4, Fig. 13).

For every style image S the paper builds pseudo-real portraits P_k of the same content, each with its W+ code
w_k+ (the code that pseudo-paired supervision, Eq. 2, feeds to G'):

* **Level 1, embedding (Eq. 4)** - :func:`level1`: ``z1+ = E_z+(S)``, ``w1+ = mapping_G(z1+)``, ``P1 = G(w1+)``.
* **Level 2, optimisation (Eq. 5)** - :func:`level2`: starting at ``z1+``, ``z2+ = argmin_z+ L_semantic(G*(z+),
  S)`` where G* is the *unconstrained* finetune of G (finetune variant ``baseline``) and L_semantic is Eq. 1's
  form, LPIPS + lambda_ID * ID at the profile's loss size; then ``w2+ = mapping_G(z2+)`` (G's mapping network,
  not G*'s) and ``P2 = G(w2+)``.
* **Level 3, refinement (Eq. 6)** - :func:`level3`: ``w3+ = E_w+(S)``, ``P3 = G(w3+)`` as Eq. 6 is written
  (``level3_source="style"``, the default). The text around Eq. 6 says "we refine P2 using a pSp encoder
  pretrained in W+ space", and Fig. 13 describes the levels as "sequentially encoding" S; that reading,
  ``w3+ = E_w+(P2)``, is ``level3_source="p2"``. The two differ in what the W+ encoder sees: the style image
  itself (codes that carry the style domain's details into G's real domain) or the already realistic P2 (codes
  that stay close to P2 while W+ adds real-domain detail).

:func:`make_pairs` runs the chosen levels for a style set and writes one pair file per level in the format
:func:`facestyle.method.finetune.load_pairs` reads, plus the P images and the paper's Fig. 8
(:func:`pairs_figure`).

Choices the paper leaves open (recorded in each pair file's ``meta``):

* **noise** - every P image is rendered, and G*(z+) optimised, with the generators' stored constant noise maps:
  a pair is a fixed (code, image) association, and finetuning renders G'(w+) with the same constant maps.
* **batching** - the paper optimises one image at a time (appendix 6.1, batch 1, 1000 iterations, lambda_ID
  0.1). Here one Adam runs over a batch of z+ codes, the loss being the *sum* of the per-sample Eq. 1 losses:
  every code gets exactly its own gradient, and Adam is per-coordinate, so the result equals per-image
  optimisation (up to float rounding) while a batch of 32 costs far less than 32 runs.
* **optimiser** - Adam with a constant learning rate (``profile.pair_opt_lr``) for ``profile.pair_opt_iters``
  steps, no regulariser on z+ (Eq. 5 has none; starting from the encoder's z1+ keeps z+ near the embedding).
  Decaying schedules are an option (``schedule``, :func:`pair_lr`); on the mini models they end higher than
  the constant rate for the same step count (docs/speed.md, "A decaying learning rate").
* **resume** - each finished level-2 batch is saved (atomically) under ``<out>/level2_batches/``, keyed by
  everything that determines it (start codes, style images, G*'s weights, the loss networks, iters, lr); a
  killed run recomputes only the batches that are missing.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .. import hub
from ..config import Profile, check_style, get_profile
from ..distributed import gather, merge_by_index, ranks, shard
from ..nn.perceptual import (identity_distance, identity_embedding, identity_to_embedding, lpips_distance,
                              lpips_features, lpips_to_features, resize_for_loss)
from ..utils import atomic_torch_save, get_device
from .invert import frozen, get_lr, model_hash, tensor_digest
from .losses import LossModels

__all__ = ["PairLevel", "PairsResult", "level1", "level2", "level3", "semantic_per_sample", "semantic_target",
           "make_pairs", "pair_file_dict", "pairs_figure", "LEVEL3_SOURCES"]

LEVEL3_SOURCES = ("style", "p2")
# P images are stored at most at this resolution (the loss size of the paper): 317 images at 1024 px would be
# gigabytes, and P is for inspection and figures; the codes, not the images, are what finetuning uses.
MAX_STORED_SIZE = 256


@dataclass
class PairLevel:
    """One level of pseudo pairs: W+ codes ``[N, n_latent, dim]``, pseudo-real images P ``[N, 3, H, W]``,
    z+ codes for levels 1-2, and per-level facts (e.g. level 2's Eq. 1 loss before and after optimisation)."""

    level: int
    wplus: torch.Tensor
    images: torch.Tensor
    zplus: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)
    loss_start: torch.Tensor | None = None  # level 2: per-sample Eq. 1 loss at z1+ ...
    loss_end: torch.Tensor | None = None  # ... and at z2+


@dataclass
class PairsResult:
    """What :func:`make_pairs` made: ``levels[k]`` and, when written, ``files[k]`` (pair file), ``grids[k]``
    (PNG of P_k) and the Fig. 8 ``figure``."""

    levels: dict
    files: dict = field(default_factory=dict)
    grids: dict = field(default_factory=dict)
    figure: Path | None = None
    out: Path | None = None


def _device_of(m: nn.Module) -> torch.device:
    return next(m.parameters()).device


def _chunks(n: int, batch: int):
    batch = max(1, int(batch))
    for b0 in range(0, n, batch):
        yield b0, min(n, b0 + batch)


@torch.no_grad()
def _render(g: nn.Module, wplus: torch.Tensor, batch: int) -> torch.Tensor:
    """``G(w+)`` with the stored constant noise, batched, on the CPU."""
    dev = _device_of(g)
    return torch.cat([g.synthesis(wplus[a:b].to(dev), noise_mode="const").cpu()
                      for a, b in _chunks(len(wplus), batch)])


# --------------------------------------------------------------------------------------------------------------
# the three levels
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def level1(style_images: torch.Tensor, zplus_psp: nn.Module, g: nn.Module, *, batch: int = 32) -> PairLevel:
    """Paper Eq. 4 (embedding): ``z1+ = E_z+(S)``, ``w1+ = G_mapping(z1+)``, ``P1 = G(w1+)``.

    ``zplus_psp`` is a :class:`~facestyle.nn.encoders.PSP` with a Z+ encoder; its raw output is z+ and the
    mapping is applied with ``g``'s own mapping network (the pretrained G of Eq. 4), whatever decoder the PSP
    carries. Deterministic (constant noise).
    """
    if not getattr(zplus_psp, "is_zplus", False):
        raise ValueError("level 1 (Eq. 4) needs the Z+ encoder E_z+ (a PSP whose encoder is a ZPlusEncoder)")
    dev = _device_of(zplus_psp)
    gdev = _device_of(g)
    zs, ws = [], []
    for a, b in _chunks(len(style_images), batch):
        _, z = zplus_psp.encode(style_images[a:b].float().to(dev), return_raw=True)
        zs.append(z.cpu())
        ws.append(g.mapping(z.to(gdev)).cpu())
    z1, w1 = torch.cat(zs), torch.cat(ws)
    return PairLevel(level=1, wplus=w1, zplus=z1, images=_render(g, w1, batch),
                     meta={"equation": "Eq. 4: z1+ = E_z+(S), w1+ = mapping_G(z1+), P1 = G(w1+)"})


def semantic_per_sample(images: torch.Tensor, targets: torch.Tensor, lossmodels: LossModels) -> torch.Tensor:
    """Paper Eq. 1 per sample, ``[B]``: ``LPIPS(a, b) + lambda_ID * ID(a, b)`` at ``lossmodels.size``.

    The per-sample form of :func:`facestyle.method.losses.semantic_loss` (which returns the batch mean); Eq. 5
    applies it between G*(z+) and S. The ID term is left out when there is no identity network or
    ``lambda_id`` is 0.
    """
    d = lpips_distance(images, targets, lossmodels.lpips, lossmodels.size)
    if lossmodels.identity is not None and lossmodels.lambda_id:
        d = d + float(lossmodels.lambda_id) * identity_distance(images, targets, lossmodels.identity,
                                                                 lossmodels.size)
    return d


def semantic_target(targets: torch.Tensor, lossmodels: LossModels):
    """Paper Eq. 1 per sample against a *fixed* batch of targets: returns ``f(images) -> [B]``, the same numbers
    as ``semantic_per_sample(images, targets, lossmodels)``, with the targets' LPIPS features and identity
    embeddings computed once instead of at every step of Eq. 5's optimisation (gradients flow to ``images``
    only)."""
    size = lossmodels.size
    feats = lpips_features(targets, lossmodels.lpips, size)
    use_id = lossmodels.identity is not None and bool(lossmodels.lambda_id)
    emb = identity_embedding(targets, lossmodels.identity, size) if use_id else None

    def per_sample(images: torch.Tensor) -> torch.Tensor:
        d = lpips_to_features(images, feats, lossmodels.lpips, size)
        if use_id:
            d = d + float(lossmodels.lambda_id) * identity_to_embedding(images, emb, lossmodels.identity, size)
        return d

    return per_sample


PRECISIONS = ("fp32", "bf16")
# Level 2's learning-rate schedules: "constant" (the paper states one rate, appendix 6.1), "cosine" (from ``lr``
# down to 0 over the run), "projector" (the StyleGAN2 projector's warm-up and ramp-down, :func:`get_lr`).
SCHEDULES = ("constant", "cosine", "projector")


def pair_lr(step: int, iters: int, lr: float, schedule: str = "constant") -> float:
    """Learning rate of Eq. 5's Adam at ``step`` of ``iters`` under ``schedule`` (see ``SCHEDULES``)."""
    if schedule == "constant":
        return lr
    t = step / max(1, iters)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "projector":
        return get_lr(t, lr)
    raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")


def _batch_key(z0: torch.Tensor, s: torch.Tensor, g_star_hash: str, loss_hash: str, iters: int, lr: float,
               lambda_id: float, size, precision: str = "fp32", schedule: str = "constant") -> str:
    fields = {"z0": tensor_digest(z0.float().cpu()), "style": tensor_digest(s.float().cpu()),
              "g_star": g_star_hash, "loss": loss_hash, "iters": int(iters), "lr": float(lr),
              "lambda_id": float(lambda_id), "size": size}
    if precision != "fp32":  # only then: batches saved before the option existed keep their keys
        fields["precision"] = precision
    if schedule != "constant":  # likewise
        fields["schedule"] = schedule
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _autocast(dev: torch.device, precision: str):
    """bf16 autocast for the forward passes of Eq. 5 (convolutions and matmuls in bf16, reductions in fp32)."""
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _optimise_batch(z0: torch.Tensor, s: torch.Tensor, g_star: nn.Module, lossmodels: LossModels, iters: int,
                    lr: float, bar, trace: list | None = None,
                    precision: str = "fp32",
                    schedule: str = "constant") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 5 for one batch: Adam over z+ on the summed per-sample Eq. 1 losses; returns (z2+, loss0, loss1).

    ``precision="bf16"`` runs the steps' forward passes under bf16 autocast (z+, Adam and the reported start and
    end losses stay fp32)."""
    dev = _device_of(g_star)
    s = s.float().to(dev)
    z = z0.detach().clone().float().to(dev).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    eq1 = semantic_target(s, lossmodels)
    loss0 = None
    for i in range(iters):
        with _autocast(dev, precision):
            img = g_star.synthesis(g_star.mapping(z), noise_mode="const")  # G*(z+), G*'s own mapping
            per = eq1(img).float()
        if loss0 is None and precision == "fp32":
            loss0 = per.detach().cpu()
        if trace is not None:
            trace.append(per.detach().mean().item())
        opt.zero_grad(set_to_none=True)
        opt.param_groups[0]["lr"] = pair_lr(i, iters, lr, schedule)
        # A sum, not a mean: each code's gradient is exactly its own, whatever the batch size (module docstring).
        per.sum().backward()
        opt.step()
        bar.update(1)
        if i % 10 == 0 or i == iters - 1:
            bar.set_postfix(sem=f"{per.mean().item():.4f}")
    with torch.no_grad():
        loss1 = eq1(g_star.synthesis(g_star.mapping(z), noise_mode="const")).cpu()
        if loss0 is None and iters > 0:  # bf16: the start loss in fp32 too, so start and end compare
            loss0 = eq1(g_star.synthesis(g_star.mapping(z0.float().to(dev)), noise_mode="const")).cpu()
    if loss0 is None:  # iters == 0
        loss0 = loss1
    return z.detach().cpu(), loss0, loss1


def level2(style_images: torch.Tensor, z_init: torch.Tensor, g: nn.Module, g_star: nn.Module,
           lossmodels: LossModels, iters: int, lr: float, batch: int = 32, *,
           state_dir: str | Path | None = None, progress: bool = True, trace: list | None = None,
           precision: str = "fp32", schedule: str = "constant") -> PairLevel:
    """Paper Eq. 5 (optimisation): ``z2+ = argmin_z+ L_semantic(G*(z+), S)`` from ``z_init`` (= z1+), then
    ``w2+ = G_mapping(z2+)`` and ``P2 = G(w2+)``.

    ``g_star`` is the unconstrained finetune of G (finetune variant ``baseline``): S is assumed expressible by
    G*, so the code that makes G* draw S is searched for, then read through G (mapping and synthesis) to get a
    realistic P2 of the same content. L_semantic is Eq. 1 per sample (:func:`semantic_per_sample`:
    LPIPS + ``lossmodels.lambda_id`` * ID at ``lossmodels.size``).

    The style set is optimised ``batch`` codes at a time with one Adam per batch (summed per-sample losses, so
    results do not depend on the batch size). With ``state_dir`` every finished batch is saved there and reused
    by a rerun with the same inputs (resume after an interruption). Both generators stay frozen. ``trace`` (a
    list) receives the batch-mean loss before every step, for convergence studies (``facestyle bench
    --convergence``). ``precision="bf16"`` runs the forward passes under bf16 autocast: faster on CPUs and GPUs
    with bf16 units, at a small cost in the loss reached (``facestyle bench --method`` and ``--convergence``
    with ``--pair-precision bf16`` measure both); the default is fp32, as the paper. ``schedule`` sets Adam's
    learning rate over the run (:func:`pair_lr`); the default is the paper's constant rate.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if len(style_images) != len(z_init):
        raise ValueError(f"level 2 needs one z1+ per style image: {len(z_init)} codes for {len(style_images)} "
                         f"images")
    lossmodels.need(lpips=True)
    state = Path(state_dir) if state_dir is not None else None
    g_hash = model_hash(g_star)
    loss_hash = hashlib.sha256("|".join(model_hash(m) for m in (lossmodels.lpips, lossmodels.identity)
                                        if m is not None).encode()).hexdigest()

    from ..utils import progress_bar as tqdm

    chunks = list(_chunks(len(z_init), batch))
    # Under torchrun each rank optimises every N-th batch and the ranks then swap results (facestyle.distributed):
    # a batch's result depends only on its own inputs, so N ranks give what one process gives.
    r = ranks()
    mine = shard(len(chunks), r)
    done: dict[int, tuple] = {}
    reused = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(mine) * iters, disable=not progress or not r.main, desc="pairs level 2 (Eq. 5)")
    try:
        with frozen(g_star, lossmodels.lpips, lossmodels.identity):
            for i in mine:
                a, b = chunks[i]
                key = _batch_key(z_init[a:b], style_images[a:b], g_hash, loss_hash, iters, lr,
                                 lossmodels.lambda_id, lossmodels.size, precision, schedule)
                path = state / f"batch_{a:05d}_{b:05d}.pt" if state is not None else None
                saved = _load_batch(path, key)
                if saved is not None:
                    z, l0, l1 = saved
                    reused += 1
                    bar.update(iters)
                else:
                    z, l0, l1 = _optimise_batch(z_init[a:b], style_images[a:b], g_star, lossmodels, iters, lr, bar,
                                                trace, precision, schedule)
                    if path is not None:
                        atomic_torch_save({"key": key, "z": z, "loss_start": l0, "loss_end": l1}, path)
                done[i] = (z.cpu(), l0.cpu(), l1.cpu())
    finally:
        bar.close()
    if r.active:
        parts = gather((done, reused), r)
        done, reused = merge_by_index([p[0] for p in parts]), sum(p[1] for p in parts)
    zs, l0s, l1s = zip(*(done[i] for i in range(len(chunks))))
    z2 = torch.cat(zs)
    with torch.no_grad():
        w2 = torch.cat([g.mapping(z2[a:b].to(_device_of(g))).cpu() for a, b in chunks])  # G's mapping, not G*'s
    loss0, loss1 = torch.cat(l0s), torch.cat(l1s)
    meta = {"equation": "Eq. 5: z2+ = argmin L_sem(G*(z+), S) from z1+, w2+ = mapping_G(z2+), P2 = G(w2+)",
            "iters": int(iters), "lr": float(lr), "batch": int(batch), "lambda_id": float(lossmodels.lambda_id),
            "loss_size": lossmodels.size, "precision": precision, "schedule": schedule, "g_star_sha256": g_hash,
            "batches_reused": reused,
            "loss_start_mean": float(loss0.mean()), "loss_end_mean": float(loss1.mean()),
            "wall_s": round(time.perf_counter() - t0, 2)}
    return PairLevel(level=2, wplus=w2, zplus=z2, images=_render(g, w2, batch), meta=meta, loss_start=loss0,
                     loss_end=loss1)


def _load_batch(path: Path | None, key: str):
    if path is None or not path.exists():
        return None
    try:
        obj = hub.safe_load(path)
    except hub.CheckpointError:
        return None  # damaged: recompute and overwrite
    if obj.get("key") != key:
        return None  # made from other inputs or settings: stale
    return obj["z"], obj["loss_start"], obj["loss_end"]


@torch.no_grad()
def level3(style_images: torch.Tensor, wplus_psp: nn.Module, g: nn.Module, *, level3_source: str = "style",
           p2: torch.Tensor | None = None, batch: int = 32) -> PairLevel:
    """Paper Eq. 6 (refinement): ``w3+ = E_w+(S)``, ``P3 = G(w3+)`` (``level3_source="style"``, as written).

    ``level3_source="p2"`` is the reading of the surrounding text ("we refine P2 using a pSp encoder pretrained in
    W+ space"): ``w3+ = E_w+(P2)``, which needs the level-2 images ``p2``. See the module docstring.
    """
    if level3_source not in LEVEL3_SOURCES:
        raise ValueError(f"unknown level3_source {level3_source!r}: choose one of {', '.join(LEVEL3_SOURCES)}")
    if getattr(wplus_psp, "is_zplus", False):
        raise ValueError("level 3 (Eq. 6) needs the W+ encoder E_w+, not the Z+ encoder")
    src = style_images
    if level3_source == "p2":
        if p2 is None:
            raise ValueError("level3_source='p2' encodes the level-2 images: compute level 2 first (levels 1,2,3)")
        if len(p2) != len(style_images):
            raise ValueError(f"{len(p2)} P2 images for {len(style_images)} style images")
        src = p2
    dev = _device_of(wplus_psp)
    w3 = torch.cat([wplus_psp.encode(src[a:b].float().to(dev)).cpu() for a, b in _chunks(len(src), batch)])
    eq = "Eq. 6: w3+ = E_w+(S), P3 = G(w3+)" if level3_source == "style" else \
        "Eq. 6, 'refine P2' reading: w3+ = E_w+(P2), P3 = G(w3+)"
    return PairLevel(level=3, wplus=w3, images=_render(g, w3, batch),
                     meta={"equation": eq, "level3_source": level3_source})


# --------------------------------------------------------------------------------------------------------------
# files and figure
# --------------------------------------------------------------------------------------------------------------

def pair_file_dict(lvl: PairLevel, *, style_images: torch.Tensor | None = None,
                   index: torch.Tensor | None = None, meta: dict | None = None) -> dict:
    """The on-disk form of one level, as :func:`facestyle.method.finetune.load_pairs` reads it.

    ``{"wplus": float32 [N, n_latent, dim], "zplus": (levels 1-2), "level": k, "style": float16 images in [-1, 1]
    or "index": rows of the style set, "pseudo_real": float16 P images (at most 256 px), "meta": {...}}``.
    float16 keeps images 1/2 the size at an error (< 5e-4) far below one 8-bit grey level.
    """
    if (style_images is None) == (index is None):
        raise ValueError("give exactly one of style_images (stored) or index (rows of the style set)")
    d = {"wplus": lvl.wplus.detach().float().cpu().contiguous(), "level": int(lvl.level),
         "pseudo_real": resize_for_loss(lvl.images.float(), min(MAX_STORED_SIZE, lvl.images.shape[-1])).half(),
         "meta": {**(meta or {}), **lvl.meta}}
    if lvl.zplus is not None:
        d["zplus"] = lvl.zplus.detach().float().cpu().contiguous()
    if index is not None:
        d["index"] = torch.as_tensor(index).long().cpu()
    else:
        d["style"] = style_images.detach().float().cpu().half()
    for k in ("loss_start", "loss_end"):
        if getattr(lvl, k) is not None:
            d[k] = getattr(lvl, k).float().cpu()
    return d


def pairs_figure(style_images: torch.Tensor, p1: torch.Tensor | None = None, p2: torch.Tensor | None = None,
                 p3: torch.Tensor | None = None, path: str | Path | None = None, *, profile: str = "mini",
                 style: str = "style", n: int = 8, scale: int | None = None) -> Path:
    """Paper Fig. 8: rows S, P1, P2, P3 for the first ``n`` style images (missing levels are left out).

    Default path ``figures/<profile>/fig08_pseudo_pairs_<style>.png`` (:func:`facestyle.viz.figure_path`, which
    honours ``$FACESTYLE_FIGURES``). Rows are resized to the style images' size; small images are upscaled
    (nearest) so a 64 px grid is readable.
    """
    from ..viz import figure_path, save_grid

    n = min(int(n), len(style_images))
    size = style_images.shape[-1]
    rows = [style_images[:n]] + [resize_for_loss(p[:n].float(), size) for p in (p1, p2, p3) if p is not None]
    grid = torch.cat([r.detach().float().cpu() for r in rows])
    if path is None:
        path = figure_path(profile, f"fig08_pseudo_pairs_{style}.png")
    if scale is None:
        scale = max(1, 128 // size)
    return save_grid(grid, path, nrow=n, scale=scale)


# --------------------------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------------------------

def _load_psp(x: Any, dev, what: str) -> nn.Module:
    if isinstance(x, nn.Module):
        return x.to(dev).eval()
    return hub.load_psp(x, dev).eval()


def _load_g(x: Any, dev, size: int, what: str) -> nn.Module:
    if isinstance(x, nn.Module):
        return x.to(dev).eval()
    return hub.load_generator(x, dev, expected_size=size).g_ema.eval()


def _parse_levels(levels) -> tuple[int, ...]:
    if isinstance(levels, str):
        levels = [int(v) for v in levels.replace(" ", "").split(",") if v]
    out = tuple(sorted({int(v) for v in levels}))
    if not out or any(v not in (1, 2, 3) for v in out):
        raise ValueError(f"levels must be a subset of 1,2,3 (paper Eq. 4-6), got {levels!r}")
    return out


def make_pairs(style: str = "cartoon", profile: str | Profile = "mini", levels: Sequence[int] | str = (1, 2, 3), *,
               style_images: torch.Tensor | None = None, style_dir: str | Path | None = None, n: int | None = None,
               g: Any = None, g_star: Any = None, zplus_psp: Any = None, wplus_psp: Any = None,
               lossmodels: LossModels | None = None, identity_ckpt: str | Path | None = None,
               iters: int | None = None, lr: float | None = None, batch: int = 32, level3_source: str = "style",
               out_dir: str | Path | None = None, device: Any = "auto", progress: bool = True,
               figure: bool | str | Path = True, n_figure: int = 8, precision: str = "fp32",
               schedule: str = "constant") -> PairsResult:
    """Build pseudo pairs of the chosen ``levels`` for a style set (paper section 3.2) and write them.

    Style set: ``style_images`` (a tensor in [-1, 1]), else the images of ``style_dir`` (sorted, as the finetune
    reads a folder), else the mini world's style set of ``style`` (its first ``n`` images when ``n`` is given).
    Models may be modules or hub names / paths: ``g`` (default ``profile.generator_ckpt``), ``g_star`` (the
    unconstrained finetune, required for level 2; default ``runs/<profile>-finetune-<style>-baseline/generator.pt``
    when it exists), ``zplus_psp`` / ``wplus_psp`` (``profile.zplus_encoder_ckpt`` / ``wplus_encoder_ckpt``),
    ``lossmodels`` (built for the profile, ``identity_ckpt`` overriding its identity network). ``iters`` / ``lr``
    default to ``profile.pair_opt_iters`` / ``pair_opt_lr``. Level 2 needs z1+, so it computes level 1 even when
    level 1 is not requested (it is then not written); ``level3_source="p2"`` likewise needs level 2.
    ``precision`` and ``schedule`` are level 2's (:func:`level2`).

    With ``out_dir`` (default ``runs/<profile>-pairs-<style>``; ``False`` writes nothing) each level k is written
    atomically as ``pairs_level{k}.pt`` (:func:`pair_file_dict`: ``index`` into the style set when it is the
    world's full set or a folder, the images themselves otherwise) and ``pairs_level{k}.png`` (P_k grid);
    level-2 batches are checkpointed under ``level2_batches/``. ``figure`` (True, False or a path) writes Fig. 8.
    """
    from ..runs import resolve_path

    prof = get_profile(profile) if not isinstance(profile, Profile) else profile
    lv = _parse_levels(levels)
    if level3_source not in LEVEL3_SOURCES:
        raise ValueError(f"unknown level3_source {level3_source!r}: choose one of {', '.join(LEVEL3_SOURCES)}")
    dev = get_device(device)
    g = _load_g(g if g is not None else prof.generator_ckpt, dev, prof.generator.size, "G")
    size = g.size

    # Style set, and how the pair files refer to it.
    index = None
    source = ""
    if style_images is not None:
        s_imgs, source = style_images.detach().float().cpu(), "<tensor>"
    elif style_dir is not None:
        from .finetune import load_style_folder

        s_imgs = load_style_folder(resolve_path(style_dir), size)
        index, source = torch.arange(len(s_imgs)), str(resolve_path(style_dir))
    else:
        check_style(style)
        from .. import world

        s_imgs, _ = world.style_dataset(style, size=size, n=n)
        source = f"world.style_dataset({style!r}, size={size}" + (f", n={n})" if n is not None else ")")
        if n is None:  # the exact set finetune uses when given no style folder
            index = torch.arange(len(s_imgs))
    if n is not None and (style_images is not None or style_dir is not None):
        s_imgs = s_imgs[:n]
        index = None if index is None else index[:n]

    need1 = 1 in lv or 2 in lv or (3 in lv and level3_source == "p2")
    need2 = 2 in lv or (3 in lv and level3_source == "p2")
    out: dict[int, PairLevel] = {}
    out_path = None
    if out_dir is not False:
        out_path = resolve_path(out_dir if out_dir is not None else f"runs/{prof.name}-pairs-{style}")

    if need1:
        zp = _load_psp(zplus_psp if zplus_psp is not None else prof.zplus_encoder_ckpt, dev, "E_z+")
        out[1] = level1(s_imgs, zp, g, batch=batch)
    if need2:
        if g_star is None:
            default = resolve_path(f"runs/{prof.name}-finetune-{style}-baseline/generator.pt")
            if not default.exists():
                raise ValueError(f"level 2 (Eq. 5) needs G*, the unconstrained finetune of G: train it with "
                                 f"`facestyle finetune --style {style} --variant baseline` or pass --g-star PATH")
            g_star = default
        gs = _load_g(g_star, dev, size, "G*")
        if lossmodels is None:
            lossmodels = LossModels.build(prof, dev, lpips=True, identity=prof.lambda_id > 0,
                                          identity_ckpt=identity_ckpt)
        lossmodels.to(dev)
        out[2] = level2(s_imgs, out[1].zplus, g, gs, lossmodels,
                        iters=int(iters if iters is not None else prof.pair_opt_iters),
                        lr=float(lr if lr is not None else prof.pair_opt_lr), batch=batch,
                        state_dir=None if out_path is None else out_path / "level2_batches", progress=progress,
                        precision=precision, schedule=schedule)
        out[2].meta["g_star"] = str(g_star) if not isinstance(g_star, nn.Module) else "<module>"
    if 3 in lv:
        wp = _load_psp(wplus_psp if wplus_psp is not None else prof.wplus_encoder_ckpt, dev, "E_w+")
        out[3] = level3(s_imgs, wp, g, level3_source=level3_source,
                        p2=out[2].images if level3_source == "p2" else None, batch=batch)
    levels_out = {k: out[k] for k in lv}

    res = PairsResult(levels=levels_out, out=out_path)
    if not ranks().main:  # every rank holds the same pairs; one writes them
        return res
    if out_path is not None:
        common = {"profile": prof.name, "style": style, "style_source": source, "n": len(s_imgs),
                  "generator_sha256": model_hash(g), "noise": "const"}
        from ..viz import save_grid

        for k, lvl in levels_out.items():
            d = pair_file_dict(lvl, index=index, style_images=None if index is not None else s_imgs, meta=common)
            res.files[k] = out_path / f"pairs_level{k}.pt"
            atomic_torch_save(d, res.files[k])
            res.grids[k] = save_grid(lvl.images[:64], out_path / f"pairs_level{k}.png", nrow=8,
                                     scale=max(1, 128 // size))
    if figure:
        res.figure = pairs_figure(s_imgs, *(out[k].images if k in levels_out else None for k in (1, 2, 3)),
                                  path=None if figure is True else resolve_path(figure), profile=prof.name,
                                  style=style, n=n_figure)
    return res

