"""Evaluation metrics, each registered under a name that states its protocol (as stylegan3's metric_main does).

Paper section 4 reports FID, perceptual distance (LPIPS) and identity preservation; docs/design.md section 4 adds
the semantic distance between G and G' (defined explicitly here, docs/reference.md section 3) and, in the mini world
where every image has a known content vector, attribute preservation, distance to the ideal stylization and
style accuracy measured by the oracle (which is never a training loss).

Functions return plain floats / dicts of floats so that :func:`results_table` can write them directly.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

from ..config import Profile, get_profile
from ..utils import atomic_write
from ..world import DOMAINS, FACTORS

__all__ = [
    "Metric", "METRICS", "list_metrics", "get_metric", "feature_stats", "frechet_distance",
    "frechet_distance_from_stats", "fid_from_features", "oracle_features", "fid_oracle", "inception_features",
    "fid_inception", "attribute_agreement",
    "semantic_latents", "semantic_distance", "ideal_distance", "style_accuracy", "category_frequencies",
    "frequency_gap", "results_table",
]


# --------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A metric's name, the profiles it applies to, its direction and its protocol in one line."""

    name: str
    protocol: str
    profiles: tuple[str, ...] = ("mini", "ffhq")
    higher_is_better: bool = False
    function: str = ""  # the function in this module that computes it


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fid_oracle", "FID between generated and reference images in the mini oracle's 256-d penultimate "
           "feature space (Oracle.features), float64 statistics", ("mini",), False, "fid_oracle"),
    Metric("fid_inception", "FID in the 2048-d pool3 space of the TF-ported FID Inception (pytorch-fid's "
           "pt_inception-2015-12-05, hub 'fid-inception'; images in [-1, 1] resized to 299 px bilinearly), float64 "
           "statistics as fid_oracle: the paper's FID (section 4.1, Tables 1, 4, 5)", ("ffhq",), False,
           "fid_inception"),
    Metric("lpips_alex", "mean LPIPS-AlexNet (the profile's lpips_eval_net) between paired images resized to "
           "loss_size; mini uses the seeded random backbone", ("mini", "ffhq"), False, "lpips_distance"),
    Metric("id_distance", "mean 1 - cos of identity embeddings of paired images (facenet for ffhq, IdentityNet "
           "for mini), pSp ID-loss form", ("mini", "ffhq"), False, "identity_distance"),
    Metric("semantic_distance", "mean over 256 seeded w (G's mapping of z, seed 0, truncation 1, G's const noise) "
           "of LPIPS-alex(G(w), G'(w)) + lambda_id * ID(G(w), G'(w)) at loss_size (Eq. 1 form)",
           ("mini", "ffhq"), False, "semantic_distance"),
    Metric("attr_agreement", "share of images whose oracle-predicted factor matches the reference content "
           "(categorical: same code; continuous: |diff| < 0.1), per factor and averaged", ("mini",), True,
           "attribute_agreement"),
    Metric("ideal_distance", "mean LPIPS-alex between stylized outputs and world.render(content, style), the ideal "
           "stylization of the same content", ("mini",), False, "ideal_distance"),
    Metric("style_accuracy", "share of outputs the oracle classifies as the target style domain", ("mini",), True,
           "style_accuracy"),
    Metric("freq_gap", "max absolute gap, in percentage points, between a categorical factor's value frequencies "
           "in the outputs and reference frequencies (default: the real-domain ones)", ("mini",), False,
           "frequency_gap"),
)}


def list_metrics(profile: str | None = None) -> list[Metric]:
    """Registered metrics, optionally only those that apply to ``profile``."""
    return [m for m in METRICS.values() if profile is None or profile in m.profiles]


