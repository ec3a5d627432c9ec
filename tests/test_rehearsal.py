"""The paper's setting rehearsed: the README's ffhq recipe, command by command, on random-weight files in the
official formats (facestyle.rehearsal) with the official architectures at 32 px (the ``rehearsal`` profile).

What is asserted is the plumbing a researcher with the real files relies on: every file loads from where a user
puts it, each command writes what the next one reads, a killed finetune resumes, wrong inputs fail with one
line. Quality is not asserted: the weights are random.
"""
import json
import math
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from facestyle.cli import main

pytestmark = pytest.mark.slow

PHOTO = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
SIZE = 32


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Random official-format files where a user puts the real ones, offline, one thread (small batches)."""
    from facestyle import hub, rehearsal

    root = tmp_path_factory.mktemp("rehearsal")
    mp = pytest.MonkeyPatch()
    mp.setenv("FACESTYLE_HOME", str(root / "home"))
    mp.setenv("FACESTYLE_OFFLINE", "1")
    mp.setenv("FACESTYLE_FIGURES", str(root / "figures"))
    files = rehearsal.write_official_files(root / "files", cache=hub.cache_dir())
    for k, v in rehearsal.files_environment(files).items():
        mp.setenv(k, v)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["world", "--export-style", "cartoon", "--n", "6", "--out", str(root / "style")]) == 0
    yield {"root": root, "files": files, "style": root / "style"}
    torch.set_num_threads(old)
    mp.undo()


def _run(*argv) -> int:
    t0 = time.perf_counter()
    rc = main([str(a) for a in argv])
    # Seconds per command, shown with -s: the rehearsal must stay a small part of the CI budget.
    print(f"[rehearsal] {argv[0]} {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rc


def _steps(log: Path) -> list[int]:
    return [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()]


def test_the_ffhq_recipe_end_to_end(world, capsys):
    root, style = world["root"], world["style"]
    common = ["--profile", "rehearsal", "--style", "cartoon", "--no-progress"]

    # align: a real photo that ships with matplotlib, FFHQ-aligned by MTCNN's five points
    assert _run("align", PHOTO, "--out", root / "aligned", "--size", 256) == 0
    aligned = sorted((root / "aligned").iterdir())
    assert len(aligned) == 1 and Image.open(aligned[0]).size == (256, 256)

    # G*: the unconstrained finetune (variant baseline), needed by level-2 pairs
    gstar = root / "gstar"
    assert _run("finetune", *common, "--style-images", style, "--variant", "baseline", "--iters", 2,
                "--sample-every", 0, "--out", gstar) == 0
    assert (gstar / "generator.pt").is_file()

    # pairs at the three levels (Eq. 4, 5, 6)
    pairs = root / "pairs"
    assert _run("pairs", "--profile", "rehearsal", "--style", "cartoon", "--style-images", style, "--n", 4,
                "--levels", "1,2,3", "--g-star", gstar / "generator.pt", "--iters", 2, "--batch", 4,
                "--out", pairs, "--no-figure", "--no-progress") == 0
    for level in (1, 2, 3):
        p = torch.load(pairs / f"pairs_level{level}.pt", weights_only=True)
        assert p["wplus"].shape == (4, 8, 512) and torch.isfinite(p["wplus"]).all()

    # +SC&PC (Eq. 3), killed after 2 steps and resumed to 3
    ours = root / "ours"
    args = [*common, "--style-images", style, "--variant", "sc_pc", "--pairs", pairs / "pairs_level2.pt",
            "--sample-every", 0, "--log-every", 1, "--out", ours]
    assert _run("finetune", *args, "--iters", 2) == 0
    assert _run("finetune", *args, "--iters", 3) == 0
    steps = _steps(ours / "log.jsonl")
    assert steps == [1, 2, 3], steps  # the second run went on from step 2, it did not start again
    g_prime = ours / "generator.pt"

    # stylize in the three modes (section 3, 3.3)
    for mode, extra in (("general", []), ("multimodal", ["--n-samples", 2]), ("reference", ["--ref", aligned[0], "--ref-iters", 2])):
        out = root / f"out-{mode}"
        assert _run("stylize", PHOTO, "--out", out, "--profile", "rehearsal", "--style", "cartoon", "--mode", mode,
                    "--generator", g_prime, *extra) == 0, mode
        made = [p for p in out.iterdir() if p.suffix == ".png"]
        assert made and all(Image.open(p).size[0] % SIZE == 0 for p in made), (mode, made)

    # the paper's metrics (section 4.1): Table 4's semantic distance and FID, Table 1's FID and Perc. on the photo
    mirrored = root / "aligned_mirrored.png"  # a second photo: FID needs two images for a covariance
    Image.open(aligned[0]).transpose(Image.FLIP_LEFT_RIGHT).save(mirrored)
    assert _run("eval", "files", "--profile", "rehearsal", "--style", "cartoon", "--g-prime", g_prime,
                "--style-images", style, "--photos", aligned[0], mirrored, "--n", 4, "--name",
                "rehearsal_metrics") == 0
    rows = json.loads((Path(os.environ["FACESTYLE_FIGURES"]) / "rehearsal" / "rehearsal_metrics.json")
                      .read_text())["rows"]
    for key in ("semantic_distance", "fid_inception", "fid_inception_stylized", "lpips_in_out", "id_distance"):
        assert math.isfinite(rows[0][key]) and rows[0][key] >= 0, key
    capsys.readouterr()


def test_notebook_03_with_the_rehearsal_profile(world, tmp_path):
    """`papermill notebooks/03_finetune.ipynb out.ipynb -p profile rehearsal` in the fast mode: G*, level-2 pairs
    and +SC&PC on the world's cartoon set at 32 px, then the paper's metrics in place of the mini oracle."""
    papermill = pytest.importorskip("papermill")
    mp = pytest.MonkeyPatch()
    mp.setenv("FACESTYLE_FAST", "1")
    try:
        papermill.execute_notebook(str(Path(__file__).resolve().parent.parent / "notebooks" / "03_finetune.ipynb"),
                                   str(tmp_path / "out.ipynb"), parameters={"profile": "rehearsal"},
                                   progress_bar=False, kernel_name="python3", cwd=str(tmp_path))
    finally:
        mp.undo()
    figures = Path(os.environ["FACESTYLE_FIGURES"]) / "rehearsal"
    row = json.loads((figures / "finetune_cartoon_sc_pc.json").read_text())["rows"][0]
    assert row["profile"] == "rehearsal" and row["iters"] == 2
    assert math.isfinite(row["semantic_distance"]) and math.isfinite(row["fid_inception"])
    assert (figures / "finetune_cartoon_sc_pc_samples.png").exists()
