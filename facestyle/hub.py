"""Checkpoint hub: a registry of named checkpoints, a local cache, safe loading and ready-made loaders.

Both profiles go through the same functions (docs/design.md section 2):

* ``mini`` names (``mini-stylegan2-64``, ``mini-encoder-wplus`` ...) resolve to files shipped inside the package
  under ``facestyle/checkpoints/mini/``; their sha256 comes from ``manifest.json`` next to them.
* ``ffhq`` names resolve to public files a user fetches once: facestyle looks in its cache
  (``$FACESTYLE_HOME/checkpoints``, default ``~/.cache/facestyle/checkpoints``) and, for torchvision / facenet
  files, in torch's own cache; it downloads only where a direct URL is known and downloading is allowed.

A local path always wins over a name, so every command takes ``--ckpt PATH``; a registry entry can also be
pointed at a file with the environment variable ``FACESTYLE_CKPT_<NAME>`` (upper case, ``-`` -> ``_``).

Loading never runs pickled code: :func:`safe_load` uses ``torch.load(weights_only=True)`` with a narrow
allow-list (:data:`ALLOWED_GLOBALS_DOC`). Anything else -- an empty, truncated, HTML or malicious file, the
wrong kind of model -- raises :class:`CheckpointError` with one message naming the file and what to do.

facestyle's own checkpoint layout (what facestyle trains: mini models, finetuned generators, encoders)::

    {"format": "facestyle/1",          # version tag, checked on load
     "kind": "stylegan2" | "discriminator" | "encoder" | "identity" | "oracle" | ...,
     "config": {...},                  # plain python values: enough to rebuild the module
     "state_dict": {name: tensor},     # the module's state dict
     "extra": {name: tensor | dict},   # e.g. "latent_avg", "d" (a discriminator state dict)
     "meta": {...},                    # provenance: command, iterations, versions ...
     "half": bool}                     # True: floating tensors stored as float16, cast back on load
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import math
import os
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import Request, urlopen

import torch
from torch import nn

from .config import STYLES, EncoderConfig, GeneratorConfig
from .utils import PACKAGE_ROOT, atomic_write, get_device

FORMAT_TAG = "facestyle/1"
KINDS = ("stylegan2", "stylegan2-train", "psp", "encoder", "identity", "oracle", "lpips-backbone", "inception",
         "clip")
MINI_DIR = PACKAGE_ROOT / "checkpoints" / "mini"
MANIFEST_PATH = MINI_DIR / "manifest.json"
_HASH_DB = "sha256.json"  # inside cache_dir(): {abs path: {size, mtime_ns, sha256}} to avoid re-hashing
_CHUNK = 1 << 20

__all__ = [
    "CheckpointError", "CheckpointNotFound", "ChecksumError", "UnsafeCheckpointError", "Entry", "FORMAT_TAG",
    "home", "cache_dir", "resolve", "get_entry", "list_entries", "format_entries", "verify", "sha256_file",
    "safe_load", "save_checkpoint", "load_facestyle_checkpoint", "LoadedGenerator", "load_generator",
    "load_discriminator", "load_psp", "infer_generator_config", "infer_discriminator_config",
    "save_generator_checkpoint", "save_psp_checkpoint", "generator_config_of",
]


# --------------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------------

class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, fetched, verified or loaded; the message says which file and what to do."""


class CheckpointNotFound(CheckpointError):
    """The file is neither local, cached, shipped nor downloadable right now."""


class ChecksumError(CheckpointError):
    """A file's sha256 differs from the registered one (nothing is kept under the final name)."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle asks for code outside the allow-list; it was refused without being executed."""


# --------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One named checkpoint. ``url`` is a direct download (None: fetch by hand, see ``where``)."""

    name: str
    kind: str
    filename: str
    url: str | None
    sha256: str | None
    size_bytes: int | None
    licence: str
    profile: str
    where: str
    note: str = ""
    sha256_prefix: str | None = None  # torch-hub naming convention "<name>-<first hex digits of sha256>.pth"
    torch_cache: bool = False  # also look in torch's caches ($TORCH_HOME/hub/checkpoints, $TORCH_HOME/checkpoints)
    shipped: bool = False  # mini files inside the package (hash from manifest.json)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"entry {self.name!r}: unknown kind {self.kind!r}; valid: {KINDS}")

    @property
    def env_var(self) -> str:
        return "FACESTYLE_CKPT_" + re.sub(r"[^A-Za-z0-9]", "_", self.name).upper()


_NO_HASH_NOTE = ("No reference sha256 is registered (the publisher does not list one and none was measured for "
                 "facestyle); on first use facestyle prints the computed hash and records it in the cache's "
                 "sha256.json instead of verifying.")
_TV_NOTE = ("torchvision names its files '<name>-<first 8 hex digits of the file's sha256>.pth'; facestyle checks "
            "that prefix (the full hash is not registered).")

_ENTRIES: dict[str, Entry] = {}


def _register(e: Entry) -> None:
    _ENTRIES[e.name] = e


# ---- ffhq profile: public files (docs/reference.md sections 1, 2, 5, 7) -------------------------------------------
_register(Entry(
    name="stylegan2-ffhq-config-f", kind="stylegan2", filename="stylegan2-ffhq-config-f.pt", url=None,
    sha256=None, size_bytes=None, profile="ffhq",
    licence="NVIDIA Source Code License-NC (StyleGAN2 FFHQ weights; non-commercial), converted by rosinality",
    where=("the 'Pretrained Checkpoints' link (Google Drive) in the README of github.com/rosinality/stylegan2-pytorch, "
           "or convert NVIDIA's stylegan2-ffhq-config-f.pkl yourself with that repository's convert_weight.py"),
    note="Holds {g_ema, latent_avg}: the 1024 px FFHQ generator (30.4 M parameters). " + _NO_HASH_NOTE))
_register(Entry(
    name="psp-ffhq-encode", kind="psp", filename="psp_ffhq_encode.pt", url=None, sha256=None, size_bytes=None,
    profile="ffhq", licence="pixel2style2pixel: MIT code; weights derived from FFHQ StyleGAN2 (NVIDIA licence-NC)",
    where="the 'Pretrained Models' table (FFHQ StyleGAN Inversion, Google Drive) in the README of "
          "github.com/eladrich/pixel2style2pixel",
    note="pSp W+ encoder with its 1024 px decoder: {state_dict, opts, latent_avg}. " + _NO_HASH_NOTE))
