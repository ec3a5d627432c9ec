"""Figures of the mini world (written atomically under ``figures/mini/``)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..utils import REPO_ROOT
from ..viz import save_figure
from .content import DOMAINS, sample_content
from .render import render

DEFAULT_SIX_DOMAINS = REPO_ROOT / "figures" / "mini" / "world_six_domains.png"


def six_domains_figure(n: int = 6, seed: int = 0, size: int = 64, path: str | os.PathLike | None = None,
                       content: torch.Tensor | None = None) -> Path:
    """The same ``n`` portraits drawn in all six domains (rows = contents, columns = domains); returns the path.

    Default path: ``figures/mini/world_six_domains.png`` in the repository.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if content is None:
        content = sample_content(n, seed=seed)
    n = content.shape[0]
    imgs = [((render(content, d, size=size, seed=seed) + 1) / 2).clamp(0, 1) for d in DOMAINS]
    fig, axes = plt.subplots(n, len(DOMAINS), figsize=(1.6 * len(DOMAINS), 1.6 * n + 0.3), squeeze=False)
    for j, d in enumerate(DOMAINS):
        for i in range(n):
            ax = axes[i][j]
            ax.imshow(imgs[j][i].permute(1, 2, 0).numpy(), interpolation="nearest" if size <= 64 else "antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(d, fontsize=10)
    fig.suptitle(f"mini world: same content in six domains ({size} px, seed {seed})", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path if path is not None else DEFAULT_SIX_DOMAINS)
