"""The per-domain looks of the mini world: one :class:`Look` per domain (geometry multipliers, palette and
treatment), the :data:`LOOKS` table, the per-domain noise salt and the palette-to-tensor helpers.

The real domain has soft photographic shading from the light direction, skin texture and a slight blur; the five
styles redraw the same content: cartoon (bold outlines, cel colours, big round head, simple nose), anime (huge
highlighted eyes, tiny nose, small mouth, pointed chin, saturated hair), fantasy (long face, pointed ears,
teal/purple glow, sparkles), illustration (pastel flat colour, hatching in shadow, thin lines), impasto
(quantised colour and directional brush strokes, warm palette).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Look:
    """How one domain draws a content vector (geometry multipliers, palette, treatment)."""

    name: str
    # geometry
    head_a: float = 1.0  # face half-width multiplier
    head_b: float = 1.0  # face half-height multiplier
    jaw_lo: float = 0.0  # jaw factor mapped to [jaw_lo, jaw_hi]
    jaw_hi: float = 1.0
    chin: float = 0.0  # extra chin taper (pointed chin)
    eye_scale: float = 1.0
    eye_aspect: float = 0.52  # eye height / width
    eye_spread: float = 1.0
    eye_dy: float = 0.0
    iris_x: float = 0.58  # iris half-width / eye half-width
    iris_y: float = 1.00  # iris half-height / eye half-height
    highlight: float = 0.25  # eye highlight radius relative to the iris (0: none)
    lash: float = 0.010  # upper lid line width
    brow_scale: float = 1.0
    nose_scale: float = 1.0
    nose_mode: str = "real"  # real | arc | line | dot
    mouth_scale: float = 1.0
    mouth_dy: float = 0.0
    lip_t: float = 0.015
    ear_scale: float = 1.0
    ear_point: bool = False
    frame_w: float = 0.013  # glasses frame width
    # treatment
    outline: float = 0.0  # outline width in world units (0: no outlines)
    outline_rgb: tuple = (0.08, 0.06, 0.06)
    soft: float = 0.0  # minimum edge softness in world units
    shading: str = "smooth"  # smooth | cel | flat
    shade_lo: float = 0.45  # darkest shading factor
    post: str = "real"
    blush: float = 0.0
    # palettes (RGB in [0, 1])
    skin: tuple = ((0.96, 0.80, 0.69), (0.38, 0.24, 0.16))  # light, dark
    hair: tuple = ((0.08, 0.07, 0.07), (0.36, 0.22, 0.12), (0.86, 0.70, 0.42), (0.66, 0.26, 0.10),
                   (0.72, 0.72, 0.72))
    eyes: tuple = ((0.36, 0.20, 0.08), (0.26, 0.46, 0.76), (0.24, 0.56, 0.30), (0.55, 0.58, 0.62))
    bg: tuple = ((0.62, 0.62, 0.64), (0.45, 0.58, 0.76), (0.50, 0.66, 0.50), (0.83, 0.75, 0.62),
                 (0.86, 0.62, 0.68))
    cloth: tuple = (0.22, 0.25, 0.32)
    lips: tuple = (0.74, 0.36, 0.36)
    sclera: tuple = (0.95, 0.94, 0.92)
    frame: tuple = (0.10, 0.10, 0.11)
    gold: tuple = (0.96, 0.78, 0.28)
    lens_alpha: float = 0.10


LOOKS: dict[str, Look] = {
    "real": Look("real", soft=0.012),
    "cartoon": Look(
        "cartoon", head_a=1.16, head_b=1.08, jaw_lo=0.45, jaw_hi=1.0, eye_scale=1.25, eye_aspect=0.8,
        iris_x=0.55, iris_y=0.70, highlight=0.3, lash=0.0, brow_scale=1.2, nose_scale=0.8, nose_mode="arc",
        mouth_scale=1.2, lip_t=0.008, frame_w=0.022, outline=0.034, soft=0.0, shading="cel", shade_lo=0.80,
        post="cartoon",
        skin=((1.00, 0.86, 0.70), (0.56, 0.35, 0.22)),
        hair=((0.13, 0.12, 0.16), (0.58, 0.31, 0.12), (1.00, 0.84, 0.30), (0.93, 0.36, 0.10),
              (0.82, 0.82, 0.85)),
        eyes=((0.50, 0.28, 0.10), (0.20, 0.52, 0.95), (0.20, 0.70, 0.30), (0.55, 0.58, 0.66)),
        bg=((0.78, 0.78, 0.80), (0.42, 0.72, 0.96), (0.55, 0.86, 0.45), (0.99, 0.88, 0.62),
            (1.00, 0.66, 0.80)),
        cloth=(0.90, 0.30, 0.25), lips=(0.85, 0.35, 0.35), lens_alpha=0.25),
    "anime": Look(
        "anime", head_a=0.98, head_b=1.0, jaw_lo=0.0, jaw_hi=0.5, chin=0.25, eye_scale=1.55, eye_aspect=1.12,
        eye_spread=1.12, eye_dy=0.035, iris_x=0.68, iris_y=0.86, highlight=0.42, lash=0.022, brow_scale=0.7,
        nose_scale=0.45, nose_mode="dot", mouth_scale=0.62, mouth_dy=0.02, lip_t=0.006, frame_w=0.014,
        outline=0.020, outline_rgb=(0.25, 0.12, 0.12), soft=0.0, shading="cel", shade_lo=0.85, post="anime",
        blush=0.35,
        skin=((1.00, 0.91, 0.84), (0.74, 0.52, 0.40)),
        hair=((0.16, 0.16, 0.34), (0.64, 0.36, 0.22), (1.00, 0.88, 0.40), (0.96, 0.26, 0.32),
              (0.78, 0.84, 0.97)),
        eyes=((0.62, 0.32, 0.10), (0.18, 0.50, 0.98), (0.12, 0.76, 0.42), (0.58, 0.60, 0.78)),
        bg=((0.86, 0.86, 0.92), (0.68, 0.84, 1.00), (0.72, 0.94, 0.78), (1.00, 0.93, 0.78),
            (1.00, 0.80, 0.90)),
        cloth=(0.18, 0.22, 0.48), lips=(0.90, 0.45, 0.48), lens_alpha=0.15),
    "fantasy": Look(
        "fantasy", head_a=0.90, head_b=1.16, jaw_lo=0.0, jaw_hi=0.7, chin=0.12, eye_scale=1.12, eye_aspect=0.45,
        eye_dy=-0.01, iris_x=0.55, iris_y=0.95, highlight=0.2, lash=0.014, brow_scale=0.8, nose_scale=1.15,
        nose_mode="line", mouth_scale=0.9, ear_scale=1.1, ear_point=True, frame_w=0.012, outline=0.0,
        soft=0.012, shading="smooth", shade_lo=0.66, post="fantasy",
        skin=((0.86, 0.93, 0.98), (0.44, 0.38, 0.62)),
        hair=((0.10, 0.08, 0.22), (0.46, 0.24, 0.36), (0.96, 0.92, 0.62), (0.88, 0.18, 0.42),
              (0.88, 0.93, 1.00)),
        eyes=((1.00, 0.62, 0.12), (0.28, 0.82, 1.00), (0.30, 1.00, 0.62), (0.86, 0.86, 0.98)),
        bg=((0.22, 0.22, 0.30), (0.10, 0.18, 0.42), (0.07, 0.30, 0.28), (0.36, 0.28, 0.24),
            (0.36, 0.14, 0.36)),
        cloth=(0.26, 0.10, 0.36), lips=(0.60, 0.30, 0.62), sclera=(0.88, 0.94, 1.00), gold=(1.0, 0.85, 0.4),
        lens_alpha=0.2),
    "illustration": Look(
        "illustration", head_a=0.92, head_b=1.02, eye_scale=0.92, eye_aspect=0.5, brow_scale=0.75,
        lash=0.008, nose_scale=0.95, nose_mode="line", mouth_scale=0.92, lip_t=0.008, frame_w=0.010,
        outline=0.014, outline_rgb=(0.36, 0.24, 0.22), soft=0.0, shading="flat", shade_lo=0.78,
        post="illustration",
        skin=((0.99, 0.87, 0.79), (0.58, 0.42, 0.34)),
        hair=((0.22, 0.20, 0.24), (0.55, 0.38, 0.26), (0.95, 0.82, 0.55), (0.86, 0.42, 0.30),
              (0.80, 0.80, 0.82)),
        eyes=((0.50, 0.32, 0.20), (0.40, 0.60, 0.85), (0.40, 0.68, 0.45), (0.62, 0.64, 0.68)),
        bg=((0.80, 0.80, 0.78), (0.60, 0.76, 0.92), (0.64, 0.84, 0.62), (0.96, 0.89, 0.74),
            (0.98, 0.76, 0.80)),
        cloth=(0.52, 0.62, 0.72), lips=(0.88, 0.52, 0.52), lens_alpha=0.12),
    "impasto": Look(
        "impasto", head_a=1.04, head_b=1.0, eye_scale=1.0, nose_scale=1.05, frame_w=0.018, lip_t=0.013,
        soft=0.03, shading="smooth", shade_lo=0.40, post="impasto",
        skin=((0.98, 0.78, 0.58), (0.42, 0.24, 0.12)),
        hair=((0.12, 0.08, 0.06), (0.44, 0.24, 0.10), (0.92, 0.72, 0.36), (0.76, 0.28, 0.08),
              (0.78, 0.74, 0.68)),
        eyes=((0.40, 0.22, 0.06), (0.28, 0.44, 0.66), (0.30, 0.52, 0.26), (0.56, 0.56, 0.54)),
        bg=((0.56, 0.52, 0.46), (0.36, 0.46, 0.58), (0.44, 0.54, 0.34), (0.82, 0.66, 0.44),
            (0.80, 0.52, 0.48)),
        cloth=(0.34, 0.20, 0.12), lips=(0.76, 0.30, 0.24), sclera=(0.94, 0.90, 0.80)),
}

_DOMAIN_SALT = {name: i + 1 for i, name in enumerate(LOOKS)}


def _t(rgb, n: int | None = None) -> torch.Tensor:
    t = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)
    return t if n is None else t.expand(n, 3, 1, 1)


def _pick(palette, codes: torch.Tensor) -> torch.Tensor:
    """Palette rows for integer codes [N] -> [N, 3, 1, 1]."""
    pal = torch.tensor(palette, dtype=torch.float32)
    return pal[codes.long().clamp(0, len(palette) - 1)].view(-1, 3, 1, 1)
