"""pSp-style image encoders into StyleGAN's latent spaces: W, W+ and Z+ (paper sections 3.2, 3.3, appendix).

The paper uses three variants of the pSp encoder (Richardson et al., ref. [43]; docs/reference.md section 2):

* W+ (``GradualStyleEncoder``): pSp's own feature-pyramid encoder; one head per style row. Used for the
  refinement level of the pseudo pairs, ``w3+ = E_w+(S)`` (Eq. 6).
* W (``BackboneEncoderW``): one code for all rows, used to embed the content image for stylization
  (section 3.3 and appendix "Encoder"). Implemented as pSp's ``BackboneEncoderUsingLastLayerIntoW``
  (backbone -> global average pool -> one linear layer), whose output is replicated over the rows.
* Z+ (``ZPlusEncoder``): the W+ architecture whose rows are read as z+ and pushed through the generator's
  mapping network, ``z1+ = E_z+(S), w1+ = mapping(z1+)`` (Eq. 4).

Every module keeps pSp's state-dict key names, so the ``encoder.*`` part of a pSp checkpoint such as
``psp_ffhq_encode.pt`` loads with ``strict=True`` once the ``encoder.`` prefix is removed, and ``PSP``'s own
state dict has exactly a pSp checkpoint's ``encoder.*`` / ``decoder.*`` keys. The backbone is configurable:
pSp's IR / IR-SE 50/100/152 tables, or an explicit ``blocks`` tuple so the mini profile can run a small
backbone on 64 px inputs through the same code path. Nothing here assumes a device.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ops import EqualLinear  # same keys (weight, bias) and run-time scaling as pSp's

__all__ = [
    "BLOCK_TABLES", "resolve_blocks", "unit_specs", "SEModule", "BottleneckIR", "BottleneckIRSE",
    "EqualLinear", "GradualStyleBlock", "GradualStyleEncoder", "BackboneEncoderW", "ZPlusEncoder",
    "to_wplus", "PSP", "build_encoder", "strip_prefix", "default_style_split", "count_params",
]

# pSp's backbone tables (docs/reference.md section 2): (in_channel, depth, num_units) per block. The first unit of
# every block has stride 2, so each block halves the resolution.
BLOCK_TABLES: dict[int, tuple[tuple[int, int, int], ...]] = {
    50: ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)),
    100: ((64, 64, 3), (64, 128, 13), (128, 256, 30), (256, 512, 3)),
    152: ((64, 64, 3), (64, 128, 8), (128, 256, 36), (256, 512, 3)),
}


def resolve_blocks(num_layers: int = 50, blocks: Sequence[Sequence[int]] | None = None) -> tuple:
    """Return the block table: the explicit ``blocks`` when given, else pSp's table for ``num_layers``."""
    if blocks is not None:
        blocks = tuple(tuple(int(v) for v in b) for b in blocks)
        if not blocks or any(len(b) != 3 or min(b) < 1 for b in blocks):
            raise ValueError(f"blocks must be ((in_channel, depth, num_units), ...) of positive ints, got {blocks}")
        for prev, cur in zip(blocks, blocks[1:]):
            if cur[0] != prev[1]:
                raise ValueError(f"block {cur} takes {cur[0]} channels but the previous block outputs {prev[1]}")
        return blocks
    if num_layers not in BLOCK_TABLES:
        raise ValueError(f"num_layers must be one of {sorted(BLOCK_TABLES)} (or pass blocks=...), got {num_layers}")
    return BLOCK_TABLES[num_layers]