_register(Entry(
    name="facenet-vggface2", kind="identity", filename="20180402-114759-vggface2.pt",
    url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    sha256=None, size_bytes=None, profile="ffhq", torch_cache=True,
    licence="facenet-pytorch (MIT); weights trained on VGGFace2 (research use)",
    where="the facenet-pytorch v2.2.9 GitHub release (InceptionResnetV1(pretrained='vggface2') fetches the same file "
          "into $TORCH_HOME/checkpoints)",
    note="InceptionResnetV1 identity embedding. " + _NO_HASH_NOTE))
_register(Entry(
    name="lpips-vgg16", kind="lpips-backbone", filename="vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth", sha256=None, size_bytes=None,
    sha256_prefix="397923af", profile="ffhq", torch_cache=True, licence="torchvision model weights (BSD-3 code)",
    where="download.pytorch.org (torchvision VGG16 ImageNet weights; lpips fetches it into $TORCH_HOME/hub/checkpoints)",
    note="Backbone of LPIPS-VGG (training loss). " + _TV_NOTE))
_register(Entry(
    name="lpips-alexnet", kind="lpips-backbone", filename="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256=None, size_bytes=None,
    sha256_prefix="7be5be79", profile="ffhq", torch_cache=True, licence="torchvision model weights (BSD-3 code)",
    where="download.pytorch.org (torchvision AlexNet ImageNet weights; lpips fetches it into $TORCH_HOME/hub/checkpoints)",
    note="Backbone of LPIPS-Alex (evaluation). " + _TV_NOTE))
_register(Entry(
    name="fid-inception", kind="inception", filename="pt_inception-2015-12-05-6726825d.pth",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    sha256=None, size_bytes=None, profile="ffhq", torch_cache=True,
    licence="pytorch-fid (Apache-2.0), port of TensorFlow's 2015-12-05 Inception graph",
    where="the pytorch-fid 'fid_weights' GitHub release (pytorch-fid fetches it into $TORCH_HOME/hub/checkpoints)",
    note="FID Inception-v3 matching the TensorFlow reference. " + _NO_HASH_NOTE
         + " The '6726825d' in its name follows the torch-hub convention but is not checked."))
# Encoders / style generators for the ffhq profile are produced by facestyle's own training (no public file).
for _name, _kind, _file, _what in (
        ("psp-ffhq-encode-w", "encoder", "psp_ffhq_encode_w.pt", "the paper's W encoder (pSp variant)"),
        ("psp-ffhq-encode-zplus", "encoder", "psp_ffhq_encode_zplus.pt", "the paper's Z+ encoder (pSp variant)"),
        *[(f"ffhq-style-{s}", "stylegan2", f"ffhq_style_{s}.pt", f"the FFHQ generator finetuned to the {s} style")
          for s in STYLES]):
    _register(Entry(
        name=_name, kind=_kind, filename=_file, url=None, sha256=None, size_bytes=None, profile="ffhq",
        licence="yours (trained by you with facestyle from the FFHQ weights and your data)",
        where="your own facestyle training run for the ffhq profile (see the training notebooks / `facestyle` CLI)",
        note=f"{_what}; no public file exists, so there is nothing to verify against."))

# ---- mini profile: shipped in the package, hashes in manifest.json ------------------------------------------
_MINI = [("mini-stylegan2-64", "stylegan2", "64 px StyleGAN2 trained on the mini portrait world"),
         ("mini-encoder-w", "encoder", "mini W encoder"),
         ("mini-encoder-wplus", "encoder", "mini W+ encoder"),
         ("mini-encoder-zplus", "encoder", "mini Z+ encoder"),
         ("mini-identity", "identity", "mini identity embedding network"),
         ("mini-oracle", "oracle", "mini-world attribute oracle"),
         ("mini-lpips-alexnet", "lpips-backbone", "self-supervised AlexNet for the mini training LPIPS (experimental, "
                                                  "finetune --lpips mini-lpips-alexnet)"),
         *[(f"mini-style-{s}", "stylegan2", f"mini generator finetuned to the {s} style") for s in STYLES]]
for _name, _kind, _what in _MINI:
    _register(Entry(
        name=_name, kind=_kind, filename=f"{_name}.pt", url=None, sha256=None, size_bytes=None, profile="mini",
        shipped=True, licence="MIT (trained by facestyle on its synthetic world)",
        where=f"shipped in the package under {MINI_DIR} (rebuild with the command recorded in manifest.json)",
        note=f"{_what}; sha256 and the command that made it are read from manifest.json."))
del _name, _kind, _what


def _read_manifest() -> dict:
    """The mini manifest's ``files`` mapping ({} when it does not exist yet or is empty)."""
    try:
        text = MANIFEST_PATH.read_text()
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{MANIFEST_PATH} is not valid JSON ({exc}); restore it from git") from None
    files = data.get("files", {}) if isinstance(data, dict) else {}
    return files if isinstance(files, dict) else {}


def get_entry(name: str) -> Entry:
    """Registry entry by name (mini entries are completed from manifest.json); unknown names list close ones."""
    try:
        e = _ENTRIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_ENTRIES), n=3)
        hint = f" did you mean {', '.join(close)}?" if close else ""
        raise CheckpointNotFound(
            f"{name!r} is neither an existing file nor a registered checkpoint name;{hint} "
            f"known names: `facestyle hub list` (or pass a local file path)") from None
    if e.shipped:
        rec = _read_manifest().get(name)
        if isinstance(rec, dict):
            e = dataclasses.replace(e, filename=rec.get("file", e.filename), sha256=rec.get("sha256"),
                                    size_bytes=rec.get("bytes"))
    return e


def entries(profile: str | None = None) -> list[Entry]:
    return [get_entry(n) for n, e in _ENTRIES.items() if profile is None or e.profile == profile]


# --------------------------------------------------------------------------------------------------------------
# cache locations
# --------------------------------------------------------------------------------------------------------------

def home() -> Path:
    """facestyle's data home: ``$FACESTYLE_HOME``, else ``$XDG_CACHE_HOME/facestyle`` (default ``~/.cache``)."""
    env = os.environ.get("FACESTYLE_HOME")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "facestyle"


def cache_dir() -> Path:
    """Where fetched checkpoints live (``home()/checkpoints``)."""
    return home() / "checkpoints"


def _torch_home() -> Path:
    env = os.environ.get("TORCH_HOME")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "torch"


