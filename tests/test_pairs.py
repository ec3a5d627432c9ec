"""Multi-level pseudo pairs (paper section 3.2, Eq. 4-6, Fig. 8) on random mini models.

Nothing here needs a shipped checkpoint: a random mini G, a perturbed copy standing in for the unconstrained
finetune G*, random Z+ / W+ encoders and an untrained IdentityNet are built in memory (and saved to a temporary
directory where a path is needed, the way a user passes their own files).
"""
import argparse
import copy

import numpy as np
import pytest
import torch
from PIL import Image

from facestyle import hub, world
from facestyle.cli import pairs as cli_pairs
from facestyle.config import get_profile
from facestyle.method import finetune as ft
from facestyle.method import losses as L
from facestyle.method import pairs as P
from facestyle.nn.judges import IdentityNet
from facestyle.pretrain import generator as pg
from facestyle.pretrain.encoders import build_psp


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # Small convs are much slower with several threads on a loaded 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pairs")
    torch.manual_seed(0)
    g, _ = pg.build_models("mini")
    g.eval()
    with torch.no_grad():
        avg = g.mean_latent(256)
    g_star = copy.deepcopy(g)
    with torch.no_grad():  # a different mapping and synthesis, as a finetune would have
        for p in g_star.parameters():
            p.add_(0.05 * torch.randn_like(p))
    zp = build_psp("zplus", g, avg).eval()
    wp = build_psp("wplus", g, avg).eval()
    ipath = hub.save_checkpoint(root / "identity.pt", kind="identity", config={"size": 64},
                                state_dict=IdentityNet(input_size=64))
    models = L.LossModels.build("mini", "cpu", identity_ckpt=ipath)
    style, _ = world.style_dataset("cartoon", 64, n=4)
    yield {"root": root, "g": g, "g_star": g_star, "zp": zp, "wp": wp, "avg": avg, "ipath": ipath,
           "models": models, "style": style}
    torch.set_num_threads(threads)


def test_level1_eq4_shapes_mapping_and_determinism(setup):
    g, s = setup["g"], setup["style"]
    a = P.level1(s, setup["zp"], g, batch=3)
    b = P.level1(s, setup["zp"], g, batch=4)
    n = len(s)
    assert a.level == 1
    assert a.zplus.shape == (n, g.n_latent, g.style_dim) and a.wplus.shape == (n, g.n_latent, g.style_dim)
    assert a.images.shape == (n, 3, 64, 64)
    # Eq. 4: w1+ is G's mapping of z1+ row by row, P1 = G(w1+) with constant noise
    with torch.no_grad():
        assert torch.allclose(a.wplus, g.mapping(a.zplus), atol=1e-5)
        assert torch.allclose(a.images, g.synthesis(a.wplus, noise_mode="const"), atol=1e-4)
    assert torch.allclose(a.wplus, b.wplus, atol=1e-5) and torch.allclose(a.images, b.images, atol=1e-4)
    with pytest.raises(ValueError, match="Z\\+ encoder"):
        P.level1(s, setup["wp"], g)


def test_level3_eq6_both_readings(setup):
    g, s, wp = setup["g"], setup["style"], setup["wp"]
    a = P.level3(s, wp, g)
    b = P.level3(s, wp, g, batch=1)
    assert a.wplus.shape == (len(s), g.n_latent, g.style_dim) and a.images.shape == (len(s), 3, 64, 64)
    assert torch.allclose(a.wplus, b.wplus, atol=1e-5) and a.zplus is None
    with torch.no_grad():
        assert torch.allclose(a.wplus, wp.encode(s), atol=1e-6)  # Eq. 6 as written: E_w+(S)
    p2 = torch.rand_like(s) * 2 - 1
    c = P.level3(s, wp, g, level3_source="p2", p2=p2)
    with torch.no_grad():
        assert torch.allclose(c.wplus, wp.encode(p2), atol=1e-6)  # the "refine P2" reading: E_w+(P2)
    assert c.meta["level3_source"] == "p2"
    with pytest.raises(ValueError, match="compute level 2 first"):
        P.level3(s, wp, g, level3_source="p2")
    with pytest.raises(ValueError, match="level3_source"):
        P.level3(s, wp, g, level3_source="w")


