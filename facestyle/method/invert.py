"""Reference-image embedding into the V space of the style generator G' (paper section 3.3, appendix 6.3).

The paper embeds a reference portrait "into the V space of generator G' using the GAN inversion method of [9]
(UI2I-style), converting it to W space and then replicating it into W+" (section 3.3). docs/reference.md section 3
lists what that method is; this module implements it without the public code's defects:

* :func:`sefa_basis` - V space: the right singular vectors of the stacked modulation weights of G's conv layers
  (closed-form factorisation, "SeFa"). ``E`` is ``[dim, dim]`` with **one basis vector per row**, ordered by
  decreasing singular value, so ``w = v @ E = sum_k v_k e_k`` and ``v = w @ E^T`` (E is orthonormal).
* :func:`invert_v` - optimise ``v`` (one row per image) and the per-layer noise maps so that
  ``G'.synthesis(v @ E, noise)`` reproduces the image: LPIPS (the profile's training net, VGG in the paper) +
  ``1e5`` x StyleGAN2's multi-scale noise autocorrelation regulariser, Adam with the StyleGAN2 projector's cosine
  learning-rate ramp (peak 0.1), 1000 steps, noise maps renormalised after every step, targets and outputs resized
  to the profile's loss size (256 px for ffhq). ``w = v @ E`` is a *single* W code fed straight to the synthesis
  network (every W+ row equal): it is never passed through the mapping network again.
* :class:`EmbeddingCache` - "once a reference image has been encoded, it can be continuously utilized" (appendix
  6.1): embeddings live on disk, keyed by the image, the generator's weights and the inversion settings.

Choices (the paper and [9] leave them open or get them wrong; all recorded in every result's ``settings``):

* **Basis layout.** UI2I's ``closed_form_factorization.py`` keeps ``torch.svd(W).V`` (singular vectors as
  *columns*) and its projector computes ``v @ V``, i.e. it parametrises W over the *rows* of V, which are not the
  SeFa directions; its filter (``"to_rgbs" not in key``) also lets ``to_rgb1``'s modulation into the stack. Both
  bases are orthonormal, so they span the same W; the difference is only which axes Adam's per-coordinate step
  sizes follow. facestyle uses the SeFa directions themselves (conv layers only) by default;
  ``sefa_basis(g, ui2i_compat=True)`` reproduces UI2I's factor file exactly.
* **Start.** ``v0 = w_avg @ E^T`` (the mean latent of G' in V coordinates; UI2I starts from ``v ~ 0``, i.e.
  ``w = 0``, far outside the distribution of W).
* **Latent noise.** The StyleGAN2 projector perturbs the code with Gaussian noise of strength
  ``0.05 * std(W) * max(0, 1 - t/0.75)^2`` early in the optimisation to escape poor local minima; UI2I computes
  that noise but (a bug) never uses it. facestyle applies it (to ``v``; E is orthonormal, so it is the same
  isotropic noise in W); ``latent_noise=0`` turns it off.
* **Batching.** Images are optimised together, but every term is per sample (the reference's noise regulariser
  and renormalisation pool statistics over the whole batch): the per-sample losses are summed, so each image's
  gradient is its own and Adam, being per-coordinate, keeps the samples independent. Each image's random draws
  (initial noise maps, latent noise) come from its own generator seeded from the image's content, so an
  embedding does not depend on which other images shared its batch - which is what makes per-image caching sound.
* **G' frozen.** Only ``v`` and the noise maps receive gradients (UI2I's mapping network "frozen" by a flag that
  did not freeze it is one of the listed defects; here the mapping network is not even on the path).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from .. import hub
from ..distributed import gather, merge_by_index, ranks, shard
from ..nn.perceptual import lpips_features, lpips_to_features, resize_for_loss
from ..utils import atomic_torch_save

SPACES = ("v", "w", "wplus", "zplus")

__all__ = ["SPACES", "sefa_basis", "conv_modulation_weights", "noise_regularize", "noise_normalize_", "get_lr",
           "InvertSettings", "InversionResult", "invert_v", "image_digest", "tensor_digest", "model_hash",
           "EmbeddingCache", "load_images"]


# --------------------------------------------------------------------------------------------------------------
# V space: closed-form factorisation of the modulation weights
# --------------------------------------------------------------------------------------------------------------

def conv_modulation_weights(g: nn.Module, *, ui2i_compat: bool = False) -> list[tuple[str, torch.Tensor]]:
    """``(name, weight [in_channels, dim])`` of the style modulations SeFa factorises, in layer order.

    Default: the modulated 3x3 conv layers only (``conv1`` and every ``convs.i``), not the ToRGB layers
    (docs/reference.md section 3). ``ui2i_compat`` selects what UI2I's key filter selects instead: every
    ``*modulation.weight`` whose key does not contain ``to_rgbs`` - which includes ``to_rgb1``.
    """
    out = []
    for name, p in g.named_parameters():
        if not (name.endswith("modulation.weight")):
            continue
        if ui2i_compat:
            keep = "to_rgbs" not in name
        else:
            keep = name.startswith("conv1.") or name.startswith("convs.")
        if keep:
            out.append((name, p))
    if not out:
        raise ValueError("no modulation weights found: sefa_basis needs a StyleGAN2 generator")
    return out


@torch.no_grad()
def sefa_basis(g: nn.Module, *, ui2i_compat: bool = False) -> torch.Tensor:
    """The V-space basis ``E`` ``[dim, dim]`` of generator ``g`` (paper section 3.3 via UI2I [9]; SeFa, Shen & Zhou).

    Stack the (stored) modulation weights of the conv layers, ``A = [A_conv1; A_convs.0; ...]`` of shape
    ``[sum of in-channels, dim]``, and take its right singular vectors: ``A = U S V^T``. Row ``k`` of ``E = V^T``
    is the ``k``-th SeFa direction (decreasing singular value, i.e. the directions the styles respond to most);
    ``E`` is orthonormal, ``E E^T = I``. Equalised-lr run-time scales are equal for all modulations (same
    ``dim``, ``lr_mul = 1``), so using the stored weights, as SeFa does, changes no singular vector.

    ``ui2i_compat=True`` returns UI2I's factor file instead: ``V`` itself (columns = directions) from the stack
    that also includes ``to_rgb1`` (see the module docstring); ``w = v @ E`` then follows their projector.
    """
    mats = [p.detach().float().cpu() for _, p in conv_modulation_weights(g, ui2i_compat=ui2i_compat)]
    a = torch.cat(mats, 0)
    # full_matrices: a complete dim x dim basis even if the stack had fewer rows than dim.
    _, _, vh = torch.linalg.svd(a.double(), full_matrices=True)
    e = vh.float()
    if ui2i_compat:
        e = e.t().contiguous()
    return e.to(next(g.parameters()).device)


# --------------------------------------------------------------------------------------------------------------
# the StyleGAN2 projector's pieces, per sample
# --------------------------------------------------------------------------------------------------------------

def noise_regularize(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's noise regulariser per sample, ``[B]`` (Karras et al. 2020, appendix D; docs/reference.md section 3).

    For every noise map and each of its 2x2-average-pooled versions down to 8x8: the squared mean of the map times
    itself shifted by one pixel horizontally, plus the same vertically - the lag-1 autocorrelation, which is 0 for
    white noise and grows when the optimiser hides image content in the noise. Means are taken per sample
    (the reference pools the whole batch), so a sample's regulariser depends on its own maps only.
    """
    total = None
    for noise in noises:
        size = noise.shape[2]
        while True:
            term = ((noise * torch.roll(noise, shifts=1, dims=3)).mean((1, 2, 3)).pow(2)
                    + (noise * torch.roll(noise, shifts=1, dims=2)).mean((1, 2, 3)).pow(2))
            total = term if total is None else total + term
            if size <= 8:
                break
            noise = noise.reshape(noise.shape[0], 1, size // 2, 2, size // 2, 2).mean((3, 5))
            size //= 2
    return total


@torch.no_grad()
def noise_normalize_(noises: Sequence[torch.Tensor]) -> None:
    """Renormalise every noise map to zero mean, unit std per sample, in place (done after each step, as in the
    StyleGAN2 projector): keeps the maps Gaussian-looking so they cannot drift into carrying the image."""
    for noise in noises:
        mean = noise.mean((1, 2, 3), keepdim=True)
        std = noise.std((1, 2, 3), keepdim=True)
        noise.sub_(mean).div_(std)


def get_lr(t: float, initial_lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """The StyleGAN2 projector's learning-rate schedule at progress ``t`` in [0, 1): a linear warm-up over the first
    ``rampup`` of the run, then a cosine ramp-down over the last ``rampdown`` (peak ``initial_lr``, 0.1 in [9])."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / rampup)
    return initial_lr * ramp


# --------------------------------------------------------------------------------------------------------------
# hashing (images, tensors, models)
# --------------------------------------------------------------------------------------------------------------

def _quantise(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float image -> uint8, as it would be saved to PNG (sub-quantum differences do not change a key)."""
    return ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def image_digest(image: torch.Tensor) -> str:
    """sha256 of one image ``[3, H, W]`` in [-1, 1], quantised to uint8, plus its shape."""
    q = _quantise(image).contiguous()
    h = hashlib.sha256(repr(tuple(q.shape)).encode())
    h.update(q.numpy().tobytes())
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    # Through uint8 so every dtype (bfloat16 included) hashes by its exact bytes.
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and exact bytes."""
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(_tensor_bytes(t))
    return h.hexdigest()


# module -> (signature of its tensors' identities and versions, digest). Weak keys: no model is kept alive.
_MODEL_HASHES: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def model_hash(model: nn.Module) -> str:
    """sha256 over a model's state dict (sorted keys, dtypes, shapes, bytes), memoised per module.

    The memo is checked against each tensor's storage pointer and autograd version counter, which every in-place
    change (optimiser steps, ``load_state_dict``, ``copy_``) bumps, and against a float64 sum of each tensor,
    because writes through ``.data`` bypass the version counter. A model whose weights change is re-hashed; an
    unchanged one costs one reduction per tensor (milliseconds even at 1024 px) instead of hashing every byte.
    """
    sd = model.state_dict(keep_vars=True)
    with torch.no_grad():
        sig = tuple((k, v.data_ptr(), v._version, tuple(v.shape),
                     float(v.detach().sum(dtype=torch.float64)) if v.is_floating_point() else
                     int(v.detach().long().sum()) if v.numel() else 0)
                    for k, v in sd.items())
    hit = _MODEL_HASHES.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k].detach()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(_tensor_bytes(v))
    digest = h.hexdigest()
    _MODEL_HASHES[model] = (sig, digest)
    return digest


# --------------------------------------------------------------------------------------------------------------
# inversion
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InvertSettings:
    """Everything that changes an embedding (part of the cache key). Defaults: UI2I / StyleGAN2 projector [9]."""

    iters: int = 1000
    lr: float = 0.1
    noise_reg: float = 1e5
    size: int | None = 256  # loss resolution; the profile's loss_size (256 ffhq, 64 mini)
    latent_noise: float = 0.05
    noise_ramp: float = 0.75
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    seed: int = 0
    ui2i_basis: bool = False
    # The latent space optimised (appendix 6.3, Fig. 15): "v" (the paper's choice), "w" (one code, no basis),
    # "wplus" (one code per synthesis row) or "zplus" (one z per row, through G''s mapping network).
    space: str = "v"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class InversionResult:
    """Embeddings of a batch of images in G''s V space.

    All tensors live on the CPU: ``v`` ``[B, dim]`` (coordinates over :func:`sefa_basis` rows), ``w = v @ E``
    ``[B, dim]`` (a single W code per image: feed it as ``G'.synthesis(w)`` or repeat it into W+, never through
    the mapping network), ``noises`` (``num_layers`` maps ``[B, 1, H, W]``), per-sample LPIPS at the start and
    at the end, and the settings.
    """

    v: torch.Tensor
    w: torch.Tensor
    noises: list
    lpips: torch.Tensor
    lpips_start: torch.Tensor
    settings: dict = field(default_factory=dict)

    def wplus(self, n_latent: int) -> torch.Tensor:
        """``w`` replicated into W+ ``[B, n_latent, dim]`` (paper section 3.3); W+ codes as they are."""
        return self.w if self.w.ndim == 3 else self.w.unsqueeze(1).repeat(1, n_latent, 1)

    def select(self, idx: Sequence[int]) -> "InversionResult":
        idx = list(idx)
        return InversionResult(v=self.v[idx], w=self.w[idx], noises=[n[idx] for n in self.noises],
                               lpips=self.lpips[idx], lpips_start=self.lpips_start[idx], settings=dict(self.settings))

    @staticmethod
    def cat(parts: Sequence["InversionResult"]) -> "InversionResult":
        if not parts:
            raise ValueError("nothing to concatenate")
        return InversionResult(v=torch.cat([p.v for p in parts]), w=torch.cat([p.w for p in parts]),
                               noises=[torch.cat(ns) for ns in zip(*[p.noises for p in parts])],
                               lpips=torch.cat([p.lpips for p in parts]),
                               lpips_start=torch.cat([p.lpips_start for p in parts]), settings=dict(parts[0].settings))


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Turn off parameter gradients of ``modules`` for the block and restore the caller's flags afterwards."""
    saved = [(p, p.requires_grad) for m in modules if m is not None for p in m.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _lpips_module(lpips: Any) -> nn.Module:
    """Accept an lpips module or a :class:`~facestyle.method.losses.LossModels`."""
    model = getattr(lpips, "lpips", lpips) if not isinstance(lpips, nn.Module) else lpips
    if model is None or not isinstance(model, nn.Module):
        raise ValueError("invert_v needs an LPIPS network: pass LossModels.build(profile) or build_lpips(...)")
    return model


def _settings_from(settings: InvertSettings | None, overrides: dict) -> InvertSettings:
    base = settings or InvertSettings()
    clean = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(clean) - {f.name for f in dataclasses.fields(InvertSettings)}
    if unknown:
        raise TypeError(f"unknown inversion setting(s) {sorted(unknown)}")
    return dataclasses.replace(base, **clean)


def _sample_seed(image: torch.Tensor, seed: int) -> int:
    return (int(image_digest(image)[:15], 16) + int(seed)) % (2 ** 63)


@torch.no_grad()
def _w_stats(g: nn.Module, n: int = 10000) -> tuple[torch.Tensor, float]:
    """Mean latent ``[dim]`` of G' and the StyleGAN2 projector's ``latent_std = sqrt(E ||w - w_avg||^2)``.

    Drawn from a fixed-seed generator so every call (and every cache key) sees the same start.
    """
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(123)).to(g.device)
    w = g.mapping(z)
    mean = w.mean(0)
    std = float(((w - mean).pow(2).sum() / n) ** 0.5)
    return mean, std


def invert_v(images: torch.Tensor, g: nn.Module, lpips: Any, *, iters: int | None = None, lr: float | None = None,
             noise_reg: float | None = None, size: int | None = None, batch: int = 4,
             latent_noise: float | None = None, settings: InvertSettings | None = None,
             basis: torch.Tensor | None = None, w_avg: torch.Tensor | None = None,
             seeds: Sequence[int] | None = None, progress: bool = False, space: str | None = None
             ) -> InversionResult:
    """Embed ``images`` (``[N, 3, H, W]`` in [-1, 1]) into the V space of ``g`` (= G'); paper section 3.3 / [9].

    ``space`` (default ``settings.space``, ``"v"``) picks another latent space for appendix 6.3's study (Fig. 15):
    ``"w"`` optimises one W code directly (the V parametrisation with an identity basis), ``"wplus"`` one code per
    synthesis row (start: the mean latent in every row), ``"zplus"`` one z per row read through G''s mapping network
    (start: z = 0); the schedule, noise maps and loss are the same. ``w`` of the result is then ``[N, n_latent,
    dim]`` for the two row-wise spaces.

    Minimises, per image, ``LPIPS(G'.synthesis(v @ E, noise), x) + noise_reg * noise_regularize(noise)`` over
    ``v`` and the noise maps, with the StyleGAN2 projector's schedule (:func:`get_lr`), latent noise and noise
    renormalisation (see the module docstring). ``lpips`` is the profile's training LPIPS (``LossModels`` or an
    lpips module); ``size`` the loss resolution (targets are resized once, outputs every step). Keyword values
    override ``settings`` (an :class:`InvertSettings`, default UI2I's numbers). ``basis`` / ``w_avg`` may be passed
    to skip recomputing them; ``seeds`` (one per image) default to a hash of each image.
    """
    s = _settings_from(settings, dict(iters=iters, lr=lr, noise_reg=noise_reg, size=size,
                                      latent_noise=latent_noise, space=space))
    if s.space not in SPACES:
        raise ValueError(f"unknown latent space {s.space!r}: choose one of {', '.join(SPACES)}")
    model = _lpips_module(lpips)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] in [-1, 1], got {list(images.shape)}")
    dev = g.device
    if s.space == "v":
        e = (basis if basis is not None else sefa_basis(g, ui2i_compat=s.ui2i_basis)).to(dev)
    else:  # W, W+, Z+ are optimised in their own coordinates
        e = torch.eye(g.style_dim, device=dev)
    mean, w_std = _w_stats(g)
    if w_avg is not None:
        mean = w_avg.reshape(-1).to(dev)
    seeds = list(seeds) if seeds is not None else [_sample_seed(x, s.seed) for x in images]
    if len(seeds) != len(images):
        raise ValueError(f"{len(seeds)} seeds for {len(images)} images")

    from ..utils import progress_bar as tqdm

    n_batches = (len(images) + batch - 1) // batch
    bar = tqdm(total=n_batches * s.iters, disable=not progress, desc="invert V")
    parts = []
    try:
        with frozen(g, model):
            for b0 in range(0, len(images), batch):
                parts.append(_invert_batch(images[b0:b0 + batch], g, model, e, mean, w_std, s,
                                           seeds[b0:b0 + batch], bar))
    finally:
        bar.close()
    out = InversionResult.cat(parts)
    out.settings = {**s.as_dict(), "lpips_net": getattr(model, "net_name", "?"),
                    "lpips_backbone": getattr(model, "backbone_mode", "?")}
    return out


def _invert_batch(x: torch.Tensor, g: nn.Module, lpips: nn.Module, e: torch.Tensor, mean: torch.Tensor,
                  w_std: float, s: InvertSettings, seeds: Sequence[int], bar) -> InversionResult:
    dev = g.device
    b = len(x)
    gens = [torch.Generator().manual_seed(int(sd)) for sd in seeds]
    # Targets resized once (docs/reference.md section 3: "targets resized to 256").
    target = resize_for_loss(x.detach().float().to(dev), s.size)
    # Start at the mean latent in V coordinates: v0 = w_avg @ E^T (E orthonormal, so v0 @ E = w_avg); the
    # row-wise spaces start at the mean latent in every row (W+) or at z = 0 (Z+).
    n, d = int(g.n_latent), int(g.style_dim)
    if s.space == "zplus":
        v0 = torch.zeros(b, n, d, device=dev)
        w_std = d ** 0.5  # the latent-noise scale of z ~ N(0, I), as w_std is W's
    elif s.space == "wplus":
        v0 = mean.reshape(1, 1, -1).repeat(b, n, 1)
    else:
        v0 = (mean.reshape(1, -1) @ e.t()).repeat(b, 1)
    v = v0.detach().clone().requires_grad_(True)

    def decode(code: torch.Tensor) -> torch.Tensor:
        if s.space == "zplus":
            return g.mapping(code.reshape(-1, d)).view(code.shape)
        return code @ e
    noises = []
    for i in range(g.num_layers):
        r = 2 ** ((i + 5) // 2)
        maps = torch.cat([torch.randn(1, 1, r, r, generator=gen) for gen in gens]).to(dev)
        noises.append(maps.requires_grad_(True))
    opt = torch.optim.Adam([v] + noises, lr=s.lr)

    target_feats = lpips_features(target, lpips, s.size)  # fixed: computed once, not at every step
    lp_start = None
    for i in range(s.iters):
        t = i / s.iters
        opt.param_groups[0]["lr"] = get_lr(t, s.lr, s.lr_rampdown, s.lr_rampup)
        strength = w_std * s.latent_noise * max(0.0, 1.0 - t / s.noise_ramp) ** 2
        v_in = v
        if strength > 0:
            jitter = torch.stack([torch.randn(v.shape[1:], generator=gen) for gen in gens]).to(dev)
            v_in = v + strength * jitter
        img = g.synthesis(decode(v_in), noise=noises)  # W or W+ codes straight into synthesis
        lp = lpips_to_features(img, target_feats, lpips, s.size)
        loss = (lp + s.noise_reg * noise_regularize(noises)).sum()  # per-sample terms summed: no interaction
        if lp_start is None:
            lp_start = lp.detach()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        noise_normalize_(noises)
        bar.update(1)
        if i % 10 == 0 or i == s.iters - 1:
            bar.set_postfix(lpips=f"{lp.mean().item():.4f}", lr=f"{opt.param_groups[0]['lr']:.4f}")

    with torch.no_grad():
        w = decode(v.detach())
        img = g.synthesis(w, noise=[n.detach() for n in noises])
        lp_end = lpips_to_features(img, target_feats, lpips, s.size)
    if lp_start is None:  # iters == 0
        lp_start = lp_end
    return InversionResult(v=v.detach().cpu(), w=w.cpu(), noises=[n.detach().cpu() for n in noises],
                           lpips=lp_end.cpu(), lpips_start=lp_start.cpu())


# --------------------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------------------

class EmbeddingCache:
    """Reference embeddings on disk (appendix 6.1: an encoded reference "can be continuously utilized").

    One file per image under ``root`` (default ``hub.home()/embeddings``):
    ``<root>/<model hash[:16]>/<key>.pt``, where ``key = sha256(image digest | model hash | lpips hash |
    settings)``: the image quantised to uint8 (:func:`image_digest`), the sha256 of G''s state dict
    (:func:`model_hash`, memoised), the LPIPS network's weights and every :class:`InvertSettings` field. Files are
    written atomically. ``hits`` / ``misses`` / ``inverted`` count what :meth:`get_or_invert` did.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else hub.home() / "embeddings"
        self.hits = 0
        self.misses = 0
        self.inverted = 0

    def key(self, image: torch.Tensor, g_hash: str, lpips_hash: str, settings: InvertSettings) -> str:
        blob = json.dumps({"image": image_digest(image), "model": g_hash, "lpips": lpips_hash,
                           "settings": settings.as_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, key: str, g_hash: str) -> Path:
        return self.root / g_hash[:16] / f"{key}.pt"

    def _load(self, path: Path) -> InversionResult | None:
        if not path.exists():
            return None
        try:
            obj = hub.safe_load(path)
            return InversionResult(v=obj["v"], w=obj["w"], noises=list(obj["noises"]), lpips=obj["lpips"],
                                   lpips_start=obj["lpips_start"], settings=dict(obj["settings"]))
        except (hub.CheckpointError, KeyError, TypeError):
            return None  # a damaged entry is a miss; it is overwritten below

    def get_or_invert(self, images: torch.Tensor, g: nn.Module, lpips: Any, *, batch: int = 4,
                      settings: InvertSettings | None = None, progress: bool = False,
                      **overrides) -> InversionResult:
        """Embeddings of all ``images`` (in order): cached ones are loaded, only the misses are inverted
        (:func:`invert_v`, batched) and stored. Keyword overrides are :class:`InvertSettings` fields."""
        s = _settings_from(settings, overrides)
        model = _lpips_module(lpips)
        g_hash, l_hash = model_hash(g), model_hash(model)
        keys = [self.key(x, g_hash, l_hash, s) for x in images]
        found: dict[int, InversionResult] = {}
        for i, k in enumerate(keys):
            r = self._load(self.path(k, g_hash))
            if r is not None:
                found[i] = r
        miss = [i for i in range(len(images)) if i not in found]
        self.hits += len(found)
        self.misses += len(miss)
        if miss:
            # Under torchrun each rank inverts every N-th batch of the misses, the batches one process would make,
            # and the ranks swap results (facestyle.distributed); each rank stores the entries it made.
            r = ranks()
            chunks = [miss[a:a + batch] for a in range(0, len(miss), batch)]
            mine = [i for c in shard(len(chunks), r) for i in chunks[c]]
            made: dict[int, InversionResult] = {}
            if mine:
                new = invert_v(images[mine], g, model, batch=batch, settings=s, progress=progress and r.main)
                for j, i in enumerate(mine):
                    one = new.select([j])
                    made[i] = one
                    atomic_torch_save({"v": one.v, "w": one.w, "noises": one.noises, "lpips": one.lpips,
                                       "lpips_start": one.lpips_start, "settings": one.settings,
                                       "image_sha256": image_digest(images[i]), "model_sha256": g_hash},
                                      self.path(keys[i], g_hash))
            if r.active:
                made = merge_by_index(gather(made, r))
            self.inverted += len(miss)
            found.update(made)
        return InversionResult.cat([found[i] for i in range(len(images))])


# --------------------------------------------------------------------------------------------------------------
# reference image files (`facestyle embed-ref IMAGES...`, facestyle.cli.invert)
# --------------------------------------------------------------------------------------------------------------

def load_images(paths: Sequence[str | Path], size: int) -> torch.Tensor:
    """Reference image files -> ``[N, 3, size, size]`` in [-1, 1] (the conversion of :mod:`facestyle.images`)."""
    from ..images import load_files

    return load_files(paths, size, what="reference image")
