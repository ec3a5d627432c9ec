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


__all__ = ["setup", "Session", "NotebookError", "fast_mode", "STYLES"]


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
