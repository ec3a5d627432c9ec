"""Train the mini profile's StyleGAN2 on the synthetic portrait world (the role of the FFHQ checkpoint).

Why two phases (docs/design.md section 3): a faithful 64 px StyleGAN2 trained from scratch as a GAN needs tens of
thousands of steps, far more than a CPU day. So training starts with a *supervised warm start*: each z has a
known content vector ``world.content_from_z(z)`` and G learns to reproduce ``world.render(content, "real")``
(multi-scale L1). An *adversarial phase* follows (non-saturating loss, lazy R1, the StyleGAN2 recipe) that
sharpens details; the reconstruction term stays on as an anchor, so G(z) keeps a known content vector, which
later lets the repo measure semantic drift exactly.

The warm start splits the generator's two halves, because end to end it stalls: trained through z, our first
run spent thousands of steps near the mean face, since the mapping network must first discover that only 20
of 128 z coordinates matter, each through a quantile bin. Instead, the synthesis network learns from a
*content code* ``w = content_code(content)`` - a fixed, seeded linear embedding of the factors (continuous
values and one-hot categories), which gave the right backgrounds and colours within a few hundred steps - and
the mapping network learns ``mapping(z) ~ content_code(content_from_z(z))`` by regression on a
large cheap batch. Together ``G(z) = synthesis(mapping(z))`` reproduces the renderer, and W linearly encodes
content, as an ideal StyleGAN W would. The adversarial phase then trains G end to end from z.

Resumable at any moment: ``facestyle pretrain generator`` continues from ``<out>/state.pt`` or from the
committed snapshot.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..nn.train_ops import discriminator_step, ema_update, to_floats
from .. import world
from ..config import Profile, get_profile
from ..utils import get_device
from ..manifest import record_if_shipped
from ..runs import Checkpointer, JsonlLog, resolve_path, set_threads


@dataclass
class GeneratorTrainConfig:
    profile: str = "mini"
    out: str = "runs/mini-generator"
    # Read at start when <out> holds no state, and rewritten (compact) at every checkpoint, so that a committed
    # snapshot lets a later session resume. To branch an experiment from a saved state, pass a copy of it.
    snapshot: str | None = "facestyle/checkpoints/mini/state/generator.pt"
    # Branch from a shippable generator file instead (an --export, or a kept <out>/g_ema_<step>.pt) when <out>
    # holds no state and the snapshot does not exist: its G_ema becomes G and G_ema, its D the discriminator, its
    # step the current step. Optimisers start fresh, since their moments are not shipped; a snapshot written by
    # the run never replaces the file this reads.
    init: str | None = None
    batch: int = 16
    warm_steps: int = 30000
    # Short on purpose: the warm start already draws the faces; the adversarial phase, anchored by rec_weight,
    # adds the real domain's texture and trains the discriminator that finetuning starts from. 1750 steps (~20
    # min at 2 threads) gave the best oracle FID of a run kept every 250 steps (`facestyle quality sweep`;
    # docs/mini-models.md, "How the adversarial step count was chosen").
    adv_steps: int = 1750
    lr: float = 0.002  # the adversarial phase's (StyleGAN2's)
    # The warm start is a plain regression: a higher lr fits it much faster (multiscale L1 at step 1130: 0.044
    # with 0.005, 0.066 with 0.002; 0.0005 was slower still), and after 6000 steps at 0.002 the synthesis
    # network still drew no eyes, mouths or glasses.
    warm_lr: float = 0.005
    warm_beta1: float = 0.9  # momentum helps the supervised warm start; the GAN phase uses StyleGAN2's 0
    # Warm-start targets without the real domain's random skin grain (it cannot be predicted from the content);
    # the adversarial phase, whose discriminator sees textured renders, adds texture through the noise inputs.
    warm_texture: bool = False
    map_batch: int = 256  # z per mapping step (an MLP on 128-d vectors: a step costs ~5 ms)
    map_steps: int = 4  # mapping regression steps per warm-start step
    map_lr_mult: float = 200.0  # the regression's own Adam: lr 0.002 * 200 * lr_mlp 0.1 = 0.04 effective
    code_seed: int = 7  # seeds the fixed content-code embedding
    rec_weight: float = 10.0  # anchor weight during the adversarial phase
    # Extra L1 on the iris pixels (mean over the pixels whose colour depends on the eye colour, see
    # eye_pixels), times this. The irises are a few dozen of 4096 pixels at 64 px, so in the image-mean L1
    # their colour is nearly free; the first oracle read G's eye colours as wrong, the shipped one finds them
    # within 4.4 points (docs/mini-models.md, "How the oracle was chosen"). The shipped G's second stage used 0.5
    # (its command in manifest.json); 0 is the plain recipe.
    eye_weight: float = 0.0
    # The same for the earring pixels (factor_pixels of "earrings"): G leaves earrings off in 479 of 1270 samples
    # that should have them, as the shipped oracle reads them (renders: 3). 0: shipped.
    earring_weight: float = 0.0
    r1_gamma: float = 0.05  # 0.0002 * res^2 / batch, the StyleGAN2-ADA heuristic at 64 px, batch 16
    r1_every: int = 16
    ema_half_life_imgs: float = 10_000.0
    ema_rampup: float = 0.05  # half-life <= 5% of the images seen so far (StyleGAN2-ADA), so early EMA keeps up
    ckpt_every_s: float = 300.0
    sample_every: int = 500
    # Every this many adversarial steps, also keep G_ema as a shippable file <out>/g_ema_<step>.pt (0: never), so
    # the adversarial step count can be chosen afterwards by `facestyle quality generator --ckpt` on each.
    keep_every: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 0


def multiscale_l1(x: torch.Tensor, y: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """L1 at full, half and quarter resolution: the coarse terms fix layout before texture."""
    loss = 0.0
    for i in range(levels):
        if i:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        loss = loss + (x - y).abs().mean()
    return loss / levels


def content_features(content: torch.Tensor) -> torch.Tensor:
    """Content vector -> features: continuous factors centred to about unit spread, categories one-hot."""
    from .. import world

    cols = []
    for i, f in enumerate(world.FACTORS):
        if f.kind == "continuous":
            cols.append((content[:, i:i + 1] * 2 - 1) * 1.7)
        else:
            cols.append(F.one_hot(content[:, i].long(), len(f.values)).float() * 2 - 0.5)
    return torch.cat(cols, 1)


def content_code(content: torch.Tensor, style_dim: int, seed: int = 7) -> torch.Tensor:
    """The warm start's W code of a content vector: a fixed random linear embedding of
    :func:`content_features` (seeded, so every run and every machine gets the same W layout)."""
    feats = content_features(content)
    a = torch.randn(feats.shape[1], style_dim, generator=torch.Generator().manual_seed(seed))
    return feats @ (a / feats.shape[1] ** 0.5)


def build_models(profile: str | Profile):
    from ..nn.stylegan2 import Discriminator, Generator

    gc = get_profile(profile).generator
    g = Generator(gc.size, gc.style_dim, gc.n_mlp, channel_multiplier=gc.channel_multiplier, lr_mlp=gc.lr_mlp,
                  channels=gc.channels)
    d = Discriminator(gc.size, channel_multiplier=gc.channel_multiplier, channels=gc.channels)
    return g, d


def factor_pixels(content: torch.Tensor, target: torch.Tensor, factor: str, size: int, seed: int,
                  texture: bool) -> torch.Tensor:
    """``[N, 1, size, size]`` mask of the pixels of ``target`` (= ``render(content, "real", size, seed, texture)``)
    that depend on one categorical ``factor``: the content is rendered again with that factor moved to its next
    value and the two images compared, so the mask follows the renderer's own geometry, pose and occlusion
    without duplicating them (for a binary factor such as earrings it covers where they are or would be)."""
    i = world.factor_index(factor)
    other = content.clone()
    other[:, i] = (other[:, i] + 1) % len(world.FACTORS[i].values)
    alt = world.render(other, "real", size=size, seed=seed, texture=texture).to(target.device)
    return ((alt - target).abs().sum(1, keepdim=True) > 0.02).float()


def eye_pixels(content: torch.Tensor, target: torch.Tensor, size: int, seed: int, texture: bool) -> torch.Tensor:
    """The iris pixels: :func:`factor_pixels` of ``eye_color``."""
    return factor_pixels(content, target, "eye_color", size, seed, texture)


def masked_l1(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |x - y| over the pixels where ``mask`` is 1 (0 when the mask is empty)."""
    return ((x - y).abs() * mask).sum() / (mask.sum() * x.shape[1]).clamp_min(1.0)


