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


def test_finetune_notebook_trains_the_style_given_by_papermill(tmp_path, monkeypatch, mini_ckpts):
    """`papermill notebooks/03_finetune.ipynb out.ipynb -p style anime`, on random stand-ins for the mini models
    (the hub's FACESTYLE_CKPT_<NAME> overrides reach the kernel through the environment)."""
    from facestyle import hub
    from facestyle.nn.judges import IdentityNet

    ident = hub.save_checkpoint(tmp_path / "identity.pt", kind="identity", config={"size": 64},
                                state_dict=IdentityNet(input_size=64))
    for name, key in (("MINI_STYLEGAN2_64", "g"), ("MINI_ENCODER_W", "w"), ("MINI_ENCODER_WPLUS", "wplus"),
                      ("MINI_ENCODER_ZPLUS", "zplus")):
        monkeypatch.setenv(f"FACESTYLE_CKPT_{name}", mini_ckpts[key])
    monkeypatch.setenv("FACESTYLE_CKPT_MINI_IDENTITY", str(ident))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    figures = run(tmp_path, monkeypatch, "03_finetune.ipynb", style="anime")
    numbers = json.loads((figures / "mini" / "numbers" / "fast" / "03_finetune.json").read_text())
    row = numbers["anime_sc_pc"]
    assert row["style"] == "anime" and row["iters"] == 2 and 0 <= row["agreement_categorical"] <= 1
    assert (figures / "mini" / "finetune_anime_sc_pc_samples.png").stat().st_size > 1000


def test_recorded_numbers_of_separate_runs_are_merged(tmp_path, monkeypatch):
    """03_finetune runs once per style (maybe in parallel): one run's record must not erase another's."""
    from facestyle import notebook

    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path / "figures"))
    a = notebook.setup("03_finetune", device="cpu", style="anime", fast=True)
    b = notebook.setup("03_finetune", device="cpu", style="cartoon", fast=True)
    a.record(anime_sc_pc={"x": 1})
    merged = b.record(cartoon_sc_pc={"x": 2})
    a.record(anime_sc_pc={"x": 3})
    path = tmp_path / "figures" / "mini" / "numbers" / "fast" / "03_finetune.json"
    assert merged == {"anime_sc_pc": {"x": 1}, "cartoon_sc_pc": {"x": 2}}
    assert json.loads(path.read_text()) == {"anime_sc_pc": {"x": 3}, "cartoon_sc_pc": {"x": 2}}


def test_stored_run_is_clean(tmp_path):
    """`make notebooks` keeps outputs but no progress widgets, timings or papermill metadata, and counts from 1."""
    import nbformat

    from facestyle.notebook import execute

    nb = nbformat.v4.new_notebook()
    bar = "import os\nfrom facestyle.utils import progress_bar\nx = sum(progress_bar(iterable=range(3)))"
    nb.cells = [nbformat.v4.new_code_cell(bar),
                nbformat.v4.new_code_cell("print(os.environ['FACESTYLE_FAST'], x)")]
    nb.cells[0].execution_count = 7
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    execute(path, fast=True, timeout=120)
    out = nbformat.read(path, as_version=4)
    assert [c.execution_count for c in out.cells] == [1, 2]
    assert out.cells[0].outputs == []  # the bar is off, not a widget
    assert out.cells[1].outputs[0]["text"] == "1 3\n"
    assert all("execution" not in c.metadata for c in out.cells) and "papermill" not in out.metadata


def test_clean_keeps_the_text_of_a_widget_not_its_state():
    import nbformat

    from facestyle.notebook import clean

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("w")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
        "text/plain": "VBox()"})]
    nb.cells = [cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    clean(nb)
    assert nb.cells[0].outputs[0]["data"] == {"text/plain": "VBox()"} and "widgets" not in nb.metadata
