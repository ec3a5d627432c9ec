"""Several processes, one result: the torch.distributed plumbing behind ``torchrun -m facestyle ...``.

The paper's slow steps split two ways (docs/distributed.md shows the launch on one machine and on a cluster):

* **independent per image** - level-2 pseudo pairs (Eq. 5) and reference embedding (section 3.3) optimise each
  batch of images on its own. Each rank takes every N-th batch (:func:`shard`), the results are exchanged
  (:func:`gather`) and every rank ends with the same full set, equal to a one-process run batch for batch;
* **one model** - the finetune (Eq. 3). The paper's batch of 4 stays the *global* batch: every rank draws the
  same 4 codes and style images from the same seeded stream and works on its slice of 4 / N, and the gradients
  are averaged over ranks (:func:`average_gradients`) before every optimiser step. The mean of equal-sized slice
  means is the batch mean, so every loss term is the one-process batch's. Not D's minibatch-std layer: it sees
  the images of one forward pass, here the rank's part (as in StyleGAN2-ADA's multi-GPU runs), so N ranks come
  close to one process but do not equal it (tests/test_distributed.py measures how close).

Gradients are averaged by hand, one flat all-reduce per optimiser step, rather than through the
``DistributedDataParallel`` wrapper: the lazy R1 step differentiates D's output with respect to its input and
backpropagates that again, which the wrapper's hooks do not support, and G' is also evaluated outside its
forward (mapping and synthesis separately). StyleGAN2-ADA's and StyleGAN3's training loops average the same way.

One process (no ``WORLD_SIZE`` in the environment) is rank 0 of 1, and every function here is then a no-op, so
the single-device code path is the same code.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

__all__ = ["Ranks", "init", "ranks", "shard", "gather", "average_gradients", "any_rank", "barrier", "shutdown",
           "local_slice", "merge_by_index"]


@dataclass(frozen=True)
class Ranks:
    """Where this process sits: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes files, logs and progress bars."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def ranks() -> Ranks:
    """This process's place, read from an initialised process group (else rank 0 of 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks()


def init(device: str | torch.device = "auto") -> tuple[Ranks, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment and pick this rank's device.

    Without ``WORLD_SIZE`` > 1 nothing is initialised and ``device`` is resolved as usual. Under torchrun each
    rank gets ``cuda:LOCAL_RANK`` when the device is CUDA (NCCL), else the CPU (gloo). Calling it twice is safe.
    """
    import torch.distributed as dist

    from .utils import get_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = get_device(device)
    if world <= 1:
        return Ranks(), dev
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return ranks(), dev


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, r: Ranks | None = None) -> list[int]:
    """The indices of ``n`` work items (batches) that this rank does: every ``world``-th, from ``rank``.

    Round-robin rather than contiguous blocks, so a set whose last batch is short still spreads evenly."""
    r = r or ranks()
    return list(range(r.rank, n, r.world))


def gather(obj: Any, r: Ranks | None = None) -> list[Any]:
    """Every rank's ``obj`` (any picklable object; tensors travel through the CPU), in rank order, on every rank."""
    r = r or ranks()
    if not r.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * r.world
    dist.all_gather_object(out, obj)
    return out


def average_gradients(params: Iterable[torch.nn.Parameter], r: Ranks | None = None) -> None:
    """Replace each parameter's gradient by its mean over the ranks (one flat all-reduce).

    A parameter without a gradient on this step counts as zeros, so all ranks reduce tensors of the same size."""
    r = r or ranks()
    if not r.active:
        return
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= r.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def any_rank(flag: bool, device: torch.device | None = None, r: Ranks | None = None) -> bool:
    """True on every rank when ``flag`` is true on any (a save decided by one rank's clock or signal)."""
    r = r or ranks()
    if not r.active:
        return bool(flag)
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device or "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(r: Ranks | None = None) -> None:
    r = r or ranks()
    if r.active:
        import torch.distributed as dist

        dist.barrier()


def local_slice(n: int, r: Ranks | None = None) -> slice:
    """This rank's equal part of a global batch of ``n`` (``n`` must divide by the number of ranks)."""
    r = r or ranks()
    if n % r.world:
        raise ValueError(f"a global batch of {n} does not split over {r.world} ranks: choose a batch that is a "
                         f"multiple of {r.world} (the paper's 4 runs on 1, 2 or 4 ranks)")
    k = n // r.world
    return slice(r.rank * k, (r.rank + 1) * k)


def merge_by_index(parts: Sequence[dict]) -> dict:
    """One ``{index: result}`` dict from every rank's partial dicts (each index is done by exactly one rank)."""
    out: dict = {}
    for p in parts:
        out.update(p)
    return out
