"""Per-domain post-processing of a drawn portrait (the ``post`` of its :class:`~facestyle.world.looks.Look`):
skin grain and blur (real), light blur (anime), tint, sparkles and glow blur (fantasy), paper tone and hatching
in shadow (illustration), coarse colour, quantisation and brush strokes (impasto); cartoon is left as drawn.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .looks import _DOMAIN_SALT, _t
from .primitives import _blur, _hash_lattice, _noise


def _post(img, look, P, seed, idx, size, X, Y, lx, face_dot, hair_dot, d_face, d_front, d_back, texture=True):
    salt = _DOMAIN_SALT[look.name] * 100
    if look.post == "real":
        if texture:
            grain = _noise(seed, idx, size, 48, 48, salt + 1) - 0.5
            blotch = _noise(seed, idx, size, 10, 10, salt + 2) - 0.5
            img = img * (1 + 0.07 * grain + 0.05 * blotch)
        img = _blur(img, 0.4 * size / 64)
    elif look.post == "cartoon":
        pass
    elif look.post == "anime":
        img = _blur(img, 0.25 * size / 64)
    elif look.post == "fantasy":
        t = ((X - Y + 2) / 4).unsqueeze(1)
        tint = _t((0.10, 0.80, 0.78)) * (1 - t) + _t((0.62, 0.22, 0.92)) * t
        img = img * 0.88 + tint * 0.14
        cells = 9
        lat = _hash_lattice(seed, idx, cells, cells, salt + 3)
        lat2 = _hash_lattice(seed, idx, cells, cells, salt + 4)
        lat3 = _hash_lattice(seed, idx, cells, cells, salt + 5)
        up = F.interpolate(torch.stack([lat, lat2, lat3], 1), size=(size, size), mode="nearest")
        gx = ((X + 1) / 2 * cells) % 1.0
        gy = ((Y + 1) / 2 * cells) % 1.0
        dx = (gx - (0.2 + 0.6 * up[:, 0])).abs()
        dy = (gy - (0.2 + 0.6 * up[:, 1])).abs()
        star = (1 - (dx + dy) / 0.16).clamp(min=0) ** 2 + (1 - (dx * 6 + dy) / 0.3).clamp(min=0) \
            + (1 - (dx + dy * 6) / 0.3).clamp(min=0)
        star = star * (up[:, 2] > 0.62).float()
        img = img + _t((0.85, 0.95, 1.0)) * star.clamp(0, 1).unsqueeze(1) * 0.9
        img = _blur(img, 0.35 * size / 64)
    elif look.post == "illustration":
        paper = _t((0.99, 0.97, 0.93))
        img = img * 0.78 + paper * 0.22
        stripes = (torch.sin((X + Y) * math.pi * 2 * 11) > 0.2).float()
        shadow_face = (face_dot < 0.42).float() * (d_face < 0).float()
        shadow_hair = (hair_dot < 0.42).float() * ((d_front < 0) | (d_back < 0)).float() * (d_face >= 0).float()
        mask = torch.clamp(shadow_face + shadow_hair, 0, 1)
        img = img * (1 - 0.11 * (stripes * mask).unsqueeze(1))
    elif look.post == "impasto":
        k = max(1, size // 16)
        coarse = F.avg_pool2d(img, k, k)
        coarse = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        img = 0.6 * img + 0.4 * coarse
        levels = 7.0
        img = 0.45 * img + 0.55 * torch.round(img * levels) / levels
        # directional brush strokes: anisotropic value noise sampled along a slanted axis
        ang = 0.7
        lat = _hash_lattice(seed, idx, 26, 6, salt + 6).unsqueeze(1)
        lat_b = _hash_lattice(seed, idx, 18, 4, salt + 7).unsqueeze(1)
        ca, sa = math.cos(ang), math.sin(ang)
        gx = (X * ca + Y * sa) / 1.42
        gy = (-X * sa + Y * ca) / 1.42
        grid = torch.stack([gx.expand(1, size, size), gy.expand(1, size, size)], -1).expand(img.shape[0], -1, -1, -1)
        s1 = F.grid_sample(lat, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        grid2 = torch.stack([gy.expand(1, size, size), -gx.expand(1, size, size)], -1).expand(img.shape[0], -1, -1,
                                                                                                 -1)
        s2 = F.grid_sample(lat_b, grid2, mode="bilinear", padding_mode="reflection", align_corners=False)
        strokes = 0.6 * s1 + 0.4 * s2 - 0.5
        img = img * (1 + 0.32 * strokes)
        img = img * _t((1.06, 0.99, 0.84)) + _t((0.03, 0.01, 0.0))
        img = _blur(img, 0.2 * size / 64)
    return img