def real_batch(z: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """The renderer's image of the content that z stands for (the warm start's target)."""
    return world.render(world.content_from_z(z.cpu()), "real", size=size, seed=seed)


def train(cfg: GeneratorTrainConfig, progress: bool = True) -> dict:
    """Run (or resume) both phases; returns the final state dict."""
    from ..utils import progress_bar as tqdm

    set_threads(cfg.threads)
    device = get_device(cfg.device)
    out = resolve_path(cfg.out)
    ckpt = Checkpointer(out / "state.pt", cfg.ckpt_every_s, resolve_path(cfg.snapshot) if cfg.snapshot else None)
    log = JsonlLog(out / "log.jsonl")
    g, d = build_models(cfg.profile)
    g_ema = copy.deepcopy(g).eval()
    mapping = [p for n, p in g.named_parameters() if n.startswith("style.")]
    synthesis = [p for n, p in g.named_parameters() if not n.startswith("style.")]
    g_opt = torch.optim.Adam([{"params": synthesis}, {"params": mapping}], lr=cfg.lr, betas=(0.0, 0.99))
    # During the warm start the mapping learns only by regression, with its own optimiser and many cheap steps.
    map_opt = torch.optim.Adam(mapping, lr=cfg.lr * cfg.map_lr_mult, betas=(0.9, 0.99))
    # R1 is lazy: scale the optimiser as StyleGAN2 does so the effective hyper-parameters match eager R1.
    c = cfg.r1_every / (cfg.r1_every + 1)
    d_opt = torch.optim.Adam(d.parameters(), lr=cfg.lr * c, betas=(0.0, 0.99 ** c))
    step, wall = 0, 0.0
    state = ckpt.load()
    if state is not None:
        g.load_state_dict(state["g"]), g_ema.load_state_dict(state["g_ema"]), d.load_state_dict(state["d"])
        g_opt.load_state_dict(state["g_opt"]), d_opt.load_state_dict(state["d_opt"])
        if "map_opt" in state:
            map_opt.load_state_dict(state["map_opt"])
        step, wall = state["step"], state.get("wall_s", 0.0)
        if "rng" in state:
            torch.set_rng_state(state["rng"])
        print(f"resumed at step {step} ({wall / 3600:.2f} h trained so far)")
    elif cfg.init:
        step, wall = load_shippable(cfg.init, g, g_ema, d)
        torch.manual_seed(cfg.seed + step)
        print(f"starting from {cfg.init} at step {step} with fresh optimisers")
    else:
        torch.manual_seed(cfg.seed)
    g.to(device), g_ema.to(device), d.to(device)
    for opt in (g_opt, d_opt, map_opt):  # moments follow the parameters' device
        for s in opt.state.values():
            for k, v in s.items():
                if isinstance(v, torch.Tensor) and k != "step":
                    s[k] = v.to(device)

    size = g.size
    total = cfg.warm_steps + cfg.adv_steps
    fixed_z = torch.randn(16, g.style_dim, generator=torch.Generator().manual_seed(1234))

    def snapshot_state():
        return {"g": g.state_dict(), "g_ema": g_ema.state_dict(), "d": d.state_dict(),
                "g_opt": g_opt.state_dict(), "d_opt": d_opt.state_dict(), "map_opt": map_opt.state_dict(),
                "step": step, "wall_s": wall,
                "config": asdict(cfg), "rng": torch.get_rng_state()}

    ckpt.install_signal_handlers()
    bar = tqdm(total=total, initial=step, disable=not progress, desc="mini G")
    try:
        while step < total:
            t0 = time.perf_counter()
            adversarial = step >= cfg.warm_steps
            for i, group in enumerate(g_opt.param_groups):
                group["betas"] = (0.0 if adversarial else cfg.warm_beta1, 0.99)
                if i == 0:
                    group["lr"] = cfg.lr if adversarial else cfg.warm_lr
                else:  # the mapping: frozen for g_opt while it regresses onto the content code
                    group["lr"] = cfg.lr if adversarial else 0.0
            z = torch.randn(cfg.batch, g.style_dim)
            content = world.content_from_z(z)
            tex_seed, tex = cfg.seed * 1_000_003 + step, adversarial or cfg.warm_texture
            target = world.render(content, "real", size=size, seed=tex_seed, texture=tex).to(device)
            z = z.to(device)
            rec_w = cfg.rec_weight if adversarial else 1.0
            rec = {}
            if adversarial:
                # Discriminator: real renders of independent content vs current fakes.
                real = real_batch(torch.randn(cfg.batch, g.style_dim), size, seed=-(step + 1)).to(device)
                with torch.no_grad():
                    fake, _ = g([z])
                rec.update(to_floats(discriminator_step(d, d_opt, real, fake, step=step, r1_every=cfg.r1_every,
                                                        r1_gamma=cfg.r1_gamma)))
            if adversarial:
                fake, _ = g([z])
            else:
                code = content_code(content, g.style_dim, cfg.code_seed).to(device)
                fake = g.synthesis(code, noise_mode="random")
                for _ in range(cfg.map_steps):
                    zm = torch.randn(cfg.map_batch, g.style_dim)
                    target_code = content_code(world.content_from_z(zm), g.style_dim, cfg.code_seed).to(device)
                    l_map = (g.mapping(zm.to(device)) - target_code).pow(2).mean()
                    map_opt.zero_grad(set_to_none=True)
                    l_map.backward()
                    map_opt.step()
                rec["map"] = l_map.item()
            l_rec = multiscale_l1(fake, target)
            g_loss = rec_w * l_rec
            for key, factor, weight in (("eye", "eye_color", cfg.eye_weight),
                                        ("earring", "earrings", cfg.earring_weight)):
                if weight:
                    l_px = masked_l1(fake, target, factor_pixels(content, target, factor, size, tex_seed, tex))
                    g_loss = g_loss + rec_w * weight * l_px
                    rec[key] = l_px.item()
            if adversarial:
                l_adv = F.softplus(-d(fake)).mean()
                g_loss = g_loss + l_adv
                rec["g_adv"] = l_adv.item()
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
            half_life = min(cfg.ema_half_life_imgs, cfg.ema_rampup * step * cfg.batch)
            ema_update(g_ema, g, 0.5 ** (cfg.batch / max(half_life, 1e-8)))
            step += 1
            dt = time.perf_counter() - t0
            wall += dt
            rec.update(phase="adv" if adversarial else "warm", rec=l_rec.item(), s_per_step=dt)
            log.accumulate(step, 10, **rec)
            bar.update(1)
            bar.set_postfix(rec=f"{l_rec.item():.4f}", phase=rec["phase"])
            if step % cfg.sample_every == 0 or step == total:
                save_samples(g_ema, fixed_z, out / f"samples_{step:06d}.png", size)
            if adversarial and cfg.keep_every and (step - cfg.warm_steps) % cfg.keep_every == 0:
                keep_generator(g_ema, d, out / f"g_ema_{step:06d}.pt", step, wall, cfg)
            if ckpt.due() or step == total:
                ckpt.save(snapshot_state())
    finally:
        bar.close()
        ckpt.restore_signal_handlers()
    return snapshot_state()


@torch.no_grad()
def save_samples(g, z, path, size):
    """Generated samples (top) above the renderer's image of the same content (bottom)."""
    from ..viz import save_grid

    dev = next(g.parameters()).device
    fake, _ = g([z.to(dev)], randomize_noise=False)
    save_grid(torch.cat([fake.cpu(), real_batch(z, size, seed=0)]), path, nrow=len(z))


def save_shippable(g, d, path, meta: dict):
    """G_ema (+D, +latent_avg) in half precision, facestyle's generator format; the models are copied to the CPU."""
    from ..hub import save_generator_checkpoint

    g, d = copy.deepcopy(g).cpu().float(), copy.deepcopy(d).cpu().float()
    # Its own seeded RNG: a file kept mid-run (keep_every) must not move the training run's random stream, and
    # the same weights always get the same latent_avg.
    with torch.no_grad():
        latent_avg = g.mean_latent(4096, generator=torch.Generator().manual_seed(0))
    return save_generator_checkpoint(path, g, latent_avg=latent_avg, d=d, half=True, meta=meta)


def load_shippable(path, g, g_ema, d) -> tuple[int, float]:
    """Weights of a file written by :func:`save_shippable` into ``g``, ``g_ema`` and ``d``; returns its
    (step, wall seconds)."""
    from ..hub import load_generator

    loaded = load_generator(resolve_path(path), device="cpu", training=True)  # training: also builds its D
    meta = loaded.meta or {}
    if "step" not in meta or loaded.d is None:
        raise ValueError(f"{path} lacks a training step (meta['step']) or a discriminator: not a file kept or "
                         f"exported by this trainer")
    weights = {k: v.float() for k, v in loaded.g_ema.state_dict().items()}
    g.load_state_dict(weights), g_ema.load_state_dict(weights)
    d.load_state_dict(loaded.d.state_dict())
    return int(meta["step"]), float(meta.get("wall_s") or 0.0)


def keep_generator(g_ema, d, path, step, wall, cfg) -> None:
    """An intermediate adversarial step's G_ema, written as the shipped file would be (``keep_every``)."""
    save_shippable(g_ema, d, path, {"step": step, "wall_s": wall, "train_config": asdict(cfg)})


def export_generator(state_path, out_path, profile="mini"):
    """Write the shippable half-precision G_ema (+D, +latent_avg) of a training state; recorded when shipped."""
    state = torch.load(resolve_path(state_path), map_location="cpu", weights_only=True)
    g, d = build_models(profile)
    g.load_state_dict({k: v.float() for k, v in state["g_ema"].items()})
    d.load_state_dict({k: v.float() for k, v in state["d"].items()})
    meta = {"step": state["step"], "wall_s": state.get("wall_s"), "train_config": state.get("config")}
    path = save_shippable(g, d, resolve_path(out_path), meta)
    record_if_shipped(get_profile(profile).generator_ckpt, path, iterations=state["step"],
                      wall_s=round(state.get("wall_s") or 0.0))
