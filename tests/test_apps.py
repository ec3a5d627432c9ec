"""`facestyle align` and `facestyle stylize` on real photos: outputs per face, per-file failures, no partial files."""
import os
from pathlib import Path

import matplotlib
import pytest
from PIL import Image

from facestyle.cli import main

PORTRAIT = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESTYLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACESTYLE_OFFLINE", "1")
    for k in list(os.environ):
        if k.startswith("FACESTYLE_CKPT_"):
            monkeypatch.delenv(k)


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.open(PORTRAIT).save(d / "grace.png")
    (d / "notes.jpg").write_text("not an image")
    Image.new("RGB", (200, 200), (120, 130, 140)).save(d / "flat.png")
    return d


def test_align_folder_keeps_going_past_bad_files(tmp_path, inputs, capsys):
    out = tmp_path / "out"
    assert main(["align", str(inputs), "--out", str(out), "--size", "128"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["grace.png"]
    assert Image.open(out / "grace.png").size == (128, 128)
    err = capsys.readouterr().err
    assert "notes.jpg" in err and "flat.png" in err and "2 of 3 input(s) failed" in err


def test_missing_input_is_a_usage_error(tmp_path, capsys):
    assert main(["align", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("mode,expected", [("general", 1), ("multimodal", 2)])
def test_stylize_photo(tmp_path, mini_ckpts, mode, expected, capsys):
    out = tmp_path / "styl"
    argv = ["stylize", str(PORTRAIT), "--out", str(out), "--style", "anime", "--mode", mode, "--n-samples", "2",
            "--generator", mini_ckpts["g2"], "--encoder", mini_ckpts["w"], "--base-generator", mini_ckpts["g"],
            "--device", "cpu"]
    assert main(argv) == 0
    files = sorted(out.iterdir())
    assert len(files) == expected and all(Image.open(f).size == (64, 64) for f in files)
    assert not list(out.glob("*.tmp"))
    # a photo given to the mini profile works, with one line saying the world is synthetic and what to use
    err = capsys.readouterr().err
    assert "synthetic 64 px" in err and "--profile ffhq" in err


def test_reference_mode_needs_a_reference(tmp_path, mini_ckpts, capsys):
    argv = ["stylize", str(PORTRAIT), "--out", str(tmp_path / "o"), "--mode", "reference",
            "--generator", mini_ckpts["g2"], "--encoder", mini_ckpts["w"], "--base-generator", mini_ckpts["g"]]
    assert main(argv) == 2
    assert "--ref" in capsys.readouterr().err
