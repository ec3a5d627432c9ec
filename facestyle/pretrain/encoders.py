"""Train the mini profile's pSp-style encoders (W, W+ and Z+) against the frozen mini generator.

The paper uses pSp encoders pretrained on FFHQ (section 3, Eq. 4 and 6); the mini profile trains its own the
same way pSp does - reconstruct the input through the frozen generator - plus one thing only a synthetic
setting allows: half of every batch is the generator's own samples, whose latents are known, so the encoder
also gets a direct latent target (z for the Z+ encoder, w for the W and W+ encoders). The other half is real
renders from the world, supervised through the image only, since those are what the encoders must invert.

Loss = multiscale L1(G(E(x)), x) on all images + ``latent_weight`` * MSE(latent) on generated images.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from .. import world
from ..config import Profile, get_profile
from ..nn.encoders import PSP, build_encoder
from ..utils import get_device
from .generator import multiscale_l1
from ..manifest import record_if_shipped
from ..runs import Checkpointer, JsonlLog, resolve_path, set_threads


@dataclass
class EncoderTrainConfig:
    kind: str = "wplus"  # w | wplus | zplus
    profile: str = "mini"
    generator: str = "mini-stylegan2-64"  # hub name or path of the frozen generator
    out: str = "runs/mini-encoder-{kind}"
    steps: int = 3000
    batch: int = 16
    lr: float = 1e-3
    latent_weight: float = 1.0
    ckpt_every_s: float = 300.0
    seed: int = 0
    device: str = "auto"
    threads: int = 0


def build_psp(kind: str, generator, latent_avg: torch.Tensor, profile: str | Profile = "mini") -> PSP:
    prof = get_profile(profile)
    enc = build_encoder(kind, prof.encoder, n_styles=generator.n_latent, style_dim=generator.style_dim)
    return PSP(enc, generator, latent_avg=latent_avg.reshape(-1), start_from_latent_avg=kind != "zplus",
               input_size=prof.encoder.input_size, n_styles=generator.n_latent)


def train(cfg: EncoderTrainConfig, progress: bool = True) -> PSP:
    from ..utils import progress_bar as tqdm

    from ..hub import load_generator

    set_threads(cfg.threads)
    device = get_device(cfg.device)
    torch.manual_seed(cfg.seed)  # the encoder's initial weights; data draws have their own generator below
    loaded = load_generator(cfg.generator, device=device)
    g = loaded.g_ema
    psp = build_psp(cfg.kind, g, loaded.latent_avg, cfg.profile).to(device)
    for p in psp.decoder.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(psp.encoder.parameters(), lr=cfg.lr)
    out = resolve_path(cfg.out.format(kind=cfg.kind))
    ckpt = Checkpointer(out / "state.pt", cfg.ckpt_every_s)
    log = JsonlLog(out / "log.jsonl")
    step, wall = 0, 0.0
    state = ckpt.load()
    if state:
        psp.encoder.load_state_dict(state["encoder"]), opt.load_state_dict(state["opt"])
        step, wall = state["step"], state["wall_s"]
    gen = torch.Generator().manual_seed(cfg.seed + 7 * step)
    half = cfg.batch // 2
    ckpt.install_signal_handlers()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=f"mini E_{cfg.kind}")
    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            z = torch.randn(half, g.style_dim, generator=gen).to(device)
            with torch.no_grad():
                w = g.mapping(z)
                fake = g.synthesis(w, noise_mode="const")
            content = world.sample_content(cfg.batch - half, generator=gen)
            real = world.render(content, "real", size=g.size, seed=cfg.seed * 1_000_003 + step).to(device)
            x = torch.cat([fake, real])
            codes, raw = psp.encode(x, return_raw=True)
            rec = psp.decode(codes)
            l_img = multiscale_l1(rec, x)
            # latent target on the generated half: z for Z+ (every row), w for W (one code) and W+ (every row)
            target = z if cfg.kind == "zplus" else w
            pred = raw[:half] if cfg.kind != "wplus" else codes[:half]
            if pred.dim() == 3:
                target = target.unsqueeze(1).expand_as(pred)
            l_lat = (pred - target).pow(2).mean()
            loss = l_img + cfg.latent_weight * l_lat
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            wall += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(img=f"{l_img.item():.4f}", lat=f"{l_lat.item():.4f}")
            log.accumulate(step, 10, img=l_img.item(), lat=l_lat.item())
            if ckpt.due() or step == cfg.steps:
                ckpt.save({"encoder": psp.encoder.state_dict(), "opt": opt.state_dict(), "step": step,
                           "wall_s": wall, "config": asdict(cfg)})
    finally:
        bar.close()
        ckpt.restore_signal_handlers()
    psp.eval()
    return psp


def export(psp: PSP, cfg: EncoderTrainConfig, path, meta: dict | None = None) -> None:
    """Ship the encoder half precision; the decoder is referenced by name, not duplicated."""
    from ..hub import save_psp_checkpoint

    out = save_psp_checkpoint(resolve_path(path), psp, kind=cfg.kind, encoder_config=get_profile(cfg.profile).encoder,
                              half=True, decoder_ckpt=cfg.generator, meta={"train_config": asdict(cfg), **(meta or {})})
    state = torch.load(resolve_path(cfg.out.format(kind=cfg.kind)) / "state.pt", weights_only=True)
    record_if_shipped(f"mini-encoder-{cfg.kind}", out, iterations=state["step"], wall_s=round(state["wall_s"]))