@pytest.fixture(scope="module")
def l2(setup):
    """Level 2 for the 4 style images in one batch of 4 (3 steps), shared by the tests below."""
    z1 = P.level1(setup["style"], setup["zp"], setup["g"]).zplus
    trace = []
    res = P.level2(setup["style"], z1, setup["g"], setup["g_star"], setup["models"], iters=3, lr=0.02, batch=4,
                   progress=False, trace=trace)
    res.trace = trace
    return z1, res


def test_level2_eq5_lowers_semantic_loss_against_g_star(setup, l2):
    g, gs, s, models = setup["g"], setup["g_star"], setup["style"], setup["models"]
    z1, res = l2
    assert res.level == 2 and res.zplus.shape == z1.shape and res.wplus.shape == z1.shape
    assert not torch.allclose(res.zplus, z1)  # optimised
    with torch.no_grad():
        before = P.semantic_per_sample(gs.synthesis(gs.mapping(z1), noise_mode="const"), s, models)
        after = P.semantic_per_sample(gs.synthesis(gs.mapping(res.zplus), noise_mode="const"), s, models)
        # w2+ comes from G's mapping network, not G*'s (Eq. 5), and P2 = G(w2+)
        assert torch.allclose(res.wplus, g.mapping(res.zplus), atol=1e-5)
        assert not torch.allclose(res.wplus, gs.mapping(res.zplus), atol=1e-3)
        assert torch.allclose(res.images, g.synthesis(res.wplus, noise_mode="const"), atol=1e-4)
    assert torch.allclose(before, res.loss_start, atol=1e-4) and torch.allclose(after, res.loss_end, atol=1e-4)
    assert after.sum() < before.sum()
    # the convergence trace (facestyle bench --convergence): the batch-mean loss before each of the 3 steps
    assert len(res.trace) == 3 and res.trace[0] == pytest.approx(float(before.mean()), abs=1e-4)
    # Eq. 1 form: LPIPS + lambda_ID * ID, at the profile's loss size
    lp = L.lpips_distance(gs.synthesis(gs.mapping(z1), noise_mode="const"), s, models.lpips, 64)
    assert torch.all(before >= lp.detach() - 1e-6)


def test_semantic_target_caches_the_targets_and_equals_eq1_per_sample(setup):
    gs, s, models = setup["g_star"], setup["style"], setup["models"]
    z = torch.randn(len(s), gs.n_latent, gs.style_dim, generator=torch.Generator().manual_seed(3))
    img = gs.synthesis(gs.mapping(z), noise_mode="const").detach()
    a, b = img.clone().requires_grad_(True), img.clone().requires_grad_(True)
    ref, got = P.semantic_per_sample(a, s, models), P.semantic_target(s, models)(b)
    assert torch.allclose(ref, got, atol=1e-6)
    ref.sum().backward(), got.sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7, rtol=1e-4)


def test_level2_is_independent_of_batch_size(setup, l2):
    z1, res4 = l2
    res2 = P.level2(setup["style"], z1, setup["g"], setup["g_star"], setup["models"], iters=3, lr=0.02, batch=3,
                    progress=False)
    # Adam is per-coordinate and the losses are summed per sample: the same optimisation up to float rounding.
    # Rounding is not nothing: Adam's first steps are about lr * sign(grad), so coordinates whose gradient is ~0
    # can step either way. Compare what matters - the loss reached and the codes on average.
    assert torch.allclose(res2.loss_end, res4.loss_end, atol=3e-3)
    moved = (res4.zplus - z1).abs().mean()
    assert (res2.zplus - res4.zplus).abs().mean() < 0.05 * moved


