"""Tensor operations every trainer shares: the discriminator step with lazy R1, the EMA of a generator, Adam.

They live in ``nn`` (no I/O, no configuration) so that the method's finetune (paper section 3.1) and the mini
profile's own pretraining use one implementation, and neither has to import the other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["r1_penalty", "ema_update", "discriminator_step", "adam", "to_floats"]


def r1_penalty(real_pred: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """R1 regulariser (Mescheder et al. 2018) as StyleGAN2 uses it: |grad_x D(x)|^2 on real images."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """``ema <- beta * ema + (1 - beta) * model`` for parameters; buffers are copied (they are not averaged)."""
    # One fused call over all parameters: a loop would launch a kernel per tensor (hundreds on a GPU, every step).
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - beta)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def discriminator_step(critic, opt: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor, *, step: int,
                       r1_every: int, r1_gamma: float, sync=None) -> dict[str, float]:
    """One discriminator update of StyleGAN2's non-saturating logistic loss (the ``L_adv`` of paper Eq. 3 from
    D's side), then, every ``r1_every`` steps, the lazy R1 update scaled by ``r1_every`` as StyleGAN2 does.

    ``critic`` maps images to logits (D, or D behind a differentiable augmentation; it sees ``real`` before
    ``fake``, so an augmentation draws its random numbers in a fixed order). ``fake`` must be detached.
    ``sync`` (optional, no arguments) runs between each backward pass and its optimiser step: the hook where
    several processes average D's gradients. Returns ``{"d": loss}`` plus ``"r1"`` on the steps that apply it, as
    detached tensors: reading them as numbers here would make the host wait for the device in the middle of the
    step (:func:`to_floats` reads a whole step's record at once).
    """
    loss = F.softplus(-critic(real)).mean() + F.softplus(critic(fake)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if sync is not None:
        sync()
    opt.step()
    out = {"d": loss.detach()}
    if r1_gamma > 0 and step % r1_every == 0:
        real = real.detach().requires_grad_(True)
        r1 = r1_penalty(critic(real), real)
        opt.zero_grad(set_to_none=True)
        (r1_gamma / 2 * r1 * r1_every).backward()
        if sync is not None:
            sync()
        opt.step()
        out["r1"] = r1.detach()
    return out


def adam(params, device: torch.device, **kwargs) -> torch.optim.Optimizer:
    """Adam with the fused kernel on CUDA (one launch updates every parameter); elsewhere PyTorch's default, so
    CPU runs keep the numbers they always had."""
    return torch.optim.Adam(params, fused=True if torch.device(device).type == "cuda" else None, **kwargs)


def to_floats(record: dict) -> dict:
    """A step's record with every tensor value read as a float in one transfer: one host-device sync per step
    instead of one per logged number."""
    keys = [k for k, v in record.items() if torch.is_tensor(v)]
    if not keys:
        return dict(record)
    values = torch.stack([record[k].detach().float().reshape(()) for k in keys]).tolist()
    return {**record, **dict(zip(keys, values))}