def _search_dirs(e: Entry) -> list[Path]:
    dirs = [cache_dir()]
    if e.torch_cache:
        th = _torch_home()
        dirs += [th / "hub" / "checkpoints", th / "checkpoints"]
    return dirs


def _offline() -> bool:
    return os.environ.get("FACESTYLE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------------------------
# hashing
# --------------------------------------------------------------------------------------------------------------

def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


_MEMO: dict[tuple, str] = {}


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _hash_db_load() -> dict:
    try:
        return json.loads((cache_dir() / _HASH_DB).read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return {}


def _hash_db_store(path: Path, digest: str) -> None:
    try:
        db = _hash_db_load()
        st = path.stat()
        db[str(path.resolve())] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        with atomic_write(cache_dir() / _HASH_DB, "w") as fh:
            json.dump(db, fh, indent=1, sort_keys=True)
    except OSError:  # a read-only cache must not break loading
        pass


def _cached_sha256(path: Path) -> str:
    """sha256 of ``path``, memoised per (path, size, mtime) in memory and in the cache's sha256.json."""
    key = _file_key(path)
    if key in _MEMO:
        return _MEMO[key]
    rec = _hash_db_load().get(key[0])
    if rec and rec.get("size") == key[1] and rec.get("mtime_ns") == key[2] and rec.get("sha256"):
        digest = rec["sha256"]
    else:
        digest = sha256_file(path)
        _hash_db_store(path, digest)
    _MEMO[key] = digest
    return digest


def _check_digest(e: Entry, digest: str, nbytes: int, source: str) -> str:
    """Compare a computed hash with the entry; returns a status word, raises ChecksumError on a mismatch."""
    if e.size_bytes is not None and nbytes != e.size_bytes:
        raise ChecksumError(
            f"{e.filename} from {source} has {nbytes} bytes, expected {e.size_bytes}: the file is truncated or not "
            f"the registered one; it was not used (delete it and fetch it again from {e.url or e.where})")
    if e.sha256:
        if digest.lower() != e.sha256.lower():
            raise ChecksumError(
                f"sha256 mismatch for {e.filename} from {source}: expected {e.sha256}, got {digest}; the file is "
                f"corrupt or not the registered one and was not used (fetch it again from {e.url or e.where})")
        return "verified"
    if e.sha256_prefix:
        if not digest.lower().startswith(e.sha256_prefix.lower()):
            raise ChecksumError(
                f"sha256 of {e.filename} from {source} is {digest}, which does not start with the '{e.sha256_prefix}' "
                f"embedded in its name: the file is corrupt; fetch it again from {e.url or e.where}")
        return "prefix-verified"
    return "unverified"


def _report_unverified(e: Entry, path: Path, digest: str) -> None:
    print(f"facestyle.hub: {e.filename} has no registered sha256; computed sha256 = {digest} "
          f"(recorded in {cache_dir() / _HASH_DB}; compare it with a trusted source)", file=sys.stderr)


# --------------------------------------------------------------------------------------------------------------
# resolve / download
# --------------------------------------------------------------------------------------------------------------

def _not_found_message(e: Entry, reason: str) -> str:
    dest = cache_dir() / e.filename
    source = e.url if e.url else e.where
    return (f"checkpoint '{e.name}' (file {e.filename}) is not available: {reason}. "
            f"Get it from {source} and put it at {dest} "
            f"(or point to it with --ckpt PATH or the environment variable {e.env_var}=PATH)")


def _fetch_url(url: str, fh, hasher, progress: bool = True) -> int:
    """Stream ``url`` into the open file ``fh``, updating ``hasher``; returns the byte count (tests replace it)."""
    from .utils import progress_bar as tqdm

    req = Request(url, headers={"User-Agent": "facestyle"})
    with urlopen(req, timeout=60) as resp:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        n = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                  desc=url.rsplit("/", 1)[-1]) as bar:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                fh.write(chunk)
                hasher.update(chunk)
                n += len(chunk)
                bar.update(len(chunk))
    return n


def _download(e: Entry, dest: Path, progress: bool = True) -> Path:
    """Download into a temp file beside ``dest``, verify, then rename; nothing is left behind on failure."""
    hasher = hashlib.sha256()
    with atomic_write(dest) as fh:
        n = _fetch_url(e.url, fh, hasher, progress)
        if n == 0:
            raise CheckpointError(f"download of {e.filename} from {e.url} returned no data; nothing was kept")
        digest = hasher.hexdigest()
        status = _check_digest(e, digest, n, e.url)  # raising here deletes the temp file
    _MEMO[_file_key(dest)] = digest
    _hash_db_store(dest, digest)
    if status == "unverified":
        _report_unverified(e, dest, digest)
    return dest


def _verify_local(e: Entry, path: Path) -> None:
    digest = _cached_sha256(path)
    status = _check_digest(e, digest, path.stat().st_size, str(path))
    if status == "unverified" and not e.shipped:
        key = ("reported", str(path))
        if key not in _MEMO:
            _MEMO[key] = digest
            _report_unverified(e, path, digest)


def install_path(name: str) -> Path:
    """Where a file that facestyle trains for registry ``name`` goes so that the hub finds it: shipped mini names
    in the package (``facestyle/checkpoints/mini/<name without mini->.pt``; the manifest then records it),
    everything else in the cache under the entry's file name."""
    e = get_entry(name)
    if e.shipped:
        return MINI_DIR / f"{e.name.removeprefix('mini-')}.pt"
    return cache_dir() / e.filename


def _mini_path(e: Entry) -> Path:
    rec = _read_manifest().get(e.name)
    if not isinstance(rec, dict):
        raise CheckpointNotFound(
            f"mini checkpoint '{e.name}' is not trained/shipped yet: {MANIFEST_PATH} has no entry for it "
            f"(build it with facestyle's mini training scripts, or pass a file with --ckpt PATH / {e.env_var}=PATH)")
    path = MINI_DIR / rec.get("file", e.filename)
    if not path.is_file():
        cmd = rec.get("command")
        raise CheckpointNotFound(
            f"mini checkpoint '{e.name}': manifest lists {path.name} but {path} is missing"
            + (f"; rebuild it with `{cmd}`" if cmd else "") + " (or restore it from git)")
    try:
        _verify_local(e, path)
    except ChecksumError as exc:
        cmd = rec.get("command")
        raise ChecksumError(f"{exc}" + (f"; rebuild it with `{cmd}`" if cmd else "")) from None
    return path


def resolve(name_or_path: str | os.PathLike, *, download: bool | None = None, progress: bool = True) -> Path:
    """Return a local file for a path or a registry name.

    Order: an existing local path; ``$FACESTYLE_CKPT_<NAME>``; shipped mini file; the facestyle cache (and torch's
    caches for torchvision / facenet files), sha256-checked; a download (only with a direct URL and when
    ``download`` is True, or None and ``$FACESTYLE_OFFLINE`` is unset). Otherwise :class:`CheckpointNotFound`.
    """
    p = Path(os.fspath(name_or_path)).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory, not a checkpoint file")
    name = os.fspath(name_or_path)
    if name not in _ENTRIES:
        if isinstance(name_or_path, os.PathLike) or os.sep in name or p.suffix in (".pt", ".pth", ".pkl", ".ckpt"):
            raise CheckpointNotFound(f"checkpoint file {p} does not exist")
        get_entry(name)  # raises with suggestions
    e = get_entry(name)

    env = os.environ.get(e.env_var)
    if env:
        ep = Path(env).expanduser()
        if not ep.is_file():
            raise CheckpointNotFound(f"{e.env_var}={env} does not point to an existing file (checkpoint '{e.name}')")
        return ep
    if e.shipped:
        return _mini_path(e)
    for d in _search_dirs(e):
        cand = d / e.filename
        if cand.is_file():
            _verify_local(e, cand)
            return cand
    allowed = (not _offline()) if download is None else bool(download)
    if not e.url:
        raise CheckpointNotFound(_not_found_message(e, "it has no direct download URL and is not in the cache"))
    if not allowed:
        raise CheckpointNotFound(_not_found_message(e, "it is not in the cache and downloading is off (offline)"))
    try:
        return _download(e, cache_dir() / e.filename, progress)
    except (URLError, OSError, TimeoutError) as exc:
        raise CheckpointNotFound(_not_found_message(e, f"it is not in the cache and the download failed ({exc})")) \
            from None


@dataclass
class VerifyResult:
    name: str
    path: Path
    sha256: str
    expected: str | None
    status: str  # "verified" | "prefix-verified" | "unverified"


def is_available(name_or_path: str | os.PathLike) -> bool:
    """Whether :func:`resolve` finds the file without downloading anything."""
    try:
        resolve(name_or_path, download=False)
        return True
    except CheckpointError:
        return False


def verify(name_or_path: str | os.PathLike, *, download: bool = False) -> VerifyResult:
    """Re-hash a checkpoint from scratch and compare it with the registry (raises ChecksumError on mismatch)."""
    path = resolve(name_or_path, download=download)
    digest = sha256_file(path)
    name = os.fspath(name_or_path)
    if name in _ENTRIES:
        e = get_entry(name)
        status = _check_digest(e, digest, path.stat().st_size, str(path))
        return VerifyResult(e.name, path, digest, e.sha256, status)
    return VerifyResult(name, path, digest, None, "unverified")


def list_entries(profile: str | None = None) -> list[dict]:
    """Rows for ``facestyle hub list``: name, kind, profile, status (shipped / cached / missing ...), size, path."""
    rows = []
    for e in entries(profile):
        path, status = None, "missing"
        if e.shipped:
            rec = _read_manifest().get(e.name)
            if not isinstance(rec, dict):
                status = "not trained yet"
            elif (MINI_DIR / rec.get("file", e.filename)).is_file():
                path, status = MINI_DIR / rec.get("file", e.filename), "shipped"
            else:
                status = "listed, file missing"
        else:
            env = os.environ.get(e.env_var)
            if env and Path(env).expanduser().is_file():
                path, status = Path(env).expanduser(), f"via {e.env_var}"
            else:
                for d in _search_dirs(e):
                    if (d / e.filename).is_file():
                        path, status = d / e.filename, "cached"
                        break
                else:
                    status = "missing (downloadable)" if e.url else "missing (fetch by hand)"
        size = path.stat().st_size if path is not None else e.size_bytes
        rows.append({"name": e.name, "kind": e.kind, "profile": e.profile, "status": status, "size_bytes": size,
                     "path": str(path) if path else None, "url": e.url, "filename": e.filename})
    return rows


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_entries(rows: list[dict] | None = None) -> str:
    """A plain-text table of :func:`list_entries` rows."""
    rows = list_entries() if rows is None else rows
    head = ("name", "kind", "profile", "status", "size")
    table = [head] + [(r["name"], r["kind"], r["profile"], r["status"], _human(r["size_bytes"])) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\ncache: {cache_dir()}"


# --------------------------------------------------------------------------------------------------------------
# safe loading
# --------------------------------------------------------------------------------------------------------------

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
                f"facestyle's allow-list (argparse.Namespace, numpy scalars and dtypes); it was NOT executed. If you trust the "
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
    return path, safe_load(path, map_location="cpu")


# --------------------------------------------------------------------------------------------------------------
# facestyle's own format
# --------------------------------------------------------------------------------------------------------------

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


def save_checkpoint(path: str | os.PathLike, *, kind: str, state_dict: Any, config: Any = None, meta: dict | None = None,
                    half: bool = False, **extra: Any) -> Path:
    """Write a facestyle checkpoint atomically (layout in the module docstring).

    ``state_dict`` may be a module; ``config`` a dataclass / Namespace / dict; ``extra`` holds further tensors
    or state dicts (``latent_avg=...``, ``d=discriminator``). ``half=True`` stores floating tensors as float16.
    """
    from . import __version__

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


def _is_facestyle(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"].startswith("facestyle/")


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


# --------------------------------------------------------------------------------------------------------------
# recognising what a file is
# --------------------------------------------------------------------------------------------------------------

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


def _check_state_dict(model: nn.Module, sd: dict, path: Path, what: str, tolerate_missing: str | None = None) -> dict:
    """Every key and shape of ``sd`` must match ``model``; returns the dict to load (float32)."""
    ref = model.state_dict()
    missing = [k for k in ref if k not in sd and not (tolerate_missing and k.startswith(tolerate_missing))]
    unexpected = [k for k in sd if k not in ref]
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(ref[k].shape)}" for k in ref
           if k in sd and isinstance(sd[k], torch.Tensor) and tuple(sd[k].shape) != tuple(ref[k].shape)]
    if missing or unexpected or bad:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad)):
            if items:
                parts.append(f"{len(items)} {label} ({', '.join(items[:4])}{', ...' if len(items) > 4 else ''})")
        raise CheckpointError(f"{path} does not match a {what}: {'; '.join(parts)}")
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and ref[k].is_floating_point():
            v = v.to(ref[k].dtype)
        out[k] = v
    return out


