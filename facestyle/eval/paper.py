"""The paper's own metrics for any profile, on given files: what a researcher with the ffhq weights reports.

The mini world measures with its oracle (:mod:`facestyle.eval.study`); a real setting has no oracle, only the
paper's protocol (section 4.1):

* Table 4: the semantic distance between G and G' (:func:`facestyle.eval.metrics.semantic_distance`, Eq. 1's form
  with LPIPS-alex) and the FID of G''s samples to the style set;
* Tables 1-2, when aligned photos are given: the FID of their stylizations (section 3, Fig. 2: W encoder, G', the
  style's truncation) to the style set and "Perc.", the LPIPS-alex distance between each photo and its
  stylization, with the identity distance of Table 6 beside it.

FID is the Inception one (:func:`facestyle.eval.metrics.fid_inception`). With the few images a rehearsal or a
small style set gives, FID is biased upwards; the number is what the protocol gives, not a quality claim.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from .. import hub
from ..config import get_profile
from ..images import load_files, load_folder
from ..utils import get_device
from . import metrics as M

__all__ = ["paper_metrics"]


@torch.no_grad()
def paper_metrics(g_prime: str | os.PathLike, style_images: str | os.PathLike | torch.Tensor, *, profile: Any = "mini",
                  style: str = "cartoon", photos=None, generator=None, n: int = 256, seed: int = 0,
                  batch: int = 16, device: Any = "auto", fid_net: Any = "fid-inception") -> dict:
    """Table 4's two numbers for ``g_prime`` and, with ``photos`` (aligned crops, as ``facestyle align`` writes
    them), Table 1's for their stylizations."""
    from ..method.stylize import Stylizer
    from ..nn.perceptual import identity_distance, lpips_distance

    prof = get_profile(profile)
    dev = get_device(device)
    size = prof.generator.size
    g = hub.load_generator(generator or prof.generator_ckpt, dev, expected_size=size).g_ema
    gp = hub.load_generator(g_prime, dev, expected_size=size).g_ema
    inception = fid_net if isinstance(fid_net, torch.nn.Module) else hub.load_fid_inception(fid_net, dev)
    ref = style_images.float().cpu() if torch.is_tensor(style_images) else \
        load_folder(style_images, size, what="style image folder")
    ref_feats = M.inception_features(ref, inception, batch)

    lp = hub.build_lpips(prof.lpips_eval_net, prof, device=dev)
    ident = hub.build_identity(prof, device=dev)
    sd = M.semantic_distance(g, gp, lpips_model=lp, id_model=ident, profile=prof, n=n, seed=seed, batch=batch)
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(int(seed) + 1))
    samples = torch.cat([gp([z[i:i + batch].to(dev)], randomize_noise=False)[0].clamp(-1, 1).cpu()
                         for i in range(0, n, batch)])
    out = {"profile": prof.name, "style": style, "n_samples": n, "n_style_images": len(ref),
           "semantic_distance": sd["semantic_distance"], "fid_inception": M.fid_from_features(
               M.inception_features(samples, inception, batch), ref_feats)}
    if photos:
        x = load_files(photos, size, what="aligned photo")
        st = Stylizer(prof, style, dev, generator=gp, base_generator=g)
        y = st.general(x).clamp(-1, 1).cpu()
        out.update(
            n_photos=len(x),
            # a covariance needs two images at least; with one, FID has no value
            fid_inception_stylized=(M.fid_from_features(M.inception_features(y, inception, batch), ref_feats)
                                    if len(y) >= 2 else None),
            lpips_in_out=float(lpips_distance(x.to(dev), y.to(dev), lp).mean()),
            id_distance=float(identity_distance(x.to(dev), y.to(dev), ident).mean()))
    return out
