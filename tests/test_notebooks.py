"""Notebooks through papermill: parameters reach the code, numbers and figures are recorded, bad parameters stop
at the first cell that needs them with one clear line."""
import json
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(tmp_path, monkeypatch, name, **params):
    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("FACESTYLE_FAST", "1")
    out = tmp_path / f"out-{name}"
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=params, progress_bar=False,
                               kernel_name="python3", cwd=str(tmp_path))
    return tmp_path / "figures"


def test_quickstart_with_parameters(tmp_path, monkeypatch):
    figures = run(tmp_path, monkeypatch, "00_quickstart.ipynb", seed=1, n_portraits=2)
    numbers = json.loads((figures / "mini" / "numbers" / "fast" / "00_quickstart.json").read_text())
    assert numbers["n_factors"] == 20 and numbers["domains"][0] == "real"
    assert (figures / "mini" / "world_six_domains.png").stat().st_size > 1000
    assert (figures / "mini" / "demo.png").stat().st_size > 1000


def test_unknown_profile_is_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(papermill.PapermillExecutionError) as exc:
        run(tmp_path, monkeypatch, "00_quickstart.ipynb", profile="ffhq2")
    assert "unknown profile 'ffhq2'" in str(exc.value) and "parameters cell" in str(exc.value)
