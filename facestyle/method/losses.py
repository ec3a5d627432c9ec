"""The finetuning objective of the paper (section 3.1, Eq. 1-3) as plain functions over images and predictions.

* :func:`semantic_loss` - Eq. 1, semantic preservation: ``LPIPS(G(z), G'(z)) + lambda_ID * ID(G(z), G'(z))``.
* :func:`paired_loss` - Eq. 2, pseudo-paired supervision: ``LPIPS(G'(w+), S)``.
* :func:`adversarial_g_loss` / :func:`adversarial_d_loss` - the ``L_adv`` of Eq. 3, StyleGAN2's non-saturating
  logistic loss; :func:`r1_penalty` (from :mod:`facestyle.nn.train_ops`, shared with the mini pretraining) is
  its lazy R1 term.
* :func:`total_loss` - Eq. 3: ``L_adv + lambda_sem * L_sem + lambda_paired * L_paired``.
* :class:`LossModels` - the frozen LPIPS (training net, ``vgg``) and identity networks, built once per profile.
* :func:`semantic_distance` - Eq. 1 evaluated without gradients over a fixed set of z: the explicit measure of
  "how far G' has drifted from G" used by tests, logs and figures.

Every loss is a mean over the batch; the distances themselves come from :mod:`facestyle.nn.perceptual`, so the
images are resized to the profile's ``loss_size`` (256 for ffhq, 64 for mini) exactly as the paper resizes them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import Profile, get_profile
from ..hub import build_identity, build_train_lpips
from ..nn.perceptual import identity_distance, lpips_distance
from ..nn.train_ops import r1_penalty  # the one R1 implementation in the repo (StyleGAN2 form)

__all__ = ["LossModels", "semantic_loss", "paired_loss", "adversarial_g_loss", "adversarial_d_loss",
           "r1_penalty", "total_loss", "semantic_distance"]


@dataclass
class LossModels:
    """The frozen networks behind Eq. 1 and Eq. 2, built once and shared by every caller.

    ``lpips`` is the profile's training LPIPS (``lpips_train_net``, VGG as in the paper); ``identity`` the face
    identity embedding (facenet for ffhq, the mini IdentityNet for mini). Either may be ``None`` when a caller
    only needs the other (e.g. the +PC variant needs no identity network); using a missing one raises.
    ``size`` and ``lambda_id`` are copied from the profile so the call sites need no profile.
    """

    lpips: nn.Module | None
    identity: nn.Module | None
    size: int
    lambda_id: float
    # The LPIPS terms' own resolution when it differs from ``size`` (the profile's or the finetune's
    # ``lpips_size``): AlexNet sees a 64 px portrait's pose and shape only when it is resized to about 256 px
    # (docs/faithful-stylization.md), while the mini identity net must stay at the 64 px it was trained on.
    lpips_size: int | None = None

    @property
    def lpips_at(self) -> int:
        return int(self.lpips_size or self.size)

    @classmethod
    def build(cls, profile: str | Profile = "mini", device: Any = "auto", *, lpips: bool = True,
              identity: bool = True, identity_ckpt: str | os.PathLike | None = None,
              lpips_weights: str | os.PathLike | None = None, download: bool | None = None) -> "LossModels":
        """Build the networks of ``profile``.

        ``identity_ckpt`` (a path or hub name) overrides ``profile.identity_ckpt`` - tests pass a freshly saved
        untrained IdentityNet this way; ``lpips_weights`` overrides the torchvision backbone file (ffhq only).
        ``lpips=False`` / ``identity=False`` skip a network that will not be used (construction of the VGG
        LPIPS alone costs several seconds on a CPU).
        """
        prof = get_profile(profile) if not isinstance(profile, Profile) else profile
        lp = build_train_lpips(prof, device, weights=lpips_weights, download=download) if lpips else None
        ident = build_identity(prof, device, ckpt=identity_ckpt, download=download) if identity else None
        return cls(lpips=lp, identity=ident, size=int(prof.loss_size), lambda_id=float(prof.lambda_id),
                   lpips_size=prof.lpips_size)

    def to(self, device) -> "LossModels":
        for name in ("lpips", "identity"):
            m = getattr(self, name)
            if m is not None:
                setattr(self, name, m.to(device))
        return self

    def need(self, lpips: bool = False, identity: bool = False) -> "LossModels":
        """Raise a clear error when a required network was not built; returns ``self`` for chaining."""
        missing = [n for n, want in (("lpips", lpips), ("identity", identity)) if want and getattr(self, n) is None]
        if missing:
            raise ValueError(f"these LossModels were built without {' and '.join(missing)}; build them with "
                             f"LossModels.build(profile, {', '.join(f'{m}=True' for m in missing)})")
        return self


def semantic_loss(img_a: torch.Tensor, img_b: torch.Tensor, lpips_model: nn.Module, id_model: nn.Module | None,
                  lambda_id: float, size: int | None, *, lpips_size: int | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Paper Eq. 1: ``L_sem(G(z), G'(z)) = L_LPIPS(G(z), G'(z)) + lambda_ID * L_ID(G(z), G'(z))``.

    ``img_a`` = G(z) from the frozen pretrained generator, ``img_b`` = G'(z) from the generator being finetuned
    (same z and the same noise maps, so any difference is drift of G'); both in [-1, 1], resized to ``size``
    (the profile's ``loss_size``) before either distance, or to ``lpips_size`` for the LPIPS when it is given.
    ``L_ID`` is ``1 - cos`` of identity embeddings.
    With ``id_model=None`` or ``lambda_id=0`` the ID term is left out (and reported as 0).

    Returns ``(loss, parts)``: the batch-mean scalar and ``{"lpips": ..., "id": ...}`` (batch means, still
    attached to the graph; call ``.item()`` to log them).
    """
    l_lpips = lpips_distance(img_a, img_b, lpips_model, lpips_size or size).mean()
    if id_model is not None and lambda_id:
        l_id = identity_distance(img_a, img_b, id_model, size).mean()
    else:
        l_id = l_lpips.new_zeros(())
    return l_lpips + float(lambda_id) * l_id, {"lpips": l_lpips, "id": l_id}


