"""Train and evaluate the mini world's judges: the oracle (evaluation only) and the identity network.

Both learn from renders with ground truth (``facestyle.world``). Images are rendered once into a uint8 cache
(rendering dominates the cost otherwise) and training is resumable like every facestyle trainer.

* Oracle: all six domains, unbiased content, losses = MSE on continuous factors + cross-entropy on categorical
  factors and on the domain. Light blur/noise augmentation so it also reads generator outputs.
* Identity: real domain only. Two renders share the :data:`~facestyle.nn.judges.IDENTITY_FACTORS` and differ
  in every nuisance factor; a symmetric InfoNCE loss pulls them together (the FaceNet recipe, contrastive form).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .. import world
from ..nn.judges import IDENTITY_FACTORS, IdentityNet, Oracle
from ..utils import get_device
from ..manifest import record_if_shipped
from ..runs import resolve_path, set_threads, train_loop


@dataclass
class JudgeTrainConfig:
    what: str = "oracle"  # oracle | identity
    out: str = "runs/mini-{what}"
    n_train: int = 6000  # per domain (oracle) or identity pairs (identity)
    n_test: int = 500  # per domain / identities held out
    steps: int = 3000
    batch: int = 128
    lr: float = 2e-3
    size: int = 64
    temperature: float = 0.1
    # Oracle only: extra loss weight per factor, "name=w,name=w" (e.g. "eye_color=5"); others weigh 1 (see
    # oracle_loss). Empty: all 1, the first oracle's recipe; the shipped one used "eye_color=5,glasses=3" with
    # --steps 5000 --batch 64 (its command is in the manifest; docs/mini-models.md, "How the oracle was chosen").
    factor_weights: str = ""
    # Identity only: domains the two views are rendered in, each view in one drawn at random ("real": the first
    # identity net; "all": the six domains, so the embedding keeps a face across styles - issue "faithful
    # stylization", hypothesis 2). ``init``: start from this identity checkpoint (hub name or path).
    domains: str = "real"
    init: str | None = None
    ckpt_every_s: float = 300.0
    seed: int = 0
    device: str = "auto"
    threads: int = 0


def factor_kinds() -> list[tuple[str, int]]:
    return [(f.kind, 1 if f.kind == "continuous" else len(f.values)) for f in world.FACTORS]


def build_oracle(size: int = 64) -> Oracle:
    return Oracle(factor_kinds(), n_domains=len(world.DOMAINS), input_size=size)


def build_identity(size: int = 64) -> IdentityNet:
    return IdentityNet(input_size=size)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _from_u8(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1


def render_u8(content: torch.Tensor, domain: str, size: int, seed: int, chunk: int = 1000) -> torch.Tensor:
    return torch.cat([_to_u8(world.render(content[i:i + chunk], domain, size=size, seed=seed + i))
                      for i in range(0, len(content), chunk)])


def oracle_data(n: int, size: int, seed: int) -> dict:
    """n unbiased contents rendered in each domain; labels = content and domain index."""
    imgs, contents, doms = [], [], []
    for d, dom in enumerate(world.DOMAINS):
        c = world.sample_content(n, seed=seed * 101 + d)
        imgs.append(render_u8(c, dom, size, seed=seed * 7919 + d * 100_003))
        contents.append(c)
        doms.append(torch.full((n,), d, dtype=torch.long))
    return {"x": torch.cat(imgs), "c": torch.cat(contents), "d": torch.cat(doms)}


def identity_views(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two contents per identity: same identity factors, independently resampled nuisance factors."""
    a = world.sample_content(n, seed=seed)
    b = world.sample_content(n, seed=seed + 1)
    for name in IDENTITY_FACTORS:
        i = world.factor_index(name)
        b[:, i] = a[:, i]
    return a, b