def unit_specs(blocks: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """Expand a block table into per-unit (in_channel, depth, stride); the first unit of a block strides 2."""
    units = []
    for in_c, depth, n in blocks:
        units.append((in_c, depth, 2))
        units += [(depth, depth, 1)] * (n - 1)
    return units


class SEModule(nn.Module):
    """Squeeze-and-excitation gate (bias-free 1x1 convs, reduction 16), as in the IR-SE ArcFace backbone."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)  # max(): tiny mini-profile widths would otherwise give 0
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class _Subsample(nn.Module):
    """Identity shortcut with stride: keeps every ``stride``-th pixel (what pSp's ``MaxPool2d(1, stride)`` does)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x if self.stride == 1 else x[:, :, :: self.stride, :: self.stride]


class BottleneckIR(nn.Module):
    """Improved-residual unit: BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN, plus a (projected) shortcut.

    Sub-module indices follow pSp (``res_layer.0`` .. ``res_layer.4``, ``shortcut_layer.0/1``) so checkpoints
    load by name.
    """

    use_se = False

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = _Subsample(stride)  # parameter-free, like pSp's MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        layers = [nn.BatchNorm2d(in_channel),
                  nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
                  nn.PReLU(depth),
                  nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
                  nn.BatchNorm2d(depth)]
        if self.use_se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class BottleneckIRSE(BottleneckIR):
    """IR unit with a squeeze-and-excitation gate at the end of the residual branch (``res_layer.5``)."""

    use_se = True


UNIT_MODULES = {"ir": BottleneckIR, "ir_se": BottleneckIRSE}


def _make_backbone(input_nc: int, blocks: tuple, mode: str) -> tuple[nn.Sequential, nn.Sequential]:
    """Build pSp's ``input_layer`` (conv3x3 -> BN -> PReLU, width of the first block) and ``body``."""
    if mode not in UNIT_MODULES:
        raise ValueError(f"mode must be one of {sorted(UNIT_MODULES)}, got {mode!r}")
    unit = UNIT_MODULES[mode]
    width = blocks[0][0]
    input_layer = nn.Sequential(nn.Conv2d(input_nc, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                nn.PReLU(width))
    body = nn.Sequential(*[unit(i, d, s) for i, d, s in unit_specs(blocks)])
    return input_layer, body


class GradualStyleBlock(nn.Module):
    """pSp's map2style head: log2(spatial) x [conv3x3 stride 2 + LeakyReLU(0.01)] down to 1x1, then EqualLinear.

    Keys: ``convs.{0,2,4,..}.{weight,bias}``, ``linear.{weight,bias}``.
    """

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        n_down = int(math.log2(spatial))
        if 2 ** n_down != spatial or n_down < 1:
            raise ValueError(f"style head needs a power-of-two feature size >= 2, got {spatial}")
        self.out_c = out_c
        self.spatial = spatial
        layers = []
        for i in range(n_down):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x):
        return self.linear(self.convs(x).reshape(-1, self.out_c))


def default_style_split(n_styles: int) -> tuple[int, int]:
    """pSp's coarse / middle boundaries: rows [0, 3) from c3, [3, 7) from p2, [7, n) from p1.

    pSp keeps 3 and 7 for every generator size (also at 14 rows for 256 px), and we do the same: latent row i
    drives the same synthesis resolution in every StyleGAN2 (rows 0-2: 4-8 px, rows 3-6: 8-32 px, the rest
    finer), so the split is a statement about resolutions, and keeping it fixed keeps any pSp checkpoint
    loadable. For fewer than 8 rows the boundaries are clipped to ``n_styles``. Pass ``coarse_ind`` /
    ``middle_ind`` to the encoder to choose another split.
    """
    return min(3, n_styles), min(7, n_styles)


class _Backbone(nn.Module):
    """Shared constructor arguments of the encoders: ``input_layer`` and ``body`` with pSp's names."""

    def _init_backbone(self, num_layers, mode, input_nc, blocks, input_size):
        self.blocks = resolve_blocks(num_layers, blocks)
        self.mode = mode
        self.input_nc = input_nc
        self.input_size = int(input_size)
        self.input_layer, self.body = _make_backbone(input_nc, self.blocks, mode)
        # Index of the last unit of each block and the feature size there (each block halves the size:
        # a 3x3/stride-2 conv with padding 1 maps n to ceil(n/2)).
        ends, sizes, size, idx = [], [], self.input_size, -1
        for _, _, n in self.blocks:
            idx += n
            size = (size + 1) // 2
            ends.append(idx)
            sizes.append(size)
        self.block_ends, self.block_sizes = tuple(ends), tuple(sizes)

    def load_backbone(self, state_dict: dict, skip_input_layer: bool = False):
        """Load ``input_layer.*`` / ``body.*`` from an IR-SE backbone file (pSp initialises from ArcFace
        ``model_ir_se50.pth`` this way); other keys (ArcFace's ``output_layer``) are ignored. Returns the
        names of backbone tensors that the file did not provide."""
        prefixes = ("body.",) if skip_input_layer else ("input_layer.", "body.")
        sub = {k: v for k, v in state_dict.items() if k.startswith(prefixes)}
        missing, unexpected = self.load_state_dict(sub, strict=False)
        assert not unexpected, unexpected
        return [k for k in missing if k.startswith(prefixes)]


class GradualStyleEncoder(_Backbone):
    """pSp's feature-pyramid W+ encoder (docs/reference.md section 2), ``w+ = E_w+(x)`` of Eq. 6.

    Taps c1, c2, c3 at the end of the last three backbone blocks (body units 6, 20, 23 for IR-SE50 at 256 px:
    128 ch at 64^2, 256 ch at 32^2, 512 ch at 16^2). Rows ``[0, coarse_ind)`` read c3,
    ``[coarse_ind, middle_ind)`` read ``p2 = up(c3) + latlayer1(c2)``, the rest ``p1 = up(p2) + latlayer2(c1)``
    (bilinear, align_corners=True, as pSp). Pyramid width = width of the last block (512 for IR-SE50); heads
    map it to ``style_dim``. Output ``[B, n_styles, style_dim]``.
    """

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", n_styles: int = 18, input_nc: int = 3,
                 blocks=None, style_dim: int = 512, input_size: int = 256,
                 coarse_ind: int | None = None, middle_ind: int | None = None):
        super().__init__()
        self._init_backbone(num_layers, mode, input_nc, blocks, input_size)
        if len(self.blocks) < 3:
            raise ValueError("the feature pyramid needs a backbone with at least 3 blocks")
        self.n_styles = self.style_count = int(n_styles)  # style_count: pSp's attribute name
        self.style_dim = int(style_dim)
        c_ind, m_ind = default_style_split(self.n_styles)
        self.coarse_ind = c_ind if coarse_ind is None else int(coarse_ind)
        self.middle_ind = m_ind if middle_ind is None else int(middle_ind)
        if not 0 <= self.coarse_ind <= self.middle_ind <= self.n_styles:
            raise ValueError(f"need 0 <= coarse_ind <= middle_ind <= n_styles, got "
                             f"{self.coarse_ind}, {self.middle_ind}, {self.n_styles}")
        self.taps = self.block_ends[-3:]  # (c1, c2, c3): (6, 20, 23) for IR-SE50
        s1, s2, s3 = self.block_sizes[-3:]
        ch1, ch2, ch3 = (b[1] for b in self.blocks[-3:])
        self.styles = nn.ModuleList()
        for i in range(self.n_styles):
            spatial = s3 if i < self.coarse_ind else (s2 if i < self.middle_ind else s1)
            self.styles.append(GradualStyleBlock(ch3, self.style_dim, spatial))
        self.latlayer1 = nn.Conv2d(ch2, ch3, 1)
        self.latlayer2 = nn.Conv2d(ch1, ch3, 1)

    @staticmethod
    def _upsample_add(x, y):
        # Bilinear to y's exact size (pSp's choice; also correct for odd sizes where x2 nearest would not be).
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def features(self, x):
        """Backbone features (c1, c2, c3) at the three tapped resolutions."""
        x = self.input_layer(x)
        t1, t2, t3 = self.taps
        feats = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in (t1, t2, t3):
                feats[i] = x
            if i == t3:
                break
        return feats[t1], feats[t2], feats[t3]

    def forward(self, x):
        c1, c2, c3 = self.features(x)
        rows = [self.styles[j](c3) for j in range(self.coarse_ind)]
        p2 = self._upsample_add(c3, self.latlayer1(c2))
        rows += [self.styles[j](p2) for j in range(self.coarse_ind, self.middle_ind)]
        if self.middle_ind < self.n_styles:  # the finest level is only built when some row reads it
            p1 = self._upsample_add(p2, self.latlayer2(c1))
            rows += [self.styles[j](p1) for j in range(self.middle_ind, self.n_styles)]
        return torch.stack(rows, dim=1)


