"""StyleGAN2 generator and discriminator, state-dict compatible with rosinality/stylegan2-pytorch.

Every parameter and buffer has the reference's key and shape (docs/reference.md section 1), so the official FFHQ
checkpoints converted by rosinality and any model trained with that code load with ``load_state_dict`` as-is;
``tests/test_stylegan2.py`` checks the keys and golden outputs against the reference. On top of the reference's
``forward`` the generator offers explicit ``mapping`` / ``synthesis`` methods in the vocabulary of the paper
(Z, Z+, W, W+), a pure-PyTorch modulated convolution with two interchangeable implementations, and works on any
device (it follows its parameters; nothing is hard-coded to CUDA).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .ops import Blur, EqualConv2d, EqualLinear, FusedLeakyReLU, PixelNorm, Upsample

MODCONV_IMPLS = ("auto", "grouped", "shared")
NOISE_MODES = ("random", "const", "zero")


def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Rosinality's ``{resolution: channels}`` table (docs/reference.md section 1); config-f uses multiplier 2."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
            1024: 16 * cm}


def _channel_table(size: int, channel_multiplier: int, channels: dict | None) -> dict[int, int]:
    if size < 4 or size & (size - 1):
        raise ValueError(f"size must be a power of two >= 4, got {size}")
    table = default_channels(channel_multiplier)
    if channels:
        # JSON round trips turn int keys into strings; accept both.
        table.update({int(k): int(v) for k, v in channels.items()})
    missing = [2 ** r for r in range(2, int(math.log2(size)) + 1) if 2 ** r not in table]
    if missing:
        raise ValueError(f"no channel count for resolution(s) {missing}: pass channels={{res: ch, ...}}")
    return table


def _check_impl(impl: str) -> str:
    if impl not in MODCONV_IMPLS:
        raise ValueError(f"unknown modconv impl {impl!r}: choose one of {', '.join(MODCONV_IMPLS)}")
    return impl


# --------------------------------------------------------------------------------------------------------------
# generator blocks
# --------------------------------------------------------------------------------------------------------------

class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution with weight demodulation (Karras et al. 2020, section 2.2).

    The style ``s = modulation(w)`` scales the input channels of the kernel; with ``demodulate`` every output
    channel is divided by ``sqrt(sum_{in,kh,kw} (scale * weight * s)^2 + 1e-8)``. ``upsample`` runs a stride-2
    transposed convolution followed by a blur, ``downsample`` a blur then a stride-2 convolution, as in the
    reference (docs/reference.md section 1).

    Two numerically equivalent implementations (``impl``):

    * ``"grouped"`` - the reference's: build one kernel per sample and run the batch as a grouped convolution.
    * ``"shared"`` - never build per-sample kernels: multiply the input channels by the style, run the one
      shared kernel over the whole batch, then multiply the outputs by the per-sample demodulation
      coefficients, which only need ``s^2 @ sum_k(weight^2)``. Faster on CPU (docs/design.md section 3).
    * ``"auto"`` - ``shared`` for batches larger than one, ``grouped`` otherwise.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, downsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 impl: str = "auto"):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        self.downsample = downsample
        self.impl = _check_impl(impl)

        factor = 2
        if upsample:
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))

        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        # bias_init=1 starts every style at the identity modulation.
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
                f"downsample={self.downsample}, demodulate={self.demodulate}, impl={self.impl!r}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)
        impl = self.impl
        if impl == "auto":
            impl = "shared" if x.shape[0] > 1 else "grouped"
        if impl == "shared":
            return self._forward_shared(x, s)
        return self._forward_grouped(x, s)

    def _forward_shared(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        weight = self.weight[0] * self.scale  # [out, in, k, k]
        x = x * s[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0))
        elif self.downsample:
            out = F.conv2d(self.blur(x), weight, stride=2, padding=0)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (w_oik s_i)^2 = sum_i s_i^2 sum_k w_oik^2: a [B,in] x [in,out] product, no [B,out,in,k,k].
            dcoef = torch.rsqrt(s.square() @ weight.square().sum((2, 3)).t() + self.eps)
            out = out * dcoef[:, :, None, None]
        return out

    def _forward_grouped(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        weight = self.scale * self.weight * s.view(b, 1, c, 1, 1)  # [B, out, in, k, k]
        if self.demodulate:
            dcoef = torch.rsqrt(weight.square().sum((2, 3, 4)) + self.eps)
            weight = weight * dcoef.view(b, self.out_channel, 1, 1, 1)
        if self.upsample:
            # conv_transpose2d wants [in, out/groups, k, k] per group.
            weight = weight.transpose(1, 2).reshape(b * c, self.out_channel, k, k)
            out = F.conv_transpose2d(x.reshape(1, b * c, h, w), weight, stride=2, padding=0, groups=b)
            out = self.blur(out.view(b, self.out_channel, *out.shape[2:]))
            return out
        weight = weight.reshape(b * self.out_channel, c, k, k)
        if self.downsample:
            x = self.blur(x)
            out = F.conv2d(x.reshape(1, b * c, *x.shape[2:]), weight, stride=2, padding=0, groups=b)
        else:
            out = F.conv2d(x.reshape(1, b * c, h, w), weight, padding=self.padding, groups=b)
        return out.view(b, self.out_channel, *out.shape[2:])


class NoiseInjection(nn.Module):
    """Add per-pixel Gaussian noise scaled by a learned scalar ``weight`` (initialised to 0)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = image.shape
            noise = image.new_empty(b, 1, h, w).normal_()
        return image + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 constant the synthesis network starts from (key ``input.input``)."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int | torch.Tensor) -> torch.Tensor:
        # The reference passes the latent tensor and only reads its batch size; accept either.
        if torch.is_tensor(batch):
            batch = batch.shape[0]
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated conv -> noise injection -> bias + leaky ReLU * sqrt(2) (docs/reference.md section 1)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), demodulate: bool = True, impl: str = "auto"):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel, demodulate=demodulate, impl=impl)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB without demodulation, plus bias; adds the FIR-upsampled previous RGB (skip)."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), impl: str = "auto"):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False, impl=impl)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


