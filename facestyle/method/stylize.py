"""Stylization with a finetuned generator G' (paper section 3 / Fig. 2, section 3.3, appendix 6.1 and 6.2).

The framework of Fig. 2 is an encoder-decoder built from two pretrained parts and no new network:

* **content** - a pSp variant embeds the input portrait into the W space of the *pretrained* StyleGAN G
  (appendix "Encoder": one shared head, so every W+ row is the same code);
* **decoder** - the finetuned G' (section 3.1) renders that code in the target style, after the truncation
  trick pulls it towards G's average latent with the style's psi (appendix 6.1: 0.7 cartoon, 0.6 anime, 0.9
  the others; ``Profile.truncation``).

Section 3.3 adds two controllable variants by style mixing (rows ``< layer`` from the content code, rows
``>= layer`` from another code; :func:`facestyle.method.latents.mix`):

* **multimodal** - the other code is a random Z+ sample, mapped row by row through G's mapping network and
  truncated into the dense part of W+;
* **reference-guided** - the other code is a reference image's embedding: inverted into the V space of G'
  (UI2I-style inversion, docs/reference.md section 3; :mod:`facestyle.method.invert`), converted to W and
  repeated into W+.

Mixing levels are given either in the paper's units (3, 6, 9, 12 of the 18 rows of a 1024 px generator) or as
native rows of the generator in use (``units="native"``; ``Profile.mix_layers`` is in native rows);
:func:`facestyle.method.latents.scale_mix_layer` converts. Rendering uses G''s stored noise maps
(``noise_mode="const"``) so that a stylization is a deterministic function of image, style and seed.

Everything loads lazily through :mod:`facestyle.hub`, so constructing a :class:`Stylizer` is free and a missing
checkpoint is reported (as a :class:`facestyle.hub.CheckpointError`) only by the call that needs it.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..config import Profile, check_style, get_profile
from ..utils import get_device
from .latents import mix, sample_zplus, scale_mix_layer, to_wplus, truncate

__all__ = ["Stylizer", "InvertFn", "make_invert_fn", "as_image_batch", "resolve_mix_layer", "ENCODER_KINDS"]

# images [R, 3, H, W] in [-1, 1], generator G' -> W codes [R, dim] (section 3.3: V space of G', then W)
InvertFn = Callable[[torch.Tensor, nn.Module], torch.Tensor]

PRECISIONS = ("fp32", "bf16")
ENCODER_KINDS = ("w", "wplus", "zplus")  # appendix 6.2: content encodings compared in Fig. 14
UNITS = ("paper", "native")


def make_invert_fn(profile: str | Profile = "mini", device: Any = "auto", *, cache_dir: str | os.PathLike | None = None,
                   lpips: nn.Module | None = None, batch: int = 4, progress: bool = False, **settings) -> InvertFn:
    """The reference embedding of section 3.3 as an :data:`InvertFn`: V-space inversion of
    :func:`facestyle.method.invert.invert_v` through its on-disk :class:`~facestyle.method.invert.EmbeddingCache`
    (appendix 6.1: "once a reference image has been encoded, it can be continuously utilized").

    Iterations, learning rate and loss size come from the profile (``invert_iters``, ``invert_lr``,
    ``loss_size``); ``settings`` overrides any :class:`~facestyle.method.invert.InvertSettings` field. The
    profile's training LPIPS is built on first use only. The inversion module is imported at call time, so
    stylization with precomputed reference codes never depends on it (it is slow to run: about 90 s per image
    at 1024 px in the paper).
    """
    prof = get_profile(profile)
    dev = get_device(device)
    held: dict = {"lpips": lpips}
    opts = {"iters": prof.invert_iters, "lr": prof.invert_lr, "size": prof.loss_size, **settings}

    def invert(images: torch.Tensor, g: nn.Module) -> torch.Tensor:
        try:
            from .invert import EmbeddingCache
        except ImportError as exc:  # pragma: no cover - only while the inversion module is missing
            raise RuntimeError(f"reference images need the V-space inversion of facestyle.method.invert ({exc}); "
                               f"pass precomputed W codes with ref_codes= instead") from exc
        if held["lpips"] is None:
            from ..hub import build_train_lpips
            held["lpips"] = build_train_lpips(prof, dev)
        cache = EmbeddingCache(cache_dir)
        res = cache.get_or_invert(images, g, held["lpips"], batch=batch, progress=progress, **opts)
        # A timing means little without knowing whether the disk cache (kept across runs) answered.
        invert.last_call = {"from_cache": cache.hits, "inverted": cache.inverted}
        return res.w

    invert.last_call = {}
    return invert


def _codes_of(result) -> torch.Tensor:
    """An invert function may return W codes or an ``InversionResult`` (whose ``w`` are the W codes)."""
    return result.w if hasattr(result, "w") and not torch.is_tensor(result) else result


def resolve_mix_layer(layer: int, n_latent: int, units: str = "paper") -> int:
    """A mixing level as a native row index: ``units="paper"`` reads ``layer`` in the paper's 18-row units
    (Fig. 11: 6, 9, 12; Fig. 12: 3, 6, 9) and rescales it; ``"native"`` checks it against ``n_latent``."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    layer = int(layer)
    if units == "paper":
        return scale_mix_layer(layer, n_latent)
    if not 0 <= layer <= n_latent:
        raise ValueError(f"mixing layer must be in [0, {n_latent}] native rows, got {layer}")
    return layer