def get_metric(name: str) -> Metric:
    """A registered metric by name (unknown names fail with the list of valid ones)."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}: choose one of {', '.join(METRICS)}") from None


# --------------------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------------------

def feature_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of features ``[N, D]`` in float64 (FID's statistics)."""
    x = torch.as_tensor(feats).detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {tuple(x.shape)}")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix by eigendecomposition (tiny negative eigenvalues -> 0)."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula, Heusel et al. 2017).

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``. The trace term is computed without a general
    (non-symmetric) matrix square root: ``(S1 S2)^(1/2)`` has the same eigenvalues as the symmetric PSD matrix
    ``S1^(1/2) S2 S1^(1/2)``, so ``tr = sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))`` with ``eigh`` in float64 - stable
    even for rank-deficient covariances (fewer samples than dimensions), where scipy's ``sqrtm`` goes complex.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).reshape(-1) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"inconsistent statistics: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
                         f"sigma {tuple(s1.shape)}/{tuple(s2.shape)}")
    r1 = _sqrt_psd(s1)
    inner = r1 @ s2 @ r1
    eig = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0)
    fd = (mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * eig.sqrt().sum()
    return max(float(fd), 0.0)  # rounding can push a true 0 slightly negative


def frechet_distance(feat_a: torch.Tensor, feat_b: torch.Tensor) -> float:
    """FID between two feature sets ``[N, D]`` / ``[M, D]`` (see :func:`frechet_distance_from_stats`)."""
    return frechet_distance_from_stats(*feature_stats(feat_a), *feature_stats(feat_b))


def fid_from_features(feat_gen: torch.Tensor, reference) -> float:
    """FID of generated features against ``reference``: features ``[M, D]`` or precomputed ``(mu, sigma)``.

    Precomputed statistics let a large reference set (e.g. 50k FFHQ Inception features) be stored once.
    """
    if isinstance(reference, dict):
        reference = (reference["mu"], reference["sigma"])
    if isinstance(reference, (tuple, list)):
        return frechet_distance_from_stats(*feature_stats(feat_gen), *reference)
    return frechet_distance(feat_gen, reference)


def _device_of(model: nn.Module) -> torch.device:
    t = next(iter(model.parameters()), None)
    return t.device if t is not None else torch.device("cpu")


@torch.no_grad()
def oracle_features(images: torch.Tensor, oracle: nn.Module, batch: int = 256) -> torch.Tensor:
    """Oracle penultimate features ``[N, D]`` (CPU float32) of images in [-1, 1]: the mini FID space."""
    dev = _device_of(oracle)
    out = [oracle.features(images[i:i + batch].to(dev)).float().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out)


def fid_oracle(images: torch.Tensor, reference, oracle: nn.Module, batch: int = 256) -> float:
    """``fid_oracle``: FID in oracle feature space; ``reference`` is images ``[M, 3, H, W]`` or ``(mu, sigma)``."""
    if torch.is_tensor(reference) and reference.ndim == 4:
        reference = oracle_features(reference, oracle, batch)
    return fid_from_features(oracle_features(images, oracle, batch), reference)


@torch.no_grad()
def inception_features(images: torch.Tensor, net: nn.Module, batch: int = 50) -> torch.Tensor:
    """pool3 features ``[N, 2048]`` (CPU float32) of images in [-1, 1] from the FID Inception
    (:func:`facestyle.hub.load_fid_inception`)."""
    dev = _device_of(net)
    return torch.cat([net(images[i:i + batch].to(dev)).float().cpu() for i in range(0, len(images), batch)])


def fid_inception(images: torch.Tensor, reference, net: nn.Module, batch: int = 50) -> float:
    """``fid_inception``: the paper's FID; ``reference`` is images ``[M, 3, H, W]``, features or ``(mu, sigma)``."""
    if torch.is_tensor(reference) and reference.ndim == 4:
        reference = inception_features(reference, net, batch)
    return fid_from_features(inception_features(images, net, batch), reference)


# --------------------------------------------------------------------------------------------------------------
# attributes (mini world)
# --------------------------------------------------------------------------------------------------------------

def attribute_agreement(content_a: torch.Tensor, content_b: torch.Tensor, tolerance: float = 0.1) -> dict[str, float]:
    """``attr_agreement``: per-factor share of rows on which two content tensors ``[N, F]`` agree.

    Categorical factors agree when their codes are equal; continuous factors (on the [0, 1] scale) when
    ``|a - b| < tolerance``. Returns ``{factor name: share}`` plus ``mean_categorical``, ``mean_continuous`` and
    ``mean_all`` (unweighted means over factors). Used for oracle(input) vs oracle(output) (content kept by a
    stylization) and oracle(G(w)) vs oracle(G'(w)) (semantic drift of a finetune).
    """
    a = torch.as_tensor(content_a).detach().float().cpu()
    b = torch.as_tensor(content_b).detach().float().cpu()
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != len(FACTORS):
        raise ValueError(f"contents must both be [N, {len(FACTORS)}], got {tuple(a.shape)} and {tuple(b.shape)}")
    out: dict[str, float] = {}
    cat, cont = [], []
    for i, f in enumerate(FACTORS):
        if f.kind == "categorical":
            v = float((a[:, i].round() == b[:, i].round()).float().mean())
            cat.append(v)
        else:
            v = float(((a[:, i] - b[:, i]).abs() < tolerance).float().mean())
            cont.append(v)
        out[f.name] = v
    out["mean_categorical"] = sum(cat) / len(cat) if cat else float("nan")
    out["mean_continuous"] = sum(cont) / len(cont) if cont else float("nan")
    out["mean_all"] = (sum(cat) + sum(cont)) / (len(cat) + len(cont))
    return out


def category_frequencies(content: torch.Tensor) -> dict[str, list[float]]:
    """Per categorical factor, the frequency of each value (aligned with ``Factor.values``) in ``content [N, F]``."""
    c = torch.as_tensor(content).detach().float().cpu()
    if c.ndim != 2 or c.shape[1] != len(FACTORS) or c.shape[0] == 0:
        raise ValueError(f"content must be [N > 0, {len(FACTORS)}], got {tuple(c.shape)}")
    out = {}
    for i, f in enumerate(FACTORS):
        if f.kind == "categorical":
            codes = c[:, i].round().long().clamp(0, len(f.values) - 1)
            out[f.name] = (torch.bincount(codes, minlength=len(f.values)).double() / len(codes)).tolist()
    return out


def frequency_gap(content_gen: torch.Tensor, reference_probs: dict | None = None) -> dict[str, float]:
    """``freq_gap``: per categorical factor, ``max_v |p_gen(v) - p_ref(v)|`` in percentage points, and ``max``.

    ``reference_probs`` maps factor names to frequencies over ``Factor.values`` (e.g. a ``STYLE_BIAS`` entry's
    ``probs`` or :func:`category_frequencies` of a reference set); factors it leaves out use ``real_probs``.
    A drifting finetune shows up as outputs whose frequencies move towards the style set's bias.
    """
    gen = category_frequencies(content_gen)
    ref = dict(reference_probs or {})
    out = {}
    for f in FACTORS:
        if f.kind != "categorical":
            continue
        r = ref.get(f.name, f.real_probs)
        if isinstance(r, dict):
            r = r["probs"]
        if len(r) != len(f.values):
            raise ValueError(f"reference for {f.name!r} needs {len(f.values)} frequencies {f.values}, got {r}")
        out[f.name] = 100.0 * max(abs(p - q) for p, q in zip(gen[f.name], r))
    out["max"] = max(out.values())
    return out


@torch.no_grad()
def style_accuracy(images: torch.Tensor, style: str, oracle: nn.Module, batch: int = 256) -> float:
    """``style_accuracy``: share of ``images`` the oracle assigns to the domain ``style``."""
    if style not in DOMAINS:
        raise ValueError(f"unknown domain {style!r}: choose one of {', '.join(DOMAINS)}")
    _, domains = oracle.predict(images.to(_device_of(oracle)), batch=batch)
    return float((domains.cpu() == DOMAINS.index(style)).float().mean())


@torch.no_grad()
def ideal_distance(outputs: torch.Tensor, content: torch.Tensor, style: str, lpips_model: nn.Module, *,
                   size: int | None = None, seed: int = 0, batch: int = 64, reduction: str = "mean"):
    """``ideal_distance``: LPIPS between stylized ``outputs`` and ``world.render(content, style)`` (mini only).

    The ideal stylization is the world's own rendering of the input's content in the target style, drawn at the
    outputs' resolution with texture seed ``seed``; both are compared at ``size`` (default: unchanged).
    ``reduction="none"`` returns the per-image distances ``[N]``.
    """
    from ..nn.perceptual import lpips_distance
    from ..world import render

    ideal = render(content, style, size=outputs.shape[-1], seed=seed)
    d = torch.cat([lpips_distance(outputs[i:i + batch], ideal[i:i + batch], lpips_model, size).cpu()
                   for i in range(0, len(outputs), batch)])
    return d if reduction == "none" else float(d.mean())


# --------------------------------------------------------------------------------------------------------------
# semantic distance between G and G'
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def semantic_latents(g: nn.Module, n: int = 256, seed: int = 0) -> torch.Tensor:
    """The fixed latents of :func:`semantic_distance`: ``w = g.mapping(z)`` for ``z ~ N(0, I)`` drawn from a CPU
    generator seeded with ``seed`` (so the set is identical on every device), no truncation. ``[n, style_dim]``."""
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(int(seed)))
    return g.mapping(z.to(g.device))


