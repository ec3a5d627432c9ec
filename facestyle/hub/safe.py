"""Opening a checkpoint file without running its code, and saying what it holds when it is not what was asked for.

Loading never runs pickled code: :func:`safe_load` uses ``torch.load(weights_only=True)`` with a narrow
allow-list (:data:`ALLOWED_GLOBALS_DOC`). Anything else -- an empty, truncated, HTML or malicious file, the wrong
kind of model -- raises :class:`~facestyle.hub.CheckpointError` with one message naming the file and what to do;
:func:`_describe` supplies the "what it is instead" part for every loader.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, CheckpointNotFound, UnsafeCheckpointError
from .store import record_first_use, resolve


def _allowed_globals() -> list:
    """The narrow allow-list handed to ``torch.serialization.safe_globals``.

    * ``argparse.Namespace`` -- rosinality training files pickle their ``args`` (docs/reference.md 1 and 8). Rebuilding
      a Namespace only sets attributes; it runs no code.
    * numpy scalars (``numpy.core.multiarray.scalar`` under its numpy-1 and numpy-2 module names) and
      ``numpy.dtype`` -- training scripts derived from these repos sometimes store numpy floats (a loss, an
      ``ada_aug_p`` computed with numpy) next to the tensors. They rebuild a number from raw bytes; no code runs.
    Nothing else: optimiser states, tensors, dicts, lists, tuples and primitives are allowed by torch itself.
    """
    allowed: list = [argparse.Namespace]
    try:
        import numpy as np
        try:
            from numpy._core.multiarray import scalar  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core.multiarray import scalar
        allowed += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
        dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles some dtypes by their class
        if dtypes is not None:
            for cls in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
                if hasattr(dtypes, cls):
                    allowed.append(getattr(dtypes, cls))
    except ImportError:  # pragma: no cover
        pass
    return allowed


ALLOWED_GLOBALS_DOC = _allowed_globals.__doc__


def _describe_bytes(head: bytes) -> str:
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low[:200]:
        return ("an HTML page, not a checkpoint (typically a download landing page such as Google Drive's "
                "'cannot scan for viruses' notice): download the real file in a browser or with gdown")
    if low.startswith((b"version https://git-lfs", b"version https://git-lfs")):
        return "a Git LFS pointer, not the checkpoint: run `git lfs pull` or download the file itself"
    try:
        head.decode("utf-8")
        return "a text file, not a PyTorch checkpoint"
    except UnicodeDecodeError:
        return f"not a PyTorch checkpoint (unknown binary format, starts with {head[:8]!r})"


def safe_load(path: str | os.PathLike, map_location: Any = "cpu", *, allow_unsafe: bool = False) -> Any:
    """``torch.load`` that never executes pickled code, with one clear error for every kind of bad file.

    The file must exist, be non-empty and be a torch zip archive or a legacy torch pickle; it is then loaded with
    ``weights_only=True`` inside ``torch.serialization.safe_globals`` (see :func:`_allowed_globals`). A pickle that
    asks for anything else raises :class:`UnsafeCheckpointError` without running it. ``allow_unsafe=True`` (only
    for files you trust completely) falls back to a full unpickle.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointNotFound(f"checkpoint file {p} does not exist")
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory, not a checkpoint file")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes): an interrupted download or copy; delete it and fetch it again")
    with open(p, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(p):
            raise CheckpointError(f"{p} is truncated or corrupt ({size} bytes; its zip directory is missing): "
                                  f"an interrupted download or copy; delete it and fetch it again")
    elif not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise CheckpointError(f"{p} is {_describe_bytes(head)}")
    if allow_unsafe:
        return torch.load(p, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        m = re.search(r"GLOBAL ([\w.]+)", msg) or re.search(r"unrecognized function ([\w.<>]+)", msg)
        if m or "Unsupported" in msg or "not an allowed global" in msg:
            what = m.group(1) if m else "an object outside the allow-list"
            raise UnsafeCheckpointError(
                f"refused to load {p}: its pickle asks for '{what}', which is not a tensor, a plain container or on "
                f"facestyle's allow-list (argparse.Namespace, numpy scalars and dtypes); it was NOT executed. "
                f"If you trust the "
                f"file's source completely, load it once with safe_load(path, allow_unsafe=True) and re-save its "
                f"tensors with facestyle.hub.save_checkpoint") from None
        raise CheckpointError(f"{p} is truncated or corrupt ({size} bytes): {_first_line(msg, exc)}; "
                              f"delete it and fetch it again") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{p} is truncated or corrupt ({size} bytes): {_first_line(str(exc), exc)}; "
                              f"delete it and fetch it again") from None


def _first_line(s: str, exc: BaseException | None = None) -> str:
    if not s.strip():
        return type(exc).__name__ if exc is not None else "no detail"
    return s.strip().splitlines()[0][:200]


def _load(name_or_path, download=None) -> tuple[Path, Any]:
    path = resolve(name_or_path, download=download)
    obj = safe_load(path, map_location="cpu")
    record_first_use(name_or_path, path)
    return path, obj


# --------------------------------------------------------------------------------------------------------------
# what a loaded object is
# --------------------------------------------------------------------------------------------------------------

def _is_facestyle(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"].startswith("facestyle/")


def _describe(obj: Any) -> str:
    if not isinstance(obj, dict):
        return f"a pickled {type(obj).__name__}"
    keys = [str(k) for k in obj]
    if _is_facestyle(obj):
        return f"a facestyle '{obj.get('kind')}' checkpoint"
    if "state_dict" in obj and "opts" in obj:
        return "this looks like a pSp encoder checkpoint (keys state_dict/opts/latent_avg): load it with load_psp"
    if "g_ema" in obj:
        return "a StyleGAN2 generator checkpoint"
    if "d" in obj and isinstance(obj["d"], dict) and _looks_like_d(obj["d"]):
        return "a StyleGAN2 checkpoint holding a discriminator"
    if any(k.startswith("encoder.") for k in keys):
        return "this looks like a pSp encoder state dict (encoder.* keys)"
    if _looks_like_d(obj):
        return "a StyleGAN2 discriminator state dict"
    if "input_layer.0.weight" in obj and any(k.startswith("body.") for k in keys):
        return "an IR-SE backbone (face recognition, e.g. ArcFace model_ir_se50.pth, or a bare pSp encoder)"
    if "conv2d_1a.conv.weight" in obj:
        return "a facenet InceptionResnetV1 state dict"
    if "features.0.weight" in obj and any(k.startswith("classifier.") for k in keys):
        return "a torchvision VGG/AlexNet classifier"
    if "Conv2d_1a_3x3.conv.weight" in obj:
        return "an Inception-v3 state dict"
    shown = ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")
    return f"a dict with keys [{shown}]"


def _looks_like_d(sd: Any) -> bool:
    return isinstance(sd, dict) and "final_linear.0.weight" in sd and "convs.0.0.weight" in sd
