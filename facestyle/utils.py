"""Small shared helpers: device choice, atomic file writes, seeding."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = Path(__file__).resolve().parent


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve ``"auto"`` to CUDA when present, else CPU; validate explicit names with a clear error."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here: use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Write to a temporary file beside ``path`` and rename it into place only on success.

    A crash or an exception never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make shared figures and checkpoints private
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def repo_relative(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it lies inside it, else as given: what a record or a printed line
    should say, so committed tables and notebook outputs read the same on every machine."""
    p = Path(path)
    try:
        return p.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write` (SIGKILL-safe checkpoints)."""
    with atomic_write(path) as fh:
        torch.save(obj, fh)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG and return a dedicated CPU generator for reproducible sampling."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress_bar(*, disable: bool = False, **kwargs):
    """tqdm's auto bar (a widget in Jupyter, text elsewhere), off when ``disable`` or ``TQDM_DISABLE=1``: the
    notebook bar ignores that variable, and stored notebook runs (:func:`facestyle.notebook.execute`) need it."""
    from tqdm.auto import tqdm

    off = os.environ.get("TQDM_DISABLE", "") not in ("", "0", "false", "False")
    return tqdm(disable=disable or off, **kwargs)