def _render_mixed(content: torch.Tensor, domains: list[str], size: int, seed: int) -> torch.Tensor:
    """Each row in one of ``domains`` drawn from ``seed`` (rows keep their order)."""
    pick = torch.randint(len(domains), (len(content),), generator=torch.Generator().manual_seed(seed))
    out = torch.empty(len(content), 3, size, size, dtype=torch.uint8)
    for k, dom in enumerate(domains):
        m = pick == k
        if m.any():
            out[m] = render_u8(content[m], dom, size, seed + k)
    return out


def identity_data(n: int, size: int, seed: int, domains: str = "real") -> dict:
    a, b = identity_views(n, seed)
    doms = list(world.DOMAINS) if domains == "all" else [d.strip() for d in domains.split(",") if d.strip()]
    bad = [d for d in doms if d not in world.DOMAINS]
    if bad or not doms:
        raise ValueError(f"unknown identity domains {bad or domains!r}: choose from {', '.join(world.DOMAINS)} or all")
    if doms == ["real"]:  # the first identity net's data, bit for bit
        return {"a": render_u8(a, "real", size, seed * 31), "b": render_u8(b, "real", size, seed * 37 + 1), "c": a}
    return {"a": _render_mixed(a, doms, size, seed * 31), "b": _render_mixed(b, doms, size, seed * 37 + 1), "c": a}


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mild blur and noise so the judges also read slightly soft generator outputs."""
    blur = torch.rand(len(x), 1, 1, 1, generator=g) < 0.3
    x = torch.where(blur, F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1), x)
    return x + 0.03 * torch.randn(x.shape, generator=g) * (torch.rand(len(x), 1, 1, 1, generator=g) < 0.5)


def parse_factor_weights(text: str) -> dict[str, float]:
    """``"eye_color=5,glasses=2"`` -> ``{"eye_color": 5.0, "glasses": 2.0}``; names must be world factors."""
    out = {}
    for item in (s.strip() for s in (text or "").split(",")):
        if not item:
            continue
        name, sep, w = item.partition("=")
        if not sep or name.strip() not in world.factor_names():
            raise ValueError(f"factor weight {item!r}: expected NAME=WEIGHT with NAME one of "
                             f"{', '.join(world.factor_names())}")
        out[name.strip()] = float(w)
    return out


def oracle_loss(model: Oracle, x, c, d, weights: dict[str, float] | None = None):
    """Domain cross-entropy + per factor 10 x MSE (continuous, on [0, 1]) or cross-entropy (categorical), each
    factor's term times ``weights.get(name, 1)``."""
    parts, dom = model(x)
    loss = F.cross_entropy(dom, d)
    weights = weights or {}
    for i, ((kind, _), p) in enumerate(zip(model.factor_kinds, parts)):
        w = weights.get(world.FACTORS[i].name, 1.0)
        if kind == "continuous":
            loss = loss + w * 10 * F.mse_loss(p.squeeze(1), c[:, i])
        else:
            loss = loss + w * F.cross_entropy(p, c[:, i].long())
    return loss


