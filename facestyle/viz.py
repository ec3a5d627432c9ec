"""Grids and figure saving. One function, :func:`figure_path`, decides where every figure goes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .utils import REPO_ROOT, atomic_write


def figure_path(profile: str, name: str, root: str | os.PathLike | None = None) -> Path:
    """``figures/<profile>/<name>`` under the repository (or ``root``); names say which paper figure they remake,
    e.g. ``fig05_latent_shift.png`` or ``table4_ablation.md``."""
    base = Path(root) if root is not None else Path(os.environ.get("FACESTYLE_FIGURES", REPO_ROOT / "figures"))
    path = base / profile / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1,1] float images [N,3,H,W] -> uint8 [N,H,W,3]."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """Tile [N,3,H,W] images in [-1,1] into one uint8 array with white gutters."""
    arr = to_uint8(images)
    n, h, w, _ = arr.shape
    ncol = min(nrow, n)
    rows = (n + ncol - 1) // ncol
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[i]
    return grid


def save_image(array: np.ndarray, path: str | os.PathLike, scale: int = 1) -> Path:
    """Save a uint8 HxWx3 array as PNG atomically, optionally upscaled with nearest neighbour."""
    from PIL import Image

    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    with atomic_write(path) as fh:
        img.save(fh, format="PNG")
    return path


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, scale: int = 1) -> Path:
    return save_image(make_grid(images, nrow=nrow), path, scale=scale)


def plot_log(log_path: str | os.PathLike, keys: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Curves of ``keys`` over ``step`` from a facestyle JSON-lines training log (window means), one panel each."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    keys = [k for k in keys if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot(*zip(*pts))
        ax.set_title(k, fontsize=9), ax.set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG atomically (a reader never sees half a file) and close it."""
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    plt.close(fig)
    return out


def labelled_grid(rows: Sequence[torch.Tensor], path: str | os.PathLike, *, row_titles: Sequence[str],
                  col_titles: Sequence[str] | None = None, title: str = "", cell_inches: float = 0.9,
                  dpi: int = 110) -> Path:
    """A grid figure that says what it shows: one row per tensor ``[N, 3, H, W]`` in [-1, 1] (all rows the same N),
    each row titled on the left (method, mode, level) and each column on top (input, style, sample).

    The one helper behind the repo's image figures: a reader must be able to tell every row and column apart
    without reading the code that made them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r.detach().float().cpu() for r in rows]
    if len(row_titles) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(row_titles)} row titles")
    n = len(rows[0])
    if any(len(r) != n for r in rows):
        raise ValueError(f"every row needs the same number of images, got {[len(r) for r in rows]}")
    if col_titles is not None and len(col_titles) != n:
        raise ValueError(f"{n} columns but {len(col_titles)} column titles")
    label_w = 0.12 * max(len(t) for t in row_titles) + 0.3
    fig, axes = plt.subplots(len(rows), n, squeeze=False,
                             figsize=(label_w + cell_inches * n, 0.4 * bool(title) + 0.25 * (col_titles is not None)
                                      + cell_inches * len(rows)))
    for i, r in enumerate(rows):
        imgs = to_uint8(r)
        for j in range(n):
            ax = axes[i][j]
            ax.imshow(imgs[j], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row_titles[i], rotation=0, ha="right", va="center", fontsize=8)
            if i == 0 and col_titles is not None:
                ax.set_title(col_titles[j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    return save_figure(fig, path, dpi=dpi)