@torch.no_grad()
def semantic_distance(g: nn.Module, g_prime: nn.Module, ws: torch.Tensor | None = None,
                      lpips_model: nn.Module | None = None, id_model: nn.Module | None = None, *,
                      profile: str | Profile = "mini", lambda_id: float | None = None, size: int | None = None,
                      n: int = 256, seed: int = 0, batch: int = 32, return_per_sample: bool = False) -> dict:
    """``semantic_distance``: how far a finetuned G' has moved from G in content, facestyle's explicit definition.

    The paper uses this quantity without defining it (docs/reference.md section 3); facestyle defines it with the
    functional form of the semantic-preservation loss, paper Eq. 1::

        SD(G, G') = 1/N sum_i [ LPIPS_alex(r(G(w_i)), r(G'(w_i))) + lambda_ID * (1 - cos(E(G(w_i)), E(G'(w_i)))) ]

    * ``w_i``: ``ws`` if given (W ``[N, dim]`` or W+ ``[N, n_latent, dim]``), else :func:`semantic_latents`
      ``(g, n=256, seed=0)``: G's mapping of seeded z, truncation 1. The same codes drive both synthesis
      networks, so only the synthesis weights are compared.
    * noise: G's constant noise buffers for both generators (no randomness between the two renderings).
    * ``r``: resize to ``size`` (default: the profile's ``loss_size``, 256 ffhq / 64 mini).
    * LPIPS: ``lpips_model`` (default: the profile's ``lpips_eval_net``, AlexNet, via :func:`build_lpips`).
    * E: ``id_model`` (default: the profile's identity network via :func:`build_identity`); ``lambda_ID``
      defaults to the profile's ``lambda_id`` (0.1, paper section 4.1).

    Returns ``{"semantic_distance", "lpips", "id", "lambda_id", "n", "size"}`` (means; with
    ``return_per_sample`` also ``"per_sample_lpips"`` / ``"per_sample_id"`` tensors). ``SD(G, G) = 0``.
    """
    from ..hub import build_identity, build_lpips
    from ..nn.perceptual import identity_distance, lpips_distance

    prof = get_profile(profile)
    lam = prof.lambda_id if lambda_id is None else float(lambda_id)
    size = prof.loss_size if size is None else int(size)
    if lpips_model is None:
        lpips_model = build_lpips(prof.lpips_eval_net, prof, device=g.device)
    if id_model is None:
        id_model = build_identity(prof, device=g.device)
    if ws is None:
        ws = semantic_latents(g, n=n, seed=seed)
    noise = g.const_noise()
    noise_p = [t.to(g_prime.device) for t in noise]
    lp, idd = [], []
    for i in range(0, len(ws), batch):
        w = ws[i:i + batch]
        a = g.synthesis(w.to(g.device), noise=noise)
        b = g_prime.synthesis(w.to(g_prime.device), noise=noise_p).to(a.device)
        lp.append(lpips_distance(a, b, lpips_model, size).float().cpu())
        idd.append(identity_distance(a, b, id_model, size).float().cpu())
    lp_t, id_t = torch.cat(lp), torch.cat(idd)
    out = {"semantic_distance": float((lp_t + lam * id_t).mean()), "lpips": float(lp_t.mean()),
           "id": float(id_t.mean()), "lambda_id": lam, "n": int(len(ws)), "size": size}
    if return_per_sample:
        out["per_sample_lpips"], out["per_sample_id"] = lp_t, id_t
    return out