def info_nce(ea: torch.Tensor, eb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of positive pairs (the other rows are the negatives)."""
    logits = ea @ eb.t() / temperature
    target = torch.arange(len(ea), device=ea.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def train(cfg: JudgeTrainConfig, progress: bool = True) -> torch.nn.Module:

    set_threads(cfg.threads)
    device = get_device(cfg.device)
    out = resolve_path(cfg.out.format(what=cfg.what))
    cache = out / "data.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
    else:
        t0 = time.perf_counter()
        if cfg.what == "oracle":
            make = oracle_data
        else:
            def make(n, size, seed):
                return identity_data(n, size, seed, cfg.domains)
        data = {"train": make(cfg.n_train, cfg.size, cfg.seed), "test": make(cfg.n_test, cfg.size, cfg.seed + 10_000)}
        from ..utils import atomic_torch_save

        atomic_torch_save(data, cache)
        print(f"rendered {cfg.what} data in {time.perf_counter() - t0:.0f} s")
    model = build_oracle(cfg.size) if cfg.what == "oracle" else build_identity(cfg.size)
    if cfg.init:
        from ..hub import load_facestyle_checkpoint

        ck = load_facestyle_checkpoint(cfg.init, kind="oracle" if cfg.what == "oracle" else "identity")
        model.load_state_dict({k: v.float() for k, v in ck["state_dict"].items()})
    weights = parse_factor_weights(cfg.factor_weights)
    tr = data["train"]
    n = len(tr["x"] if cfg.what == "oracle" else tr["a"])

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(n, (cfg.batch,), generator=g)
        if cfg.what == "oracle":
            x = augment(_from_u8(tr["x"][idx]), g).to(device)
            return oracle_loss(model, x, tr["c"][idx].to(device), tr["d"][idx].to(device), weights)
        xa = augment(_from_u8(tr["a"][idx]), g).to(device)
        xb = augment(_from_u8(tr["b"][idx]), g).to(device)
        return info_nce(model(xa), model(xb), cfg.temperature)

    return train_loop(model, loss_fn, out=out, steps=cfg.steps, lr=cfg.lr, config=asdict(cfg), seed=cfg.seed,
                      device=device, pct_start=0.1, ckpt_every_s=cfg.ckpt_every_s, progress=progress,
                      desc=f"mini {cfg.what}")


@torch.no_grad()
def evaluate_oracle(model: Oracle, test: dict) -> dict:
    """Held-out accuracy per factor and per domain.

    Categorical factors: exact accuracy. Continuous factors: mean absolute error and the share within 0.1 of
    the truth (on a [0, 1] scale) - the same tolerance :mod:`facestyle.eval` uses for attribute agreement.
    """
    dev = next(model.parameters()).device
    pred, dom = model.predict(_from_u8(test["x"]).to(dev))
    pred, dom = pred.cpu(), dom.cpu()
    c, d = test["c"], test["d"]
    report = {"factors": {}, "domains": {}}
    for i, f in enumerate(world.FACTORS):
        if f.kind == "categorical":
            report["factors"][f.name] = {"accuracy": (pred[:, i] == c[:, i]).float().mean().item()}
        else:
            err = (pred[:, i] - c[:, i]).abs()
            report["factors"][f.name] = {"mae": err.mean().item(), "within_0.1": (err < 0.1).float().mean().item()}
    for k, name in enumerate(world.DOMAINS):
        m = d == k
        report["domains"][name] = {"domain_accuracy": (dom[m] == k).float().mean().item()}
    report["domain_accuracy"] = (dom == d).float().mean().item()
    return report


@torch.no_grad()
def evaluate_identity(model: IdentityNet, test: dict) -> dict:
    """Verification on held-out identities: same-identity vs different-identity cosine distances, and rank-1
    retrieval accuracy of view b among all held-out identities' view a."""
    dev = next(model.parameters()).device
    ea = model(_from_u8(test["a"]).to(dev)).cpu()
    eb = model(_from_u8(test["b"]).to(dev)).cpu()
    sim = ea @ eb.t()
    same = sim.diag()
    off = sim[~torch.eye(len(sim), dtype=torch.bool)]
    return {"same_identity_distance": (1 - same).mean().item(), "different_identity_distance": (1 - off).mean().item(),
            "rank1_retrieval": (sim.argmax(1) == torch.arange(len(sim))).float().mean().item(),
            "n_identities": len(sim)}


def export(model: torch.nn.Module, cfg: JudgeTrainConfig, report: dict, path) -> None:
    from ..hub import save_checkpoint

    kind = "oracle" if cfg.what == "oracle" else "identity"
    config = {"size": cfg.size, "factor_kinds": factor_kinds(), "n_domains": len(world.DOMAINS)} if kind == "oracle" \
        else {"size": cfg.size, "identity_factors": list(IDENTITY_FACTORS)}
    out = save_checkpoint(resolve_path(path), kind=kind, half=True, config=config, state_dict=model.state_dict(),
                          meta={"train_config": asdict(cfg), "report": report})
    state = torch.load(resolve_path(cfg.out.format(what=cfg.what)) / "state.pt", weights_only=True)
    record_if_shipped(f"mini-{kind}", out, iterations=state["step"], wall_s=round(state["wall_s"]), quality=report)
