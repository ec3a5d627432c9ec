"""V-space inversion of reference images (paper section 3.3, docs/reference.md section 3) and its on-disk cache,
on a random mini generator and the mini (seeded-backbone) LPIPS."""
import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from facestyle.cli import invert as cli_invert
from facestyle.config import get_profile
from facestyle import hub
from facestyle.method import invert as I
from facestyle.method import losses as L
from facestyle.pretrain import generator as pg

ITERS = 10


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs are much slower with several threads on a loaded 2-core machine
    torch.manual_seed(0)
    g, _ = pg.build_models("mini")
    g.eval()
    with torch.no_grad():  # non-zero noise strengths so the noise maps matter, as in a trained generator
        for m in g.modules():
            if m.__class__.__name__ == "NoiseInjection":
                m.weight.fill_(0.1)
    lpips = L.LossModels.build("mini", "cpu", identity=False).lpips
    with torch.no_grad():  # reachable targets: images of the generator itself
        w_true = g.mean_latent(256) + 0.7 * (g.mapping(torch.randn(2, g.style_dim)) - g.mean_latent(256))
        targets = g.synthesis(w_true, noise_mode="random")
    yield {"g": g, "lpips": lpips, "targets": targets}
    torch.set_num_threads(threads)


def test_sefa_basis_is_orthonormal_right_singular_vectors(setup):
    g = setup["g"]
    e = I.sefa_basis(g)
    d = g.style_dim
    assert e.shape == (d, d)
    assert torch.allclose(e @ e.t(), torch.eye(d), atol=1e-4)
    names = [n for n, _ in I.conv_modulation_weights(g)]
    assert names[0] == "conv1.conv.modulation.weight" and not any("to_rgb" in n for n in names)
    assert len(names) == 1 + len(g.convs)
    a = torch.cat([p.detach() for _, p in I.conv_modulation_weights(g)])
    # rows are the right singular vectors in order of decreasing singular value: ||A e_k|| = s_k
    s = torch.linalg.svdvals(a)
    gains = (a @ e.t()).norm(dim=0)
    assert torch.allclose(gains, s, rtol=1e-3, atol=1e-4)
    # UI2I's factor file: V with directions as columns, from a stack that also holds to_rgb1
    u = I.sefa_basis(g, ui2i_compat=True)
    assert "to_rgb1.conv.modulation.weight" in [n for n, _ in I.conv_modulation_weights(g, ui2i_compat=True)]
    assert torch.allclose(u.t() @ u, torch.eye(d), atol=1e-4)


