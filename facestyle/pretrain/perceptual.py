"""Train the mini profile's perceptual backbone: the mini world's stand-in for an ImageNet-trained AlexNet.

The paper's LPIPS (Eq. 1, Eq. 2) rests on features learned from a large, varied image set. The mini world has no
such network, and a *randomly* initialised AlexNet responds to colour and texture far more than to pose, shape,
glasses or a smile (docs/results.md, "Why the style generators lost content"). This trainer learns one the way
general-purpose features are learned without labels: SimCLR-style instance discrimination (two augmented views
of one render must find each other among the batch) over renders of **all six domains**, so the features are
trained on every kind of image the loss will compare. It never sees a content label, a domain label or the
oracle: the only supervision is "these two views come from the same picture".

The augmentations decide what the features may ignore; they are chosen so that content the paper wants kept is
*not* augmented away: no horizontal flip (that would make yaw invisible), at most small shifts and scales (pose and
face shape stay), mild colour jitter and blur (so the features still see colour, as ImageNet features do).

The backbone is torchvision's AlexNet ``features`` stack (the architecture of the evaluation LPIPS, so the lpips
package's heads fit it), started from the mini profile's seeded He-normal weights. The exported file is a plain
torchvision-layout state dict (``features.N.*``) wrapped as a facestyle ``lpips-backbone`` checkpoint, loaded
into ``lpips.LPIPS`` exactly as the ffhq profile loads the ImageNet file: ``facestyle finetune --lpips
mini-lpips-alexnet`` or ``Profile.lpips_train_weights``. The shipped file is experimental and not yet the mini
profile's default: docs/faithful-stylization.md measures what it changes (it sees beards, hair style and glasses
far better than the seeded backbone, pose no better; the heads are the lpips package's AlexNet heads, not
re-calibrated).

``facestyle pretrain perceptual --color strong --steps 800 --export facestyle/checkpoints/mini/lpips-alexnet.pt``
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import world
from ..utils import get_device
from .judges import _from_u8, info_nce, render_u8
from ..manifest import record_if_shipped
from ..runs import resolve_path, set_threads, train_loop

__all__ = ["PerceptualConfig", "build_backbone", "augment_views", "train", "export"]

# Content seeds of the training renders: far from every evaluation seed (facestyle.eval.quality.protocol_seeds
# uses 20-70 million).
SEED_BASE = 90_000_000


@dataclass
class PerceptualConfig:
    out: str = "runs/mini-perceptual"
    n_per_domain: int = 4000
    steps: int = 2500
    batch: int = 128
    lr: float = 1e-3
    temperature: float = 0.2
    # "mild": small brightness/contrast/saturation jitter; "strong": also random channel order and greyscale, so
    # that colour alone cannot tell two pictures apart and the features must encode shape (SimCLR's finding).
    color: str = "mild"
    # Largest random shift and scale change of a view, as a fraction of the picture. A net trained to ignore
    # shifts learns to ignore small moves of the features inside the head too (a turned head, a wider face):
    # 0 keeps every view in place (docs/faithful-stylization.md measures both).
    shift: float = 0.1
    init: str | None = None  # resume the backbone weights of an exported lpips-backbone file
    size: int = 64
    ckpt_every_s: float = 300.0
    seed: int = 0
    device: str = "auto"
    threads: int = 0


class _Trainee(nn.Module):
    """AlexNet features + a projection head on the pooled last conv (the head is dropped at export)."""

    def __init__(self):
        super().__init__()
        from torchvision.models import alexnet

        from ..nn.perceptual import seed_backbone

        with torch.random.fork_rng(devices=[]):
            self.features = alexnet(weights=None).features
        seed_backbone(self.features)
        self.head = nn.Sequential(nn.Linear(256 * 4, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The ImageNet statistics lpips's ScalingLayer applies, so the features are trained on what LPIPS feeds.
        shift = torch.tensor([-.030, -.088, -.188], device=x.device).view(1, 3, 1, 1)
        scale = torch.tensor([.458, .448, .450], device=x.device).view(1, 3, 1, 1)
        f = self.features[:-1]((x - shift) / scale)  # without the last max-pool: 3x3 at 64 px
        f = F.adaptive_avg_pool2d(f, 2).flatten(1)
        return F.normalize(self.head(f), dim=1)


def build_backbone() -> nn.Module:
    return _Trainee()


def augment_views(x: torch.Tensor, g: torch.Generator, color: str = "mild", shift: float = 0.1) -> torch.Tensor:
    """One random view per image in [-1, 1]: shift/scale by at most ``shift`` (a fraction), colour jitter
    (``color``), blur, noise."""
    b = len(x)
    scale = 1 + (torch.rand(b, generator=g) - 0.5) * 2 * shift
    offset = (torch.rand(b, 2, generator=g) - 0.5) * 2 * shift
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = offset
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    bright = (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.3
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.4
    sat = 1 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.4
    grey = x.mean(1, keepdim=True)
    x = (grey + (x - grey) * sat) * contrast + bright
    if color == "strong":
        perm = torch.stack([torch.randperm(3, generator=g) for _ in range(b)])
        shuffled = x.gather(1, perm.view(b, 3, 1, 1).expand_as(x))
        x = torch.where(torch.rand(b, 1, 1, 1, generator=g) < 0.8, shuffled, x)
        x = torch.where(torch.rand(b, 1, 1, 1, generator=g) < 0.2, x.mean(1, keepdim=True).expand_as(x), x)
    elif color != "mild":
        raise ValueError(f"unknown colour augmentation {color!r}: choose mild or strong")
    blur = torch.rand(b, 1, 1, 1, generator=g) < 0.3
    x = torch.where(blur, F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1), x)
    x = x + 0.03 * torch.randn(x.shape, generator=g) * (torch.rand(b, 1, 1, 1, generator=g) < 0.5)
    return x.clamp(-1.5, 1.5)


def _data(cfg: PerceptualConfig) -> torch.Tensor:
    """``n_per_domain`` renders of independent content in each domain (uint8); no labels are kept."""
    imgs = []
    for d, dom in enumerate(world.DOMAINS):
        s = SEED_BASE + cfg.seed * 1000 + d
        imgs.append(render_u8(world.sample_content(cfg.n_per_domain, seed=s), dom, cfg.size, seed=s))
    return torch.cat(imgs)


def train(cfg: PerceptualConfig, progress: bool = True) -> _Trainee:
    """Resumable SimCLR training (symmetric InfoNCE between two views of each image in the batch)."""
    from ..utils import atomic_torch_save

    set_threads(cfg.threads)
    device = get_device(cfg.device)
    out = resolve_path(cfg.out)
    cache = out / "data.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
    else:
        t0 = time.perf_counter()
        data = _data(cfg)
        atomic_torch_save(data, cache)
        print(f"rendered {len(data)} images in {time.perf_counter() - t0:.0f} s")
    model = build_backbone()
    if cfg.init:
        from ..hub import load_facestyle_checkpoint

        sd = load_facestyle_checkpoint(cfg.init, kind="lpips-backbone")["state_dict"]
        model.features.load_state_dict({k[len("features."):]: v.float() for k, v in sd.items()})

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        x = _from_u8(data[torch.randint(len(data), (cfg.batch,), generator=g)])
        return info_nce(model(augment_views(x, g, cfg.color, cfg.shift).to(device)),
                        model(augment_views(x, g, cfg.color, cfg.shift).to(device)), cfg.temperature)

    return train_loop(model, loss_fn, out=out, steps=cfg.steps, lr=cfg.lr, config=asdict(cfg), seed=cfg.seed,
                      device=device, pct_start=0.05, ckpt_every_s=cfg.ckpt_every_s, progress=progress,
                      desc="mini perceptual")


def export(model: _Trainee, cfg: PerceptualConfig, path, report: dict | None = None):
    """Save the backbone as a torchvision-layout ``features.N.*`` state dict (facestyle ``lpips-backbone``)."""
    from ..hub import save_checkpoint

    sd = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    out = save_checkpoint(resolve_path(path), kind="lpips-backbone", half=True, state_dict=sd,
                          config={"arch": "alexnet", "size": cfg.size},
                          meta={"train_config": asdict(cfg), "report": report or {}})
    state = torch.load(resolve_path(cfg.out) / "state.pt", weights_only=True)
    record_if_shipped("mini-lpips-alexnet", out, iterations=state["step"], wall_s=round(state["wall_s"]),
                      quality=report or {})
    return out
