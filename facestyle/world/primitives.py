"""2-D primitives of the mini-world renderer: signed distance fields (negative inside) of ellipses, circles,
rounded boxes and capsules, hashed lattice noise, and a separable Gaussian blur.

Noise is a pure function of (seed, image index, lattice cell, salt), so a render is deterministic for a seed and
independent of how the batch is chunked.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ellipse(u, v, a, b):
    """Approximate signed distance to an axis-aligned ellipse (radial distance, exact for circles)."""
    r = torch.sqrt(u * u + v * v + 1e-12)
    k = torch.sqrt((u / a) ** 2 + (v / b) ** 2 + 1e-12)
    return r * (1 - 1 / k)


def _circle(u, v, r):
    return torch.sqrt(u * u + v * v + 1e-12) - r


def _box(u, v, hx, hy, r):
    """Rounded box with half sizes hx, hy and corner radius r."""
    qx = u.abs() - hx + r
    qy = v.abs() - hy + r
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2 + 1e-12)
    return outside + torch.maximum(qx, qy).clamp(max=0) - r


def _segment(u, v, x0, y0, x1, y1, r):
    """Capsule around the segment (x0, y0)-(x1, y1) with radius r."""
    dx, dy = x1 - x0, y1 - y0
    px, py = u - x0, v - y0
    h = ((px * dx + py * dy) / (dx * dx + dy * dy + 1e-9)).clamp(0, 1)
    return torch.sqrt((px - h * dx) ** 2 + (py - h * dy) ** 2 + 1e-12) - r


def _hash_lattice(seed: int, idx: torch.Tensor, h: int, w: int, salt: int) -> torch.Tensor:
    """Uniform [0, 1) values on an h x w lattice per image, a pure function of (seed, image index, cell, salt)."""
    m = 0xFFFFFFFF
    iy = torch.arange(h, dtype=torch.int64).view(1, h, 1)
    ix = torch.arange(w, dtype=torch.int64).view(1, 1, w)
    k = idx.to(torch.int64).view(-1, 1, 1)
    base = ((int(seed) & m) * 0x2C9277B5 + (salt & 0xFFFF) * 0x1B873593 + 0x68E31DA4) & m
    x = (ix * 0x27D4EB2D + iy * 0x165667B1 + ((k * 0x3C6EF35F) & m) + base) & m
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & m
    x = ((x ^ (x >> 12)) * 0x297A2D39) & m
    x = ((x ^ (x >> 15)) * 0x1B873593) & m
    x = x ^ (x >> 16)
    return x.to(torch.float32) / 4294967296.0


def _noise(seed, idx, size, cells_h, cells_w, salt, mode="bilinear") -> torch.Tensor:
    """Smooth value noise [N, 1, size, size] in [0, 1] from a cells_h x cells_w lattice (resolution-free)."""
    lat = _hash_lattice(seed, idx, cells_h, cells_w, salt).unsqueeze(1)
    if mode == "nearest":
        return F.interpolate(lat, size=(size, size), mode="nearest")
    return F.interpolate(lat, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _blur(img: torch.Tensor, sigma_px: float) -> torch.Tensor:
    if sigma_px < 0.3:
        return img
    rad = max(1, int(math.ceil(2.5 * sigma_px)))
    x = torch.arange(-rad, rad + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = k / k.sum()
    c = img.shape[1]
    img = F.conv2d(F.pad(img, (rad, rad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                   groups=c)
    return F.conv2d(F.pad(img, (0, 0, rad, rad), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                    groups=c)


def _ell(u, v, a, b):
    """Cheap approximate ellipse SDF for small features: (normalised radius - 1) * sqrt(a b)."""
    return (torch.sqrt((u / a) ** 2 + (v / b) ** 2 + 1e-12) - 1) * (a * b) ** 0.5