# --------------------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------------------

def _plain_value(v: Any) -> Any:
    if torch.is_tensor(v):
        v = v.item() if v.numel() == 1 else v.tolist()
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):  # numpy scalars
        try:
            v = v.item()
        except (TypeError, ValueError):
            pass
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN / inf
    return v


def _fmt(v: Any, precision: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        # fixed decimals keep a column aligned; scientific only where fixed would hide the value
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 10 ** -precision):
            return f"{v:.{precision - 1}e}"
        return f"{v:.{precision}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def results_table(rows: Sequence[dict], path_md: str | Path, path_json: str | Path, *,
                  columns: Iterable[str] | None = None, title: str | None = None, precision: int = 4,
                  meta: dict | None = None, footer: str | None = None) -> tuple[Path, Path]:
    """Write ``rows`` (dicts of metric values) as a markdown table and as JSON, each file atomically.

    Columns are ``columns`` or the union of the rows' keys in first-seen order; a missing value prints as ``-``.
    The markdown ends with the protocol line of every column that names a registered metric, so the table says
    how its numbers were measured, then ``footer`` (more markdown) if given. The JSON holds
    ``{"columns", "rows", "protocols", "meta"}``.
    """
    rows = [{k: _plain_value(v) for k, v in r.items()} for r in rows]
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    columns = list(columns)
    protocols = {c: METRICS[c].protocol for c in columns if c in METRICS}
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c), precision) for c in columns) + " |" for r in rows]
    if protocols:
        lines += [""] + [f"- `{c}`: {p}" for c, p in protocols.items()]
    md = "\n".join(lines) + "\n" + (footer or "")
    doc = {"columns": columns, "rows": rows, "protocols": protocols, "meta": _plain_meta(meta or {})}
    path_md, path_json = Path(path_md), Path(path_json)
    with atomic_write(path_md, "w") as fh:
        fh.write(md)
    with atomic_write(path_json, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    return path_md, path_json


def _plain_meta(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain_meta(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_meta(v) for v in obj]
    return _plain_value(obj)
