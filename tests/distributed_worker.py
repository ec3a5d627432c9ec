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


if __name__ == "__main__":
    torch.set_num_threads(1)
    job, out, work = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    ranks, _ = distributed.init("cpu")
    result = level2(work) if job == "level2" else embed(work)
    if ranks.main:
        torch.save(result, out)
    distributed.shutdown()
