"""The paper's ablation / pair-level studies end to end on random mini models with tiny counts."""
import json
from pathlib import Path

import pytest
import torch

from facestyle import hub
from facestyle.eval import study
from facestyle.eval.shift import latent_shift
from facestyle.nn.judges import IdentityNet


@pytest.fixture(scope="module")
def settings(mini_ckpts, tmp_path_factory, single_thread):
    root = tmp_path_factory.mktemp("study")
    ipath = hub.save_checkpoint(root / "identity.pt", kind="identity", config={"size": 64},
                                state_dict=IdentityNet(input_size=64))
    return study.StudySettings(iters=2, generator=mini_ckpts["g"], identity=str(ipath),
                               zplus_encoder=mini_ckpts["zplus"], wplus_encoder=mini_ckpts["wplus"], pair_iters=2,
                               n_style=6, n_eval=16, device="cpu", root=str(root / "runs"), progress=False)


def test_evaluate_finetune_is_zero_drift_for_g_itself(mini_ckpts, settings):
    g = hub.load_generator(mini_ckpts["g"], "cpu").g_ema
    judges = study.Judges.build("mini", "cpu", identity=settings.identity)
    ev = study.evaluate_finetune(g, g, "anime", judges, n=8)
    assert ev["semantic_distance"] == pytest.approx(0.0, abs=1e-5)
    assert ev["agreement_categorical"] == 1.0 and ev["agreement_continuous"] == 1.0
    g2 = hub.load_generator(mini_ckpts["g2"], "cpu").g_ema
    ev2 = study.evaluate_finetune(g, g2, "anime", judges, n=8)
    assert ev2["semantic_distance"] > 0.01 and ev2["ideal_distance"] > 0


def test_ablation_writes_table4_with_four_variants(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path))
    res = study.ablation(["anime"], settings, pair_level=3)
    assert [r["variant"] for r in res["rows"]] == ["baseline (G*)", "+SC", "+PC", "+SC&PC"]
    assert all(r["iters"] == 2 for r in res["rows"])
    doc = json.loads(res["json"].read_text())
    assert doc["columns"][:2] == ["style", "variant"] and len(doc["rows"]) == 4
    assert "semantic_distance" in res["markdown"].read_text() and res["figure"].exists()
    # finished finetunes are reused: a second run trains nothing and gives the same numbers
    again = study.ablation(["anime"], settings, pair_level=3)
    assert [r["semantic_distance"] for r in again["rows"]] == [r["semantic_distance"] for r in res["rows"]]


def _cli_settings(settings) -> list[str]:
    """The module's tiny study settings as `facestyle eval` flags (4 style images, 8 evaluation latents)."""
    return ["--iters", "2", "--pair-iters", "2", "--n-style", "4", "--n-eval", "8", "--device", "cpu",
            "--no-progress", "--generator", settings.generator, "--identity", settings.identity,
            "--zplus-encoder", settings.zplus_encoder, "--wplus-encoder", settings.wplus_encoder,
            "--root", settings.root]


def test_pair_study_cli(settings, tmp_path, monkeypatch):
    from facestyle.cli import main

    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path))
    rc = main(["eval", "pairs", "--style", "cartoon", "--levels", "1,2"] + _cli_settings(settings))
    assert rc == 0
    doc = json.loads((tmp_path / "mini" / "table5_pair_levels.json").read_text())
    assert [(r["variant"], r["pair_level"]) for r in doc["rows"]] == [
        ("baseline (G*)", None), ("+SC", None), ("+SC&PC", 1), ("+SC&PC", 2)]
    # other level-2 settings make their own pair set and +SC&PC run, named by them, instead of reusing those
    # above; G* and the level-1 pairs do not depend on them and are reused
    flags = _cli_settings(settings)
    flags[flags.index("--pair-iters") + 1] = "3"
    assert main(["eval", "pairs", "--style", "cartoon", "--levels", "2", "--pair-lr", "0.02", "--name", "t5_fast"]
                + flags) == 0
    fast = json.loads((tmp_path / "mini" / "t5_fast.json").read_text())
    row = fast["rows"][-1]
    assert row["pair_level"] == 2 and row["checkpoint"].endswith("cartoon-sc_pc-L2-p3-lr0.02-n4/generator.pt")
    assert row["checkpoint"] != doc["rows"][-1]["checkpoint"]
    assert fast["rows"][0]["checkpoint"] == doc["rows"][0]["checkpoint"]
    meta = torch.load(Path(settings.root) / "mini-pairs-cartoon-p3-lr0.02-n4" / "pairs_level2.pt",
                      weights_only=False)["meta"]
    assert meta["iters"] == 3 and meta["lr"] == 0.02


