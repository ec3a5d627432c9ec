"""Differentiable augmentation for the few-shot discriminator of the finetune (Zhao et al. 2020, DiffAugment).

The paper finetunes on 120-317 style images; a discriminator that sees so few images memorises them, and the
generator then learns whatever the memorised set has in common (issue "faithful stylization", hypothesis 4).
DiffAugment applies the *same kind* of random, differentiable transform to real and generated images before D
sees either, so D cannot tell them apart by the transform and G gets gradients through it. The policies are
the original paper's three: ``color`` (brightness, saturation, contrast), ``translation`` (shift by up to 1/8 of
the image, zero padded) and ``cutout`` (one zeroed square of half the side).

Used by :func:`facestyle.method.finetune.finetune` when ``FinetuneConfig.augment`` names policies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["POLICIES", "diff_augment", "parse_policy"]


def _color(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
    mean = x.mean([1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1), device=x.device)
    pad = F.pad(x, (sw, sw, sh, sh))
    # Each sample's window of the padded image, picked by index: rows first, then columns.
    iy = (torch.arange(h, device=x.device).view(1, h) + sh - dy).view(b, 1, h, 1).expand(b, c, h, pad.shape[-1])
    ix = (torch.arange(w, device=x.device).view(1, w) + sw - dx).view(b, 1, 1, w).expand(b, c, h, w)
    return pad.gather(2, iy).gather(3, ix)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gy = torch.arange(h, device=x.device).view(1, h, 1)
    gx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((gy - cy).abs() < (ch + 1) // 2) & ((gx - cx).abs() < (cw + 1) // 2)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"color": _color, "translation": _translation, "cutout": _cutout}


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """``"color,translation"`` -> ``("color", "translation")``; unknown names raise with the valid list."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown augmentation policy {bad}: choose from {', '.join(POLICIES)}")
    return names


def diff_augment(x: torch.Tensor, policy: str | tuple[str, ...] | None) -> torch.Tensor:
    """Apply each named policy with fresh random parameters per image; differentiable with respect to ``x``."""
    for name in (parse_policy(policy) if isinstance(policy, (str, type(None))) else policy):
        x = POLICIES[name](x)
    return x.contiguous()
