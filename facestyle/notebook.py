"""Plumbing shared by the course notebooks: parameters, fast mode, recorded numbers, friendly errors.

Every notebook starts with a ``parameters`` cell of literals (papermill overrides it:
``papermill notebooks/03_finetune.ipynb out.ipynb -p style anime``), then calls :func:`setup`. nbval cannot
inject parameters, so the fast CI mode comes from the environment: ``FACESTYLE_FAST=1`` (set by ``make test``)
shrinks every iteration count while still running every cell, as pyro's tutorials do with smoke tests.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from .config import STYLES, Profile, check_style, get_profile
from .utils import atomic_write, get_device
from .viz import figure_path


def fast_mode(fast: bool | None = None) -> bool:
    """Explicit ``fast`` wins; otherwise ``FACESTYLE_FAST=1`` in the environment."""
    if fast is not None:
        return bool(fast)
    return os.environ.get("FACESTYLE_FAST", "") not in ("", "0", "false", "False")


@dataclass
class Session:
    """What a notebook needs after its parameters cell: the resolved profile, device, mode and a recorder."""

    notebook: str
    profile: Profile
    device: object
    seed: int
    fast: bool
    style: str | None = None
    numbers: dict = field(default_factory=dict)
    scratch: Path | None = None

    def n(self, full: int, fast: int) -> int:
        """An iteration count or sample size: ``full`` normally, ``fast`` in CI's smoke mode."""
        return fast if self.fast else full

    def figure(self, name: str) -> Path:
        """Where a figure of this notebook goes: ``figures/<profile>/<name>`` (names say which paper figure)."""
        return figure_path(self.profile.name, name)

    def runs_dir(self, name: str) -> Path:
        """``runs/<name>`` under the repository, for finetunes and caches that later runs reuse; in the fast mode a
        fresh temporary folder per session instead, so a smoke run never reuses a stale run (the stand-in models
        of a test differ from run to run) nor overwrites a full one."""
        from .utils import REPO_ROOT

        if not self.fast:
            return REPO_ROOT / "runs" / name
        if self.scratch is None:
            import tempfile

            self.scratch = Path(tempfile.mkdtemp(prefix="facestyle-fast-"))
        return self.scratch / name

    def steps(self, iters: int, n: int) -> list[int]:
        """``n + 1`` evenly spaced checkpoints ``0 .. iters`` (``[0, 1, 2]`` in the fast mode)."""
        if self.fast:
            return [0, 1, 2]
        return sorted({round(int(iters) * k / n) for k in range(n + 1)})

    def study_settings(self, **overrides):
        """:class:`facestyle.eval.study.StudySettings` for this session: full counts normally; in the fast mode a
        few iterations, 8 style images, 16 evaluation latents and a scratch folder (:meth:`runs_dir`)."""
        from .eval.study import StudySettings

        base = {"profile": self.profile.name, "device": str(self.device), "seed": self.seed,
                "root": str(self.runs_dir("study"))}
        if self.fast:
            base.update(iters=2, pair_iters=2, n_style=8, n_eval=16)
        base.update(overrides)
        return StudySettings(**base)

    def style_generator(self, style: str, variant: str = "sc_pc"):
        """G' of ``style``: the shipped (mini) or cached (ffhq) +SC&PC checkpoint when there is one, else a
        finetune run here with :func:`facestyle.eval.study.finetune_variant` (resumable; reused next time)."""
        from . import hub
        from .eval.study import finetune_variant

        check_style(style)
        if variant == "sc_pc":
            name = self.profile.style_generator_ckpt.format(style=style)
            try:
                return hub.resolve(name, download=False)
            except hub.CheckpointError:
                print(f"{name} is not available: finetuning it here ({'fast mode' if self.fast else 'full run'})")
        return finetune_variant(style, variant, self.study_settings()).path

    def record(self, **numbers) -> dict:
        """Keep key numbers in ``figures/<profile>/numbers/<notebook>.json`` so tests and readers can check them.

        The fast mode writes under ``numbers/fast/`` so a CI run never overwrites a full run's record. Keys that
        other runs recorded (03_finetune once per style, possibly in parallel) are kept: the file is re-read
        and merged under a lock."""
        self.numbers.update(numbers)
        sub = "numbers/fast" if self.fast else "numbers"
        path = figure_path(self.profile.name, f"{sub}/{self.notebook}.json")
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            if fcntl is not None:  # Windows has no fcntl: parallel notebook runs there may drop a key
                fcntl.flock(lock, fcntl.LOCK_EX)
            merged = json.loads(path.read_text()) if path.exists() else {}
            merged.update(self.numbers)
            with atomic_write(path, "w") as fh:
                json.dump(merged, fh, indent=1, sort_keys=True, default=float)
                fh.write("\n")
        return merged