def as_image_batch(images: Any, size: int | None = None) -> torch.Tensor:
    """Normalise user input to a float batch ``[B, 3, H, W]`` in [-1, 1].

    Accepts a tensor ``[B, 3, H, W]`` / ``[3, H, W]`` already in [-1, 1], a PIL image, or a sequence of PIL
    images (converted to RGB and, when ``size`` is given, resized to ``size`` x ``size`` so they can be stacked;
    faces should be aligned first, :mod:`facestyle.align`). Tensors that look like 0-255 or 0-1 pixels are
    refused with a message, because silently rescaling would hide a preprocessing bug.
    """
    from PIL import Image

    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, Image.Image) for i in images):
        arrs = []
        for im in images:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.LANCZOS)
            arrs.append(np.asarray(im, dtype=np.float32))
        if len({a.shape for a in arrs}) > 1:
            raise ValueError("PIL images of different sizes: pass size= or align them to one size first")
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
        return x / 127.5 - 1
    if not torch.is_tensor(images):
        raise TypeError(f"images must be a tensor [B, 3, H, W] in [-1, 1] or PIL image(s), got {type(images).__name__}")
    x = images.unsqueeze(0) if images.ndim == 3 else images
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {list(images.shape)}")
    if len(x) == 0:
        raise ValueError("no images given (empty batch)")
    x = x.float()
    lo, hi = float(x.min()), float(x.max())
    if hi > 1.5 or lo < -1.5:
        raise ValueError(f"images must be in [-1, 1] but range over [{lo:.3g}, {hi:.3g}]: map 0-255 pixels with "
                         f"x / 127.5 - 1")
    return x


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


