"""One rank of the multi-process tests (tests/test_distributed.py launches it with torchrun).

Builds the same small random models on every rank from fixed seeds, runs one job through the package's sharded
code and lets rank 0 save what it got, for the test to compare with a one-process run of the same job.
"""
import sys
from pathlib import Path

import torch

from facestyle import distributed, world
from facestyle.method import invert as I
from facestyle.method import pairs as P
from facestyle.method.losses import LossModels
from facestyle.pretrain import generator as pg


def models():
    """A random mini G, a perturbed copy as G*, six style images and their z1+ (the same in every process)."""
    torch.manual_seed(0)
    g, _ = pg.build_models("mini")
    g_star, _ = pg.build_models("mini")
    style, _ = world.style_dataset("anime", 64, n=6)
    z1 = torch.randn(6, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(5))
    return g.eval(), g_star.eval(), style, z1


def level2(state_dir=None):
    g, g_star, style, z1 = models()
    lm = LossModels.build("mini", "cpu", lpips=True, identity=False)
    res = P.level2(style, z1, g, g_star, lm, iters=3, lr=0.02, batch=2, state_dir=state_dir, progress=False)
    return {"zplus": res.zplus, "wplus": res.wplus, "loss_end": res.loss_end, "reused": res.meta["batches_reused"]}


def embed(cache_dir):
    g, _, style, _ = models()
    lm = LossModels.build("mini", "cpu", lpips=True, identity=False)
    cache = I.EmbeddingCache(cache_dir)
    res = cache.get_or_invert(style[:3], g, lm.lpips, batch=1, iters=2, size=64)
    return {"w": res.w, "lpips": res.lpips, "inverted": cache.inverted}


def one_image_mbstd(monkeypatch_target=None):
    """Make every loaded D take its minibatch standard deviation over groups of one image.

    D's minibatch-std layer looks at the images of one forward pass, and a rank's pass holds only its part of the
    batch (as in StyleGAN2-ADA's multi-GPU training); with groups of one, the ranks' D computes what one
    process's D computes, so the comparison isolates the batch split and the gradient averaging."""
    from facestyle import hub

    load = hub.load_discriminator

    def patched(*args, **kwargs):
        d = load(*args, **kwargs)
        d.stddev_group = 1
        return d

    (monkeypatch_target.setattr if monkeypatch_target else setattr)(hub, "load_discriminator", patched)


def finetune(out, gpath, ipath, iters, batch=2):
    from facestyle.method import finetune as ft

    one_image_mbstd()
    cfg = ft.FinetuneConfig(style="anime", variant="sc", generator=gpath, identity=ipath, batch=int(batch),
                            iters=int(iters), device="cpu", threads=1, sample_every=0, lpips_size=64, out=out)
    return {"path": str(ft.finetune(cfg, progress=False).path)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    job, out, work = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    ranks, _ = distributed.init("cpu")
    result = level2(work) if job == "level2" else embed(work) if job == "embed" else finetune(work, *sys.argv[4:])
    if ranks.main:
        torch.save(result, out)
    distributed.shutdown()
