"""Tensor operations every trainer shares: StyleGAN2's R1 regulariser and the EMA of a generator's weights.

They live in ``nn`` (no I/O, no configuration) so that the method's finetune (paper section 3.1) and the mini
profile's own pretraining use one implementation, and neither has to import the other.
"""
from __future__ import annotations

import torch

__all__ = ["r1_penalty", "ema_update"]


def r1_penalty(real_pred: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """R1 regulariser (Mescheder et al. 2018) as StyleGAN2 uses it: |grad_x D(x)|^2 on real images."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """``ema <- beta * ema + (1 - beta) * model`` for parameters; buffers are copied (they are not averaged)."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - beta)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)
