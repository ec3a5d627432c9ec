"""Paper Eq. 1-3 and the finetuning loop (section 3.1, Table 4 variants) on random mini models.

Nothing here needs a shipped checkpoint: a random mini G + D and an untrained mini IdentityNet are saved into a
temporary directory and passed by path, the way a user passes their own files.
"""
import argparse
import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facestyle.config import get_profile
from facestyle import hub, world
from facestyle.cli import finetune as cli_finetune
from facestyle.method import finetune as ft
from facestyle.method import losses as L
from facestyle.runs import JsonlLog, config_from_args
from helpers import random_mini_files


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # Small convs are much slower with several threads on a loaded 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("finetune")
    g, gpath, ipath = random_mini_files(root)
    models = L.LossModels.build("mini", "cpu", identity_ckpt=ipath)
    style, _ = world.style_dataset("anime", 64, n=12)
    with torch.no_grad():
        wplus = g.mapping(torch.randn(6, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(3)))
    yield {"root": root, "g": g, "gpath": gpath, "ipath": ipath, "models": models, "style": style, "wplus": wplus}
    torch.set_num_threads(threads)


def _cfg(setup, name, **kw):
    base = dict(profile="mini", style="anime", generator=str(setup["gpath"]), identity=str(setup["ipath"]),
                out=str(setup["root"] / name), batch=2, iters=3, threads=1, device="cpu", sample_every=0,
                log_every=1, ckpt_every_s=1e9)
    base.update(kw)
    return ft.FinetuneConfig(**base)


# ---- Eq. 1-3 ---------------------------------------------------------------------------------------------------

def test_semantic_loss_zero_on_identical_and_positive_otherwise(setup):
    m = setup["models"]
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    same, parts = L.semantic_loss(x, x, m.lpips, m.identity, 0.1, 64)
    assert same.item() == pytest.approx(0.0, abs=1e-5) and parts["id"].item() == pytest.approx(0.0, abs=1e-5)
    diff, parts = L.semantic_loss(x, y, m.lpips, m.identity, 0.1, 64)
    assert parts["lpips"].item() > 0 and parts["id"].item() > 0
    assert diff.item() == pytest.approx(parts["lpips"].item() + 0.1 * parts["id"].item(), rel=1e-5)
    # lambda_ID = 0 or no identity network: the LPIPS term alone
    only, _ = L.semantic_loss(x, y, m.lpips, None, 0.1, 64)
    assert only.item() == pytest.approx(parts["lpips"].item(), rel=1e-5)


def test_paired_loss_decreases_towards_target(setup):
    m = setup["models"]
    target = setup["style"][:2]
    far = torch.rand(2, 3, 64, 64) * 2 - 1
    losses = [L.paired_loss(target + a * (far - target), target, m.lpips, 64).item() for a in (1.0, 0.5, 0.1)]
    assert losses[0] > losses[1] > losses[2] > 0
    assert L.paired_loss(target, target, m.lpips, 64).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="one style image per output"):
        L.paired_loss(target, target[:1].expand(3, -1, -1, -1), m.lpips, 64)


def test_adversarial_and_total_loss():
    good_real, good_fake = torch.full((4, 1), 5.0), torch.full((4, 1), -5.0)
    assert L.adversarial_d_loss(good_real, good_fake) < L.adversarial_d_loss(good_fake, good_real)
    assert L.adversarial_g_loss(good_fake) > L.adversarial_g_loss(good_real) > 0
    from facestyle.nn import train_ops

    assert L.r1_penalty is train_ops.r1_penalty  # one R1 in the repo
    adv, sem, paired = torch.tensor(0.5), torch.tensor(0.2), torch.tensor(0.3)
    parts = L.total_loss(adv, sem, paired, lambda_sem=2.0, lambda_paired=3.0)
    assert parts["total"].item() == pytest.approx(0.5 + 0.4 + 0.9)
    assert set(L.total_loss(adv)) == {"total", "adv"}
    assert set(L.total_loss(adv, l_paired=paired)) == {"total", "adv", "paired"}