def test_level2_bf16_lowers_the_fp32_loss_and_keeps_its_own_batches(setup, l2, tmp_path):
    z1, fp32 = l2
    gs, s, models = setup["g_star"], setup["style"], setup["models"]
    args = (s, z1, setup["g"], gs, models)
    res = P.level2(*args, iters=3, lr=0.02, batch=4, progress=False, precision="bf16", state_dir=tmp_path)
    assert res.meta["precision"] == "bf16" and res.zplus.dtype == torch.float32
    with torch.no_grad():  # the reported start and end losses are fp32 evaluations, as in the fp32 run
        after = P.semantic_per_sample(gs.synthesis(gs.mapping(res.zplus), noise_mode="const"), s, models)
    assert torch.allclose(res.loss_start, fp32.loss_start, atol=1e-4)
    assert torch.allclose(after, res.loss_end, atol=1e-4) and after.sum() < res.loss_start.sum()
    assert not torch.allclose(res.zplus, fp32.zplus)  # bf16 rounding moves the codes
    # a batch saved by a bf16 run is reused by a bf16 rerun, not by an fp32 one
    assert P.level2(*args, iters=3, lr=0.02, batch=4, progress=False, precision="bf16",
                    state_dir=tmp_path).meta["batches_reused"] == 1
    again = P.level2(*args, iters=3, lr=0.02, batch=4, progress=False, state_dir=tmp_path)
    assert again.meta["batches_reused"] == 0 and torch.allclose(again.zplus, fp32.zplus, atol=1e-5)
    with pytest.raises(ValueError, match="precision"):
        P.level2(*args, iters=1, lr=0.02, precision="fp16")


def test_pair_lr_schedules():
    assert [P.pair_lr(i, 100, 0.02) for i in (0, 50, 99)] == [0.02] * 3  # the paper's constant rate
    cos = [P.pair_lr(i, 100, 0.02, "cosine") for i in range(100)]
    assert cos[0] == pytest.approx(0.02) and cos[50] == pytest.approx(0.01) and 0 < cos[-1] < 1e-4
    assert all(a >= b for a, b in zip(cos, cos[1:]))
    proj = [P.pair_lr(i, 100, 0.02, "projector") for i in range(100)]
    assert proj[0] == 0 and proj[5] == pytest.approx(0.02) and proj[50] == pytest.approx(0.02) and proj[-1] < 1e-3
    with pytest.raises(ValueError, match="schedule"):
        P.pair_lr(0, 10, 0.02, "step")


def test_level2_schedule_changes_the_run_and_its_batch_key(setup, l2, monkeypatch, tmp_path):
    z1, constant = l2
    args = (setup["style"], z1, setup["g"], setup["g_star"], setup["models"])
    seen = []
    real = P.pair_lr
    monkeypatch.setattr(P, "pair_lr", lambda *a: (seen.append(a), real(*a))[1])
    res = P.level2(*args, iters=3, lr=0.02, batch=4, progress=False, schedule="cosine", state_dir=tmp_path)
    assert [a[0] for a in seen] == [0, 1, 2] and all(a[3] == "cosine" for a in seen)
    assert res.meta["schedule"] == "cosine" and constant.meta["schedule"] == "constant"
    assert not torch.allclose(res.zplus, constant.zplus)  # a smaller second and third step
    assert res.loss_end.sum() < res.loss_start.sum()
    # a batch saved under one schedule is not reused by another
    again = P.level2(*args, iters=3, lr=0.02, batch=4, progress=False, state_dir=tmp_path)
    assert again.meta["batches_reused"] == 0 and torch.allclose(again.zplus, constant.zplus, atol=1e-5)
    with pytest.raises(ValueError, match="schedule"):
        P.level2(*args, iters=1, lr=0.02, schedule="linear")


