"""Pure-PyTorch StyleGAN2 building blocks (no compiled extension, CPU and GPU from the same code).

The reference implementation (rosinality/stylegan2-pytorch) compiles CUDA kernels for ``upfirdn2d`` and the
fused bias + leaky ReLU at import time, which is the first thing its users trip over (docs/reference.md section 8).
Everything here is written with ordinary tensor ops; parameter and buffer names follow the reference so that
its checkpoints load unchanged (docs/reference.md section 1).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------------------------------------------
# functional ops
# --------------------------------------------------------------------------------------------------------------

def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Normalised 2-D FIR filter: a 1-D tap list becomes its outer product, then it is divided by its sum.

    StyleGAN2 uses ``[1, 3, 3, 1]`` (a binomial low-pass) for every resampling step (docs/reference.md section 1).
    """
    k = torch.as_tensor(k, dtype=torch.float32).clone()
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def _pair(v) -> tuple[int, int]:
    if isinstance(v, Iterable):
        a, b = tuple(v)
        return int(a), int(b)
    return int(v), int(v)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=(0, 0)) -> torch.Tensor:
    """Upsample, FIR-filter and downsample a batch of images ``[B, C, H, W]`` (StyleGAN2's resampling primitive).

    Semantics of the reference CUDA op (docs/reference.md section 1): insert ``up - 1`` zeros after every sample,
    pad by ``pad`` (negative values crop), convolve with ``kernel`` (a true convolution, i.e. correlation with
    the flipped kernel) and keep every ``down``-th sample. ``up`` / ``down`` may be ints or ``(x, y)`` pairs;
    ``pad`` is ``(p0, p1)`` for both axes or ``(x0, x1, y0, y1)``. Output size per axis is
    ``(in * up + p0 + p1 - k + down) // down``.
    """
    up_x, up_y = _pair(up)
    down_x, down_y = _pair(down)
    if len(pad) == 2:
        px0, px1, py0, py1 = pad[0], pad[1], pad[0], pad[1]
    elif len(pad) == 4:
        px0, px1, py0, py1 = pad
    else:
        raise ValueError(f"pad must have 2 or 4 entries, got {pad!r}")

    c = x.shape[1]
    kh, kw = kernel.shape
    if up_x > 1 or up_y > 1:
        # Zero insertion followed by a true convolution with k is a stride-`up` transposed convolution with the
        # unflipped k; it skips the multiplications by inserted zeros. Its full output starts K-1 samples before
        # the padded signal, so the requested padding becomes a pad/crop of (p0 - K + 1, p1 + up - K).
        weight = kernel.to(dtype=x.dtype, device=x.device).view(1, 1, kh, kw).expand(c, 1, kh, kw)
        out = F.conv_transpose2d(x, weight, stride=(up_y, up_x), groups=c)
        out = F.pad(out, [px0 - kw + 1, px1 + up_x - kw, py0 - kh + 1, py1 + up_y - kh])
        return out[:, :, ::down_y, ::down_x] if (down_x > 1 or down_y > 1) else out

    # F.pad accepts negative amounts and crops, which is exactly the reference's convention.
    if px0 or px1 or py0 or py1:
        x = F.pad(x, [px0, px1, py0, py1])
    weight = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device)
    weight = weight.view(1, 1, kh, kw).expand(c, 1, kh, kw)
    # A strided depthwise convolution computes only the kept samples instead of filtering then subsampling.
    return F.conv2d(x, weight, stride=(down_y, down_x), groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """Bias add, leaky ReLU and gain ``scale`` in one call (StyleGAN2's ``fused_bias_act``, docs/reference.md s. 1).

    ``bias`` has one entry per channel (dimension 1). The ``sqrt(2)`` gain keeps activations at unit variance.
    """
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope=negative_slope) * scale


# --------------------------------------------------------------------------------------------------------------
# modules (names of parameters / buffers match rosinality's model.py)
# --------------------------------------------------------------------------------------------------------------

class PixelNorm(nn.Module):
    """Normalise each feature vector to unit RMS over dimension 1 (first layer of the mapping network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class FusedLeakyReLU(nn.Module):
    """Module form of :func:`fused_leaky_relu` holding the per-channel ``bias`` (key ``activate.bias``)."""

    def __init__(self, channel: int, bias: bool = True, negative_slope: float = 0.2, scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class Blur(nn.Module):
    """FIR low-pass with buffer ``kernel``; ``upsample_factor`` multiplies the kernel by factor**2 to keep the
    signal energy after zero insertion (used after StyleGAN2's stride-2 transposed convolutions)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (zero insertion + blur with kernel*factor**2); used on the ToRGB skip path."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * (factor ** 2)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class Downsample(nn.Module):
    """2x FIR downsampling (blur then keep every other sample)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=1, down=self.factor, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate (Karras et al.): ``weight ~ N(0, 1)`` stored, multiplied at run time by
    ``1/sqrt(fan_in)`` so that Adam sees every weight at the same scale (docs/reference.md section 1)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate and a learning-rate multiplier (docs/reference.md section 1).

    The stored weight is ``randn / lr_mul`` and is scaled by ``lr_mul / sqrt(in_dim)`` at run time; the bias is
    multiplied by ``lr_mul``. ``lr_mul = 0.01`` is what slows the StyleGAN2 mapping network down.
    ``activation="fused_lrelu"`` applies :func:`fused_leaky_relu` after the bias.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: str | None = None):
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"unknown activation {activation!r}: use None or 'fused_lrelu'")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


# --------------------------------------------------------------------------------------------------------------
# allocator tuning
# --------------------------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_MMAP_THRESHOLD = -3
_malloc_tuned: dict | None = None


def tune_malloc(trim_threshold: int = 2 ** 31 - 1, mmap_threshold: int = 32 * 2 ** 20,
                disable_mmap: bool = True) -> dict | None:
    """Stop glibc from returning big freed tensors to the kernel and re-faulting them on the next step.

    docs/design.md section 3: on these CPUs the default allocator costs 5-15% in training and 2-3x in batched
    inference because every large activation is a fresh ``mmap`` that the kernel must zero-fill page by page.
    Raising ``M_TRIM_THRESHOLD`` keeps freed heap memory, and ``disable_mmap`` (``M_MMAP_MAX = 0``) serves even
    tensors above glibc's 32 MiB mmap-threshold ceiling from the reusable heap. This trades resident memory for
    speed and affects the whole process. Returns the settings applied, or ``None`` where glibc is unavailable
    (macOS, Windows, musl). Calling it again is a no-op.
    """
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = {}
    if mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)):
        applied["trim_threshold"] = int(trim_threshold)
    if mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)):
        applied["mmap_threshold"] = int(mmap_threshold)
    if disable_mmap and mallopt(_M_MMAP_MAX, 0):
        applied["mmap_max"] = 0
    _malloc_tuned = applied
    return applied


def malloc_tuning() -> dict | None:
    """The settings :func:`tune_malloc` applied in this process, or ``None`` if it has not run (or could not)."""
    return _malloc_tuned or None
