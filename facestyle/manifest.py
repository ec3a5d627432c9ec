"""The mini checkpoint manifest: for every shipped file its sha256, size, the exact command that made it,
iterations, wall time, machine and quality numbers. ``facestyle.hub`` resolves mini names through it."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

from .hub import MANIFEST_PATH, MINI_DIR, sha256_file
from .utils import atomic_write


def read() -> dict:
    if MANIFEST_PATH.exists() and MANIFEST_PATH.read_text().strip():
        return json.loads(MANIFEST_PATH.read_text())
    return {"files": {}}


def machine() -> str:
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()}-core CPU"
    return f"{platform.machine()} {dev}, torch {torch.__version__.split('+')[0]}"


def invoked_command() -> str:
    """The command line that is running now, as a user would retype it."""
    argv = sys.argv[:]
    prog = "facestyle" if argv and (argv[0].endswith("facestyle") or argv[0].endswith("__main__.py")) else argv[0]
    return shlex.join([prog] + argv[1:])


def record(name: str, path: str | os.PathLike, *, command: str | None = None, **info) -> dict:
    """Add or replace the manifest entry ``name`` for the file at ``path`` (which must live in MINI_DIR)."""
    path = Path(path).resolve()
    if path.parent != MINI_DIR.resolve():
        raise ValueError(f"{path} is not in {MINI_DIR}: only files shipped there go in the manifest")
    data = read()
    digest = sha256_file(path)
    old = data["files"].get(name, {})
    # Facts measured on a file (quality numbers, notes) do not carry over to a different file of the same name.
    entry = dict(old) if old.get("sha256") == digest else {}
    entry.update({"file": path.name, "sha256": digest, "bytes": path.stat().st_size,
                  "command": command or invoked_command(), "machine": machine()})
    entry.update(info)
    data["files"][name] = entry
    with atomic_write(MANIFEST_PATH, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return entry


def update(name: str, **info) -> None:
    """Merge quality numbers (or other facts) into an existing entry."""
    data = read()
    if name not in data["files"]:
        raise KeyError(f"{name} is not in the manifest yet")
    data["files"][name].update(info)
    with atomic_write(MANIFEST_PATH, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")


def record_if_shipped(name: str, path: str | os.PathLike, **info) -> dict | None:
    """Record an exported file in the manifest when it was written into the shipped mini directory."""
    path = Path(path).resolve()
    if path.parent != MINI_DIR.resolve():
        return None
    return record(name, path, **info)