def test_latent_shift_steps_are_their_own_runs(settings):
    """The shift study's G' at step t is t iterations even when the ablation's run of the same variant has gone
    further, and a rerun reuses the kept steps."""
    study.finetune_variant("cartoon", "baseline", settings)  # the ablation's run, at settings.iters = 2
    shift = latent_shift("cartoon", settings, variants=("baseline",), steps=(0, 1, 2), n_samples=2, n_latents=8)
    sd = shift["variants"]["baseline (G*)"]["semantic_distance"]
    assert sd[0] == pytest.approx(0.0, abs=1e-5) and sd[1] > 0 and sd[1] != sd[2]
    again = latent_shift("cartoon", settings, variants=("baseline",), steps=(0, 1, 2), n_samples=2, n_latents=8)
    assert again["variants"]["baseline (G*)"]["semantic_distance"] == sd


def test_seed_study_runs_each_seed_apart_and_checks_against_the_same_seed(settings, tmp_path, monkeypatch):
    """A replicate never reuses another seed's finished finetune; pairs are shared, and level-2 pairs come from
    the seed-0 G* even when only another seed asks for them."""
    from pathlib import Path

    from facestyle.cli import main

    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path))
    rc = main(["eval", "seeds", "--style", "fantasy", "--seeds", "3", "--name", "seeds_fantasy"]
              + _cli_settings(settings))
    assert rc == 0
    assert (tmp_path / "mini" / "seeds_fantasy.md").exists() and not (tmp_path / "mini" / "table4_seeds.md").exists()
    root = Path(settings.root)
    assert (root / "mini-finetune-fantasy-baseline-n4-seed3").is_dir()
    assert (root / "mini-finetune-fantasy-baseline-n4").is_dir()  # the seed-0 G* that made the level-2 pairs
    assert (root / "mini-pairs-fantasy-p2-n4" / "pairs_level2.pt").exists()
    # the pair figure stays with the pairs; the committed three-level Fig. 8 is notebook 02's
    assert (root / "mini-pairs-fantasy-p2-n4" / "fig08_pairs_level2.png").exists()
    assert not (tmp_path / "mini" / "fig08_pairs_fantasy.png").exists()
    res = study.seed_study(["anime"], settings, seeds=(0, 1))
    assert [(r["seed"], r["variant"]) for r in res["rows"]] == [
        (0, "baseline (G*)"), (0, "+SC&PC"), (1, "baseline (G*)"), (1, "+SC&PC")]
    assert res["rows"][0]["checkpoint"] != res["rows"][2]["checkpoint"]
    assert res["rows"][0]["semantic_distance"] != res["rows"][2]["semantic_distance"]
    assert [c["seed"] for c in res["checks"]] == [0, 1]
    base = [r["fid_oracle"] for r in res["rows"] if r["variant"] == "baseline (G*)"]
    mean, sd = res["summary"][0]["fid_oracle"]
    assert res["summary"][0]["variant"] == "baseline (G*)" and mean == pytest.approx(sum(base) / 2)
    assert sd == pytest.approx(abs(base[0] - base[1]) / 2 ** 0.5)
    text = res["markdown"].read_text()
    assert "Mean +- sd over seeds" in text and "FID ratio" in text
    doc = json.loads(res["json"].read_text())
    assert doc["columns"][:2] == ["style", "seed"] and len(doc["meta"]["checks"]) == 2


def test_seed_study_keeps_the_styles_it_finished_when_interrupted(settings, tmp_path, monkeypatch):
    """The table is rewritten after every style, so a study stopped in its second style still leaves the first."""
    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path))
    real = study.run_variants

    def stop_at_cartoon(style, *args, **kwargs):
        if style == "cartoon":
            raise KeyboardInterrupt
        return real(style, *args, **kwargs)

    monkeypatch.setattr(study, "run_variants", stop_at_cartoon)
    with pytest.raises(KeyboardInterrupt):
        study.seed_study(["anime", "cartoon"], settings, seeds=(0,), name="partial")
    doc = json.loads((tmp_path / "mini" / "partial.json").read_text())
    assert {r["style"] for r in doc["rows"]} == {"anime"} and len(doc["meta"]["checks"]) == 1


@pytest.mark.parametrize("flags, message", [(["--style", ","], "no style"), (["--seeds", ""], "no seed")])
def test_eval_without_styles_or_seeds_is_one_clear_error(flags, message, capsys):
    from facestyle.cli import main

    assert main(["eval", "seeds", "--style", "cartoon"] + flags) == 2
    assert message in capsys.readouterr().err
