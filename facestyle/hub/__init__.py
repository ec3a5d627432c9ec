"""Checkpoint hub: a registry of named checkpoints, a local cache, safe loading and ready-made loaders.

Both profiles go through the same functions (docs/design.md section 2); a local path always wins over a name, so
every command takes ``--ckpt PATH``. Callers use this package's names (``from facestyle import hub;
hub.load_generator(...)``); each part lives in its own module:

* :mod:`~facestyle.hub.errors` -- :class:`CheckpointError` and its kinds; every failure is one message naming
  the file and what to do.
* :mod:`~facestyle.hub.registry` -- the named entries: ``ffhq`` public files (where to get them, licence) and
  ``mini`` files shipped under ``facestyle/checkpoints/mini/``, completed from its ``manifest.json``.
* :mod:`~facestyle.hub.store` -- cache locations, sha256 checks, :func:`resolve` (name or path -> local file,
  downloading where allowed), hashes pinned on first use for files nobody publishes a hash of (:func:`pins`,
  :func:`forget`), ``facestyle hub list``.
* :mod:`~facestyle.hub.safe` -- :func:`safe_load`, which never runs pickled code, and the description of what a
  file holds when it is the wrong one.
* :mod:`~facestyle.hub.checkpoint` -- facestyle's own checkpoint format (:func:`save_checkpoint`,
  :func:`load_facestyle_checkpoint`).
* :mod:`~facestyle.hub.legacy` -- StyleGAN2 generators / discriminators from rosinality's layouts, with the
  config inferred from the weights; the writers of those models' facestyle checkpoints; the mini judges.
* :mod:`~facestyle.hub.psp` -- pSp encoders (:func:`load_psp`, :func:`save_psp_checkpoint`).
* :mod:`~facestyle.hub.perceptual` -- the profile's LPIPS and identity networks built over resolved weights.
* :mod:`~facestyle.hub.inception` -- pytorch-fid's FID Inception over a resolved, prefix-checked file.

Module-level settings are read where they are used, so a test that redirects one patches that module:
``MINI_DIR`` / ``MANIFEST_PATH`` in :mod:`~facestyle.hub.registry`, ``urlopen`` / ``_fetch_url`` in
:mod:`~facestyle.hub.store`. The copies re-exported here are for reading only.
"""
from __future__ import annotations

from .checkpoint import FORMAT_TAG, load_facestyle_checkpoint, save_checkpoint  # noqa: F401
from .errors import CheckpointError, CheckpointNotFound, ChecksumError, UnsafeCheckpointError  # noqa: F401
from .legacy import (  # noqa: F401
    LoadedGenerator, _check_state_dict, _mean_latent, build_discriminator, build_generator, default_channels,
    generator_config_of, infer_discriminator_config, infer_generator_config, load_discriminator, load_generator,
    load_identity, load_oracle, save_generator_checkpoint)
from .inception import FIDInception, fid_inception_architecture, load_fid_inception  # noqa: F401
from .perceptual import LPIPS_CKPT, build_identity, build_lpips, build_train_lpips, load_lpips_backbone  # noqa: F401
from .psp import load_psp, save_psp_checkpoint  # noqa: F401
from .registry import _ENTRIES, KINDS, MANIFEST_PATH, MINI_DIR, Entry, entries, get_entry  # noqa: F401
from .safe import ALLOWED_GLOBALS_DOC, safe_load  # noqa: F401
from .store import (  # noqa: F401
    _MEMO, VerifyResult, _fetch_url, cache_dir, forget, format_entries, home, install_path, integrity, is_available,
    list_entries, pins, record_first_use, resolve, sha256_file, urlopen, verify)

__all__ = [
    "CheckpointError", "CheckpointNotFound", "ChecksumError", "UnsafeCheckpointError", "Entry", "FORMAT_TAG",
    "home", "cache_dir", "resolve", "get_entry", "list_entries", "format_entries", "verify", "sha256_file",
    "safe_load", "save_checkpoint", "load_facestyle_checkpoint", "LoadedGenerator", "load_generator",
    "load_discriminator", "load_psp", "infer_generator_config", "infer_discriminator_config",
    "save_generator_checkpoint", "save_psp_checkpoint", "generator_config_of", "pins", "forget", "integrity",
]
