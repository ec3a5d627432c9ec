"""``facestyle quality oracle``: how well does the oracle - the instrument behind every agreement, frequency and
FID number of :mod:`facestyle.eval` - read each content factor in each of the six domains?
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..utils import get_device
from ..world import DOMAINS, FACTORS, render, sample_content
from .quality import _load_oracle, _ref, confusion, oracle_read, protocol_seeds

__all__ = ["oracle_quality"]


@torch.no_grad()
def oracle_quality(oracle: Any = "mini-oracle", n: int = 1000, seed: int = 0, batch: int = 250, device: Any = "auto",
                   *, profile: str = "mini", blur: float = 0.0) -> dict:
    """How well the oracle, the instrument behind every agreement, frequency and FID number, reads each domain.

    Protocol:

    * renders: the same ``n`` contents ``sample_content(n, seed=s)`` drawn in each of the six domains with
      texture seed ``s = protocol_seeds(seed)["oracle"]``, far from the oracle's training seeds;
    * ``accuracy[domain][factor]``: categorical factors - share read exactly; continuous factors - share read
      within 0.1 of the truth (the tolerance of attribute agreement); ``domain_accuracy[domain]``: share put in
      the right domain;
    * ``recall[domain][factor][value]``: for each categorical value, the share of the renders holding it that
      are read as it; ``confusion[domain][factor]``: counts of (true value, value read).

    A low recall marks a value whose frequency the oracle misstates in that domain, in renders and, as far as
    they resemble renders, in generated images. ``blur`` > 0 reads the renders after a Gaussian blur of that
    sigma (pixels): generated images are softer than renders, and this asks which readings depend on crisp
    edges (e.g. an outlined eye against a glasses rim).
    """
    t0 = time.perf_counter()
    dev = get_device(device)
    orc = _load_oracle(oracle, dev)
    s = protocol_seeds(seed)["oracle"]
    truth = sample_content(int(n), seed=s)
    size = int(getattr(orc, "size", 64))
    out = {"target": "oracle", "profile": profile, "n": int(n), "seed": int(seed), "seeds": {"oracle": s},
           "blur": float(blur),
           "batch": batch, "checkpoints": {"oracle": _ref(oracle)}, "accuracy": {}, "mean": {},
           "domain_accuracy": {}, "recall": {}, "confusion": {}}
    groups = {"categorical": [f.name for f in FACTORS if f.kind == "categorical"],
              "continuous": [f.name for f in FACTORS if f.kind != "categorical"]}
    for k, dom in enumerate(DOMAINS):
        x = render(truth, dom, size=size, seed=s)
        if blur > 0:
            from torchvision.transforms.functional import gaussian_blur

            x = gaussian_blur(x, kernel_size=2 * math.ceil(3 * blur) + 1, sigma=float(blur))
        _, c, d = oracle_read(orc, x.to(dev), batch, features=False)
        c, d = c.cpu(), d.cpu()
        out["domain_accuracy"][dom] = float((d == k).float().mean())
        acc, rec, conf = {}, {}, {}
        for i, f in enumerate(FACTORS):
            if f.kind == "categorical":
                m = confusion(truth, c, i)
                acc[f.name] = float(sum(m[j][j] for j in range(len(m))) / len(truth))
                rec[f.name] = {v: (m[j][j] / sum(m[j]) if sum(m[j]) else None) for j, v in enumerate(f.values)}
                conf[f.name] = m
            else:
                acc[f.name] = float(((c[:, i] - truth[:, i]).abs() < 0.1).float().mean())
        out["accuracy"][dom], out["recall"][dom], out["confusion"][dom] = acc, rec, conf
        out["mean"][dom] = {kind: sum(acc[f] for f in names) / len(names) for kind, names in groups.items()}
    out["runtime_s"] = time.perf_counter() - t0
    return out