def set_modconv_impl(model: nn.Module, impl: str) -> nn.Module:
    """Switch every :class:`ModulatedConv2d` inside ``model`` to ``"grouped"``, ``"shared"`` or ``"auto"``."""
    _check_impl(impl)
    for m in model.modules():
        if isinstance(m, ModulatedConv2d):
            m.impl = impl
    return model


# --------------------------------------------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------------------------------------------

class Generator(nn.Module):
    """StyleGAN2 generator (config-f architecture), key-for-key compatible with rosinality's ``Generator``.

    Latent spaces (paper section 3 / Eq. 4): ``z`` in Z is ``[B, style_dim]``; ``mapping`` turns it into ``w``
    in W. W+ is ``[B, n_latent, style_dim]``, one row per modulated layer; Z+ is the same shape in Z, each row
    mapped separately. Row ``r`` of W+ drives, in order: conv1 (0), to_rgb1 (1), then for block ``k``
    convs[2k] (1+2k), convs[2k+1] (2+2k) and to_rgbs[k] (3+2k) (docs/reference.md section 1).

    ``channels`` overrides entries of the ``{resolution: channels}`` table (e.g. ``config.MINI_CHANNELS``);
    ``modconv_impl`` picks the modulated-convolution implementation (see :class:`ModulatedConv2d`).
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01, channels: dict | None = None,
                 modconv_impl: str = "auto"):
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channels = _channel_table(size, channel_multiplier, channels)
        _check_impl(modconv_impl)

        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)],
        )

        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel, impl=modconv_impl)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False, impl=modconv_impl)

        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2

        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty, kept because the reference has it
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = (i + 5) // 2
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, 2 ** r, 2 ** r))

        in_channel = ch[4]
        for r in range(3, self.log_size + 1):
            out_channel = ch[2 ** r]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel, impl=modconv_impl))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel,
                                         impl=modconv_impl))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel, impl=modconv_impl))
            in_channel = out_channel

    # ---- latent side -----------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.input.input.device

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Map Z -> W (``[B, dim]``) or Z+ -> W+ (``[B, n, dim]``, each row through the MLP; paper Eq. 4)."""
        if z.shape[-1] != self.style_dim or z.ndim not in (2, 3):
            raise ValueError(f"expected z of shape [B, {self.style_dim}] or [B, n, {self.style_dim}], "
                             f"got {list(z.shape)}")
        if z.ndim == 3:
            b, n, d = z.shape
            return self.style(z.reshape(b * n, d)).view(b, n, d)
        return self.style(z)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Reference-compatible alias of :meth:`mapping`."""
        return self.mapping(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Average of ``n`` mapped random z, shape ``[1, style_dim]`` (the truncation centre ``w_avg``).

        Runs without autograd: the mean is a constant wherever it is used.
        """
        dev = generator.device if generator is not None else self.device
        z = torch.randn(n, self.style_dim, generator=generator, device=dev).to(self.device)
        return self.style(z).mean(0, keepdim=True)

    def make_noise(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh noise maps ``[1, 1, 2^r, 2^r]`` for the ``num_layers`` noise inputs, in layer order."""
        dev = generator.device if generator is not None else self.device
        return [torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), generator=generator,
                            device=dev).to(self.device) for i in range(self.num_layers)]

    def const_noise(self) -> list[torch.Tensor]:
        """The registered noise buffers ``noises.noise_{i}`` (what ``randomize_noise=False`` uses)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def _resolve_noise(self, noise, noise_mode: str) -> list:
        if noise is not None:
            noise = list(noise)
            if len(noise) != self.num_layers:
                raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
            return noise
        if noise_mode == "random":
            return [None] * self.num_layers
        if noise_mode == "const":
            return self.const_noise()
        if noise_mode == "zero":
            return [torch.zeros_like(n) for n in self.const_noise()]
        raise ValueError(f"unknown noise_mode {noise_mode!r}: choose one of {', '.join(NOISE_MODES)}")

    # ---- image side ------------------------------------------------------------------------------------------

    def synthesis(self, ws: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None,
                  noise_mode: str = "random") -> torch.Tensor:
        """Render images ``[B, 3, size, size]`` (about [-1, 1]) from W (``[B, dim]``, used for every row) or W+
        (``[B, n_latent, dim]``).

        ``noise`` is an optional list of ``num_layers`` maps (``[1 or B, 1, H, W]``, ``None`` entries draw
        fresh noise); otherwise ``noise_mode`` is ``"random"`` (fresh each call), ``"const"`` (the stored
        buffers, deterministic) or ``"zero"``.
        """
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).expand(-1, self.n_latent, -1)
        if ws.ndim != 3 or ws.shape[1] != self.n_latent or ws.shape[2] != self.style_dim:
            raise ValueError(f"expected ws of shape [B, {self.style_dim}] or [B, {self.n_latent}, {self.style_dim}],"
                             f" got {list(ws.shape)}")
        noise = self._resolve_noise(noise, noise_mode)

        out = self.input(ws.shape[0])
        out = self.conv1(out, ws[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, ws[:, 1])
        row = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * k](out, ws[:, row], noise=noise[1 + 2 * k])
            out = self.convs[2 * k + 1](out, ws[:, row + 1], noise=noise[2 + 2 * k])
            skip = to_rgb(out, ws[:, row + 2], skip)
            row += 2
        return skip

    def forward(self, styles, return_latents: bool = False, inject_index: int | None = None, truncation: float = 1,
                truncation_latent: torch.Tensor | None = None, input_is_latent: bool = False, noise=None,
                randomize_noise: bool = True):
        """Rosinality's entry point, same semantics: returns ``(image, latent or None)``.

        ``styles`` is a list of z (or w with ``input_is_latent``); each is mapped, truncated towards
        ``truncation_latent`` when ``truncation < 1``, and with two styles the first fills rows
        ``< inject_index`` and the second the rest (random index in ``[1, n_latent - 1]`` when not given).
        A single tensor is accepted in place of a one-element list; W+ inputs may also be mixed.
        """
        if torch.is_tensor(styles):
            styles = [styles]
        if not input_is_latent:
            styles = [self.mapping(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. generator.mean_latent())")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) < 2:
            s = styles[0]
            latent = s.unsqueeze(1).repeat(1, self.n_latent, 1) if s.ndim < 3 else s
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            a, b = styles[0], styles[1]
            a = a.unsqueeze(1).repeat(1, inject_index, 1) if a.ndim < 3 else a[:, :inject_index]
            b = b.unsqueeze(1).repeat(1, self.n_latent - inject_index, 1) if b.ndim < 3 else b[:, inject_index:]
            latent = torch.cat([a, b], 1)

        image = self.synthesis(latent, noise=noise, noise_mode="random" if randomize_noise else "const")
        return (image, latent) if return_latents else (image, None)


# --------------------------------------------------------------------------------------------------------------
# discriminator
# --------------------------------------------------------------------------------------------------------------

class ConvLayer(nn.Sequential):
    """[blur] -> equalised conv -> [bias + leaky ReLU]; a Sequential so that keys read ``{i}.weight``."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)
        self.padding = padding


class ResBlock(nn.Module):
    """Residual downsampling block ``(conv2(conv1(x)) + skip(x)) / sqrt(2)``."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False,
                              blur_kernel=blur_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator, key-for-key compatible with rosinality's ``Discriminator``.

    Returns one logit per image ``[B, 1]``. Minibatch standard deviation uses groups of ``min(B, 4)`` samples
    and one feature; where ``B`` is not a multiple of that (the reference fails there) the largest group size
    that divides ``B`` is used instead.
    """

    def __init__(self, size: int, channel_multiplier: int = 2, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 channels: dict | None = None):
        super().__init__()
        self.size = size
        ch = self.channels = _channel_table(size, channel_multiplier, channels)
        log_size = int(math.log2(size))
        convs = [ConvLayer(3, ch[size], 1)]
        in_channel = ch[size]
        for r in range(log_size, 2, -1):
            out_channel = ch[2 ** (r - 1)]
            convs.append(ResBlock(in_channel, out_channel, blur_kernel))
            in_channel = out_channel
        self.convs = nn.Sequential(*convs)
        self.stddev_group = 4
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_channel + 1, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
            EqualLinear(ch[4], 1),
        )

    def _stddev_group(self, batch: int) -> int:
        g = min(batch, self.stddev_group)
        while batch % g:
            g -= 1
        return g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        b, c, h, w = out.shape
        g = self._stddev_group(b)
        f = self.stddev_feat
        # Sample i shares its statistic with samples i mod (b/g), exactly as the reference's view(group, -1, ...).
        y = out.view(g, -1, f, c // f, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
        y = y.mean([2, 3, 4], keepdim=True).squeeze(2)
        y = y.repeat(g, 1, h, w)
        out = self.final_conv(torch.cat([out, y], 1))
        return self.final_linear(out.view(b, -1))