class NotebookError(ValueError):
    """A user-fixable problem in a notebook's parameters; shown as one line, not a stack trace."""

    def _render_traceback_(self):  # IPython shows this instead of the traceback
        return [f"NotebookError: {self}"]


def setup(notebook: str, profile: str = "mini", device: str = "auto", seed: int = 0, style: str | None = None,
          fast: bool | None = None) -> Session:
    """Validate a notebook's parameters and return its :class:`Session` (unknown profile, style or device stop
    here with one clear line)."""
    import torch

    try:
        prof = get_profile(profile)
        dev = get_device(device)
        if style is not None:
            check_style(style)
    except ValueError as exc:
        raise NotebookError(f"{exc} (fix the parameters cell, or pass -p to papermill)") from None
    torch.manual_seed(seed)
    return Session(notebook=notebook, profile=prof, device=dev, seed=seed, fast=fast_mode(fast), style=style)


__all__ = ["setup", "Session", "NotebookError", "fast_mode", "STYLES", "show", "shrink_png", "slim_notebook"]


def execute(path: str | os.PathLike, fast: bool = False, timeout: int = 1800) -> Path:
    """Run a notebook top to bottom in place (full mode by default) and keep its JSON clean: outputs stay,
    execution counts are renumbered and timing metadata is dropped, so diffs show only real changes."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    # The kernel inherits this environment. Progress bars are off in a stored run: in a kernel they are widgets
    # whose saved state shows a stale bar on GitHub, and they would make every re-run a diff.
    env = {"FACESTYLE_FAST": "1" if fast else "0", "TQDM_DISABLE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    clean(nb)
    with atomic_write(path, "w") as fh:
        nbformat.write(nb, fh)
    return path


_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def clean(nb) -> None:
    """Make a run's notebook JSON stable: renumber execution counts from 1, drop timing and papermill metadata,
    and keep a live widget's text form only (its saved state is a random model id plus kilobytes of state that
    no static viewer can bring back to life)."""
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            for out in cell.get("outputs", []):
                if "execution_count" in out:
                    out["execution_count"] = count
                out.get("data", {}).pop(_WIDGET_VIEW, None)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)


# Figures are read in GitHub's notebook viewer on a laptop screen: its output column is roughly 860 CSS px wide,
# and the browser scales anything wider down to fit, so pixels past that cost diff size and show nothing more.
# The mini profile's grids (64-px faces drawn at 2x) keep every face's own pixels at this size.
DISPLAY_MAX_PX = 860
# A PNG this small that already fits costs a diff little: leave it as it is rather than re-encode it lossily.
SMALL_PNG_BYTES = 50_000


def shrink_png(data: bytes, max_px: int = DISPLAY_MAX_PX, colors: int | None = 256) -> bytes:
    """A smaller PNG for display: downscaled so its longer side is at most ``max_px`` (never enlarged; LANCZOS,
    or nearest neighbour for a grid whose pixels were repeated by ``viz.save_grid(scale=k)``), reduced to a
    ``colors``-colour palette (``None``: full colour, lossless) and saved optimised. Returns ``data`` itself when
    the image already fits and is small or already paletted, or when the new file would not be smaller, so a
    second pass changes nothing."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if img.format != "PNG" or img.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"):
        return data  # 16-bit and other rare modes: converting them to 8 bits would clip, not scale
    fits = max(img.size) <= max_px
    gray = img.mode in ("1", "L", "LA")
    few_colours = gray or img.mode in ("P", "PA")  # nothing a palette would save
    if fits and (len(data) <= SMALL_PNG_BYTES or few_colours or not colors):
        return data
    img.load()
    alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    img = img.convert(("LA" if alpha else "L") if gray else ("RGBA" if alpha else "RGB"))
    if alpha and img.getchannel("A").getextrema()[0] == 255:
        # matplotlib saves an opaque alpha channel: dropping it is lossless and lets the palette use all colours
        img, alpha = img.convert("L" if gray else "RGB"), False
    if not fits:
        scale = max_px / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        k = _nearest_factor(img)
        if k > 1:
            # viz.save_grid's scale=2 repeats every pixel; LANCZOS over the repeats makes new pixels that
            # compress worse than the larger original. Back to the real pixels, then repeat them again if
            # the target is still larger: the same blocky look, and half the bytes of a LANCZOS result.
            import numpy as np

            img = Image.fromarray(np.asarray(img)[::k, ::k].copy())
        img = img.resize(size, Image.NEAREST if size[0] >= img.width else Image.LANCZOS)
    if colors and not gray:
        # The notebooks' face grids barely compress losslessly (fewer pixels alone saved ~20%): a 256-colour
        # palette looks the same at screen size and takes about a third of the bytes. figures/ keeps the original.
        # (Without a given palette PIL does not dither, which also keeps the file small.)
        img = img.quantize(colors, method=Image.Quantize.FASTOCTREE if alpha else Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    small = out.getvalue()
    return small if len(small) < len(data) else data


def _nearest_factor(img, factors=(4, 3, 2)) -> int:
    """The ``k`` for which ``img`` is exactly a ``k``-times nearest-neighbour enlargement, else 1."""
    import numpy as np

    a = np.asarray(img)
    for k in factors:
        if a.shape[0] % k or a.shape[1] % k:
            continue
        small = a[::k, ::k]
        if np.array_equal(np.repeat(np.repeat(small, k, 0), k, 1), a):
            return k
    return 1


def show(path: str | os.PathLike, max_px: int = DISPLAY_MAX_PX, colors: int | None = 256):
    """Display the figure at ``path`` in a notebook, shrunk with :func:`shrink_png`: the stored output stays small
    while the full-resolution file stays in ``figures/``. Use instead of ``IPython.display.Image(filename=...)``."""
    from IPython.display import Image

    return Image(data=shrink_png(Path(path).read_bytes(), max_px, colors), format="png")


def slim_notebook(path: str | os.PathLike, max_px: int = DISPLAY_MAX_PX, colors: int | None = 256) -> tuple[int, int]:
    """Shrink the ``image/png`` outputs of a stored notebook's code cells with :func:`shrink_png`, in place, and
    return its size in bytes before and after. Everything else stays byte for byte in a file laid out as
    nbformat writes it (as the course's are); a notebook with nothing to shrink is not rewritten."""
    import base64

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    # The plain json module, not nbformat: it keeps the key order and formatting the file has, so the only
    # lines that change are the images'. nbformat's own writer is indent=1 with a trailing newline, as here.
    nb = json.loads(text)
    changed = False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" not in data:
                continue
            raw = data["image/png"]
            raw = "".join(raw) if isinstance(raw, list) else raw
            png = base64.b64decode(raw)
            small = shrink_png(png, max_px, colors)
            if small != png:
                data["image/png"] = base64.b64encode(small).decode("ascii")
                changed = True
    before = len(text.encode("utf-8"))
    if not changed:
        return before, before
    new = (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    with atomic_write(path, "wb") as fh:  # bytes: no locale encoding, no newline translation
        fh.write(new)
    return before, len(new)


def main(argv: list[str] | None = None) -> int:
    """``python -m facestyle.notebook slim NOTEBOOK...``: slim stored notebooks and print their sizes."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m facestyle.notebook")
    sub = parser.add_subparsers(dest="command", required=True)
    slim = sub.add_parser("slim", help="shrink the PNG outputs stored in notebooks (in place)")
    slim.add_argument("notebooks", nargs="+")
    slim.add_argument("--max-px", type=int, default=DISPLAY_MAX_PX, help="longest side of a stored image")
    slim.add_argument("--colors", type=int, default=256, help="palette size; 0 keeps full colour (lossless)")
    args = parser.parse_args(argv)
    total = [0, 0]
    for nb_path in args.notebooks:
        before, after = slim_notebook(nb_path, args.max_px, args.colors or None)
        total[0] += before
        total[1] += after
        print(f"{nb_path}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    if len(args.notebooks) > 1:
        print(f"total: {total[0] / 1e6:.2f} MB -> {total[1] / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