def test_train_ops_read_once_and_update_in_one_call():
    from facestyle.nn import train_ops

    rec = train_ops.to_floats({"d": torch.tensor(0.25), "r1": torch.tensor([2.0]), "phase": "adv", "s": 1.5})
    assert rec == {"d": 0.25, "r1": 2.0, "phase": "adv", "s": 1.5} and isinstance(rec["d"], float)
    torch.manual_seed(0)
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expect = [pe.detach() + 0.1 * (p.detach() - pe.detach()) for pe, p in zip(ema.parameters(), model.parameters())]
    train_ops.ema_update(ema, model, 0.9)
    assert all(torch.allclose(pe, e) for pe, e in zip(ema.parameters(), expect))
    params = [torch.nn.Parameter(torch.randn(4))]
    assert train_ops.adam(params, torch.device("cpu"), lr=0.1).param_groups[0]["fused"] is None  # CPU: as before
    fused = train_ops.adam([torch.nn.Parameter(params[0].detach().clone())], "cuda", lr=0.1)
    assert fused.param_groups[0]["fused"] is True  # what a GPU run gets (the fused kernel also runs on a CPU)
    plain = train_ops.adam(params, "cpu", lr=0.1)
    for opt in (plain, fused):
        opt.param_groups[0]["params"][0].grad = torch.arange(4.0)
        opt.step()
    assert torch.allclose(plain.param_groups[0]["params"][0], fused.param_groups[0]["params"][0], atol=1e-6)


def test_loss_models_report_missing_network(setup):
    m = L.LossModels(lpips=setup["models"].lpips, identity=None, size=64, lambda_id=0.1)
    with pytest.raises(ValueError, match="without identity"):
        m.need(identity=True)


# ---- finetuning ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["baseline", "sc", "pc", "sc_pc"])
def test_variants_run_and_save_loadable_generator(setup, variant, tmp_path):
    uses_sem, uses_pair = ft.VARIANTS[variant]
    pairs = None
    kw = {}
    if variant == "pc":  # a pair file with images
        torch.save({"wplus": setup["wplus"], "style": setup["style"][:6], "level": 2}, tmp_path / "pairs.pt")
        kw["pairs"] = str(tmp_path / "pairs.pt")
    elif variant == "sc_pc":  # an in-memory pair dict indexing the style set
        pairs = {"wplus": setup["wplus"], "index": torch.arange(6) * 2, "level": 3}
    # the default (mini world) style set in one variant, an in-memory tensor in the others
    style_images = None if variant == "baseline" else setup["style"]
    cfg = _cfg(setup, f"v-{variant}", variant=variant, sample_every=2, **kw)
    res = ft.finetune(cfg, progress=False, lossmodels=setup["models"], style_images=style_images, pairs=pairs)
    assert res.step == 3 and res.path.name == "generator.pt"
    loaded = hub.load_generator(res.path, device="cpu")
    assert loaded.g_ema.size == 64 and loaded.meta["variant"] == variant
    assert loaded.meta["iters"] == 3 and loaded.meta["finetune_config"]["batch"] == 2
    assert loaded.meta["pair_level"] == {"pc": 2, "sc_pc": 3}.get(variant)
    assert torch.allclose(loaded.latent_avg, hub.load_generator(setup["gpath"], device="cpu").latent_avg)
    # G' moved away from G
    g0 = setup["g"].state_dict()
    assert any(not torch.equal(v, g0[k]) for k, v in loaded.g_ema.state_dict().items() if k in g0)
    log = JsonlLog(res.log).read()
    assert [r["step"] for r in log] == [1, 2, 3]
    assert ("sem" in log[-1]) == uses_sem and ("sem_id" in log[-1]) == uses_sem
    assert ("paired" in log[-1]) == uses_pair and "adv" in log[-1] and "d" in log[-1]
    assert "r1" in log[0]  # lazy R1 on step 0
    assert [p.name for p in res.samples] == ["samples_000000.png", "samples_000002.png", "samples_000003.png"]
    assert Image.open(res.samples[-1]).size == (8 * 66 + 2, 2 * 66 + 2)


def test_paired_variant_needs_pairs(setup):
    with pytest.raises(ValueError, match="needs a pair file"):
        ft.finetune(_cfg(setup, "nopairs", variant="pc"), progress=False, lossmodels=setup["models"],
                    style_images=setup["style"])


def test_pairs_are_checked_against_the_generator(setup):
    with pytest.raises(ValueError, match=r"needs \[N, 10, 128\]"):
        ft.load_pairs({"wplus": torch.zeros(3, 18, 512), "style": torch.zeros(3, 3, 64, 64)}, n_latent=10,
                      style_dim=128)
    with pytest.raises(ValueError, match="style set has 12"):
        ft.load_pairs({"wplus": setup["wplus"], "index": torch.arange(6) + 10}, setup["style"], n_latent=10,
                      style_dim=128)
    w = ft.load_pairs({"wplus": setup["wplus"][:, 0], "index": torch.arange(6)}, setup["style"], n_latent=10,
                      style_dim=128)
    assert w["wplus"].shape == (6, 10, 128) and w["level"] is None


