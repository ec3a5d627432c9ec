"""Batched, resolution-free portrait renderer for the mini world (docs/design.md section 3).

Every shape is a signed distance field (negative inside) evaluated on a pixel grid for the whole batch at
once; coverage is ``clamp(0.5 - sdf / edge, 0, 1)`` with ``edge`` the pixel width (or a wider, domain-specific
softness), so any output size renders anti-aliased. Layers are composited back to front: background, hair
back, shoulders and neck, ears, face, earrings, eyes, brows, nose, mouth, beard, hair front, glasses.

Geometry lives in world units: the image spans [-1/_ZOOM, 1/_ZOOM] on both axes (y down; textures and
gradients use image coordinates in [-1, 1]). The head is drawn in a frame
rotated by the head tilt around the face centre; yaw moves features on a cylinder (x = R sin(theta + yaw))
so the far side narrows and the near ear shows.

Each domain is a :class:`Look`: its own geometry (head proportions, eye size and placement, nose and mouth
scale, ears), palette and treatment (shading mode, outlines, texture post-process). The real domain has soft
photographic shading from the light direction, skin texture and a slight blur; the five styles redraw the same
content: cartoon (bold outlines, cel colours, big round head, simple nose), anime (huge highlighted eyes, tiny
nose, small mouth, pointed chin, saturated hair), fantasy (long face, pointed ears, teal/purple glow,
sparkles), illustration (pastel flat colour, hatching in shadow, thin lines), impasto (quantised colour and
directional brush strokes, warm palette).

Texture noise is a hash of (seed, image index, lattice cell), so a render is deterministic for a seed and
independent of how the batch is chunked. Small features (eyes, brows, glasses; nose, mouth, beard) are drawn
only inside pixel windows that cover them for every image of a chunk, which keeps 10k portraits at 64 px well
under a minute on two CPU cores.

The parts live in sibling modules: the looks in :mod:`.looks`, the shape and noise primitives in
:mod:`.primitives`, the portrait drawing in :mod:`.portrait` and the per-domain treatments in :mod:`.postprocess`.
"""
from __future__ import annotations

import torch

from .content import NUM_FACTORS, check_domain
from .looks import LOOKS, Look  # noqa: F401  (Look stays importable from here, where it used to live)
from .portrait import _render_chunk

_PIXEL_BUDGET = 262_144  # pixels per internal chunk (64 portraits at 64 px: tensors stay in cache)


def render(content: torch.Tensor, domain: str = "real", size: int = 64, seed: int | None = None,
           workers: int | None = None, texture: bool = True) -> torch.Tensor:
    """Render content vectors ``[N, F]`` as ``[N, 3, size, size]`` float images in [-1, 1].

    ``domain`` is one of ``DOMAINS``; deterministic for (content, domain, size, seed): per-image texture noise
    is derived from ``seed`` (None means 0) and the image's index in ``content``, so the result does not depend
    on chunking or ``workers``. Works for any size >= 8. ``texture=False`` leaves out the real domain's random
    skin grain and blotches and fixes the stubble pattern (the per-image randomness that is not content), e.g.
    for regression targets.

    The batch is drawn in cache-sized chunks. Long chains of small element-wise ops scale badly with torch's
    intra-op threads (and collapse when the cores are shared), so chunks run single-threaded, spread over
    ``workers`` Python threads (default: ``torch.get_num_threads()``); torch's thread setting is restored after.
    """
    check_domain(domain)
    if content.dim() == 1:
        content = content.unsqueeze(0)
    if content.dim() != 2 or content.shape[1] != NUM_FACTORS:
        raise ValueError(f"content must be [N, {NUM_FACTORS}], got shape {tuple(content.shape)}")
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    seed = 0 if seed is None else int(seed)
    look = LOOKS[domain]
    c = content.detach().to(device="cpu", dtype=torch.float32)
    n = c.shape[0]
    chunk = max(1, _PIXEL_BUDGET // (size * size))
    out = torch.empty(n, 3, size, size)
    starts = list(range(0, n, chunk))

    def job(s):
        idx = torch.arange(s, min(n, s + chunk))
        with torch.no_grad():
            out[s:s + len(idx)] = _render_chunk(c[s:s + len(idx)], look, size, seed, idx, texture)

    threads = torch.get_num_threads()
    workers = max(1, min(threads if workers is None else int(workers), len(starts)))
    torch.set_num_threads(1)
    try:
        if workers == 1:
            for s in starts:
                job(s)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(job, starts))
    finally:
        torch.set_num_threads(threads)
    return out.to(content.device) if content.device.type != "cpu" else out
