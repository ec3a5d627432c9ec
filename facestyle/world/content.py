"""Content vectors of the mini world: the factors, their real-domain distribution, and the style-set biases.

A content vector is one row of a float tensor ``[N, F]`` with ``F = len(FACTORS)``; column ``i`` holds factor
``FACTORS[i]``: a continuous factor is a number in [0, 1] (0.5 is "average"), a categorical factor is an
integer code (an index into ``Factor.values``) stored as a float.

The real-domain distribution (the role of FFHQ) is: every continuous factor uniform on [0, 1], every
categorical factor independent with frequencies ``Factor.real_probs``. :func:`content_from_z` maps a standard
normal latent to exactly that distribution (factor i from z[:, i] through the normal CDF; categorical codes by
quantile bins), so ``content_from_z(torch.randn(n, D))`` is a real-domain sample and a generator trained on
``render(content_from_z(z), "real")`` knows the content of every z.

Style-set biases (``STYLE_BIAS``), the analogue of real style datasets' skew (docs/design.md section 3). A
finetune on a biased set without constraints drifts content towards these biases:

* cartoon      - no glasses at all; mostly smiling (smile >= 0.45); heads near frontal (yaw 0.3-0.7).
* anime        - few beards (3 %); long hair mostly (75 %), never bald-ish; large eyes (eye_size >= 0.4);
                 no grey hair.
* fantasy      - no glasses; earrings frequent (70 %); long hair mostly (65 %), never bald-ish;
                 serious faces (smile <= 0.55).
* illustration - few beards (5 %); pastel backgrounds (pink or beige, 80 %); no grey hair.
* impasto      - beards frequent (45 %); rare glasses (6 %); serious faces (smile <= 0.45);
                 grey or beige backgrounds (80 %).

A bias spec is ``{factor_name: {"probs": (...)}}`` for a categorical factor (its frequencies in the style set)
or ``{factor_name: {"range": (lo, hi)}}`` for a continuous one (uniform on [lo, hi] instead of [0, 1]).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..config import STYLES


class Factor(NamedTuple):
    """One content factor. ``values``/``real_probs`` are None for continuous factors."""

    name: str
    kind: str  # "continuous" | "categorical"
    values: tuple | None = None
    real_probs: tuple | None = None
    doc: str = ""


def _cont(name: str, doc: str) -> Factor:
    return Factor(name, "continuous", None, None, doc)


def _cat(name: str, values: tuple, probs: tuple, doc: str) -> Factor:
    assert len(values) == len(probs) and abs(sum(probs) - 1) < 1e-9, name
    return Factor(name, "categorical", tuple(values), tuple(float(p) for p in probs), doc)


FACTORS: tuple[Factor, ...] = (
    _cont("face_width", "0 narrow face, 1 wide face"),
    _cont("jaw", "0 tapered/pointed chin, 1 wide square jaw"),
    _cont("skin_tone", "0 light, 1 dark"),
    _cont("yaw", "head turn: 0 facing the viewer's left, 0.5 frontal, 1 facing the viewer's right"),
    _cont("tilt", "head roll: 0 tilted counter-clockwise, 0.5 upright, 1 clockwise"),
    _cont("eye_size", "0 small eyes, 1 large eyes"),
    _cont("eye_spacing", "0 close-set, 1 wide-set"),
    _cat("eye_color", ("brown", "blue", "green", "grey"), (0.50, 0.25, 0.15, 0.10), "iris colour"),
    _cont("brow_thickness", "0 thin eyebrows, 1 thick eyebrows"),
    _cont("nose_size", "0 small nose, 1 long wide nose"),
    _cont("mouth_width", "0 narrow mouth, 1 wide mouth"),
    _cont("smile", "0 frown, ~0.3 neutral, 1 broad open smile with teeth"),
    _cat("hair_style", ("short", "long", "bun", "bald"), (0.40, 0.35, 0.15, 0.10),
         "short cut / long hair to the shoulders / hair tied in a bun on top / bald-ish with side tufts"),
    _cont("hair_length", "within the style: cap volume (short), length (long), bun size, tuft size (bald)"),
    _cat("hair_color", ("black", "brown", "blond", "red", "grey"), (0.30, 0.35, 0.18, 0.07, 0.10),
         "hair (and beard) colour"),
    _cat("glasses", ("none", "round", "square"), (0.70, 0.15, 0.15), "spectacles frame shape"),
    _cat("beard", ("no", "yes"), (0.80, 0.20), "full beard with moustache"),
    _cat("earrings", ("no", "yes"), (0.75, 0.25), "gold ring earrings"),
    _cat("background", ("grey", "blue", "green", "beige", "pink"), (0.25, 0.25, 0.20, 0.15, 0.15),
         "backdrop colour"),
    _cont("light", "light direction: 0 lit from the viewer's left, 1 from the right"),
)

DOMAINS = ("real",) + tuple(STYLES)
FACTOR_INDEX = {f.name: i for i, f in enumerate(FACTORS)}
CONTINUOUS = tuple(i for i, f in enumerate(FACTORS) if f.kind == "continuous")
CATEGORICAL = tuple(i for i, f in enumerate(FACTORS) if f.kind == "categorical")
NUM_FACTORS = len(FACTORS)


def factor_names() -> tuple[str, ...]:
    """Names of the content factors in column order."""
    return tuple(f.name for f in FACTORS)


def factor_index(name: str) -> int:
    """Column of a factor, with a helpful error for unknown names."""
    try:
        return FACTOR_INDEX[name]
    except KeyError:
        raise ValueError(f"unknown factor {name!r}: choose one of {', '.join(factor_names())}") from None


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}: choose one of {', '.join(DOMAINS)}")
    return domain


# Biases of the style sets (see the module docstring). Plausible, documented, and strong enough that an
# unconstrained finetune visibly drifts (e.g. glasses disappear under the cartoon model).
STYLE_BIAS: dict[str, dict[str, dict]] = {
    "cartoon": {
        "glasses": {"probs": (1.0, 0.0, 0.0)},
        "smile": {"range": (0.45, 1.0)},
        "yaw": {"range": (0.3, 0.7)},
    },
    "anime": {
        "beard": {"probs": (0.97, 0.03)},
        "hair_style": {"probs": (0.15, 0.75, 0.10, 0.0)},
        "eye_size": {"range": (0.4, 1.0)},
        "hair_color": {"probs": (0.30, 0.35, 0.25, 0.10, 0.0)},
    },
    "fantasy": {
        "glasses": {"probs": (1.0, 0.0, 0.0)},
        "earrings": {"probs": (0.30, 0.70)},
        "hair_style": {"probs": (0.20, 0.65, 0.15, 0.0)},
        "smile": {"range": (0.0, 0.55)},
    },
    "illustration": {
        "beard": {"probs": (0.95, 0.05)},
        "background": {"probs": (0.05, 0.05, 0.10, 0.40, 0.40)},
        "hair_color": {"probs": (0.30, 0.35, 0.25, 0.10, 0.0)},
    },
    "impasto": {
        "beard": {"probs": (0.55, 0.45)},
        "glasses": {"probs": (0.94, 0.03, 0.03)},
        "smile": {"range": (0.0, 0.45)},
        "background": {"probs": (0.45, 0.05, 0.10, 0.35, 0.05)},
    },
}


def _check_bias(bias: dict) -> None:
    for name, spec in bias.items():
        f = FACTORS[factor_index(name)]
        if f.kind == "categorical":
            probs = spec.get("probs")
            if probs is None or len(probs) != len(f.values) or abs(sum(probs) - 1) > 1e-6 or min(probs) < 0:
                raise ValueError(f"bias for {name!r} needs 'probs' over {f.values} summing to 1, got {spec}")
        else:
            lo, hi = spec.get("range", (None, None))
            if lo is None or not (0 <= lo <= hi <= 1):
                raise ValueError(f"bias for {name!r} needs 'range': (lo, hi) within [0, 1], got {spec}")


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def _quantile_codes(u: torch.Tensor, probs) -> torch.Tensor:
    """Integer codes (as float) for uniforms u, bin k having width probs[k]; empty bins are never hit."""
    edges = torch.tensor(probs, dtype=torch.float64).cumsum(0)[:-1].to(u.device)
    codes = (u.double().unsqueeze(-1) >= edges).sum(-1)
    # guard against probs with a zero tail: never return a code whose probability is 0
    p = torch.tensor(probs, dtype=torch.float64, device=u.device)
    if (p == 0).any():
        valid = (p > 0).nonzero().flatten()
        nearest = valid[(codes.unsqueeze(-1) - valid).abs().argmin(-1)]
        codes = torch.where(p[codes] > 0, codes, nearest)
    return codes.to(torch.float32)


def content_from_z(z: torch.Tensor, bias: dict | None = None) -> torch.Tensor:
    """Deterministic map from latents ``z [N, D >= F]`` to content ``[N, F]`` (real distribution for z ~ N(0, I)).

    Factor i comes from z[:, i] through the standard normal CDF: continuous factors are that uniform value,
    categorical ones its quantile bin under ``real_probs``. With ``bias`` (a ``STYLE_BIAS`` entry) the biased
    factors use the bias's probabilities / range instead.
    """
    if z.dim() != 2 or z.shape[1] < NUM_FACTORS:
        raise ValueError(f"z must be [N, D] with D >= {NUM_FACTORS}, got shape {tuple(z.shape)}")
    bias = bias or {}
    _check_bias(bias)
    u = _normal_cdf(z[:, :NUM_FACTORS].detach().float().cpu())
    u = u.clamp(1e-7, 1 - 1e-7)
    cols = []
    for i, f in enumerate(FACTORS):
        spec = bias.get(f.name)
        if f.kind == "categorical":
            cols.append(_quantile_codes(u[:, i], spec["probs"] if spec else f.real_probs))
        else:
            lo, hi = spec["range"] if spec else (0.0, 1.0)
            cols.append(lo + (hi - lo) * u[:, i])
    return torch.stack(cols, 1)


def sample_content(n: int, seed: int | None = 0, generator: torch.Generator | None = None,
                   bias: dict | str | None = None) -> torch.Tensor:
    """Sample ``n`` content vectors ``[n, F]`` from the real distribution (or a biased one).

    ``bias`` is a ``STYLE_BIAS`` entry or a style name (``bias="cartoon"``). Deterministic for a seed; pass a
    ``torch.Generator`` instead to continue a stream.
    """
    if isinstance(bias, str):
        if bias not in STYLE_BIAS:
            raise ValueError(f"unknown style bias {bias!r}: choose one of {', '.join(STYLE_BIAS)}")
        bias = STYLE_BIAS[bias]
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    z = torch.randn(int(n), NUM_FACTORS, generator=generator)
    return content_from_z(z, bias=bias)


def base_content(n: int = 1) -> torch.Tensor:
    """A neutral reference portrait (continuous factors 0.5, categorical factors their most frequent value),
    useful for varying one factor at a time."""
    row = []
    for f in FACTORS:
        if f.kind == "continuous":
            row.append(0.5)
        else:
            row.append(float(max(range(len(f.values)), key=lambda k: f.real_probs[k])))
    c = torch.tensor(row, dtype=torch.float32)
    c[factor_index("smile")] = 0.55
    return c.unsqueeze(0).repeat(n, 1)


def describe(content: torch.Tensor) -> list[dict]:
    """Human-readable dicts (categorical codes turned into names), one per row."""
    out = []
    for row in content.reshape(-1, NUM_FACTORS).tolist():
        d = {}
        for f, v in zip(FACTORS, row):
            d[f.name] = f.values[int(round(v))] if f.kind == "categorical" else round(v, 3)
        out.append(d)
    return out
