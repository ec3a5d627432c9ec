"""``facestyle quality keep``: does a stylization keep its input's content (facestyle.eval.keep)."""
import json

import pytest
import torch

from facestyle import world
from facestyle.eval import keep


def test_score_counts_matches_per_factor_and_groups():
    truth = world.sample_content(50, seed=1)
    perfect = keep.score(truth, truth)
    assert perfect["categorical"] == perfect["continuous"] == perfect["geometry"] == 1.0
    moved = truth.clone()
    moved[:, world.factor_index("yaw")] = (moved[:, world.factor_index("yaw")] + 0.5) % 1.0
    s = keep.score(truth, moved, torch.full((50,), world.DOMAINS.index("anime")), "anime")
    assert s["per_factor"]["yaw"] < 0.5 and s["categorical"] == 1.0 and s["style_accuracy"] == 1.0
    assert s["geometry"] == pytest.approx(1 - (1 - s["per_factor"]["yaw"]) / len(keep.GEOMETRY))


def test_diversity_is_zero_for_one_repeated_image_and_positive_otherwise():
    x = torch.rand(1, 3, 8, 8).repeat(6, 1, 1, 1)
    assert keep.diversity(x) == 0.0
    assert keep.diversity(torch.rand(6, 3, 8, 8)) > 0.1


def test_keep_report_with_shipped_models(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path))
    res = keep.keep_quality(["impasto"], n=24, batch=24, device="cpu", baseline=False)
    row = res["styles"]["impasto"]["ours"]
    assert 0 <= row["categorical"] <= 1 and 0 <= row["geometry"] <= 1 and row["diversity"] > 0
    assert set(row["meets"]) == {"categorical", "geometry", "continuous", "style_accuracy", "diversity"}
    assert res["styles"]["impasto"]["ideal"]["categorical"] > 0.8  # the oracle reads the world's own renders
    assert res["ceiling"]["categorical"] > 0.5 and res["heldout_seed"] == keep.KEEP_SEED_BASE
    paths = keep.write_keep_report(res, "keep_test", command="facestyle quality keep --style impasto")
    text = open(paths["md"]).read()
    assert "ceiling" in text and "impasto" in text and "facestyle quality keep --style impasto" in text
    assert json.load(open(paths["json"]))["styles"]["impasto"]["ours"]["label"] == "ours"
    assert (tmp_path / "mini" / "keep_test.png").exists() and "keep_test.png" in text


def test_multimodal_mode_scores_every_sample(monkeypatch, tmp_path):
    res = keep.keep_quality(["cartoon"], mode="multimodal", n=12, batch=12, n_samples=2, device="cpu",
                            baseline=False)
    assert res["layer"] is not None and 0 <= res["styles"]["cartoon"]["ours"]["geometry"] <= 1


def test_factor_sensitivity_sees_every_change():
    from facestyle.hub import build_lpips

    lp = build_lpips("alex", "mini", "cpu", backbone="seeded")
    res = keep.factor_sensitivity(lp, domains=("real",), n=4)
    assert set(res["real"]) == {name for name, _ in keep.SENSITIVITY_CHANGES}
    assert all(r["lpips"] > 0 and r["l1"] > 0 for r in res["real"].values())
    # lpips_size: the same 64 px renders (same pixel L1), compared by the LPIPS at another resolution
    big = keep.factor_sensitivity(lp, domains=("real",), n=4, lpips_size=128)
    assert all(big["real"][k]["l1"] == res["real"][k]["l1"] for k in res["real"])
    assert any(big["real"][k]["lpips"] != res["real"][k]["lpips"] for k in res["real"])


def test_sensitivity_command_prints_one_row_per_change(capsys):
    from facestyle.cli import main

    assert main(["quality", "sensitivity", "--n", "2", "--size", "96"]) == 0
    out = capsys.readouterr().out
    assert "real: seeded" in out and all(f"| {name} |" in out for name, _ in keep.SENSITIVITY_CHANGES)
