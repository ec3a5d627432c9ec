"""What the hub raises: one :class:`CheckpointError` family, so a caller catches one type and shows one message
that names the file and what to do."""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, fetched, verified or loaded; the message says which file and what to do."""


class CheckpointNotFound(CheckpointError):
    """The file is neither local, cached, shipped nor downloadable right now."""


class ChecksumError(CheckpointError):
    """A file's sha256 differs from the registered one (nothing is kept under the final name)."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle asks for code outside the allow-list; it was refused without being executed."""
