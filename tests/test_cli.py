"""The command line: `facestyle --help` lists the subcommands, each has --help, errors are one line."""
import subprocess
import sys

import pytest

from facestyle.config import get_profile

from facestyle.cli import build_parser, main

SUBCOMMANDS = ["demo", "bench", "hub", "world", "pretrain", "finetune", "quality", "pairs", "embed-ref", "align", "stylize"]


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("argv", [[s, "--help"] for s in SUBCOMMANDS] +
                         [["pretrain", m, "--help"] for m in ("generator", "oracle", "identity", "encoder")])
def test_each_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "facestyle", "--help"], capture_output=True, text=True, check=True)
    assert "facestyle" in out.stdout


def test_missing_checkpoint_is_one_clear_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FACESTYLE_HOME", str(tmp_path))
    monkeypatch.setenv("FACESTYLE_OFFLINE", "1")
    assert main(["hub", "path", "stylegan2-ffhq-config-f"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stylegan2-ffhq-config-f.pt" in err[0] and str(tmp_path) in err[0]


def test_unknown_checkpoint_name(capsys):
    assert main(["hub", "path", "stylegan2-ffhq-config-g"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_world_exports_a_style_set_as_a_folder_the_finetune_reads(tmp_path):
    import torch

    from facestyle import world
    from facestyle.method.finetune import load_style_folder

    out = tmp_path / "cartoon5"
    assert main(["world", "--export-style", "cartoon", "--n", "5", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(5)] + ["content.pt"]
    imgs, content = world.style_dataset("cartoon", size=64, n=5)
    loaded = load_style_folder(out, 64)
    assert (loaded - imgs.clamp(-1, 1)).abs().max() <= 1 / 127.5 + 1e-6  # PNG's 8 bits
    saved = torch.load(out / "content.pt", weights_only=False)
    assert torch.equal(saved["content"], content) and saved["style"] == "cartoon"
    assert main(["world", "--export-style", "cartoonish", "--out", str(tmp_path / "x")]) == 2


def test_world_figure(tmp_path):
    out = tmp_path / "six.png"
    assert main(["world", "--n", "2", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000


def test_parser_builds_without_heavy_work():
    assert build_parser().prog == "facestyle"


def test_bench_method_times_the_slow_steps_and_stylization(single_thread):
    from facestyle.bench_method import bench_method, format_method

    r = bench_method("mini", "cpu", iters=1, n_style=64, n_refs=2, n_stylize=2, stylize_repeats=1)
    assert r["finetune_s_per_iter"] > 0 and r["pairs_s_per_batch_iter"] > 0 and r["reference_s_per_iter"] > 0
    assert r["stylize_images_per_s"] > 0 and r["stylize_batch"] == 2
    # extrapolated to the profile's own level-2 step count (200 for mini), 2 batches of 32
    assert r["pair_opt_iters"] == get_profile("mini").pair_opt_iters
    assert r["pairs_level2_64_images_min"] == pytest.approx(r["pairs_s_per_batch_iter"] * r["pair_opt_iters"] * 2 / 60)
    text = format_method(r)
    assert "finetune +SC&PC" in text and "64 images" in text and "for 2 images" in text
    assert "stylization" in text and "iters/s" in text and "references" in text
    assert r["pairs_precision"] == "fp32" and "(fp32)" in text


def test_bench_method_runs_the_ffhq_path_offline_at_a_reduced_size(monkeypatch, capsys, tmp_path):
    """The GPU check (`facestyle bench --method --profile ffhq --device cuda`) needs no file: random weights of the
    official shapes for G/D, facenet and pSp, a seeded VGG16 for LPIPS. Here the same path at 32 px on the CPU."""
    from facestyle import config
    from facestyle.cli import main

    for var in ("FACESTYLE_HOME", "TORCH_HOME"):  # empty caches: no ImageNet VGG or facenet file to find
        monkeypatch.setenv(var, str(tmp_path / var))
    assert main(["bench", "--method", "--profile", "ffhq", "--reduced-size", "32", "--iters", "1",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "profile ffhq-32px" in out and "G 32 px, identity FaceNetIdentity, LPIPS vgg (seeded), loss size 256" in out
    assert "1000 iters" in out and "x 1000 iters" in out  # the ffhq profile's counts, not mini's 200
    assert "ffhq-32px" not in config.PROFILES  # the variant is passed down, never registered by name


def test_format_convergence_prints_one_block_per_learning_rate():
    from facestyle.bench_method import format_convergence

    def run(lr, end):
        return {"n": 4, "iters": 50, "lr": lr, "wall_s": 1.0, "loss_start": 0.2, "loss": {25: 0.15, 50: end},
                "share_of_decrease": {25: 0.5, 50: 1.0}}

    runs = [run(0.01, 0.1), run(0.02, 0.08), {**run(0.01, 0.11), "precision": "bf16"},
            {**run(0.02, 0.07), "schedule": "cosine"}]
    text = format_convergence({"profile": "mini", "style": "cartoon", "device": "cpu", "pairs": runs[0],
                               "pair_runs": runs, "invert": {"n": 16, "lpips_end": {}, "wall_s": {}}})
    assert "lr 0.01" in text and "lr 0.02" in text and "0.0800" in text and "reference embedding" not in text
    assert text.count("lr 0.01, fp32") == 1 and text.count("lr 0.01, bf16") == 1 and "0.1100" in text
    assert text.count("constant schedule") == 3 and "lr 0.02, fp32, cosine schedule" in text and "0.0700" in text