def _finish(model: nn.Module, device: torch.device, requires_grad: bool) -> nn.Module:
    model = model.to(device).eval()
    for prm in model.parameters():
        prm.requires_grad_(requires_grad)
    return model


def _get(args: Any, name: str, default=None):
    if args is None:
        return default
    if isinstance(args, dict):
        return args.get(name, default)
    return getattr(args, name, default)


# --------------------------------------------------------------------------------------------------------------
# StyleGAN2 generator / discriminator
# --------------------------------------------------------------------------------------------------------------

def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's channel table (docs/reference.md section 1)."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
            1024: 16 * cm}


def _match_cm(channels: dict[int, int]) -> int | None:
    for cm in (2, 1, 4, 3):
        table = default_channels(cm)
        if all(table.get(r) == c for r, c in channels.items()):
            return cm
    return None


def _kernel_1d(k2d: torch.Tensor) -> tuple:
    """Recover the 1-D FIR taps (up to scale) from a stored separable 2-D kernel buffer."""
    k = k2d.detach().float().sum(dim=1)
    k = k / k.min().clamp_min(1e-12)
    k = [round(float(v), 6) for v in k]
    return tuple(int(v) if float(v).is_integer() else v for v in k)


def infer_generator_config(sd: dict, args: Any = None, hints: dict | None = None) -> GeneratorConfig:
    """Size, style_dim, n_mlp, channel table and blur kernel of a rosinality generator state dict.

    Shapes decide; ``args`` / ``hints`` only supply what shapes cannot show (``lr_mlp``). Raises CheckpointError
    (with a description of the file) when ``sd`` is not a StyleGAN2 generator.
    """
    hints = hints or {}
    style_ids = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", str(k))))
    n_rgb = sum(1 for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", str(k)))
    if not style_ids or "input.input" not in sd or "conv1.conv.weight" not in sd:
        raise CheckpointError(f"not a StyleGAN2 generator: {_describe(sd)}")
    style_dim = int(sd[f"style.{style_ids[0]}.weight"].shape[1])
    log_size = n_rgb + 2
    size = 2 ** log_size
    channels = {4: int(sd["input.input"].shape[1])}
    for k in range(n_rgb):
        w = sd.get(f"convs.{2 * k}.conv.weight")
        if w is None:
            raise CheckpointError(f"not a complete StyleGAN2 generator: convs.{2 * k}.conv.weight is missing")
        channels[2 ** (k + 3)] = int(w.shape[1])
    cm = _match_cm(channels)
    blur = (1, 3, 3, 1)
    kbuf = sd.get("convs.0.conv.blur.kernel")
    if kbuf is not None and kbuf.ndim == 2:
        blur = _kernel_1d(kbuf)
        if list(blur) == [1, 3, 3, 1]:
            blur = (1, 3, 3, 1)
    lr_mlp = float(hints.get("lr_mlp", _get(args, "lr_mlp", 0.01)) or 0.01)
    cfg = GeneratorConfig(size=size, style_dim=style_dim, n_mlp=len(style_ids),
                          channel_multiplier=cm if cm is not None else int(hints.get("channel_multiplier", 2) or 2),
                          lr_mlp=lr_mlp, channels=None if cm is not None else channels)
    if blur != (1, 3, 3, 1):
        object.__setattr__(cfg, "_blur_kernel", blur)  # rare; carried beside the frozen config
    return cfg


def _blur_of(cfg) -> tuple:
    return getattr(cfg, "_blur_kernel", (1, 3, 3, 1))


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """A freshly initialised Generator for ``cfg`` (the global RNG stream is left untouched)."""
    from .nn.stylegan2 import Generator

    with torch.random.fork_rng(devices=[]):
        return Generator(cfg.size, style_dim=cfg.style_dim, n_mlp=cfg.n_mlp,
                         channel_multiplier=cfg.channel_multiplier, blur_kernel=_blur_of(cfg), lr_mlp=cfg.lr_mlp,
                         channels=dict(cfg.channels) if cfg.channels else None)


def infer_discriminator_config(sd: dict) -> dict:
    """Size, channel multiplier / table and blur kernel of a rosinality discriminator state dict."""
    if not _looks_like_d(sd):
        raise CheckpointError(f"not a StyleGAN2 discriminator: {_describe(sd)}")
    n_res = sum(1 for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", str(k)))
    log_size = n_res + 2
    size = 2 ** log_size
    channels = {size: int(sd["convs.0.0.weight"].shape[0])}
    for j in range(1, n_res + 1):
        w = sd.get(f"convs.{j}.conv2.1.weight")
        if w is None:
            raise CheckpointError(f"not a complete StyleGAN2 discriminator: convs.{j}.conv2.1.weight is missing")
        channels[2 ** (log_size - j)] = int(w.shape[0])
    cm = _match_cm(channels)
    blur = (1, 3, 3, 1)
    kbuf = sd.get("convs.1.conv2.0.kernel")
    if kbuf is not None and kbuf.ndim == 2:
        blur = _kernel_1d(kbuf)
        if list(blur) == [1, 3, 3, 1]:
            blur = (1, 3, 3, 1)
    return {"size": size, "channel_multiplier": cm if cm is not None else 2,
            "channels": None if cm is not None else channels, "blur_kernel": blur}


def build_discriminator(dcfg: dict) -> nn.Module:
    from .nn.stylegan2 import Discriminator

    with torch.random.fork_rng(devices=[]):
        return Discriminator(dcfg["size"], channel_multiplier=dcfg.get("channel_multiplier", 2),
                             blur_kernel=tuple(dcfg.get("blur_kernel", (1, 3, 3, 1))),
                             channels=dict(dcfg["channels"]) if dcfg.get("channels") else None)


@dataclass
class LoadedGenerator:
    """A ready generator and what came with it.

    ``latent_avg`` is the file's (``latent_avg_source == "file"``) or, for files without one (the FFHQ-256
    ``550000.pt`` style), the mean of 4096 mapped z computed at load time (``latent_avg_source`` says so).
    ``g`` / ``d`` / ``extras`` (optimiser states, ``ada_aug_p``) are filled only with ``training=True``.
    """

    g_ema: nn.Module
    latent_avg: torch.Tensor
    d: nn.Module | None = None
    g: nn.Module | None = None
    args: Any = None
    path: Path | None = None
    config: GeneratorConfig | None = None
    latent_avg_source: str = "file"
    format: str = ""
    meta: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)


def _unwrap_generator(obj: Any, path: Path) -> dict:
    """Find the generator parts in any supported layout."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a pickled {type(obj).__name__}, not a StyleGAN2 generator checkpoint")
    if _is_facestyle(obj):
        ck = _check_facestyle(obj, path)
        if ck["kind"] not in ("stylegan2", "stylegan2-train", "generator"):
            raise CheckpointError(f"{path} is a facestyle '{ck['kind']}' checkpoint, not a StyleGAN2 generator")
        ex = ck["extra"]
        return {"g_ema": ck["state_dict"], "latent_avg": ex.get("latent_avg"), "g": ex.get("g"), "d": ex.get("d"),
                "args": None, "hints": ck["config"], "meta": ck["meta"], "format": FORMAT_TAG,
                "extras": {k: v for k, v in ex.items() if k not in ("latent_avg", "g", "d")},
                "d_config": ck["config"].get("discriminator") if isinstance(ck["config"], dict) else None}
    if "g_ema" in obj:
        training = any(k in obj for k in ("g_optim", "d_optim", "args"))
        fmt = ("rosinality-train" if training else
               "rosinality-converted" if obj.get("latent_avg") is not None else "rosinality (g_ema only)")
        extras = {k: obj[k] for k in ("g_optim", "d_optim", "ada_aug_p") if k in obj}
        return {"g_ema": obj["g_ema"], "latent_avg": obj.get("latent_avg"), "g": obj.get("g"), "d": obj.get("d"),
                "args": obj.get("args"), "hints": {}, "meta": {}, "format": fmt, "extras": extras}
    if "style.1.weight" in obj and "input.input" in obj:
        return {"g_ema": obj, "latent_avg": None, "g": None, "d": None, "args": None, "hints": {}, "meta": {},
                "format": "bare generator state dict", "extras": {}}
    if "g" in obj and isinstance(obj["g"], dict) and "style.1.weight" in obj["g"]:
        return {"g_ema": obj["g"], "latent_avg": obj.get("latent_avg"), "g": None, "d": obj.get("d"),
                "args": obj.get("args"), "hints": {}, "meta": {}, "format": "rosinality (g only, no g_ema)",
                "extras": {}}
    raise CheckpointError(f"{path} is not a StyleGAN2 generator checkpoint: {_describe(obj)}")


def _mean_latent(g: nn.Module, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Mean of ``n`` mapped z (fixed seed, global RNG untouched), shape ``[style_dim]`` like ``latent_avg``."""
    first = next(g.parameters())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(n, g.style_dim, generator=gen).to(first.device)
        return g.style(z).mean(0)


def _build_loaded_generator(sd: dict, path: Path, cfg: GeneratorConfig, what: str = "StyleGAN2 generator") -> nn.Module:
    g = build_generator(cfg)
    g.load_state_dict(_check_state_dict(g, sd, path, f"{what} (size {cfg.size}, style_dim {cfg.style_dim}, "
                                                      f"n_mlp {cfg.n_mlp})", tolerate_missing="noises."),
                      strict=False)
    return g


def load_generator(name_or_path: str | os.PathLike, device: Any = "auto", *, expected_size: int | None = None,
                   training: bool = False, requires_grad: bool = False, download: bool | None = None
                   ) -> LoadedGenerator:
    """Load a StyleGAN2 generator from any supported file into a ready module (eval mode, frozen by default).

    Accepts: the converted official file ``{g_ema, latent_avg}`` (+ ``g``, ``d``); ``{g_ema}`` without
    ``latent_avg`` (mean latent computed); a rosinality training file ``{g, d, g_ema, g_optim, d_optim, args,
    ada_aug_p}``; a bare generator state dict; facestyle's own ``stylegan2`` checkpoints. ``training=True`` also
    builds ``g`` and ``d`` (when present) and keeps optimiser states in ``extras``.
    """
    dev = get_device(device)
    path, obj = _load(name_or_path, download)
    parts = _unwrap_generator(obj, path)
    sd = parts["g_ema"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'g_ema' holds a {type(sd).__name__}, not a state dict")
    try:
        cfg = infer_generator_config(sd, parts["args"], parts["hints"] if isinstance(parts["hints"], dict) else {})
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if expected_size is not None and cfg.size != int(expected_size):
        raise CheckpointError(f"{path} holds a {cfg.size} px generator, but {expected_size} px is expected here "
                              f"(wrong checkpoint for this profile?)")
    g_ema = _finish(_build_loaded_generator(sd, path, cfg), dev, requires_grad)
    latent_avg, source = parts["latent_avg"], "file"
    if latent_avg is None:
        latent_avg = _mean_latent(g_ema)
        source = "computed: mean of 4096 mapped z (seed 0) because the file has no latent_avg"
    latent_avg = latent_avg.detach().float().to(dev)
    out = LoadedGenerator(g_ema=g_ema, latent_avg=latent_avg, args=parts["args"], path=path, config=cfg,
                          latent_avg_source=source, format=parts["format"], meta=dict(parts["meta"] or {}))
    if training:
        if parts["g"] is not None:
            out.g = _finish(_build_loaded_generator(parts["g"], path, cfg, "StyleGAN2 generator (g)"), dev,
                            requires_grad)
        if parts["d"] is not None:
            out.d = _finish(_build_d(parts["d"], path), dev, requires_grad)
        out.extras = dict(parts["extras"])
    return out


def _build_d(sd: dict, path: Path) -> nn.Module:
    try:
        dcfg = infer_discriminator_config(sd)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    d = build_discriminator(dcfg)
    d.load_state_dict(_check_state_dict(d, sd, path, f"StyleGAN2 discriminator (size {dcfg['size']})"))
    return d


def load_discriminator(name_or_path: str | os.PathLike, device: Any = "auto", *, expected_size: int | None = None,
                       requires_grad: bool = False, download: bool | None = None) -> nn.Module:
    """A StyleGAN2 discriminator from a rosinality training / converted file (``d``), facestyle's own
    ``discriminator`` checkpoint, a facestyle generator file with ``extra['d']``, or a bare state dict."""
    dev = get_device(device)
    path, obj = _load(name_or_path, download)
    sd = None
    if _is_facestyle(obj):
        ck = _check_facestyle(obj, path)
        sd = ck["state_dict"] if ck["kind"] == "discriminator" else ck["extra"].get("d")
    elif isinstance(obj, dict):
        sd = obj.get("d") if isinstance(obj.get("d"), dict) else (obj if _looks_like_d(obj) else None)
    if sd is None:
        raise CheckpointError(f"{path} holds no StyleGAN2 discriminator: it is {_describe(obj)} "
                              f"(discriminators come with rosinality training files or converted files made with --disc)")
    d = _build_d(sd, path)
    size = infer_discriminator_config(sd)["size"]
    if expected_size is not None and size != int(expected_size):
        raise CheckpointError(f"{path} holds a {size} px discriminator, but {expected_size} px is expected here")
    return _finish(d, dev, requires_grad)


# --------------------------------------------------------------------------------------------------------------
# pSp encoders
# --------------------------------------------------------------------------------------------------------------

_PSP_TYPES = {"GradualStyleEncoder": "wplus", "BackboneEncoderUsingLastLayerIntoW": "w"}
_IR_UNITS = {50: 24, 100: 49, 152: 50}  # bottleneck units of IR-50/100/152 (blocks 3+4+14+3, 3+13+30+3, 3+8+36+3)


def _infer_backbone(esd: dict, opts: dict) -> dict:
    """num_layers / mode / blocks of an IR(-SE) body from its shapes (pSp opts do not store them)."""
    unit_ids = sorted({int(m.group(1)) for k in esd if (m := re.match(r"body\.(\d+)\.res_layer\.", str(k)))})
    if not unit_ids or "input_layer.0.weight" not in esd:
        raise CheckpointError(f"no IR(-SE) backbone found in the encoder weights: {_describe(esd)}")
    mode = "ir_se" if any(re.match(r"body\.\d+\.res_layer\.\d+\.fc1\.", str(k)) for k in esd) else "ir"
    units = []
    for u in unit_ids:
        convs = sorted((k for k in esd if re.fullmatch(rf"body\.{u}\.res_layer\.\d+\.weight", str(k))
                        and esd[k].ndim == 4), key=lambda s: int(s.split(".")[3]))
        w = esd[convs[0]]
        units.append((int(w.shape[1]), int(w.shape[0])))
    n = len(units)
    std = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
    for layers, counts in std.items():
        depths = [64, 128, 256, 512]
        expect = []
        in_c = 64
        for d, c in zip(depths, counts):
            expect += [(in_c, d)] + [(d, d)] * (c - 1)
            in_c = d
        if units == expect:
            return {"num_layers": layers, "mode": mode, "blocks": None}
    # custom backbone: a block starts at unit 0 and wherever the width changes
    blocks, start = [], 0
    for i in range(1, n + 1):
        if i == n or units[i][0] != units[i][1]:
            blocks.append((units[start][0], units[start][1], i - start))
            start = i
    return {"num_layers": int(opts.get("num_layers", 0) or 0), "mode": mode, "blocks": tuple(blocks)}


def load_psp(name_or_path: str | os.PathLike, device: Any = "auto", *, expected_size: int | None = None,
             requires_grad: bool = False, download: bool | None = None):
    """A ready pSp model (encoder + decoder + latent_avg) from ``{state_dict, opts, latent_avg}``.

    Encoder type comes from ``opts['encoder_type']`` (GradualStyleEncoder -> W+, BackboneEncoderUsingLastLayerIntoW
    -> W); n_styles, backbone depth / custom blocks and the decoder size come from the weights' shapes (opts values,
    when present, are used for what shapes cannot tell). facestyle's own ``encoder`` / ``psp`` checkpoints, whose
    config carries the encoder kind and sizes, load here too.
    """
    from .nn.encoders import PSP, build_encoder

    dev = get_device(device)
    path, obj = _load(name_or_path, download)
    if _is_facestyle(obj):
        ck = _check_facestyle(obj, path, ("psp", "encoder"))
        sd, cfg = ck["state_dict"], dict(ck["config"] or {})
        opts = {**cfg, **(cfg.get("opts") or {})}
        latent_avg = ck["extra"].get("latent_avg", sd.get("latent_avg"))
        kind = cfg.get("encoder_kind") or cfg.get("kind") or _PSP_TYPES.get(cfg.get("encoder_type"), None)
    elif isinstance(obj, dict) and "state_dict" in obj:
        sd, opts = obj["state_dict"], obj.get("opts") or {}
        if isinstance(opts, argparse.Namespace):
            opts = vars(opts)
        latent_avg = obj.get("latent_avg")
        etype = opts.get("encoder_type", "GradualStyleEncoder")
        kind = opts.get("encoder_kind") or _PSP_TYPES.get(etype)
        if kind is None:
            raise CheckpointError(f"{path}: pSp encoder_type {etype!r} is not supported; facestyle reads "
                                  f"{', '.join(_PSP_TYPES)}")
    else:
        raise CheckpointError(f"{path} is not a pSp checkpoint: it is {_describe(obj)}")
    if not isinstance(sd, dict) or not any(str(k).startswith("encoder.") for k in sd):
        raise CheckpointError(f"{path} has no encoder.* weights: it is {_describe(sd if isinstance(sd, dict) else obj)}")
    esd = {k[len("encoder."):]: v for k, v in sd.items() if str(k).startswith("encoder.")}
    dsd = {k[len("decoder."):]: v for k, v in sd.items() if str(k).startswith("decoder.")}
    decoder, gcfg = None, None
    if not dsd:
        ref = opts.get("decoder_ckpt")
        if not ref:
            raise CheckpointError(f"{path} has encoder weights but no decoder.* weights (and no 'decoder_ckpt' in its "
                                  f"config); pass a full pSp checkpoint")
        loaded = load_generator(ref, device="cpu", download=download)
        decoder, gcfg = loaded.g_ema, loaded.config
        if latent_avg is None:
            latent_avg = loaded.latent_avg
    else:
        try:
            gcfg = infer_generator_config(dsd, None, opts.get("generator") if isinstance(opts.get("generator"), dict)
                                          else {})
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: decoder: {exc}") from None
    if opts.get("output_size") and int(opts["output_size"]) != gcfg.size:
        raise CheckpointError(f"{path}: opts say output_size {opts['output_size']} but the decoder weights are "
                              f"{gcfg.size} px")
    if expected_size is not None and gcfg.size != int(expected_size):
        raise CheckpointError(f"{path} holds a pSp model for {gcfg.size} px, but {expected_size} px is expected here")
    n_latent = int(math.log2(gcfg.size)) * 2 - 2
    style_ids = {int(m.group(1)) for k in esd if (m := re.match(r"styles\.(\d+)\.", str(k)))}
    n_styles = int(opts.get("n_styles") or (len(style_ids) if style_ids else n_latent))
    ecfg_d = opts.get("encoder") if isinstance(opts.get("encoder"), dict) else {}
    bb = {}
    if not ecfg_d.get("blocks") and not ecfg_d.get("num_layers"):
        bb = _infer_backbone(esd, opts)
    blocks = _tupled(ecfg_d.get("blocks", bb.get("blocks")))
    input_size = ecfg_d.get("input_size") or opts.get("input_size")
    if not input_size:
        # heads of the coarse rows halve c3 down to 1x1: c3 is 2**n_down, and every backbone block halves the input
        n_down = sum(1 for k in esd if re.fullmatch(r"styles\.0\.convs\.\d+\.weight", str(k)))
        n_blocks = len(blocks) if blocks else 4
        input_size = 2 ** n_down * 2 ** n_blocks if n_down else 256
    ecfg = EncoderConfig(input_size=int(input_size),
                         num_layers=int(ecfg_d.get("num_layers", bb.get("num_layers", 50)) or 0),
                         mode=str(ecfg_d.get("mode") or bb.get("mode") or "ir_se"), blocks=blocks)
    try:
        with torch.random.fork_rng(devices=[]):
            encoder = build_encoder(kind, ecfg, n_styles, gcfg.style_dim)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot build a {kind!r} encoder from it ({exc})") from None
    encoder.load_state_dict(_check_state_dict(encoder, esd, path, f"pSp {kind} encoder ({n_styles} styles)"))
    if decoder is None:
        decoder = _build_loaded_generator(dsd, path, gcfg, "pSp decoder")
    if latent_avg is None:
        latent_avg = _mean_latent(decoder)
    start = bool(opts.get("start_from_latent_avg", True))
    model = PSP(encoder, decoder, latent_avg.detach().float(), start_from_latent_avg=start)
    model = _finish(model, dev, requires_grad)
    model.opts = dict(opts)
    model.encoder_config = ecfg
    model.generator_config = gcfg
    model.checkpoint_path = path
    return model


# --------------------------------------------------------------------------------------------------------------
# writing facestyle checkpoints of the models above
# --------------------------------------------------------------------------------------------------------------

def generator_config_of(g: nn.Module) -> GeneratorConfig:
    """The GeneratorConfig that rebuilds ``g`` (read from its weights)."""
    cfg = infer_generator_config(g.state_dict())
    lr = getattr(g.style[1], "lr_mul", None) if len(g.style) > 1 else None
    return dataclasses.replace(cfg, lr_mlp=float(lr)) if lr is not None else cfg


def save_generator_checkpoint(path: str | os.PathLike, g_ema: nn.Module, *, latent_avg: torch.Tensor | None = None,
                              d: nn.Module | None = None, meta: dict | None = None, half: bool = False,
                              kind: str = "stylegan2", **extra) -> Path:
    """facestyle ``stylegan2`` checkpoint of a generator (+ latent_avg, + discriminator as ``extra['d']``)."""
    if latent_avg is not None:
        extra["latent_avg"] = latent_avg.reshape(-1) if latent_avg.dim() == 2 and latent_avg.shape[0] == 1 \
            else latent_avg
    if d is not None:
        extra["d"] = d
    return save_checkpoint(path, kind=kind, state_dict=g_ema, config=generator_config_of(g_ema), meta=meta, half=half,
                           **extra)


def save_psp_checkpoint(path: str | os.PathLike, model: nn.Module, *, kind: str, encoder_config: EncoderConfig,
                        meta: dict | None = None, half: bool = False, decoder_ckpt: str | None = None) -> Path:
    """facestyle ``encoder`` checkpoint of a PSP model; with ``decoder_ckpt`` (a hub name or path) the decoder
    weights are not duplicated and :func:`load_psp` loads that generator instead."""
    sd = model.state_dict()
    if decoder_ckpt:
        sd = {k: v for k, v in sd.items() if k.startswith("encoder.")}
    config = {"encoder_kind": kind, "n_styles": int(getattr(model.encoder, "n_styles", 0) or model.n_styles),
              "encoder": _plain(encoder_config), "generator": _plain(generator_config_of(model.decoder)),
              "start_from_latent_avg": bool(model.start_from_latent_avg), "input_size": int(model.input_size),
              "decoder_ckpt": decoder_ckpt}
    extra = {} if model.latent_avg is None else {"latent_avg": model.latent_avg}
    return save_checkpoint(path, kind="encoder", state_dict=sd, config=config, meta=meta, half=half, **extra)


def _tupled(x):
    if x is None:
        return None
    return tuple(tuple(int(v) for v in b) for b in x)


# --------------------------------------------------------------------------------------------------------------
# the mini world's judges (facestyle's own checkpoints)
# --------------------------------------------------------------------------------------------------------------

def load_oracle(name_or_path: str | os.PathLike = "mini-oracle", device: Any = "auto") -> nn.Module:
    """The mini world's evaluation oracle (factor + domain predictor); never used as a training loss."""
    from .nn.judges import Oracle

    ck = load_facestyle_checkpoint(name_or_path, kind="oracle")
    cfg = ck["config"]
    model = Oracle([tuple(k) for k in cfg["factor_kinds"]], n_domains=cfg["n_domains"], input_size=cfg["size"])
    model.load_state_dict(_check_state_dict(model, ck["state_dict"], ck["path"], "mini oracle"))
    return _finish(model, get_device(device), False)


def load_identity(name_or_path: str | os.PathLike = "mini-identity", device: Any = "auto") -> nn.Module:
    """The mini profile's identity network (unit-norm embedding; the role facenet plays in ffhq)."""
    from .nn.judges import IdentityNet

    ck = load_facestyle_checkpoint(name_or_path, kind="identity")
    model = IdentityNet(input_size=ck["config"]["size"])
    model.load_state_dict(_check_state_dict(model, ck["state_dict"], ck["path"], "mini identity network"))
    return _finish(model, get_device(device), False)
