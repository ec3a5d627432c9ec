"""facestyle's own checkpoint format: what facestyle trains (mini models, finetuned generators, encoders)::

    {"format": "facestyle/1",          # version tag, checked on load
     "kind": "stylegan2" | "discriminator" | "encoder" | "identity" | "oracle" | ...,
     "config": {...},                  # plain python values: enough to rebuild the module
     "state_dict": {name: tensor},     # the module's state dict
     "extra": {name: tensor | dict},   # e.g. "latent_avg", "d" (a discriminator state dict)
     "meta": {...},                    # provenance: command, iterations, versions ...
     "half": bool}                     # True: floating tensors stored as float16, cast back on load

Only plain values and tensors go in, so :func:`~facestyle.hub.safe_load` reads it back without an allow-list entry.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils import atomic_write
from .errors import CheckpointError
from .safe import _describe, _is_facestyle, _load

FORMAT_TAG = "facestyle/1"


def _plain(obj: Any) -> Any:
    """Convert configs to values that weights_only loading accepts (dataclasses, Namespaces -> dicts)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, argparse.Namespace):
        return _plain(vars(obj))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    raise TypeError(f"cannot store a {type(obj).__name__} in a facestyle checkpoint config/meta: use plain values")


def _map_tensors(obj: Any, fn) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def _state(x: Any) -> Any:
    return x.state_dict() if isinstance(x, nn.Module) else x


def save_checkpoint(path: str | os.PathLike, *, kind: str, state_dict: Any, config: Any = None,
                    meta: dict | None = None, half: bool = False, **extra: Any) -> Path:
    """Write a facestyle checkpoint atomically (layout in the module docstring).

    ``state_dict`` may be a module; ``config`` a dataclass / Namespace / dict; ``extra`` holds further tensors
    or state dicts (``latent_avg=...``, ``d=discriminator``). ``half=True`` stores floating tensors as float16.
    """
    from .. import __version__

    def conv(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu()
        return t.half() if half and t.is_floating_point() else t.clone()

    meta = dict(_plain(meta or {}))
    meta.setdefault("facestyle_version", __version__)
    meta.setdefault("torch_version", torch.__version__.split("+")[0])
    obj = {"format": FORMAT_TAG, "kind": str(kind), "config": _plain(config or {}),
           "state_dict": _map_tensors(dict(_state(state_dict)), conv),
           "extra": {k: _map_tensors(_state(v), conv) for k, v in extra.items()},
           "meta": meta, "half": bool(half)}
    path = Path(path)
    with atomic_write(path) as fh:
        torch.save(obj, fh)
    return path


def _check_facestyle(obj: Any, path: Path, kind: str | tuple | None = None) -> dict:
    if not _is_facestyle(obj):
        raise CheckpointError(f"{path} is not a facestyle checkpoint (no 'format' tag); it is {_describe(obj)}")
    if obj["format"] != FORMAT_TAG:
        raise CheckpointError(f"{path} has format {obj['format']!r}; this facestyle reads {FORMAT_TAG!r}: "
                              f"upgrade facestyle or re-export the file")
    missing = [k for k in ("kind", "state_dict") if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is a damaged facestyle checkpoint: missing {missing}")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and obj["kind"] not in kinds:
        raise CheckpointError(f"{path} is a facestyle '{obj['kind']}' checkpoint, expected {' or '.join(kinds)}")
    out = dict(obj)
    out.setdefault("config", {})
    out.setdefault("meta", {})
    out.setdefault("extra", {})
    if out.get("half"):
        f32 = (lambda t: t.float() if t.is_floating_point() else t)
        out["state_dict"] = _map_tensors(out["state_dict"], f32)
        out["extra"] = _map_tensors(out["extra"], f32)
    return out


def load_facestyle_checkpoint(name_or_path: str | os.PathLike, kind: str | tuple | None = None, *,
                              download: bool | None = None) -> dict:
    """Load and validate a facestyle checkpoint (format tag, required keys, optional ``kind``); float16 -> float32.

    Returns the dict with ``path`` added.
    """
    path, obj = _load(name_or_path, download)
    out = _check_facestyle(obj, path, kind)
    out["path"] = path
    return out
