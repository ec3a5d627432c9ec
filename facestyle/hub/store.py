"""Where checkpoint files are and whether they are the right ones: cache locations, sha256 checks (remembered
in a hash DB), resolving a name or path to a local file, downloading, and the listing behind ``facestyle hub list``.

A local path always wins over a name, so every command takes ``--ckpt PATH``; a registry entry can also be
pointed at a file with the environment variable ``FACESTYLE_CKPT_<NAME>`` (upper case, ``-`` -> ``_``). Otherwise
facestyle looks in its cache (``$FACESTYLE_HOME/checkpoints``, default ``~/.cache/facestyle/checkpoints``) and, for
torchvision / facenet files, in torch's own cache; it downloads only where a direct URL is known and downloading
is allowed.

``urlopen`` and ``_fetch_url`` are looked up in this module at call time: tests replace them here to keep the
network out.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import Request, urlopen

from ..utils import atomic_write
from . import registry
from .errors import CheckpointError, CheckpointNotFound, ChecksumError
from .registry import _ENTRIES, Entry, _read_manifest, entries, get_entry

_HASH_DB = "sha256.json"  # inside cache_dir(): {abs path: {size, mtime_ns, sha256}} to avoid re-hashing
# Inside cache_dir(): {entry name: {sha256, bytes, recorded, path}}. An entry with no published hash is pinned
# to the file it first loaded successfully with (trust on first use): a later, different file under that name
# is then refused as changed, instead of being used unverified again.
_PINS = "pins.json"
_CHUNK = 1 << 20


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


def _pinnable(e: Entry) -> bool:
    return not (e.shipped or e.sha256 or e.sha256_prefix)


def pins() -> dict:
    """The hashes recorded on first use (``cache_dir()/pins.json``), by entry name."""
    try:
        data = json.loads((cache_dir() / _PINS).read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return {}


def _write_pins(data: dict) -> None:
    try:
        with atomic_write(cache_dir() / _PINS, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
    except OSError:  # a read-only cache must not break loading; the file is simply not pinned
        pass


def _check_pin(e: Entry, path: Path, digest: str) -> None:
    rec = pins().get(e.name)
    if rec and rec.get("sha256") != digest:
        raise ChecksumError(
            f"{path} is not the file '{e.name}' was first used with on {rec.get('recorded', '?')} (sha256 "
            f"{rec.get('sha256')}, now {digest}): it changed or was replaced, so it was not used. If the new file "
            f"is the one you mean, run `facestyle hub forget {e.name}` and load it again")


def record_first_use(name_or_path: str | os.PathLike, path: Path) -> None:
    """Pin a registry entry without a published hash to ``path``'s sha256, once, after a successful load."""
    name = os.fspath(name_or_path)
    if name not in _ENTRIES:
        return
    e = get_entry(name)
    data = pins()
    if not _pinnable(e) or name in data:
        return
    import datetime

    digest = _cached_sha256(path)
    data[name] = {"sha256": digest, "bytes": path.stat().st_size, "path": str(path),
                  "recorded": datetime.date.today().isoformat()}
    _write_pins(data)
    print(f"facestyle.hub: '{name}' pinned to sha256 {digest} on its first load ({cache_dir() / _PINS}); a "
          f"different file under this name will be refused", file=sys.stderr)


def forget(name: str) -> bool:
    """Drop the first-use pin of ``name`` (the next successful load pins the file then in place)."""
    get_entry(name)
    data = pins()
    if data.pop(name, None) is None:
        return False
    _write_pins(data)
    return True


def _report_unverified(e: Entry, path: Path, digest: str) -> None:
    if e.name in pins():  # it matched its pin (a mismatch raised before this): nothing new to say
        return
    print(f"facestyle.hub: {e.filename} has no registered sha256; computed sha256 = {digest} "
          f"(compare it with a trusted source; the first successful load pins it)", file=sys.stderr)


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
    from ..utils import progress_bar as tqdm

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
        _check_pin(e, dest, digest)
        _report_unverified(e, dest, digest)
    return dest


def _verify_local(e: Entry, path: Path) -> None:
    digest = _cached_sha256(path)
    status = _check_digest(e, digest, path.stat().st_size, str(path))
    if status == "unverified" and not e.shipped:
        _check_pin(e, path, digest)
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
        return registry.MINI_DIR / f"{e.name.removeprefix('mini-')}.pt"
    return cache_dir() / e.filename


def _mini_path(e: Entry) -> Path:
    rec = _read_manifest().get(e.name)
    if not isinstance(rec, dict):
        raise CheckpointNotFound(
            f"mini checkpoint '{e.name}' is not trained/shipped yet: {registry.MANIFEST_PATH} has no entry for it "
            f"(build it with facestyle's mini training scripts, or pass a file with --ckpt PATH / {e.env_var}=PATH)")
    path = registry.MINI_DIR / rec.get("file", e.filename)
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
        if _pinnable(e) and e.name in pins():
            _check_pin(e, ep, _cached_sha256(ep))
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
    status: str  # "verified" | "prefix-verified" | "matches first use" | "unverified"


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
        pin = pins().get(e.name) if _pinnable(e) else None
        if pin:
            _check_pin(e, path, digest)
            return VerifyResult(e.name, path, digest, pin["sha256"], "matches first use")
        return VerifyResult(e.name, path, digest, e.sha256, status)
    return VerifyResult(name, path, digest, None, "unverified")


def list_entries(profile: str | None = None) -> list[dict]:
    """Rows for ``facestyle hub list``: name, kind, profile, status (shipped / cached / missing ...), size, path."""
    rows = []
    recorded = pins()
    for e in entries(profile):
        path, status = None, "missing"
        if e.shipped:
            rec = _read_manifest().get(e.name)
            if not isinstance(rec, dict):
                status = "not trained yet"
            elif (registry.MINI_DIR / rec.get("file", e.filename)).is_file():
                path, status = registry.MINI_DIR / rec.get("file", e.filename), "shipped"
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
                     "path": str(path) if path else None, "url": e.url, "filename": e.filename,
                     "integrity": integrity(e, recorded)})
    return rows


def integrity(e: Entry, recorded: dict | None = None) -> str:
    """How a file under this name is checked: a published sha256, the hash prefix in its name, the package's
    manifest, a hash pinned on first use (with its date), or nothing yet."""
    if e.shipped:  # get_entry fills the sha256 of shipped files in from the manifest
        return "pinned (manifest)"
    if e.sha256:
        return "pinned (published sha256)"
    if e.sha256_prefix:
        return f"name prefix {e.sha256_prefix}"
    rec = (pins() if recorded is None else recorded).get(e.name)
    return f"recorded on first use {rec.get('recorded', '')}".rstrip() if rec else "not pinned (first use pins)"


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
    head = ("name", "kind", "profile", "status", "size", "integrity")
    table = [head] + [(r["name"], r["kind"], r["profile"], r["status"], _human(r["size_bytes"]),
                       r.get("integrity", "")) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\ncache: {cache_dir()}"
