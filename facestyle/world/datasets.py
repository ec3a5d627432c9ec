"""Data sets of the mini world: the paper-sized biased style sets, mixed-domain batches for the oracle, and
one-factor sweeps."""
from __future__ import annotations

import torch

from ..config import PAPER_STYLE_SET_SIZES, STYLES, check_style
from .content import DOMAINS, STYLE_BIAS, base_content, check_domain, factor_index, sample_content
from .render import render

# Fixed per-style seeds, so ``style_dataset(style)`` is the same set everywhere.
STYLE_SEEDS = {s: 1000 + 17 * i for i, s in enumerate(STYLES)}


def style_dataset(style: str, size: int = 64, seed: int | None = None, n: int | None = None):
    """The style set of ``style``: ``(images [N, 3, size, size] in [-1, 1], content [N, F])``.

    N is the paper's size (``PAPER_STYLE_SET_SIZES``: cartoon 317, anime 174, fantasy 137, illustration 156,
    impasto 120) unless ``n`` is given; the content follows ``STYLE_BIAS[style]``. Deterministic: the default
    seed is fixed per style.
    """
    seed = STYLE_SEEDS[check_style(style)] if seed is None else int(seed)
    content = style_content(style, seed, n)
    return render(content, style, size=size, seed=seed), content


def export_style_set(style: str, out, n: int | None = None, size: int = 64, seed: int | None = None):
    """Write :func:`style_dataset` as a folder: ``00000.png``, ... (the images) and ``content.pt`` (their true
    content, ``[N, F]``), the form ``facestyle finetune --style-images`` and ``facestyle pairs --style-images``
    read. ``n`` larger than the paper's size gives a larger set of the same bias (the first images differ from
    the paper-sized set's: the content is drawn for ``n`` at once). Returns the folder."""
    from pathlib import Path

    from ..utils import atomic_torch_save
    from ..viz import save_image, to_uint8

    imgs, content = style_dataset(style, size=size, seed=seed, n=n)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(to_uint8(imgs)):
        save_image(a, out / f"{i:05d}.png")
    atomic_torch_save({"style": style, "content": content, "seed": seed, "size": size}, out / "content.pt")
    return out


def style_content(style: str, seed: int | None = None, n: int | None = None) -> torch.Tensor:
    """The content ``[N, F]`` of :func:`style_dataset` without rendering it (same defaults)."""
    check_style(style)
    seed = STYLE_SEEDS[style] if seed is None else int(seed)
    n = PAPER_STYLE_SET_SIZES[style] if n is None else int(n)
    return sample_content(n, seed=seed, bias=STYLE_BIAS[style])


def domain_batch(n: int, size: int = 64, seed: int = 0, domains=DOMAINS, biased: bool = False):
    """A mixed-domain batch for training an oracle: ``(images, content, domain_index)``.

    Domains cycle through ``domains`` in a seeded random order; content is real-distributed (or, with
    ``biased=True``, drawn from each style's biased distribution). ``domain_index`` indexes ``DOMAINS``.
    """
    for d in domains:
        check_domain(d)
    g = torch.Generator().manual_seed(int(seed))
    dom = torch.randint(len(domains), (n,), generator=g)
    content = sample_content(n, generator=g)
    images = torch.empty(n, 3, size, size)
    dom_index = torch.empty(n, dtype=torch.long)
    for k, d in enumerate(domains):
        sel = (dom == k).nonzero().flatten()
        if len(sel) == 0:
            continue
        if biased and d != "real":
            content[sel] = sample_content(len(sel), generator=g, bias=STYLE_BIAS[d])
        images[sel] = render(content[sel], d, size=size, seed=int(seed) * 7919 + k)
        dom_index[sel] = DOMAINS.index(d)
    return images, content, dom_index


def vary_factor(name: str, values, base: torch.Tensor | None = None) -> torch.Tensor:
    """Content rows equal to ``base`` (default :func:`base_content`) except factor ``name`` set to each value."""
    i = factor_index(name)
    base = base_content() if base is None else base.reshape(1, -1)
    c = base.repeat(len(values), 1)
    c[:, i] = torch.as_tensor(values, dtype=torch.float32)
    return c


__all__ = ["style_dataset", "style_content", "domain_batch", "vary_factor", "STYLE_SEEDS"]
