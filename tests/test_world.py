"""The mini world: determinism, ranges, factor effects, distributions, style sets, speed, figure."""
from __future__ import annotations

import time

import pytest
import torch

from facestyle import world
from facestyle.config import PAPER_STYLE_SET_SIZES, STYLES
from facestyle.world import (
    DOMAINS,
    FACTORS,
    STYLE_BIAS,
    base_content,
    content_from_z,
    domain_batch,
    factor_index,
    factor_names,
    render,
    sample_content,
    style_dataset,
    vary_factor,
)

# Factors that carry content a stylization must keep: they must show in every style, not just in "real".
CONTENT_CARRYING = ("glasses", "beard", "hair_style", "hair_length", "hair_color", "earrings", "smile", "yaw",
                    "skin_tone", "tilt", "eye_color", "background")


def test_factor_table():
    assert 15 <= len(FACTORS) <= 20
    assert len(set(factor_names())) == len(FACTORS)
    assert DOMAINS == ("real",) + tuple(STYLES)
    for f in FACTORS:
        assert f.kind in ("continuous", "categorical")
        if f.kind == "categorical":
            assert len(f.values) == len(f.real_probs) >= 2
            assert abs(sum(f.real_probs) - 1) < 1e-9
        else:
            assert f.values is None and f.real_probs is None


def test_sample_content_ranges_and_determinism():
    c = sample_content(500, seed=3)
    assert c.shape == (500, len(FACTORS)) and c.dtype == torch.float32
    assert torch.equal(c, sample_content(500, seed=3))
    assert not torch.equal(c, sample_content(500, seed=4))
    for i, f in enumerate(FACTORS):
        col = c[:, i]
        if f.kind == "continuous":
            assert col.min() >= 0 and col.max() <= 1
        else:
            assert torch.equal(col, col.round()) and col.min() >= 0 and col.max() <= len(f.values) - 1
    g = torch.Generator().manual_seed(3)
    assert torch.equal(sample_content(500, generator=g), c)


def test_content_from_z_matches_real_probs():
    z = torch.randn(20000, 32, generator=torch.Generator().manual_seed(0))
    c = content_from_z(z)
    assert torch.equal(c, content_from_z(z))
    for i, f in enumerate(FACTORS):
        if f.kind == "categorical":
            freq = torch.bincount(c[:, i].long(), minlength=len(f.values)).float() / len(c)
            assert (freq - torch.tensor(f.real_probs)).abs().max() < 0.02, (f.name, freq, f.real_probs)
        else:
            assert abs(c[:, i].mean().item() - 0.5) < 0.02 and abs(c[:, i].std().item() - 0.2887) < 0.02
    with pytest.raises(ValueError):
        content_from_z(torch.randn(4, len(FACTORS) - 1))


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_render_shape_range_sizes(size):
    c = sample_content(3, seed=1)
    for d in DOMAINS:
        x = render(c, d, size=size, seed=0)
        assert x.shape == (3, 3, size, size) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1 and torch.isfinite(x).all()
        assert x.std() > 0.1  # not blank


def test_render_deterministic_and_seeded():
    c = sample_content(20, seed=2)
    for d in DOMAINS:
        a = render(c, d, size=48, seed=5)
        assert torch.equal(a, render(c, d, size=48, seed=5))
        # chunking and worker threads do not change the result
        assert torch.equal(a, render(c, d, size=48, seed=5, workers=1))
    noisy = [d for d in DOMAINS if d in ("real", "fantasy", "impasto")]
    for d in noisy:  # texture noise depends on the seed
        assert not torch.equal(render(c, d, size=48, seed=5), render(c, d, size=48, seed=6))


def test_render_independent_of_batch_composition():
    """Image i depends on (content i, seed, i) only: appending rows leaves the first images unchanged."""
    c = sample_content(10, seed=7)
    for d in ("real", "impasto"):
        a = render(c[:4], d, size=40, seed=1)
        b = render(c, d, size=40, seed=1)
        assert torch.equal(a, b[:4])