def test_semantic_constraint_keeps_g_prime_closer_to_g(setup):
    """+SC vs baseline, same seed and steps: Eq. 1 must hold G' nearer G (and carry gradients into G')."""
    m = setup["models"]
    # The paper's lr (0.002) over a few steps: the adversarial drift accumulates in the baseline while Eq. 1
    # pulls +SC back (with a much larger lr, Adam's sign-like steps make both oscillate at the lr's scale).
    # lambda_sem = 10 makes the difference plain after 6 steps; the run is deterministic (CPU, 1 thread, seed).
    common = dict(iters=6, lr=0.002, lambda_sem=10.0, ema_half_life_imgs=0.0, seed=2)
    z = torch.randn(8, 128, generator=torch.Generator().manual_seed(5))
    dist = {}
    for variant in ("baseline", "sc"):
        res = ft.finetune(_cfg(setup, f"cmp-{variant}", variant=variant, **common), progress=False, lossmodels=m,
                          style_images=setup["style"])
        g_prime = hub.load_generator(res.path, device="cpu").g_ema
        dist[variant] = L.semantic_distance(setup["g"], g_prime, z, m)["sem"]
    assert 0 < dist["sc"] < 0.8 * dist["baseline"], dist

    # the Eq. 1 term reaches G' parameters (and only G', G stays frozen)
    g_prime = hub.load_generator(res.path, device="cpu", requires_grad=True).g_ema
    ref = setup["g"].synthesis(setup["g"].mapping(z[:2]), noise_mode="const").detach()
    out = g_prime.synthesis(g_prime.mapping(z[:2]), noise_mode="const")
    loss, _ = L.semantic_loss(ref, out, m.lpips, m.identity, 0.1, 64)
    loss.backward()
    assert all(p.grad is not None for p in g_prime.parameters())
    assert g_prime.convs[0].conv.weight.grad.abs().sum() > 0 and g_prime.style[1].weight.grad.abs().sum() > 0


def test_resume_continues_and_matches_uninterrupted_run(setup):
    first = ft.finetune(_cfg(setup, "resume", variant="baseline", iters=3), progress=False,
                        style_images=setup["style"])
    assert first.step == 3
    again = ft.finetune(_cfg(setup, "resume", variant="baseline", iters=5), progress=False,
                        style_images=setup["style"])
    assert again.step == 5 and [r["step"] for r in JsonlLog(again.log).read()] == [1, 2, 3, 4, 5]
    assert hub.load_generator(again.path, device="cpu").meta["iters"] == 5
    straight = ft.finetune(_cfg(setup, "straight", variant="baseline", iters=5), progress=False,
                           style_images=setup["style"])
    a = hub.load_generator(again.path, device="cpu").g_ema.state_dict()
    b = hub.load_generator(straight.path, device="cpu").g_ema.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # a finished run cannot pass for a shorter one
    with pytest.raises(ValueError, match="past the 3 iterations"):
        ft.finetune(_cfg(setup, "resume", variant="baseline", iters=3), progress=False, style_images=setup["style"])
    # a different finetune cannot silently continue in the same directory
    with pytest.raises(ValueError, match="different finetune"):
        ft.finetune(_cfg(setup, "resume", variant="sc", iters=6), progress=False, lossmodels=setup["models"],
                    style_images=setup["style"])
    with pytest.raises(ValueError, match="r1_gamma"):
        ft.finetune(_cfg(setup, "resume", variant="baseline", iters=6, r1_gamma=0.5), progress=False,
                    style_images=setup["style"])
    # the same path holding a re-trained pretrained G (a re-shipped mini G keeps its name) is caught by its hash
    import shutil

    moved = setup["root"] / "g_moved.pt"
    shutil.copy(setup["gpath"], moved)
    ft.finetune(_cfg(setup, "resume-g", generator=str(moved), variant="baseline", iters=1), progress=False,
                style_images=setup["style"])
    g2 = copy.deepcopy(setup["g"])
    with torch.no_grad():
        next(g2.parameters()).add_(0.01)
    hub.save_generator_checkpoint(moved, g2, latent_avg=hub.load_generator(setup["gpath"]).latent_avg,
                                  d=hub.load_discriminator(setup["gpath"]))
    hub._MEMO.clear()
    with pytest.raises(ValueError, match="another file"):
        ft.finetune(_cfg(setup, "resume-g", generator=str(moved), variant="baseline", iters=2), progress=False,
                    style_images=setup["style"])