class Stylizer:
    """Paper Fig. 2: content encoder (W space of G) + finetuned decoder G', with section 3.3's mixing.

    Parameters
    ----------
    profile, style:
        a :class:`facestyle.config.Profile` (or its name) and one of :data:`facestyle.config.STYLES`.
    device:
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:N"``.
    generator:
        G' as a hub name or file path (default ``profile.style_generator_ckpt.format(style=style)``), or an
        already built generator module / :class:`facestyle.hub.LoadedGenerator` (notebooks, tests).
    encoder:
        the W content encoder, hub name or path (default ``profile.w_encoder_ckpt``) or a ready PSP module.
    base_generator:
        the pretrained G (default ``profile.generator_ckpt``): its mapping network turns Z+ samples into W+
        (Eq. 4, section 3.3) and its ``latent_avg`` is the truncation centre, since content codes live in G's W.
    encoders:
        optional ``{"wplus": ..., "zplus": ...}`` overrides for the encoders of the appendix 6.2 study.
    psi:
        truncation override; default ``profile.truncation[style]`` (appendix 6.1).
    noise_mode:
        ``"const"`` (default, deterministic), ``"random"`` or ``"zero"``.
    batch_size:
        images rendered per synthesis call (memory bound at 1024 px).
    precision, channels_last:
        ``"bf16"`` runs the encoder and G' under bf16 autocast; ``channels_last`` stores networks and batches in
        the NHWC layout. Both are for GPUs; ``facestyle gpu-check`` measures what each gives.
    """

    def __init__(self, profile: str | Profile = "mini", style: str = "cartoon", device: Any = "auto",
                 generator: Any = None, encoder: Any = None, *, base_generator: Any = None,
                 encoders: dict | None = None, psi: float | None = None, noise_mode: str = "const",
                 batch_size: int = 8, precision: str = "fp32", channels_last: bool = False):
        self.profile = get_profile(profile)
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        # "bf16": encoder and G' forward passes under bf16 autocast (about twice the images per second on a
        # GPU with bf16 tensor cores; `facestyle gpu-check` prints the difference to fp32); codes and outputs
        # stay fp32.
        self.precision = precision
        # Channels-last layout for the networks and image batches: the layout GPU tensor cores convolve fastest
        # in; the numbers do not change (`facestyle gpu-check` times both on the day a GPU is there).
        self.channels_last = bool(channels_last)
        # A style of one's own is fine with an explicit G'; without one the name must be a registered style.
        self.style = style if generator is not None else check_style(style)
        self.device = get_device(device)
        if psi is None:
            psi = self.profile.truncation.get(style, 1.0)
        if not 0.0 <= float(psi) <= 1.0:
            raise ValueError(f"truncation psi must be in [0, 1], got {psi}")
        self.psi = float(psi)
        self.noise_mode = noise_mode
        self.batch_size = max(1, int(batch_size))
        self._style_src = generator if generator is not None else self.profile.style_generator_ckpt.format(style=style)
        self._base_src = base_generator if base_generator is not None else self.profile.generator_ckpt
        self._encoder_src = {"w": self.profile.w_encoder_ckpt, "wplus": self.profile.wplus_encoder_ckpt,
                             "zplus": self.profile.zplus_encoder_ckpt}
        if encoder is not None:
            self._encoder_src["w"] = encoder
        for kind, src in (encoders or {}).items():
            if kind not in ENCODER_KINDS:
                raise ValueError(f"unknown encoder kind {kind!r}: choose one of {ENCODER_KINDS}")
            self._encoder_src[kind] = src
        self._g_style: nn.Module | None = None
        self._g_base: nn.Module | None = None
        self._latent_avg: torch.Tensor | None = None
        self._encoders: dict[str, nn.Module] = {}
        self._invert: InvertFn | None = None

    def __repr__(self) -> str:
        return (f"Stylizer(profile={self.profile.name!r}, style={self.style!r}, psi={self.psi}, "
                f"device={str(self.device)!r})")

    # ---- lazy models ------------------------------------------------------------------------------------------

    def _layout(self, module: nn.Module) -> nn.Module:
        if self.channels_last:
            # By hand: Module.to(memory_format=...) refuses G's 5-D modulated weights; only 4-D tensors change.
            with torch.no_grad():
                for t in list(module.parameters()) + list(module.buffers()):
                    if t.ndim == 4:
                        t.data = t.data.contiguous(memory_format=torch.channels_last)
        return module

    def _load_generator(self, src, what: str):
        """(module, latent_avg or None) from a hub name / path / LoadedGenerator / module."""
        from .. import hub

        if isinstance(src, hub.LoadedGenerator):
            return self._layout(src.g_ema.to(self.device).eval()), src.latent_avg
        if isinstance(src, nn.Module):
            return self._layout(src.to(self.device).eval()), None
        if not isinstance(src, (str, os.PathLike)):
            raise TypeError(f"{what} must be a hub name, a path or a generator module, got {type(src).__name__}")
        loaded = hub.load_generator(src, device=self.device, expected_size=self.profile.generator.size)
        return self._layout(loaded.g_ema), loaded.latent_avg

    @property
    def g_style(self) -> nn.Module:
        """The finetuned decoder G' (section 3.1)."""
        if self._g_style is None:
            self._g_style, _ = self._load_generator(self._style_src, "generator (G')")
        return self._g_style

    @property
    def g_base(self) -> nn.Module:
        """The pretrained G: mapping network for Z+ samples and source of the truncation centre."""
        if self._g_base is None:
            g, avg = self._load_generator(self._base_src, "base_generator (G)")
            if avg is None:  # a bare module: the mean of mapped z, as the hub does for files without one
                from ..hub import _mean_latent
                avg = _mean_latent(g)
            self._g_base = g
            self._latent_avg = avg.detach().float().to(self.device).reshape(-1, g.style_dim).mean(0)
        return self._g_base

    @property
    def latent_avg(self) -> torch.Tensor:
        """G's average W code ``[dim]``: the centre the truncation trick pulls codes towards."""
        _ = self.g_base
        return self._latent_avg

    @property
    def n_latent(self) -> int:
        return int(self.g_style.n_latent)

    def encoder(self, kind: str = "w") -> nn.Module:
        """The PSP content encoder of ``kind`` (``"w"`` is the paper's choice; appendix 6.2 compares all)."""
        if kind not in ENCODER_KINDS:
            raise ValueError(f"unknown encoder kind {kind!r}: choose one of {ENCODER_KINDS}")
        if kind not in self._encoders:
            src = self._encoder_src[kind]
            if isinstance(src, nn.Module):
                enc = src.to(self.device).eval()
            else:
                from .. import hub
                enc = hub.load_psp(src, device=self.device, expected_size=self.profile.generator.size)
            self._encoders[kind] = self._layout(enc)
        return self._encoders[kind]

    # ---- codes ------------------------------------------------------------------------------------------------

    def _images(self, images) -> torch.Tensor:
        x = as_image_batch(images, size=self.profile.generator.size).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def content_codes(self, images, kind: str = "w") -> torch.Tensor:
        """Content encodings ``[B, n_latent, dim]`` before truncation (appendix 6.2, Fig. 14).

        ``"w"``: the W encoder, every row the same code (the paper's choice, Fig. 2); ``"wplus"``: pSp's W+
        encoder (keeps real-domain detail, which G' tends to exaggerate into artifacts); ``"zplus"``: the Z+
        encoder's rows mapped through G's mapping network (close to the dense centre, less faithful).
        """
        x = self._images(images)
        enc = self.encoder(kind)
        with self._autocast():
            codes = torch.cat([enc.encode(x[s]) for s in _chunks(len(x), self.batch_size)]).float()
        if codes.ndim == 2:
            codes = to_wplus(codes, self.n_latent)
        if codes.shape[1:] != (self.n_latent, self.g_style.style_dim):
            raise ValueError(f"the {kind} encoder gives codes of shape {list(codes.shape[1:])} but G' expects "
                             f"[{self.n_latent}, {self.g_style.style_dim}]: encoder and generator do not match")
        return codes

    def truncate(self, codes: torch.Tensor, psi: float | None = None) -> torch.Tensor:
        """Truncation trick towards G's ``latent_avg`` with the style's psi (appendix 6.1) unless overridden."""
        return truncate(codes, self.latent_avg.to(codes.dtype), self.psi if psi is None else float(psi))

    @torch.no_grad()
    def random_codes(self, n_samples: int, seed: int = 0, psi: float | None = None) -> torch.Tensor:
        """Section 3.3 multimodal noise: ``n_samples`` Z+ draws mapped row by row through G's mapping network
        and truncated into the dense part of W+; ``[n_samples, n_latent, dim]``. Same seed, same codes."""
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        g = self.g_base
        gen = torch.Generator().manual_seed(int(seed))  # CPU stream: same samples on every device
        z = sample_zplus(int(n_samples), self.n_latent, g.style_dim, generator=gen, device=self.device)
        return self.truncate(g.mapping(z), psi)

    def reference_codes(self, ref_images, invert_fn: InvertFn | None = None) -> torch.Tensor:
        """Section 3.3: reference W codes ``[R, dim]`` by inversion into the V space of G' (converted to W).
        ``invert_fn(images, g_style)`` (returning W codes or an ``InversionResult``) defaults to
        :func:`make_invert_fn` for this profile (cached on disk, so each reference is optimised only once)."""
        x = self._images(ref_images)
        if invert_fn is None:
            if self._invert is None:
                self._invert = make_invert_fn(self.profile, self.device)
            invert_fn = self._invert
        with torch.enable_grad():  # callers may sit inside no_grad; the optimisation needs autograd
            codes = _codes_of(invert_fn(x, self.g_style))
        return self._check_ref(codes, len(x)).detach()

    def _check_ref(self, codes, expect_n: int | None = None) -> torch.Tensor:
        codes = torch.as_tensor(codes).to(self.device).float()
        d = self.g_style.style_dim
        if codes.ndim == 1:
            codes = codes.unsqueeze(0)
        ok = (codes.ndim == 2 and codes.shape[1] == d) or (codes.ndim == 3 and codes.shape[1:] == (self.n_latent, d))
        if not ok:
            raise ValueError(f"reference codes must be W [R, {d}] (or W+ [R, {self.n_latent}, {d}]), "
                             f"got {list(codes.shape)}")
        if expect_n is not None and len(codes) != expect_n:
            raise ValueError(f"inversion returned {len(codes)} codes for {expect_n} reference images")
        return codes

    # ---- rendering --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def synthesize(self, codes: torch.Tensor) -> torch.Tensor:
        """Render W+ codes ``[N, n_latent, dim]`` (or W ``[N, dim]``) with G', in chunks of ``batch_size``."""
        g = self.g_style
        codes = codes.to(self.device)
        with self._autocast():
            out = [g.synthesis(codes[s], noise_mode=self.noise_mode).float()
                   for s in _chunks(len(codes), self.batch_size)]
        return torch.cat(out)

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _mixed(self, content: torch.Tensor, others: torch.Tensor, layer: int) -> torch.Tensor:
        """All pairs: ``[B, S, n_latent, dim]`` with rows ``< layer`` from content[b], the rest from others[s]."""
        b, s = len(content), len(others)
        others = to_wplus(others, self.n_latent)
        m = mix(content.repeat_interleave(s, 0), others.repeat(b, 1, 1), layer)
        return m.view(b, s, *m.shape[1:])

    @torch.no_grad()
    def general(self, images, *, kind: str = "w", psi: float | None = None, return_codes: bool = False):
        """Paper section 3 / Fig. 2: ``G'(truncate(E_w(x), psi))`` -> ``[B, 3, H, W]`` in about [-1, 1]."""
        codes = self.truncate(self.content_codes(images, kind), psi)
        out = self.synthesize(codes)
        return (out, codes) if return_codes else out

    @torch.no_grad()
    def multimodal(self, images, n_samples: int = 4, layer: int = 6, seed: int = 0, *, units: str = "paper",
                   kind: str = "w", psi: float | None = None, sample_psi: float | None = None,
                   return_codes: bool = False):
        """Section 3.3 / Fig. 11: mix each content code with ``n_samples`` random W+ codes from ``layer`` on.

        Rows ``< layer`` keep the (truncated) content code, rows ``>= layer`` come from a truncated Z+ sample,
        the same samples for every input (one seed per figure). Low levels vary hair and clothes, high levels
        only colours (section 4.4). Returns ``[B, n_samples, 3, H, W]`` (and codes ``[B, n_samples, n, dim]``).
        """
        native = resolve_mix_layer(layer, self.n_latent, units)
        content = self.truncate(self.content_codes(images, kind), psi)
        noise = self.random_codes(n_samples, seed, psi if sample_psi is None else sample_psi)
        codes = self._mixed(content, noise, native)
        out = self.synthesize(codes.flatten(0, 1)).view(*codes.shape[:2], 3, *self._hw())
        return (out, codes) if return_codes else out

    def reference(self, images, ref_codes: torch.Tensor | None = None, ref_images=None, layer: int = 6, *,
                  units: str = "paper", invert_fn: InvertFn | None = None, kind: str = "w",
                  psi: float | None = None, return_codes: bool = False):
        """Section 3.3 / Fig. 12: mix each content code with each reference's W code from ``layer`` on.

        ``ref_codes`` are W codes ``[R, dim]`` of G' (inverted into its V space and converted to W, as
        :mod:`facestyle.method.invert` does); with only ``ref_images`` they are computed by ``invert_fn``
        (default :func:`make_invert_fn` for the profile). The reference W is repeated into W+ and *not* truncated: it
        already lies in G''s W (section 3.3, "ensuring the encoding remains within the latent space"), and
        pulling it to the centre would wash out the reference's style. Low levels hand over facial features,
        high levels hair and skin colour (section 4.4). Returns ``[B, R, 3, H, W]``.
        """
        if ref_codes is None and ref_images is None:
            raise ValueError("reference-guided stylization needs ref_codes= (W codes) or ref_images=")
        native = resolve_mix_layer(layer, self.n_latent, units)
        # no torch.no_grad() around this method: the inversion behind reference_codes optimises by gradient
        refs = self._check_ref(ref_codes) if ref_codes is not None else self.reference_codes(ref_images, invert_fn)
        content = self.truncate(self.content_codes(images, kind), psi)
        codes = self._mixed(content, refs.detach(), native)
        out = self.synthesize(codes.flatten(0, 1)).view(*codes.shape[:2], 3, *self._hw())
        return (out, codes) if return_codes else out

    def _hw(self) -> tuple[int, int]:
        s = int(self.g_style.size)
        return s, s

    def mix_layers(self) -> list[int]:
        """The profile's mixing levels (``Profile.mix_layers``, native rows; the paper's 3/6/9/12 for ffhq),
        checked against G'; pass them with ``units="native"``."""
        return [resolve_mix_layer(m, self.n_latent, "native") for m in self.profile.mix_layers]
