"""Latent-space operations the paper relies on: sampling Z / Z+, W -> W+, truncation and style mixing.

Vocabulary (paper section 3.2): Z is the Gaussian input space of the mapping network, ``[B, dim]``; Z+ gives
every synthesis layer its own z, ``[B, n_latent, dim]``; W / W+ are their images under the mapping network.
All functions are shape-generic: they work for the 18-row FFHQ-1024 generator and for the 10-row mini one.
"""
from __future__ import annotations

import math

import torch

PAPER_N_LATENT = 18  # rows of W+ for the paper's 1024 px generator


def n_latent_for_size(size: int) -> int:
    """Rows of W+ for a StyleGAN2 generator of output ``size``: ``2*log2(size) - 2`` (18 at 1024, 10 at 64)."""
    log_size = int(math.log2(size))
    if size < 4 or 2 ** log_size != size:
        raise ValueError(f"size must be a power of two >= 4, got {size}")
    return 2 * log_size - 2


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    # Draw on the generator's own device so a seeded CPU generator gives the same numbers on every device.
    src = generator.device if generator is not None else (device if device is not None else "cpu")
    out = torch.randn(*shape, generator=generator, device=src)
    return out.to(device) if device is not None else out


def sample_z(n: int, dim: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``n`` codes from Z = N(0, I), shape ``[n, dim]`` (the space the paper's constraint samples, Eq. 1)."""
    return _randn((n, dim), generator, device)


def sample_zplus(n: int, n_latent: int, dim: int, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
    """``n`` codes from Z+ (one independent z per layer), shape ``[n, n_latent, dim]``.

    Paper section 3.3: multimodal stylization samples Z+ and truncates the mapped rows into W+.
    """
    return _randn((n, n_latent, dim), generator, device)


def to_wplus(w: torch.Tensor, n_latent: int) -> torch.Tensor:
    """Repeat W codes ``[B, dim]`` into W+ ``[B, n_latent, dim]``; W+ input is checked and returned as is.

    Paper section 3.3: a reference embedded in W (via V space) is "replicated into W+" before mixing.
    """
    if w.ndim == 2:
        return w.unsqueeze(1).repeat(1, n_latent, 1)
    if w.ndim == 3 and w.shape[1] == n_latent:
        return w
    raise ValueError(f"expected W [B, dim] or W+ [B, {n_latent}, dim], got {list(w.shape)}")


def truncate(w: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """Truncation trick ``w_avg + psi * (w - w_avg)``: pulls codes towards the centre of W (or W+).

    ``psi = 1`` is the identity, ``psi = 0`` gives ``w_avg``. The paper truncates per style at test time
    (0.7 cartoon, 0.6 anime, 0.9 the others, section 4.1) and uses it to pull Z+ samples into the dense part
    of W+ (section 3.3). ``w_avg`` broadcasts (``[1, dim]`` or ``[dim]`` against W or W+).
    """
    if psi == 1:
        return w
    return w_avg + psi * (w - w_avg)


def mix(w_content: torch.Tensor, w_style: torch.Tensor, layer: int) -> torch.Tensor:
    """Style mixing: rows ``< layer`` from ``w_content``, rows ``>= layer`` from ``w_style`` (paper section 3.3).

    Both are W+ ``[B, n_latent, dim]`` (a W code ``[B, dim]`` is repeated); batch sizes broadcast, e.g. one
    content code against many style codes. ``layer = 0`` returns the style, ``layer = n_latent`` the content;
    low layers hand over coarse structure, high layers only colour and texture (paper Fig. 11-12).
    """
    n_latent = w_content.shape[1] if w_content.ndim == 3 else (w_style.shape[1] if w_style.ndim == 3 else None)
    if n_latent is None:
        raise ValueError("mix needs at least one W+ code [B, n_latent, dim] to know the number of rows")
    wc, ws = to_wplus(w_content, n_latent), to_wplus(w_style, n_latent)
    if ws.shape[1] != n_latent:
        raise ValueError(f"content has {n_latent} rows but style has {ws.shape[1]}")
    if not 0 <= layer <= n_latent:
        raise ValueError(f"mixing layer must be in [0, {n_latent}], got {layer}")
    batch = torch.broadcast_shapes(wc.shape[:1], ws.shape[:1])[0]
    wc = wc.expand(batch, -1, -1)
    ws = ws.expand(batch, -1, -1)
    return torch.cat([wc[:, :layer], ws[:, layer:]], dim=1)


def scale_mix_layer(layer_of_18: int, n_latent: int) -> int:
    """Map a mixing level given for the paper's 18-row generator (3, 6, 9, 12) onto an ``n_latent``-row one.

    The level is kept at the same relative depth, ``round(layer * n_latent / 18)``; inner levels are clamped to
    ``[1, n_latent - 1]`` so that both codes still contribute at least one row, while 0 and 18 (all style /
    all content) map to 0 and ``n_latent``. Identity for 18 rows.
    """
    if not 0 <= layer_of_18 <= PAPER_N_LATENT:
        raise ValueError(f"layer_of_18 must be in [0, 18], got {layer_of_18}")
    if n_latent == PAPER_N_LATENT or layer_of_18 in (0, PAPER_N_LATENT):
        return int(layer_of_18) * n_latent // PAPER_N_LATENT
    return int(min(max(round(layer_of_18 * n_latent / PAPER_N_LATENT), 1), n_latent - 1))