def _factor_pairs(f, base):
    i = factor_index(f.name)
    if f.kind == "continuous":
        return [(0.0, 1.0)]
    b = int(base[0, i])
    return [(b, k) for k in range(len(f.values)) if k != b]


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_factor_changes_the_image(domain):
    """Vary one factor at a time from a neutral portrait: the image must change visibly (some pixels by a lot)."""
    base = base_content()
    names = [f.name for f in FACTORS] if domain == "real" else list(CONTENT_CARRYING) + [
        "face_width", "eye_size", "light", "nose_size", "mouth_width", "brow_thickness", "jaw", "eye_spacing"]
    for f in FACTORS:
        if f.name not in names:
            continue
        for p, q in _factor_pairs(f, base):
            x = render(vary_factor(f.name, [p], base), domain, size=64, seed=0)
            y = render(vary_factor(f.name, [q], base), domain, size=64, seed=0)
            diff = (x - y).abs()
            assert diff.mean() > 2e-4 and (diff.max() > 0.2 or diff.mean() > 0.02), (domain, f.name, p, q, diff.mean().item(),
                                                            diff.max().item())


def test_style_domains_differ_from_real():
    c = sample_content(8, seed=0)
    real = render(c, "real", size=64)
    for s in STYLES:
        assert (render(c, s, size=64) - real).abs().mean() > 0.05, s


@pytest.mark.parametrize("style", STYLES)
def test_style_dataset_sizes_and_biases(style):
    imgs, content = style_dataset(style, size=32)
    n = PAPER_STYLE_SET_SIZES[style]
    assert imgs.shape == (n, 3, 32, 32) and content.shape == (n, len(FACTORS))
    assert imgs.min() >= -1 and imgs.max() <= 1
    imgs2, content2 = style_dataset(style, size=32)
    assert torch.equal(content, content2) and torch.equal(imgs, imgs2)
    for name, spec in STYLE_BIAS[style].items():
        col = content[:, factor_index(name)]
        if "probs" in spec:
            probs = torch.tensor(spec["probs"])
            freq = torch.bincount(col.long(), minlength=len(probs)).float() / n
            assert (freq[probs == 0] == 0).all(), (style, name, freq)  # impossible values never appear
            assert (freq - probs).abs().max() < 0.12, (style, name, freq, probs)
        else:
            lo, hi = spec["range"]
            assert col.min() >= lo - 1e-6 and col.max() <= hi + 1e-6


def test_documented_biases():
    _, cartoon = style_dataset("cartoon", size=16)
    assert (cartoon[:, factor_index("glasses")] == 0).all()  # no glasses in the cartoon set
    _, anime = style_dataset("anime", size=16)
    assert anime[:, factor_index("beard")].mean() < 0.08  # few beards in the anime set
    real = sample_content(2000, seed=0)
    assert real[:, factor_index("beard")].mean() > 0.15


def test_domain_batch():
    x, c, d = domain_batch(24, size=32, seed=0)
    assert x.shape == (24, 3, 32, 32) and c.shape == (24, len(FACTORS)) and d.shape == (24,)
    assert d.min() >= 0 and d.max() < len(DOMAINS)
    x2, c2, d2 = domain_batch(24, size=32, seed=0)
    assert torch.equal(x, x2) and torch.equal(d, d2)


def test_render_speed():
    """10k portraits at 64 px must take <= 60 s on a 2-core CPU; CI checks 2k in < 12 s (the same rate)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        c = sample_content(2000, seed=0)
        render(c[:8], "real")
        t = time.perf_counter()
        render(c, "real", size=64, seed=0)
        dt = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
    assert dt < 12.0, f"rendering 2000 portraits took {dt:.1f} s"


def test_six_domains_figure(tmp_path):
    from facestyle.world.figures import six_domains_figure

    out = six_domains_figure(n=2, seed=0, size=32, path=tmp_path / "six.png")
    assert out == tmp_path / "six.png" and out.stat().st_size > 1000
    assert not list(tmp_path.glob(".*.tmp"))


def test_texture_free_real_renders_depend_on_content_only():
    c = world.sample_content(3, seed=4)
    a, b = world.render(c, "real", seed=1, texture=False), world.render(c, "real", seed=2, texture=False)
    assert torch.equal(a, b)
    textured = world.render(c, "real", seed=1)
    assert 0.005 < (textured - a).abs().mean() < 0.05  # grain and blotches only: same portrait