def paired_loss(g_prime_out: torch.Tensor, style_images: torch.Tensor, lpips_model: nn.Module,
                size: int | None) -> torch.Tensor:
    """Paper Eq. 2: ``L_paired = L_LPIPS(G'(w+), S)`` over a batch of pseudo pairs (batch mean).

    ``g_prime_out`` is G' applied to the pairs' W+ codes, ``style_images`` the matching style images S, both in
    [-1, 1]; they are resized to ``size`` first (the target may be stored at another resolution).
    """
    if g_prime_out.shape[0] != style_images.shape[0]:
        raise ValueError(f"paired_loss needs one style image per output: {g_prime_out.shape[0]} outputs vs "
                         f"{style_images.shape[0]} style images")
    return lpips_distance(g_prime_out, style_images, lpips_model, size).mean()


def adversarial_g_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """Generator side of ``L_adv`` (Eq. 3): StyleGAN2's non-saturating loss ``softplus(-D(G'(z)))``, batch mean."""
    return F.softplus(-fake_pred).mean()


def adversarial_d_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """Discriminator side of ``L_adv``: ``softplus(-D(S)) + softplus(D(G'(z)))``, batch means.

    R1 on real style images is added lazily by the trainer with :func:`r1_penalty` (StyleGAN2 recipe).
    """
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def total_loss(l_adv: torch.Tensor, l_sem: torch.Tensor | None = None, l_paired: torch.Tensor | None = None, *,
               lambda_sem: float = 1.0, lambda_paired: float = 1.0) -> dict[str, torch.Tensor]:
    """Paper Eq. 3: ``L_total = L_adv + lambda_sem * L_sem + lambda_paired * L_paired``.

    A term passed as ``None`` is absent (the ablation variants of Table 4: baseline = ``L_adv`` only, +SC adds
    ``L_sem``, +PC adds ``L_paired``). Returns ``{"total", "adv", ["sem"], ["paired"]}``; ``total`` is the
    tensor to back-propagate, the others are the unweighted terms.
    """
    parts = {"adv": l_adv}
    total = l_adv
    if l_sem is not None:
        total = total + float(lambda_sem) * l_sem
        parts["sem"] = l_sem
    if l_paired is not None:
        total = total + float(lambda_paired) * l_paired
        parts["paired"] = l_paired
    return {"total": total, **parts}


@torch.no_grad()
def semantic_distance(g: nn.Module, g_prime: nn.Module, z: torch.Tensor, models: LossModels, *, batch: int = 16,
                      noise_mode: str = "const") -> dict[str, float]:
    """Eq. 1 between ``G(z)`` and ``G'(z)`` averaged over the given z, without gradients.

    This is the repo's explicit definition of "the semantic distance between G and G'": for a fixed set of
    z, both generators render with the same (default: stored constant) noise, and the mean LPIPS (training
    net), mean ID distance and their Eq. 1 combination are reported. 0 for ``G' = G``.
    """
    models.need(lpips=True)
    dev = next(g_prime.parameters()).device
    tot = {"lpips": 0.0, "id": 0.0, "sem": 0.0}
    for i in range(0, len(z), batch):
        zb = z[i:i + batch].to(dev)
        a = g.synthesis(g.mapping(zb), noise_mode=noise_mode)
        b = g_prime.synthesis(g_prime.mapping(zb), noise_mode=noise_mode)
        loss, parts = semantic_loss(a, b, models.lpips, models.identity, models.lambda_id, models.size,
                                    lpips_size=models.lpips_size)
        n = len(zb)
        tot["sem"] += loss.item() * n
        tot["lpips"] += parts["lpips"].item() * n
        tot["id"] += parts["id"].item() * n
    return {k: v / len(z) for k, v in tot.items()}