class BackboneEncoderW(_Backbone):
    """W encoder: pSp's ``BackboneEncoderUsingLastLayerIntoW`` (body -> global average pool -> EqualLinear).

    Output ``[B, style_dim]``: one code shared by all rows, the W-space content embedding used for
    stylization (paper section 3.3; appendix "Encoder"). Keys: ``input_layer.*``, ``body.*``,
    ``linear.{weight,bias}`` (``output_pool`` holds no parameters).
    """

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", input_nc: int = 3, blocks=None,
                 style_dim: int = 512, input_size: int = 256):
        super().__init__()
        self._init_backbone(num_layers, mode, input_nc, blocks, input_size)
        self.style_dim = int(style_dim)
        self.out_channels = self.blocks[-1][1]
        self.output_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = EqualLinear(self.out_channels, self.style_dim, lr_mul=1)

    def forward(self, x):
        x = self.body(self.input_layer(x))
        x = self.output_pool(x).reshape(-1, self.out_channels)
        return self.linear(x)


def to_wplus(zplus: torch.Tensor, generator) -> torch.Tensor:
    """Map z+ rows to w+ row by row through the generator's mapping network (Eq. 4: ``w1+ = mapping(z1+)``).

    ``generator`` needs ``mapping(z)`` (facestyle's Generator) or rosinality's ``style`` MLP. Rows are folded
    into the batch so that the mapping's PixelNorm (over the feature axis) sees one z at a time.
    """
    mapping = getattr(generator, "mapping", None) or getattr(generator, "style", None) or generator
    if zplus.dim() == 2:
        return mapping(zplus)
    b, n, d = zplus.shape
    return mapping(zplus.reshape(b * n, d)).reshape(b, n, -1)


