"""Shared test helpers.

``fill_state_dict`` gives a model deterministic weights that depend only on (seed, key name, shape), never on
the order in which modules were constructed. Two implementations with the same state-dict keys (facestyle's
and a reference repository's) therefore receive identical weights, which is what the golden-equivalence tests
rely on.
"""
from __future__ import annotations

import zlib
from typing import Callable, Union

import torch

Scale = Union[float, Callable[[str, torch.Tensor], float]]


def key_generator(seed: int, key: str) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and the key's CRC32: independent of module init order."""
    return torch.Generator().manual_seed((int(seed) + zlib.crc32(key.encode())) % (2 ** 63))


@torch.no_grad()
def fill_state_dict(model: torch.nn.Module, seed: int, scale: Scale = 1.0) -> torch.nn.Module:
    """Overwrite every floating state-dict entry of ``model`` with ``randn(shape) * scale`` in place.

    ``scale`` is a float or ``scale(key, tensor) -> float`` (per-key scales, e.g. 1/sqrt(fan_in) for convs).
    BatchNorm ``running_var`` is made positive (``abs() + 0.5``); integer entries such as
    ``num_batches_tracked`` are left alone. Values are drawn on the CPU in float32 and then copied to the
    tensor's device and dtype, so results do not depend on the device either. Returns ``model``.
    """
    for key, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        s = scale(key, t) if callable(scale) else scale
        v = torch.randn(tuple(t.shape), generator=key_generator(seed, key), dtype=torch.float32) * s
        if key.endswith("running_var"):
            v = v.abs() + 0.5
        t.copy_(v.to(device=t.device, dtype=t.dtype))
    return model


def random_mini_files(root) -> tuple:
    """A random mini G + D (seed 0) and an untrained mini IdentityNet saved under ``root``, the way a user passes
    their own files by path; returns ``(g, generator path, identity path)``."""
    from facestyle import hub
    from facestyle.nn.judges import IdentityNet
    from facestyle.pretrain import generator as pg

    torch.manual_seed(0)
    g, d = pg.build_models("mini")
    with torch.no_grad():
        avg = g.mean_latent(256)
    gpath = hub.save_generator_checkpoint(root / "g.pt", g, latent_avg=avg, d=d)
    ipath = hub.save_checkpoint(root / "identity.pt", kind="identity", config={"size": 64},
                                state_dict=IdentityNet(input_size=64))
    return g, gpath, ipath
