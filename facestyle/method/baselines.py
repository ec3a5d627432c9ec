"""In-repo baselines the paper compares against (section 4.2, Fig. 9 and 11; docs/design.md section 4).

* :func:`layer_swap` - Toonify (Pinkney & Adler; docs/reference.md section 4): a generator whose low-resolution
  layers come from one model and whose high-resolution layers come from the other, with a hard switch or a
  sigmoid blend over log2 resolution.
* :func:`ui2i_pipeline` - the UI2I-style method (Huang, Liao & Kwong; docs/reference.md section 3) as the paper
  compares it: layer swapping of the unconstrained finetune G* with the pretrained G, content and reference
  codes from V-space inversion, style mixing of the reference into the last rows. The public code's defects
  are not reproduced: W codes are never passed through the mapping network a second time, the reference code
  really drives the mixed rows, and the mapping network is G's (frozen) one.

The unconstrained finetune G* itself is ``facestyle.method.finetune`` with ``variant="baseline"``.

State-dict layout (rosinality / facestyle ``Generator``, docs/reference.md section 1): ``input.input``, ``conv1.*`` and
``to_rgb1.*`` work at 4 px; ``convs.{2k}`` / ``convs.{2k+1}`` / ``to_rgbs.{k}`` at ``2**(k+3)`` px; noise
buffer ``noises.noise_{i}`` feeds layer ``i`` at ``2**((i+5)//2)`` px; ``style.*`` is the mapping network.
"""
from __future__ import annotations

import copy
import math
import re

import torch
from torch import nn

from .latents import mix, to_wplus, truncate
from ..config import Profile
from .stylize import InvertFn, _codes_of, make_invert_fn, resolve_mix_layer

__all__ = ["key_resolution", "high_weight", "layer_swap_state_dict", "layer_swap", "ui2i_generator",
           "ui2i_pipeline", "UI2I_SWITCH_RES", "UI2I_STYLE_LAYER"]

# UI2I's README runs gen_multi_style.py with --swap_layer 3: features up to the 16 px block come from G, so
# layers from 32 px upwards are G*'s.
UI2I_SWITCH_RES = 32
# UI2I's reference script mixes the reference into the last 3 of 18 rows (multi_style_layers=3): rows >= 15.
UI2I_STYLE_LAYER = 15

