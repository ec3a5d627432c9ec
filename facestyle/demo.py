"""The main job behind ``make demo``: stylize a set of portraits and write one figure.

Target (issue 4): inputs x five styles x three modes (general, multimodal, reference-guided) with the shipped
mini style generators. Until those generators ship, the demo runs what exists and says what is missing:
the mini world's inputs with their ideal stylizations (the renderer's own drawing of the same content in
each style), and samples of the mini generator when its checkpoint is shipped.
"""
from __future__ import annotations

import torch

from .viz import figure_path, save_grid


def run_demo(profile: str = "mini", device: str = "auto", seed: int = 0, n: int = 4, out=None):
    from . import world
    from .config import STYLES, get_profile

    prof = get_profile(profile)
    if prof.name != "mini":
        raise ValueError("the demo currently runs on the mini profile only (--profile mini)")
    content = world.sample_content(n, seed=seed)
    size = prof.generator.size
    rows = [world.render(content, "real", size=size, seed=seed)]
    rows += [world.render(content, s, size=size, seed=seed) for s in STYLES]
    missing = []
    try:
        from . import hub

        loaded = hub.load_generator(prof.generator_ckpt, device=device)
        z = torch.randn(n, loaded.g_ema.style_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            img, _ = loaded.g_ema([z.to(next(loaded.g_ema.parameters()).device)], randomize_noise=False)
        rows.append(img.cpu())
    except Exception as exc:  # a fresh clone before the mini checkpoints ship
        missing.append(f"mini generator: {exc}")
    # column-major: one column per input portrait, one row per domain
    grid = torch.stack(rows, 0).transpose(0, 1).reshape(-1, *rows[0].shape[1:])
    path = save_grid(grid, out or figure_path(prof.name, "demo.png"), nrow=len(rows), scale=2)
    for m in missing:
        print(f"note: {m}")
    if not missing:
        print("note: stylization with the method's finetuned generators arrives with the method issue")
    return path
