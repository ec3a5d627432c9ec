"""The registry: one :class:`Entry` per named checkpoint of either profile (docs/design.md section 2).

* ``mini`` names (``mini-stylegan2-64``, ``mini-encoder-wplus`` ...) are files shipped inside the package under
  ``facestyle/checkpoints/mini/``; their file name, sha256 and size come from ``manifest.json`` next to them, read
  on every :func:`get_entry`, so a file trained in this process is found without a restart.
* ``ffhq`` names are public files a user fetches once; each entry says where from and under which licence, and
  :mod:`facestyle.hub.store` finds them in the caches or downloads them.

``MINI_DIR`` and ``MANIFEST_PATH`` are looked up in this module at call time, so pointing them elsewhere (tests do)
moves every mini name with them.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass

from ..config import STYLES
from ..utils import PACKAGE_ROOT
from .errors import CheckpointError, CheckpointNotFound

KINDS = ("stylegan2", "stylegan2-train", "psp", "encoder", "identity", "oracle", "lpips-backbone", "inception",
         "clip")
MINI_DIR = PACKAGE_ROOT / "checkpoints" / "mini"
MANIFEST_PATH = MINI_DIR / "manifest.json"


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
                 "facestyle); the first successful load pins the file's sha256 in the cache's pins.json, and a "
                 "different file under this name is refused afterwards (`facestyle hub forget NAME` to re-pin).")
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
    where="download.pytorch.org (torchvision VGG16 ImageNet weights; lpips fetches it into "
          "$TORCH_HOME/hub/checkpoints)",
    note="Backbone of LPIPS-VGG (training loss). " + _TV_NOTE))
_register(Entry(
    name="lpips-alexnet", kind="lpips-backbone", filename="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256=None, size_bytes=None,
    sha256_prefix="7be5be79", profile="ffhq", torch_cache=True, licence="torchvision model weights (BSD-3 code)",
    where="download.pytorch.org (torchvision AlexNet ImageNet weights; lpips fetches it into "
          "$TORCH_HOME/hub/checkpoints)",
    note="Backbone of LPIPS-Alex (evaluation). " + _TV_NOTE))
_register(Entry(
    name="fid-inception", kind="inception", filename="pt_inception-2015-12-05-6726825d.pth",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    sha256=None, sha256_prefix="6726825d", size_bytes=None, profile="ffhq", torch_cache=True,
    licence="pytorch-fid (Apache-2.0), port of TensorFlow's 2015-12-05 Inception graph",
    where="the pytorch-fid 'fid_weights' GitHub release (pytorch-fid fetches it into $TORCH_HOME/hub/checkpoints)",
    note="FID Inception-v3 matching the TensorFlow reference (facestyle.hub.load_fid_inception). pytorch-fid "
         "publishes the first 8 hex digits of its sha256 in the file name, torch-hub style; facestyle checks that "
         "prefix (no full hash is published)."))
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
         ("mini-lpips-alexnet", "lpips-backbone", "self-supervised AlexNet under the mini profile's training LPIPS "
                                                  "(Eq. 1, Eq. 2, pairs, reference inversion)"),
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