class ZPlusEncoder(GradualStyleEncoder):
    """Z+ encoder E_z+ (Eq. 4): the W+ architecture whose rows are read as z+ (paper appendix: "retaining
    StyleGAN's mapping network allows adjustments to Z+ space"). ``forward`` returns z+ ``[B, n_styles, dim]``;
    ``to_wplus`` / ``encode_wplus`` apply the mapping. Same keys as ``GradualStyleEncoder``.
    """

    @staticmethod
    def to_wplus(zplus: torch.Tensor, generator) -> torch.Tensor:
        """``w+ = mapping(z+)`` row by row (Eq. 4)."""
        return to_wplus(zplus, generator)

    def encode_wplus(self, x: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(z1+, w1+)`` of Eq. 4 for images ``x``."""
        z = self(x)
        return z, to_wplus(z, generator)


def strip_prefix(state_dict: dict, prefix: str) -> dict:
    """Keys starting with ``prefix.`` with that prefix removed (pSp's ``get_keys``); accepts a full
    checkpoint holding ``state_dict``."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    p = prefix.rstrip(".") + "."
    return {k[len(p):]: v for k, v in state_dict.items() if k.startswith(p)}


class PSP(nn.Module):
    """Encoder + StyleGAN2 decoder, state-dict compatible with a pSp checkpoint's ``state_dict``.

    ``encode`` resizes images (in [-1, 1]) to ``input_size`` and returns W+ codes ``[B, n_styles, dim]``:

    * W+ encoder: ``E(x) (+ latent_avg)`` (Eq. 6, pSp's ``start_from_latent_avg``);
    * W encoder: ``E(x) (+ latent_avg)`` replicated over the rows (section 3.3);
    * Z+ encoder: ``mapping(E(x))`` (Eq. 4); ``latent_avg`` is not added since the mapping already lands in W.

    ``latent_avg`` is a non-persistent buffer: pSp stores it beside ``state_dict`` in its checkpoint, so the
    state dict keeps exactly pSp's ``encoder.*`` and ``decoder.*`` keys; use ``load_psp_checkpoint`` /
    ``psp_checkpoint`` to read and write the full ``{state_dict, latent_avg, opts}`` layout.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_avg: torch.Tensor | None = None,
                 start_from_latent_avg: bool = True, input_size: int | None = None, n_styles: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.start_from_latent_avg = start_from_latent_avg
        self.input_size = int(input_size or getattr(encoder, "input_size", 256))
        self.n_styles = int(n_styles or getattr(decoder, "n_latent", 0) or getattr(encoder, "n_styles", 0))
        self.register_buffer("latent_avg", None if latent_avg is None else latent_avg.detach().clone(),
                             persistent=False)

    @property
    def is_zplus(self) -> bool:
        return isinstance(self.encoder, ZPlusEncoder)

    def set_latent_avg(self, latent_avg: torch.Tensor | None):
        """Set the average latent ([dim], [1, dim] or [n_styles, dim]); e.g. ``decoder.mean_latent(4096)``."""
        self.latent_avg = None if latent_avg is None else latent_avg.detach().to(self._device()).clone()

    def _device(self):
        return next(self.parameters()).device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Resize to ``input_size`` (pSp feeds 256 px; antialiased when shrinking, like its PIL resize)."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            shrink = x.shape[-1] > self.input_size
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        return x

    def _add_latent_avg(self, codes):
        avg = self.latent_avg.to(codes.dtype)
        if codes.dim() == 2 and avg.dim() == 2:
            # W codes with a per-row average: all rows of a mean latent are equal, take their mean.
            avg = avg.mean(0)
        return codes + avg

    def encode(self, x: torch.Tensor, return_raw: bool = False):
        """Images in [-1, 1] -> W+ codes ``[B, n_styles, dim]`` (see class docstring). With ``return_raw``
        also return the encoder's own output (z+ for the Z+ encoder, the single w for the W encoder)."""
        raw = self.encoder(self.preprocess(x))
        if self.is_zplus:
            codes = to_wplus(raw, self.decoder)
        else:
            codes = raw
            if self.start_from_latent_avg:
                if self.latent_avg is None:
                    raise ValueError("start_from_latent_avg=True but latent_avg is not set: load a checkpoint "
                                     "or call set_latent_avg(decoder.mean_latent(4096))")
                codes = self._add_latent_avg(codes)
        if codes.dim() == 2:  # W space: the same code on every row
            if self.n_styles < 1:
                raise ValueError("n_styles unknown: pass n_styles= or use a decoder with n_latent")
            codes = codes.unsqueeze(1).repeat(1, self.n_styles, 1)
        return (codes, raw) if return_raw else codes

    def decode(self, codes: torch.Tensor, randomize_noise: bool = False, resize: bool = False):
        """W+ codes -> images via the decoder (rosinality call convention), optionally pooled to input_size."""
        out = self.decoder([codes], input_is_latent=True, randomize_noise=randomize_noise)
        img = out[0] if isinstance(out, (tuple, list)) else out
        if resize and img.shape[-1] > self.input_size:
            img = F.adaptive_avg_pool2d(img, (self.input_size, self.input_size))  # pSp's face_pool
        return img

    def forward(self, x: torch.Tensor, resize: bool = False, randomize_noise: bool = False,
                return_latents: bool = False):
        """Encode then decode; returns images (and the W+ codes with ``return_latents``)."""
        codes = self.encode(x)
        img = self.decode(codes, randomize_noise=randomize_noise, resize=resize)
        return (img, codes) if return_latents else img

    def load_psp_checkpoint(self, ckpt: dict, strict: bool = True, load_decoder: bool = True):
        """Load a pSp-layout checkpoint ``{state_dict: {encoder.*, decoder.*}, latent_avg, opts}``."""
        self.encoder.load_state_dict(strip_prefix(ckpt, "encoder"), strict=strict)
        if load_decoder:
            self.decoder.load_state_dict(strip_prefix(ckpt, "decoder"), strict=strict)
        if ckpt.get("latent_avg") is not None:
            self.set_latent_avg(ckpt["latent_avg"])
        return self

    def psp_checkpoint(self, opts: dict | None = None) -> dict:
        """The pSp checkpoint layout for ``torch.save``: ``{state_dict, latent_avg, opts}``."""
        return {"state_dict": self.state_dict(), "latent_avg": self.latent_avg, "opts": dict(opts or {})}


def build_encoder(kind: str, cfg, n_styles: int, style_dim: int) -> nn.Module:
    """Encoder of ``kind`` ("w", "wplus", "zplus") from a ``facestyle.config.EncoderConfig``.

    ``cfg.blocks`` (mini profile) overrides ``cfg.num_layers`` (IR-SE50 in the ffhq profile).
    """
    common = dict(num_layers=cfg.num_layers, mode=cfg.mode, input_nc=3, blocks=cfg.blocks,
                  style_dim=style_dim, input_size=cfg.input_size)
    if kind == "w":
        return BackboneEncoderW(**common)
    if kind == "wplus":
        return GradualStyleEncoder(n_styles=n_styles, **common)
    if kind == "zplus":
        return ZPlusEncoder(n_styles=n_styles, **common)
    raise ValueError(f"unknown encoder kind {kind!r}: choose one of 'w', 'wplus', 'zplus'")


def count_params(module: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
