"""Shared plumbing for resumable training runs: run directory, JSONL log, SIGKILL-safe checkpoints.

Every trainer in facestyle (mini generator, encoders, judges, style finetunes) keeps its whole state in one
dict of tensors and plain values, saved atomically (``facestyle.utils.atomic_torch_save``) every few minutes,
on SIGTERM/SIGINT and at the end. A run killed at any moment resumes from its last checkpoint and never
sees a half-written file.

A *snapshot* is the compact form of that state meant to be committed so a later session (or another
machine) can resume: weights in float16, Adam moments in bfloat16 (fp16 would underflow the second moment),
no RNG state. It replaces itself; only one snapshot per run is ever kept.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import torch

from .utils import REPO_ROOT, atomic_torch_save


def resolve_path(path: str | os.PathLike) -> Path:
    """Relative paths are taken from the repository root, never from the current working directory."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


class JsonlLog:
    """Append-only JSON-lines log; one dict per line so a killed run leaves a readable log."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._window: list[dict] = []

    def accumulate(self, step: int, every: int, force: bool = False, **values) -> dict | None:
        """Collect one step's numbers; every ``every`` steps (or when ``force``) write their means.

        Single-batch losses are too noisy to read or to test against, so logs hold window means.
        """
        self._window.append(values)
        if step % every and not force:
            return None
        keys = dict.fromkeys(k for r in self._window for k in r)
        means = {}
        for k in keys:
            vals = [r[k] for r in self._window if k in r]
            means[k] = vals[-1] if isinstance(vals[-1], str) else round(sum(vals) / len(vals), 6)
        self._window.clear()
        self.write(step=step, **means)
        return means

    def write(self, **record) -> None:
        record.setdefault("time", round(time.time(), 3))
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by SIGKILL
                pass
        return out


def _compact_tensor(t: torch.Tensor, kind: str) -> torch.Tensor:
    if not t.is_floating_point():
        return t
    return t.to(torch.bfloat16 if kind == "moment" else torch.float16)


def compact_state(state: dict) -> dict:
    """Shrink a training state for committing: fp16 weights, bf16 optimizer moments, no RNG."""

    def walk(obj, kind="weight"):
        if isinstance(obj, torch.Tensor):
            return _compact_tensor(obj.detach().cpu(), kind)
        if isinstance(obj, dict):
            return {k: walk(v, "moment" if k in ("exp_avg", "exp_avg_sq") else kind) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(walk(v, kind) for v in obj)
        return obj

    return {k: walk(v) for k, v in state.items() if k != "rng"}


def expand_state(state: dict) -> dict:
    """Inverse of :func:`compact_state`: every floating tensor back to float32."""

    def walk(obj):
        if isinstance(obj, torch.Tensor):
            return obj.float() if obj.is_floating_point() else obj
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(walk(v) for v in obj)
        return obj

    return walk(state)


class Interrupted(SystemExit):
    """Raised right after the final save when SIGTERM/SIGINT asked a run to stop: nothing after the training
    loop (evaluation, export) runs on a half-finished model, and the process exits with status 130."""

    def __init__(self, path: Path):
        super().__init__(130)
        self.path = path


class Checkpointer:
    """Decides when to save and does it atomically; also turns SIGTERM/SIGINT into a final save."""

    def __init__(self, path: Path, every_s: float = 300.0, snapshot: Path | None = None):
        self.path = Path(path)
        self.every_s = every_s
        self.snapshot = Path(snapshot) if snapshot else None
        self._last = time.monotonic()
        self.stop_requested = False
        self._old = {}

    def install_signal_handlers(self) -> None:
        def handler(signum, frame):  # finish the current step, save, then exit cleanly
            self.stop_requested = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, handler)
            except ValueError:  # not in the main thread (e.g. inside a notebook kernel thread)
                pass

    def restore_signal_handlers(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def due(self) -> bool:
        return self.stop_requested or time.monotonic() - self._last >= self.every_s

    def save(self, state: dict) -> None:
        atomic_torch_save(state, self.path)
        if self.snapshot is not None:
            atomic_torch_save(compact_state(state), self.snapshot)
        self._last = time.monotonic()
        if self.stop_requested:
            print(f"stopped: state saved to {self.path}; rerun the same command to resume")
            raise Interrupted(self.path)

    def skip(self) -> None:
        """What a rank that does not write does when the others save: restart the clock, honour a stop."""
        self._last = time.monotonic()
        if self.stop_requested:
            raise Interrupted(self.path)

    def load(self) -> dict | None:
        """Latest full state, else the committed snapshot, else None (fresh start)."""
        for p, compact in ((self.path, False), (self.snapshot, True)):
            if p is not None and p.exists():
                state = torch.load(p, map_location="cpu", weights_only=True)
                return expand_state(state) if compact else state
        return None


def set_threads(n: int | None) -> None:
    """Use every core by default; torch's default can undercount inside containers."""
    torch.set_num_threads(n or os.cpu_count() or 1)


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` from the command line (argparse's ``bool("false")`` is True)."""
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_arguments(p: argparse.ArgumentParser, cls, skip=()) -> None:
    """One ``--flag`` per field of a training-config dataclass (its defaults are the documented defaults)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        typ = {"int": int, "float": float, "bool": parse_bool}.get(
            f.type if isinstance(f.type, str) else f.type.__name__, str)
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=f.default)
    p.add_argument("--export", default=None, help="write the shippable checkpoint here (recorded in the manifest "
                                                  "when it lies in facestyle/checkpoints/mini/)")


def config_from_args(cls, args):
    """The dataclass from parsed flags; ``none`` / ``null`` / empty turn an optional field off."""
    def value(f):
        v = getattr(args, f.name)
        optional = "None" in (f.type if isinstance(f.type, str) else str(f.type))
        return None if optional and isinstance(v, str) and v.strip().lower() in ("", "none", "null") else v

    return cls(**{f.name: value(f) for f in dataclasses.fields(cls)})


def train_loop(model: torch.nn.Module, loss_fn, *, out: Path, steps: int, lr: float, config: dict, seed: int,
               device: torch.device, pct_start: float = 0.1, ckpt_every_s: float = 300.0, progress: bool = True,
               desc: str = "train") -> torch.nn.Module:
    """The resumable loop of the mini world's small trainers (oracle, identity, perceptual backbone).

    AdamW (weight decay 1e-4) under a one-cycle schedule; ``loss_fn(g)`` returns one batch's loss, drawing its
    data from ``g``, a CPU generator seeded ``seed + step`` at (re)start. The state lives in ``out/state.pt``
    (saved every ``ckpt_every_s`` and at the end; SIGINT/SIGTERM save and exit), the loss in ``out/log.jsonl``.
    Returns the model in eval mode.
    """
    from .utils import progress_bar as tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)
    ckpt = Checkpointer(Path(out) / "state.pt", ckpt_every_s)
    log = JsonlLog(Path(out) / "log.jsonl")
    step, wall = 0, 0.0
    state = ckpt.load()
    if state:
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        step, wall = state["step"], state["wall_s"]
    model.to(device).train()
    g = torch.Generator().manual_seed(seed + step)
    ckpt.install_signal_handlers()
    bar = tqdm(total=steps, initial=step, disable=not progress, desc=desc)
    try:
        while step < steps:
            t0 = time.perf_counter()
            loss = loss_fn(g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            wall += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            log.accumulate(step, 20, loss=loss.item())
            if ckpt.due() or step == steps:
                ckpt.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                           "step": step, "wall_s": wall, "config": config})
    finally:
        bar.close()
        ckpt.restore_signal_handlers()
    return model.eval()