def test_resume_check_ignores_the_weights_of_terms_the_variant_does_not_use():
    # A new recipe (lambda_sem, lambda_id, the training LPIPS) must not retrain G*, which has no Eq. 1 term;
    # for +SC it is a different finetune.
    base = ft.FinetuneConfig(variant="baseline", style="anime").resolved()
    saved = dataclasses.asdict(base)
    newer = dataclasses.replace(base, lambda_sem=9.0, lambda_id=2.0, lpips_size=256, lambda_paired=3.0)
    ft._check_resume(saved, newer, Path("state.pt"))
    with pytest.raises(ValueError, match="lr: "):
        ft._check_resume(saved, dataclasses.replace(base, lr=0.5), Path("state.pt"))
    sc = ft.FinetuneConfig(variant="sc", style="anime").resolved()
    ft._check_resume(dataclasses.asdict(sc), dataclasses.replace(sc, lambda_paired=3.0), Path("state.pt"))
    with pytest.raises(ValueError, match="lambda_id: 0.1 -> 2.0"):
        ft._check_resume(dataclasses.asdict(sc), dataclasses.replace(sc, lambda_id=2.0), Path("state.pt"))
    pc = ft.FinetuneConfig(variant="pc", style="anime").resolved()
    with pytest.raises(ValueError, match="lpips_size"):  # Eq. 2 is measured by the LPIPS too
        ft._check_resume(dataclasses.asdict(pc), dataclasses.replace(pc, lpips_size=256), Path("state.pt"))


def test_stop_request_saves_state_and_writes_no_generator(setup, monkeypatch):
    """SIGINT/SIGTERM set Checkpointer.stop_requested; simulate one arriving during step 2."""
    from facestyle.runs import Checkpointer, Interrupted

    class StopDuringStep2(Checkpointer):
        def due(self):
            self.calls = getattr(self, "calls", 0) + 1
            self.stop_requested |= self.calls == 2
            return super().due()

    cfg = _cfg(setup, "stop", variant="baseline", iters=3)
    monkeypatch.setattr(ft, "Checkpointer", StopDuringStep2)
    with pytest.raises(Interrupted):
        ft.finetune(cfg, progress=False, style_images=setup["style"])
    out = setup["root"] / "stop"
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 2 and not (out / "generator.pt").exists()
    monkeypatch.undo()
    res = ft.finetune(cfg, progress=False, style_images=setup["style"])
    assert res.step == 3 and [r["step"] for r in JsonlLog(res.log).read()] == [1, 2, 3]


