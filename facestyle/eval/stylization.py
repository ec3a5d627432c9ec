"""Numbers of the images the method makes from given inputs: pseudo pairs from style images (section 3.2,
notebook 02) and stylized real inputs - the metrics of Tables 1 and 6, the comparison with the in-repo baselines
(Tables 1, 3, 6; notebook 07), the mixing levels of section 4.4 (notebook 05) and the reference encodings of
appendix 6.3 (Fig. 15; notebook 06).

Every function takes the :class:`~facestyle.eval.study.Judges` of a study and reads images with the same oracle
and LPIPS-alex as :func:`~facestyle.eval.study.evaluate_finetune`; ``fid_oracle`` is measured against the same
style reference set.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch
import torch.nn as nn

from .. import hub, world
from ..config import check_style, get_profile
from ..utils import get_device
from . import metrics as M
from .study import _FID_SEED, Judges, StudySettings, _read, finetune_variant

__all__ = ["pair_quality", "stylization_metrics", "compare_methods", "mixing_study", "style_encoding_study"]


# --------------------------------------------------------------------------------------------------------------
# pseudo-pair quality (paper section 3.2 / 4.5)
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def pair_quality(style_images: torch.Tensor, content: torch.Tensor | None, levels: dict, judges: Judges,
                 batch: int = 100) -> list[dict]:
    """How real, and how faithful to S, each level's pseudo-real images P_k are.

    ``levels`` maps a label (e.g. ``"P1"``) to images ``[N, 3, H, W]`` paired with ``style_images``. Per label:
    ``lpips_to_s`` (LPIPS-alex between S and P_k: how far the pair moves from the style image),
    ``real_share`` (share the oracle calls real: is P_k a real-domain portrait?), and, when the true ``content``
    of S is known (mini), ``agreement_categorical`` / ``agreement_continuous`` between it and the oracle's
    reading of P_k (does the pair keep S's content?).
    """
    from ..nn.perceptual import lpips_distance

    rows = []
    for label, p in levels.items():
        p = p.float().cpu()
        lp = torch.cat([lpips_distance(style_images[i:i + batch], p[i:i + batch], judges.lpips).cpu()
                        for i in range(0, len(p), batch)])
        _, c, d = _read(judges.oracle, p, batch)
        row = {"pairs": label, "lpips_to_s": float(lp.mean()),
               "real_share": float((d.cpu() == world.DOMAINS.index("real")).float().mean())}
        if content is not None:
            agr = M.attribute_agreement(content[:len(p)], c.cpu())
            row.update(agreement_categorical=agr["mean_categorical"], agreement_continuous=agr["mean_continuous"])
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------------------
# stylization of inputs: metrics, method comparison (Tables 1, 3, 6), mixing levels (section 4.4)
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def stylization_metrics(inputs: torch.Tensor, outputs: torch.Tensor, style: str, judges: Judges,
                        content: torch.Tensor | None = None, batch: int = 100) -> dict:
    """Metrics of stylized ``outputs`` of real ``inputs`` (same order), the paper's Table 1 / 6 columns in mini:

    ``lpips_in_out`` (LPIPS-alex input vs output, the paper's "Dis."), ``id_distance`` (1 - cos of the identity
    embeddings), ``style_accuracy`` (oracle domain = style), ``fid_oracle`` (vs the style's distribution, as in
    :func:`evaluate_finetune`) and, with the inputs' true ``content`` (mini), ``agreement_*`` (oracle reading of
    the output vs the true content) and ``ideal_distance`` (LPIPS-alex to the world's own stylization).
    """
    from ..nn.perceptual import identity_distance, lpips_distance

    x, y = inputs.float().cpu(), outputs.float().clamp(-1, 1).cpu()
    dev = next(judges.lpips.parameters(), torch.empty(0)).device
    lp = torch.cat([lpips_distance(x[i:i + batch].to(dev), y[i:i + batch].to(dev), judges.lpips).cpu()
                    for i in range(0, len(x), batch)])
    idd = torch.cat([identity_distance(x[i:i + batch].to(dev), y[i:i + batch].to(dev), judges.identity).cpu()
                     for i in range(0, len(x), batch)])
    fy, cy, dy = _read(judges.oracle, y, batch)
    ref_content = world.sample_content(max(len(y), 64), seed=_FID_SEED, bias=world.STYLE_BIAS[style])
    fr, _, _ = _read(judges.oracle, world.render(ref_content, style, size=y.shape[-1], seed=_FID_SEED), batch)
    out = {"lpips_in_out": float(lp.mean()), "id_distance": float(idd.mean()),
           "style_accuracy": float((dy.cpu() == world.DOMAINS.index(style)).float().mean()),
           "fid_oracle": M.frechet_distance(fy.cpu(), fr.cpu())}
    if content is not None:
        agr = M.attribute_agreement(content, cy.cpu())
        out.update(agreement_categorical=agr["mean_categorical"], agreement_continuous=agr["mean_continuous"],
                   ideal_distance=M.ideal_distance(y, content, style, judges.lpips))
    return out


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def compare_methods(style: str, settings: StudySettings | None = None, n_inputs: int = 200,
                    judges: Judges | None = None, g_prime: Any = None, toonify_switch_res: int = 16) -> dict:
    """Paper Tables 1, 3 and 6 in mini: the method against the in-repo baselines on the same real inputs.

    Inputs: ``n_inputs`` held-out real renders (seed 777, content known). Every method gets the same content
    codes - the W encoder's, truncated with the style's psi - so the comparison isolates the generator:

    * **Ours**: G' finetuned with +SC&PC (``g_prime``, default :func:`finetune_variant`);
    * **G* (finetune)**: the unconstrained finetune;
    * **Toonify**: :func:`~facestyle.method.baselines.layer_swap`, layers below ``toonify_switch_res`` from G*,
      the rest from G;
    * **UI2I**: :func:`~facestyle.method.baselines.ui2i_pipeline` (G's layers below 32 px swapped into G*).

    Returns ``{"rows", "images", "inputs"}``: per method the metrics of :func:`stylization_metrics`, the
    generator's parameter count, the finetune's wall time and the measured stylization throughput
    (images/s on this machine, encoder included).
    """
    from ..method.baselines import layer_swap, ui2i_generator
    from ..method.stylize import Stylizer

    s = settings or StudySettings()
    style = check_style(style)
    prof = get_profile(s.profile)
    dev = get_device(s.device)
    judges = judges or Judges.build(s.profile, dev, oracle=s.oracle, identity=s.identity)
    ours = g_prime if g_prime is not None else finetune_variant(style, "sc_pc", s).path
    star = finetune_variant(style, "baseline", s)
    base = hub.load_generator(s.generator or prof.generator_ckpt, dev, expected_size=prof.generator.size)
    g_star = hub.load_generator(star.path, dev).g_ema
    content = world.sample_content(n_inputs, seed=777)
    inputs = world.render(content, "real", size=prof.generator.size, seed=777)
    methods = {"Ours (+SC&PC)": ours, "G* (finetune)": g_star,
               "Toonify (layer swap)": layer_swap(base.g_ema, g_star, toonify_switch_res),
               "UI2I (layer swap + V)": ui2i_generator(base.g_ema, g_star)}
    wall = {"Ours (+SC&PC)": _wall_of(ours), "G* (finetune)": _wall_of(star.path)}
    rows, images = [], {}
    for name, gen in methods.items():
        st = Stylizer(s.profile, style, dev, generator=gen, base_generator=base)
        st.general(inputs[:2])  # warm-up: loads the models before timing
        t0 = time.perf_counter()
        out = st.general(inputs).cpu()
        dt = time.perf_counter() - t0
        images[name] = out
        rows.append({"style": style, "method": name, **stylization_metrics(inputs, out, style, judges, content),
                     "params_M": _n_params(st.g_style) / 1e6, "resolution": int(out.shape[-1]),
                     "finetune_s": wall.get(name), "images_per_s": len(inputs) / dt})
    return {"rows": rows, "images": images, "inputs": inputs}


def _wall_of(ckpt) -> float | None:
    if isinstance(ckpt, nn.Module):
        return None
    try:
        return hub.load_facestyle_checkpoint(ckpt, kind="stylegan2")["meta"].get("wall_s")
    except Exception:  # a generator file without facestyle meta (e.g. an official one) has no training time
        return None


@torch.no_grad()
def mixing_study(stylizer, inputs: torch.Tensor, content: torch.Tensor | None, judges: Judges,
                 layers: Sequence[int] | None = None, n_samples: int = 6, seed: int = 0) -> dict:
    """Section 4.4 as numbers: for each mixing layer (native rows; default the profile's), the multimodal
    outputs' ``diversity`` (mean LPIPS-alex between the samples of one input) and their content agreement with
    the input (oracle reading vs true content). Low layers should vary more and keep less; high layers only
    recolour. Returns ``{"rows", "images": {layer: [B, n_samples, 3, H, W]}}``."""
    from ..nn.perceptual import lpips_distance

    layers = list(layers) if layers is not None else stylizer.mix_layers()
    rows, images = [], {}
    for layer in layers:
        out = stylizer.multimodal(inputs, n_samples=n_samples, layer=layer, seed=seed, units="native").cpu()
        images[layer] = out
        b, k = out.shape[:2]
        ia, ib = torch.triu_indices(k, k, 1)
        div = torch.stack([lpips_distance(out[i, ia], out[i, ib], judges.lpips).mean() for i in range(b)]).mean()
        row = {"layer": int(layer), "diversity": float(div)}
        if content is not None:
            _, c, _ = _read(judges.oracle, out.flatten(0, 1), 100)
            agr = M.attribute_agreement(content.repeat_interleave(k, 0), c.cpu())
            row.update(agreement_categorical=agr["mean_categorical"], agreement_continuous=agr["mean_continuous"])
        rows.append(row)
    return {"rows": rows, "images": images}


def style_encoding_study(stylizer, refs: torch.Tensor, inputs: torch.Tensor, judges: Judges, *,
                         content: torch.Tensor | None = None, spaces: Sequence[str] = ("wplus", "zplus", "w", "v"),
                         layer: int | None = None, iters: int | None = None, cache_dir=None) -> dict:
    """Appendix 6.3 (Fig. 15): references embedded in W+, Z+, W or V space of G' by the same optimisation
    (:func:`~facestyle.method.invert.invert_v`), then mixed into the inputs' content codes from ``layer``
    (native rows; default the profile's second mixing level). Per space: ``ref_lpips`` (how well G' redraws the
    reference from its code) and the reference-guided outputs' metrics of :func:`stylization_metrics`.
    Returns ``{"rows", "images": {space: [B, R, 3, H, W]}, "recon": {space: [R, 3, H, W]}}``."""
    from ..method.latents import to_wplus
    from ..method.stylize import make_invert_fn
    from ..nn.perceptual import lpips_distance

    layer = stylizer.mix_layers()[1] if layer is None else int(layer)
    opts = {} if iters is None else {"iters": int(iters)}
    rows, images, recon = [], {}, {}
    for space in spaces:
        fn = make_invert_fn(stylizer.profile, stylizer.device, cache_dir=cache_dir, space=space, **opts)
        codes = stylizer.reference_codes(refs, fn)
        with torch.no_grad():
            rec = stylizer.synthesize(to_wplus(codes, stylizer.n_latent)).clamp(-1, 1).cpu()
            out = stylizer.reference(inputs, ref_codes=codes, layer=layer, units="native").cpu()
        recon[space], images[space] = rec, out
        k = out.shape[1]
        with torch.no_grad():
            ref_lp = float(lpips_distance(rec, refs.cpu(), judges.lpips).mean())
            m = stylization_metrics(inputs.repeat_interleave(k, 0), out.flatten(0, 1), stylizer.style, judges,
                                    None if content is None else content.repeat_interleave(k, 0))
        rows.append({"space": space, "layer": layer, "ref_lpips": ref_lp, **m})
    return {"rows": rows, "images": images, "recon": recon}
