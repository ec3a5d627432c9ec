"""``facestyle embed-ref IMAGES... --style S``: invert reference images into the V space of a style generator G'
(paper section 3.3; :mod:`facestyle.method.invert`), cached, with a reconstruction grid.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``facestyle embed-ref`` (all of them; the subcommand needs no common options)."""
    p.add_argument("images", nargs="+", help="reference image files (aligned portraits)")
    p.add_argument("--profile", default="mini", help="mini, ffhq or rehearsal")
    p.add_argument("--style", default="cartoon", help="style whose generator G' the references are embedded into")
    p.add_argument("--generator", default=None,
                   help="G' checkpoint (hub name or path); default: the profile's style generator for --style")
    p.add_argument("--iters", type=int, default=None, help="optimisation steps (default: profile.invert_iters)")
    p.add_argument("--lr", type=float, default=None, help="peak Adam lr (default: profile.invert_lr)")
    p.add_argument("--noise-reg", type=float, default=1e5, help="weight of the noise regulariser")
    p.add_argument("--latent-noise", type=float, default=0.05, help="StyleGAN2 projector latent noise (0 = off)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--cache-dir", default=None, help="embedding cache (default: $FACESTYLE_HOME/embeddings)")
    p.add_argument("--out", default=None, help="also write {'w', 'v', 'files', ...} for these images to this file")
    p.add_argument("--figure", default=None,
                   help="reconstruction grid (default figures/<profile>/embed_ref_<style>.png; 'none' = skip)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def main_from_args(args) -> int:
    import torch

    from .. import hub
    from ..config import check_style, get_profile
    from ..method.invert import EmbeddingCache, load_images, model_hash
    from ..method.losses import LossModels
    from ..nn.perceptual import resize_for_loss
    from ..runs import resolve_path, set_threads
    from ..utils import atomic_torch_save
    from ..viz import figure_path, save_grid

    prof = get_profile(args.profile)
    if args.generator is None:  # a style of one's own needs its G' given explicitly
        check_style(args.style)
    from ..distributed import init

    set_threads(args.threads)
    ranks, dev = init(args.device)  # under torchrun: join the ranks; the references are shared out among them
    g = hub.load_generator(args.generator or prof.style_generator_ckpt.format(style=args.style), dev,
                           expected_size=prof.generator.size).g_ema
    images = load_images(args.images, g.size)
    models = LossModels.build(prof, dev, lpips=True, identity=False)
    cache = EmbeddingCache(args.cache_dir)
    res = cache.get_or_invert(images, g, models.lpips, batch=args.batch, progress=not args.no_progress,
                              iters=args.iters if args.iters is not None else prof.invert_iters,
                              lr=args.lr if args.lr is not None else prof.invert_lr, noise_reg=args.noise_reg,
                              latent_noise=args.latent_noise, size=prof.loss_size)
    if not ranks.main:
        return 0
    print(f"{len(images)} reference(s): {cache.hits} from cache, {cache.inverted} inverted; "
          f"LPIPS {', '.join(f'{x:.4f}' for x in res.lpips.tolist())}")
    if args.out:
        out = resolve_path(args.out)
        atomic_torch_save({"w": res.w, "v": res.v, "files": [str(p) for p in args.images], "lpips": res.lpips,
                           "settings": res.settings, "style": args.style, "model_sha256": model_hash(g)}, out)
        print(out)
    if (args.figure or "").lower() != "none":
        with torch.no_grad():
            rec = g.synthesis(res.w.to(dev), noise=[n.to(dev) for n in res.noises]).cpu()
        path = resolve_path(args.figure) if args.figure else figure_path(prof.name, f"embed_ref_{args.style}.png")
        # Top row the references, bottom row G'(v @ E): what the embedding reproduces.
        print(save_grid(torch.cat([resize_for_loss(images, g.size), rec]), path, nrow=len(images),
                        scale=max(1, 256 // g.size)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("embed-ref", help="invert reference images into V space of G' (section 3.3), cached")
    add_arguments(p)
    p.set_defaults(func=main_from_args)