def test_style_folder_loader(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a_wide.png")
    Image.fromarray(np.full((32, 32, 4), 128, np.uint8), "RGBA").save(tmp_path / "b_rgba.png")
    Image.fromarray(np.full((32, 32), 200, np.uint8), "L").save(tmp_path / "c_grey.jpg")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(tmp_path / "d_16bit.png")
    (tmp_path / "notes.txt").write_text("not an image")
    x = ft.load_style_folder(tmp_path, 64)
    assert x.shape == (4, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    assert x[3].min() == pytest.approx(1.0)  # 16-bit white stays white
    (tmp_path / "e_broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="e_broken.png is not a readable image"):
        ft.load_style_folder(tmp_path, 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        ft.load_style_folder(tmp_path / "empty", 64)


def test_cli_arguments_give_typed_config():
    p = argparse.ArgumentParser()
    cli_finetune.add_arguments(p)
    args = p.parse_args(["--style", "anime", "--variant", "sc", "--iters", "7", "--lr", "0.01",
                         "--freeze-mapping", "true"])
    cfg = config_from_args(ft.FinetuneConfig, args)
    assert cfg.iters == 7 and cfg.lr == 0.01 and cfg.freeze_mapping is True and cfg.batch is None
    r = cfg.resolved()
    assert r.batch == 4 and r.r1_gamma == get_profile("mini").r1_gamma and r.lambda_id == 0.1 and r.out == "runs/mini-finetune-anime-sc"
    with pytest.raises(ValueError, match="unknown variant"):
        ft.FinetuneConfig(variant="ours").resolved()


def test_resolved_takes_an_unregistered_profile_object_of_the_same_name():
    # The bench's reduced-size ffhq variant is found by no lookup: the entry point passes the object down.
    variant = get_profile("mini").replace(name="mini-tiny", finetune_iters=3, lambda_sem=2.0)
    r = ft.FinetuneConfig(profile="mini-tiny", style="anime").resolved(variant)
    assert r.iters == 3 and r.lambda_sem == 2.0 and r.out == "runs/mini-tiny-finetune-anime-sc_pc"
    with pytest.raises(ValueError, match="names profile 'mini'"):
        ft.FinetuneConfig().resolved(variant)
    with pytest.raises(ValueError, match="unknown profile"):
        ft.FinetuneConfig(profile="mini-tiny").resolved()


# ---- few-shot remedies and the gradient balance of Eq. 3 (issue "faithful stylization") ----------------------

def test_diff_augment_keeps_shape_and_gradient_and_rejects_unknown_policy():
    from facestyle.method.augment import diff_augment, parse_policy

    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    torch.manual_seed(0)
    y = diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape and not torch.equal(y, x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.manual_seed(0)
    shifted = diff_augment(torch.arange(16.).view(1, 1, 4, 4).repeat(8, 1, 1, 1), "translation")
    # every row of a translated image is a shifted copy: values only come from the original or the zero pad
    assert set(shifted.unique().tolist()) <= set(range(16))
    assert diff_augment(x, "") is not None and parse_policy(" color , cutout") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_policy("colour")


def test_augment_freeze_d_and_gradient_norms_are_applied_and_logged(setup):
    cfg = _cfg(setup, "remedies", variant="sc", augment="translation,cutout", freeze_d=2, grad_norm_every=1,
               iters=2)
    res = ft.finetune(cfg, progress=False, lossmodels=setup["models"], style_images=setup["style"])
    log = JsonlLog(res.log).read()
    assert all(r["gn_adv"] > 0 and r["gn_sem"] >= 0 for r in log)
    assert all(abs(r["share_adv"] + r["share_sem"] - 1) < 1e-5 for r in log)
    state = torch.load(res.out / "state.pt", weights_only=True)
    d0 = hub.load_discriminator(setup["gpath"], device="cpu").state_dict()
    frozen = [k for k in d0 if k.startswith(("convs.0.", "convs.1."))]
    trained = [k for k in d0 if k.startswith("final_linear.")]
    assert frozen and all(torch.equal(state["d"][k].float(), d0[k].float()) for k in frozen)
    assert any(not torch.equal(state["d"][k].float(), d0[k].float()) for k in trained)
    assert hub.load_generator(res.path, device="cpu").meta["finetune_config"]["augment"] == "translation,cutout"
    with pytest.raises(ValueError, match="unknown augmentation"):
        ft.FinetuneConfig(augment="zoom").resolved()


def test_freeze_g_keeps_the_coarse_layers_and_lpips_size_is_used(setup, monkeypatch):
    """Issue #18's experiment knobs: --freeze-g N leaves G''s first N synthesis layers (and the constant input)
    at G's weights while the rest trains; --lpips-size S resizes both LPIPS inputs to S px (the ID term keeps
    loss_size)."""
    seen = []
    real = L.lpips_distance

    def spy(a, b, model, size=None):
        seen.append(size)
        return real(a, b, model, size)

    monkeypatch.setattr(L, "lpips_distance", spy)
    cfg = _cfg(setup, "freeze-g", variant="sc", freeze_g=3, lpips_size=96, iters=2, ema_half_life_imgs=0.0)
    res = ft.finetune(cfg, progress=False, lossmodels=setup["models"], style_images=setup["style"])
    assert seen and set(seen) == {96}
    g0 = setup["g"].state_dict()
    g1 = hub.load_generator(res.path, device="cpu").g_ema.state_dict()
    frozen = [k for k in g0 if k.startswith(("input.", "conv1.", "convs.0.", "convs.1."))]
    trained = [k for k in g0 if k.startswith(("convs.2.", "convs.3.", "to_rgbs."))]
    assert frozen and all(torch.equal(g1[k].float(), g0[k].float()) for k in frozen)
    assert any(not torch.equal(g1[k].float(), g0[k].float()) for k in trained)
    with pytest.raises(ValueError, match="synthesis layers"):
        ft.freeze_synthesis_layers(setup["g"], 99)