_PATTERNS = (
    (re.compile(r"^(input\.|conv1\.|to_rgb1\.)"), lambda m: 4),
    (re.compile(r"^convs\.(\d+)\."), lambda m: 2 ** (int(m.group(1)) // 2 + 3)),
    (re.compile(r"^to_rgbs\.(\d+)\."), lambda m: 2 ** (int(m.group(1)) + 3)),
    (re.compile(r"^noises\.noise_(\d+)$"), lambda m: 2 ** ((int(m.group(1)) + 5) // 2)),
)


def key_resolution(key: str) -> int | None:
    """The resolution (px) a synthesis state-dict key works at; ``None`` for the mapping network (``style.*``)
    and anything else that belongs to no resolution."""
    for pat, res in _PATTERNS:
        m = pat.match(key)
        if m:
            return res(m)
    return None


def high_weight(res: int, switch_res: int, blend_width: float | None = None) -> float:
    """Weight of the *high-resolution* model at ``res``.

    Hard switch (``blend_width`` None or 0): 0 below ``switch_res``, 1 from it on. Blend (Toonify's soft
    variant): ``sigmoid((log2 res - (log2 switch_res - 0.5)) / b)``, centred half-way between the last "low"
    and the first "high" level so that it tends to the hard switch as ``b -> 0``.
    """
    if switch_res <= 0:
        raise ValueError(f"switch_res must be positive, got {switch_res}")
    if not blend_width:
        return 1.0 if res >= switch_res else 0.0
    if blend_width < 0:
        raise ValueError(f"blend_width must be >= 0, got {blend_width}")
    t = (math.log2(res) - (math.log2(switch_res) - 0.5)) / float(blend_width)
    return 1.0 / (1.0 + math.exp(-t)) if t > -60 else 0.0


def _state_dict(g) -> dict:
    if isinstance(g, nn.Module):
        return g.state_dict()
    if isinstance(g, dict):
        return g
    raise TypeError(f"expected a generator module or its state dict, got {type(g).__name__}")


def layer_swap_state_dict(sd_base: dict, sd_style: dict, switch_res: int, blend_width: float | None = None,
                          low_from: str = "style") -> dict:
    """Merge two generator state dicts by resolution (Toonify, docs/reference.md section 4).

    ``low_from="style"`` (default, the Toonify recipe): layers below ``switch_res`` come from the style model
    (its cartoon geometry: face shape, eye size), layers at and above it from the base model (realistic
    texture). ``low_from="base"`` is the reverse (UI2I's recipe: G's coarse structure, G*'s rendering). The
    mapping network ``style.*`` always comes from the base model, so that W means what it means for G and its
    encoders. With a blend the floating weights are interpolated; noise buffers, being samples, are never
    averaged (that would shrink their variance) and follow the side with the larger weight.
    """
    if low_from not in ("style", "base"):
        raise ValueError(f"low_from must be 'style' or 'base', got {low_from!r}")
    if set(sd_base) != set(sd_style):
        diff = sorted(set(sd_base) ^ set(sd_style))
        raise ValueError(f"the two generators have different layers (e.g. {diff[:3]}): they must share one "
                         f"architecture (same size and channels)")
    low, high = (sd_style, sd_base) if low_from == "style" else (sd_base, sd_style)
    out = {}
    for k, vb in sd_base.items():
        if vb.shape != sd_style[k].shape:
            raise ValueError(f"{k}: shapes differ ({list(vb.shape)} vs {list(sd_style[k].shape)}): the two "
                             f"generators must share one architecture")
        res = key_resolution(k)
        if res is None:
            out[k] = vb.clone()
            continue
        a = high_weight(res, switch_res, blend_width)
        if a in (0.0, 1.0) or not vb.is_floating_point() or k.startswith("noises."):
            out[k] = (high if a >= 0.5 else low)[k].clone()
        else:
            out[k] = torch.lerp(low[k].float(), high[k].to(low[k].device).float(), a).to(vb.dtype)
    return out


def layer_swap(g_base, g_style, switch_res: int, blend_width: float | None = None, low_from: str = "style"):
    """Toonify layer swapping (docs/reference.md section 4); see :func:`layer_swap_state_dict` for the recipe.

    ``g_base`` / ``g_style`` are facestyle (or rosinality-layout) generators or their state dicts. Returns a
    new generator (a copy of ``g_base`` holding the merged weights; inputs are untouched) or, when
    ``g_base`` is a state dict, the merged state dict. ``switch_res`` above the output size gives the
    ``low_from`` model's synthesis network; ``switch_res <= 4`` gives the other one (mapping from the base).
    The public blended cartoon model switches at 64 px.
    """
    merged = layer_swap_state_dict(_state_dict(g_base), _state_dict(g_style), switch_res, blend_width, low_from)
    if not isinstance(g_base, nn.Module):
        return merged
    g = copy.deepcopy(g_base)
    g.load_state_dict(merged)
    return g.eval()


def ui2i_generator(g_base: nn.Module, g_star: nn.Module, switch_res: int = UI2I_SWITCH_RES) -> nn.Module:
    """UI2I's swapped generator: G's layers below ``switch_res`` (the input's structure), G*'s from it on.

    UI2I swaps a *feature map* of G into G* at one block; swapping the weights of those blocks is the same
    computation for the convolutions, except that the low-resolution ToRGB layers are G's here (in the public
    code they are G*'s, applied to G*'s own discarded features, which we take to be incidental).
    """
    return layer_swap(g_base, g_star, switch_res, blend_width=None, low_from="base")


def ui2i_pipeline(g_base: nn.Module, g_star: nn.Module, *, content_codes: torch.Tensor | None = None,
                  images: torch.Tensor | None = None, ref_codes: torch.Tensor | None = None,
                  ref_images: torch.Tensor | None = None, n_samples: int = 4, seed: int = 0,
                  sample_psi: float = 0.5, latent_avg: torch.Tensor | None = None,
                  invert_fn: InvertFn | None = None, switch_res: int = UI2I_SWITCH_RES,
                  layer: int = UI2I_STYLE_LAYER, units: str = "paper", noise_mode: str = "const",
                  g_swapped: nn.Module | None = None, profile: str | Profile = "mini") -> torch.Tensor:
    """UI2I-style translation as the paper compares it (Fig. 9, 11; docs/reference.md section 3), defects fixed.

    1. Generator: :func:`ui2i_generator` swaps G's low-resolution layers into G* (G* = the unconstrained
       finetune; finetune it with ``freeze_mapping=True`` as UI2I's "FreezeFC" recommends).
    2. Content: W codes ``[B, dim]`` from ``content_codes``, else ``invert_fn(images, g_base)`` (UI2I inverts
       the input into the V space of the generator of its own domain, G, and converts to W).
    3. Style: W codes ``[R, dim]`` from ``ref_codes``, else ``invert_fn(ref_images, g_star)`` (the reference
       belongs to the target domain), else ``n_samples`` random codes ``mapping_G(z)`` truncated with
       ``sample_psi`` towards ``latent_avg`` (0.5 in UI2I's scripts) for the multimodal row of Fig. 11.
    4. Every content code is mixed with every style code, rows ``>= layer`` from the style (the last 3 of
       18 rows by default), and rendered by the swapped generator with its stored noise.

    Codes are always fed as W (``synthesis``), never through the mapping a second time; the only mapping
    used is G's, which also is the swapped generator's. ``invert_fn(images, g)`` defaults to
    :func:`facestyle.method.stylize.make_invert_fn` for ``profile``. Returns ``[B, R, 3, H, W]``.
    """
    device = next(g_base.parameters()).device
    fn = invert_fn
    if fn is None and (content_codes is None or (ref_codes is None and ref_images is not None)):
        fn = make_invert_fn(profile, device)
    if content_codes is None:
        if images is None:
            raise ValueError("ui2i_pipeline needs content_codes= (W codes) or images= to invert")
        with torch.enable_grad():  # the inversion optimises by gradient
            content_codes = _codes_of(fn(images.to(device), g_base))
    content = torch.as_tensor(content_codes).to(device).float().detach()
    if ref_codes is None and ref_images is not None:
        with torch.enable_grad():
            ref_codes = _codes_of(fn(ref_images.to(device), g_star))
    with torch.no_grad():
        return _ui2i_render(g_base, g_star, content, ref_codes, n_samples, seed, sample_psi, latent_avg, switch_res,
                            layer, units, noise_mode, g_swapped)


def _ui2i_render(g_base, g_star, content, ref_codes, n_samples, seed, sample_psi, latent_avg, switch_res, layer,
                 units, noise_mode, g_swapped) -> torch.Tensor:
    device = content.device
    if ref_codes is None:
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(int(n_samples), g_base.style_dim, generator=gen).to(device)
        avg = latent_avg if latent_avg is not None else g_base.mean_latent(4096, torch.Generator().manual_seed(0))
        w = g_base.mapping(z)
        ref_codes = truncate(w, avg.reshape(1, -1).to(w), sample_psi)
    refs = torch.as_tensor(ref_codes).to(device).float().detach()
    g = g_swapped if g_swapped is not None else ui2i_generator(g_base, g_star, switch_res)
    n = int(g.n_latent)
    native = resolve_mix_layer(layer, n, units)
    cw, rw = to_wplus(content, n), to_wplus(refs, n)
    b, r = len(cw), len(rw)
    codes = mix(cw.repeat_interleave(r, 0), rw.repeat(b, 1, 1), native)
    out = torch.cat([g.synthesis(codes[i:i + 8], noise_mode=noise_mode) for i in range(0, len(codes), 8)])
    return out.view(b, r, *out.shape[1:])