def test_level2_resumes_after_interruption(setup, l2, monkeypatch, tmp_path):
    z1, _ = l2
    args = (setup["style"], z1, setup["g"], setup["g_star"], setup["models"])
    full = P.level2(*args, iters=3, lr=0.02, batch=2, progress=False)  # the same run, never interrupted
    real = P._optimise_batch
    calls = []

    def killed_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a run killed during the second batch
        return real(*a, **k)

    monkeypatch.setattr(P, "_optimise_batch", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        P.level2(*args, iters=3, lr=0.02, batch=2, state_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("batch_*.pt"))) == 1  # the finished batch was kept

    calls.clear()
    monkeypatch.setattr(P, "_optimise_batch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    res = P.level2(*args, iters=3, lr=0.02, batch=2, state_dir=tmp_path, progress=False)
    assert len(calls) == 1 and res.meta["batches_reused"] == 1  # only the missing batch ran
    assert torch.equal(res.zplus, full.zplus) and torch.equal(res.loss_end, full.loss_end)
    # other settings make the saved batches stale: everything runs again
    calls.clear()
    P.level2(*args, iters=2, lr=0.02, batch=2, state_dir=tmp_path, progress=False)
    assert len(calls) == 2


def test_make_pairs_writes_loadable_pair_files_and_fig8(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path / "figures"))
    s = setup["style"]
    res = P.make_pairs("cartoon", "mini", (1, 2, 3), style_images=s, g=setup["g"], g_star=setup["g_star"],
                       zplus_psp=setup["zp"], wplus_psp=setup["wp"], lossmodels=setup["models"], iters=1,
                       batch=4, out_dir=tmp_path / "out", device="cpu", progress=False, n_figure=3)
    g = setup["g"]
    for k in (1, 2, 3):
        pairs = ft.load_pairs(res.files[k], n_latent=g.n_latent, style_dim=g.style_dim)
        assert pairs["level"] == k and pairs["wplus"].shape == (len(s), g.n_latent, g.style_dim)
        assert torch.allclose(pairs["wplus"], res.levels[k].wplus)
        assert torch.allclose(pairs["style"], s, atol=1e-3)  # stored as float16
        raw = hub.safe_load(res.files[k])
        assert raw["pseudo_real"].shape == (len(s), 3, 64, 64) and ("zplus" in raw) == (k < 3)
        assert raw["meta"]["style"] == "cartoon" and raw["meta"]["noise"] == "const"
        assert res.grids[k].exists()
    assert (tmp_path / "out" / "level2_batches").is_dir()
    assert res.figure == tmp_path / "figures" / "mini" / "fig08_pseudo_pairs_cartoon.png"
    with Image.open(res.figure) as im:  # rows S, P1, P2, P3 of 3 images at 64 px, upscaled x2, 2 px gutters
        assert im.size == (2 * (3 * 66 + 2), 2 * (4 * 66 + 2))


def test_cli_from_files_with_a_style_folder(setup, tmp_path, monkeypatch):
    """`facestyle pairs` with models given as files and a folder of style images: pair files use indices."""
    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path / "figures"))
    g = setup["g"]
    gpath = hub.save_generator_checkpoint(tmp_path / "g.pt", g, latent_avg=setup["avg"])
    paths = {}
    for kind in ("zplus", "wplus"):
        psp = setup["zp"] if kind == "zplus" else setup["wp"]
        paths[kind] = hub.save_psp_checkpoint(tmp_path / f"e_{kind}.pt", psp, kind=kind,
                                              encoder_config=get_profile("mini").encoder)
    folder = tmp_path / "style"
    folder.mkdir()
    for i, img in enumerate(setup["style"][:3]):
        arr = ((img.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
    p = argparse.ArgumentParser()
    cli_pairs.add_arguments(p)
    args = p.parse_args(["--levels", "1,3", "--generator", str(gpath), "--zplus-encoder", str(paths["zplus"]),
                         "--wplus-encoder", str(paths["wplus"]), "--style-images", str(folder),
                         "--out", str(tmp_path / "out"), "--device", "cpu", "--threads", "1", "--no-progress"])
    assert cli_pairs.main_from_args(args) == 0
    style_set = ft.load_style_folder(folder, 64)
    for k in (1, 3):
        raw = hub.safe_load(tmp_path / "out" / f"pairs_level{k}.pt")
        assert "index" in raw and "style" not in raw
        pairs = ft.load_pairs(tmp_path / "out" / f"pairs_level{k}.pt", style_set, n_latent=g.n_latent)
        assert torch.equal(pairs["style"], style_set)
    assert not (tmp_path / "out" / "pairs_level2.pt").exists()
    assert (tmp_path / "figures" / "mini" / "fig08_pseudo_pairs_cartoon.png").exists()
    with pytest.raises(ValueError, match="subset of 1,2,3"):
        P.make_pairs("cartoon", "mini", "1,4", style_images=setup["style"], g=g, out_dir=False, figure=False)


def test_level2_without_g_star_says_how_to_make_it(setup, tmp_path, monkeypatch):
    monkeypatch.setattr("facestyle.runs.REPO_ROOT", tmp_path)  # no runs/ there
    with pytest.raises(ValueError, match="variant baseline"):
        P.make_pairs("cartoon", "mini", "2", style_images=setup["style"], g=setup["g"], zplus_psp=setup["zp"],
                     lossmodels=setup["models"], out_dir=False, figure=False, device="cpu")