def test_noise_regulariser_and_renormalisation_are_per_sample():
    torch.manual_seed(1)
    white = [torch.randn(2, 1, 16, 16), torch.randn(2, 1, 8, 8)]
    smooth = [torch.nn.functional.interpolate(torch.randn(2, 1, 4, 4), size=16, mode="bilinear"),
              torch.randn(2, 1, 8, 8)]
    r_white, r_smooth = I.noise_regularize(white), I.noise_regularize(smooth)
    assert r_white.shape == (2,) and torch.all(r_smooth > 10 * r_white)  # autocorrelation is penalised
    mixed = [torch.cat([white[0][:1], smooth[0][1:]]), white[1]]
    assert torch.allclose(I.noise_regularize(mixed)[0], r_white[0])  # sample 0 does not see sample 1
    maps = [torch.randn(3, 1, 8, 8) * torch.tensor([1.0, 3.0, 0.5]).view(3, 1, 1, 1) + 2]
    I.noise_normalize_(maps)
    assert torch.allclose(maps[0].mean((1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(maps[0].std((1, 2, 3)), torch.ones(3), atol=1e-5)
    # the projector's schedule: warm-up from 0, peak lr mid-run, cosine ramp-down to ~0
    assert I.get_lr(0.0, 0.1) == 0 and I.get_lr(0.5, 0.1) == pytest.approx(0.1) and I.get_lr(0.99, 0.1) < 0.01


def test_inversion_lowers_lpips_and_feeds_v_at_e_as_single_w(setup, monkeypatch):
    g, lp, x = setup["g"], setup["lpips"], setup["targets"]
    e = I.sefa_basis(g)
    w_avg = I._w_stats(g)[0]
    seen = []
    real_synthesis, real_mapping = g.synthesis, g.mapping

    def spy(ws, noise=None, noise_mode="random"):
        assert noise is not None  # optimised noise maps, never fresh random ones
        seen.append(ws.detach().clone())
        return real_synthesis(ws, noise=noise, noise_mode=noise_mode)

    def stats_only(z):
        # The mapping network only serves the statistics of W (w_avg, std), without gradients; the inverted code
        # never goes through it (UI2I's defect: missing input_is_latent).
        assert not torch.is_grad_enabled() and z.shape[0] == 10000
        return real_mapping(z)

    def no_forward(*a, **k):
        raise AssertionError("the generator's forward (which maps z) was called")

    monkeypatch.setattr(g, "synthesis", spy)
    monkeypatch.setattr(g, "mapping", stats_only)
    monkeypatch.setattr(g, "forward", no_forward)
    res = I.invert_v(x, g, lp, iters=ITERS, lr=0.1, size=64, batch=2, basis=e)
    monkeypatch.undo()
    assert res.v.shape == (2, g.style_dim) and res.w.shape == (2, g.style_dim)
    assert torch.all(res.lpips < res.lpips_start)  # LPIPS went down within 10 steps
    assert torch.equal(res.w, res.v @ e)  # w = v @ E
    assert len(seen) == ITERS + 1 and all(ws.ndim == 2 for ws in seen)  # a single W code, repeated over rows
    assert torch.equal(seen[-1], res.w)  # the final code fed to G' is exactly v @ E
    # the start: v0 = w_avg @ E^T, i.e. the mean latent (latent noise perturbs the first steps only)
    v0_w = (w_avg @ e.t()) @ e
    assert torch.allclose(v0_w, w_avg, atol=1e-4)
    assert len(res.noises) == g.num_layers and res.noises[-1].shape == (2, 1, 64, 64)
    assert torch.allclose(res.noises[0].std((1, 2, 3)), torch.ones(2), atol=1e-4)  # renormalised every step
    assert res.settings["noise_reg"] == 1e5 and res.settings["lpips_net"] == get_profile("mini").lpips_train_net
    # W+ form used by reference-guided mixing
    assert torch.equal(res.wplus(g.n_latent)[:, 3], res.w)


def test_inversion_is_per_sample(setup):
    """Batched inversion = one image at a time (summed per-sample losses, per-image seeds), up to rounding."""
    g, lp, x = setup["g"], setup["lpips"], setup["targets"]
    a = I.invert_v(x, g, lp, iters=3, size=64, batch=2)
    b = I.invert_v(x[1:], g, lp, iters=3, size=64, batch=1)
    assert torch.allclose(a.lpips[1:], b.lpips, atol=2e-3)
    assert (a.w[1:] - b.w).abs().mean() < 0.05 * (a.w[1:] - g.mean_latent(10000)).abs().mean() + 1e-3


def test_cache_hits_without_optimising_and_misses_when_the_model_changes(setup, tmp_path, monkeypatch):
    g, lp, x = setup["g"], setup["lpips"], setup["targets"]
    cache = I.EmbeddingCache(tmp_path)
    first = cache.get_or_invert(x, g, lp, iters=2, size=64)
    assert (cache.hits, cache.misses, cache.inverted) == (0, 2, 2)
    assert len(list(tmp_path.rglob("*.pt"))) == 2

    calls = []
    real = I.invert_v
    monkeypatch.setattr(I, "invert_v", lambda *a, **k: (calls.append(len(a[0])), real(*a, **k))[1])
    again = I.EmbeddingCache(tmp_path).get_or_invert(x, g, lp, iters=2, size=64)
    assert calls == []  # every image came from disk
    assert torch.equal(again.w, first.w) and torch.equal(again.noises[0], first.noises[0])
    # one new image: only it is inverted; order is kept
    new = torch.flip(x[:1], dims=[-1])
    c = I.EmbeddingCache(tmp_path)
    mixed = c.get_or_invert(torch.cat([x[:1], new, x[1:]]), g, lp, iters=2, size=64)
    assert calls == [1] and (c.hits, c.misses) == (2, 1)
    assert torch.equal(mixed.w[0], first.w[0]) and torch.equal(mixed.w[2], first.w[1])
    # other settings are another key
    calls.clear()
    I.EmbeddingCache(tmp_path).get_or_invert(x[:1], g, lp, iters=3, size=64)
    assert calls == [1]
    # the model changes (in place, even through .data): its hash changes and the cache misses
    calls.clear()
    h0 = I.model_hash(g)
    assert I.model_hash(g) == h0  # memoised and stable
    with torch.no_grad():
        g.conv1.conv.weight.data.mul_(1.01)
    try:
        assert I.model_hash(g) != h0
        I.EmbeddingCache(tmp_path).get_or_invert(x[:1], g, lp, iters=2, size=64)
        assert calls == [1]
    finally:
        with torch.no_grad():
            g.conv1.conv.weight.data.div_(1.01)


def test_embed_ref_cli(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("FACESTYLE_FIGURES", str(tmp_path / "figures"))
    g, x = setup["g"], setup["targets"]
    gpath = hub.save_generator_checkpoint(tmp_path / "g_prime.pt", g, latent_avg=g.mean_latent(256))
    files = []
    for i, img in enumerate(x):
        arr = ((img.permute(1, 2, 0).clamp(-1, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
        files.append(tmp_path / f"ref{i}.png")
        Image.fromarray(arr).save(files[-1])
    p = argparse.ArgumentParser()
    cli_invert.add_arguments(p)
    args = p.parse_args([str(f) for f in files] + ["--style", "anime", "--generator", str(gpath), "--iters", "2",
                                                  "--cache-dir", str(tmp_path / "cache"), "--out",
                                                  str(tmp_path / "refs.pt"), "--device", "cpu", "--threads", "1",
                                                  "--no-progress"])
    assert cli_invert.main_from_args(args) == 0
    out = hub.safe_load(tmp_path / "refs.pt")
    assert out["w"].shape == (2, g.style_dim) and out["style"] == "anime"
    assert (tmp_path / "figures" / "mini" / "embed_ref_anime.png").exists()
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 2
    with pytest.raises(ValueError, match="does not exist"):
        I.load_images([tmp_path / "missing.png"], 64)


@pytest.mark.parametrize("space", ["w", "wplus", "zplus"])
def test_other_latent_spaces_of_the_style_encoding_study(setup, space):
    """Appendix 6.3 (Fig. 15): the same optimisation in W, W+ or Z+; W+ / Z+ give one code per synthesis row."""
    g, x = setup["g"], setup["targets"]
    r = I.invert_v(x, g, setup["lpips"], iters=ITERS, batch=2, space=space)
    assert (r.lpips < r.lpips_start).all() and r.settings["space"] == space
    assert r.w.shape == ((2, g.style_dim) if space == "w" else (2, g.n_latent, g.style_dim))
    assert r.wplus(g.n_latent).shape == (2, g.n_latent, g.style_dim)
    with torch.no_grad():  # the stored codes reproduce the stored fit
        img = g.synthesis(r.wplus(g.n_latent), noise=r.noises)
    from facestyle.nn.perceptual import lpips_distance
    assert torch.allclose(lpips_distance(img, x, setup["lpips"], r.settings["size"]), r.lpips, atol=1e-4)
    with pytest.raises(ValueError, match="unknown latent space"):
        I.invert_v(x, g, setup["lpips"], iters=1, space="s")
