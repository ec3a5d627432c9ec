"""facestyle.method.stylize and .baselines against tiny random checkpoints written to tmp_path.

Random models say nothing about quality; these tests pin the latent bookkeeping of paper section 3 / 3.3:
which code drives which W+ row, which truncation is applied, and exact equalities of layer swapping.
"""
from __future__ import annotations

import os

import pytest
import torch

from facestyle import hub
from facestyle.config import get_profile
from facestyle.method import baselines as B
from facestyle.method.latents import scale_mix_layer, truncate
from facestyle.method.stylize import Stylizer, as_image_batch, resolve_mix_layer


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No registry override or user cache leaks in from the environment."""
    monkeypatch.setenv("FACESTYLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACESTYLE_OFFLINE", "1")
    for k in list(os.environ):
        if k.startswith("FACESTYLE_CKPT_"):
            monkeypatch.delenv(k)
    yield


@pytest.fixture(scope="module")
def ckpts(mini_ckpts):
    return mini_ckpts


def _stylizer(ckpts, style="anime", **kw):
    return Stylizer("mini", style, device="cpu", generator=ckpts["g2"], encoder=ckpts["w"],
                    base_generator=ckpts["g"], encoders={"wplus": ckpts["wplus"], "zplus": ckpts["zplus"]}, **kw)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ---- general (Fig. 2) ---------------------------------------------------------------------------------------

def test_general_shape_range_and_style_truncation(ckpts, images):
    st = _stylizer(ckpts, "anime")
    assert st.psi == 0.6  # appendix 6.1: anime 0.6
    assert _stylizer(ckpts, "cartoon").psi == 0.7 and _stylizer(ckpts, "impasto").psi == 0.9
    out, codes = st.general(images, return_codes=True)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    assert out.abs().max() < 10  # roughly [-1, 1] (random weights, no clamp)
    raw = st.content_codes(images)
    assert torch.allclose(raw, raw[:, :1].expand_as(raw))  # W encoder: one code on every row
    loaded_g = hub.load_generator(ckpts["g"], device="cpu")
    expect = truncate(raw, loaded_g.latent_avg.reshape(-1), 0.6)
    assert torch.allclose(codes, expect, atol=1e-6)
    g_prime = hub.load_generator(ckpts["g2"], device="cpu").g_ema
    with torch.no_grad():
        assert torch.allclose(out, g_prime.synthesis(expect, noise_mode="const"), atol=1e-5)  # decoded by G'
    assert torch.equal(out, st.general(images))  # const noise: deterministic
    # psi = 1 is no truncation
    assert torch.allclose(st.general(images, psi=1.0, return_codes=True)[1], raw)


def test_content_codes_of_the_three_encoders(ckpts, images):
    st = _stylizer(ckpts)
    n = st.n_latent
    for kind in ("w", "wplus", "zplus"):
        c = st.content_codes(images, kind)
        assert c.shape == (2, n, 128)
    assert not torch.allclose(st.content_codes(images, "wplus")[:, 0], st.content_codes(images, "wplus")[:, -1])
    with pytest.raises(ValueError, match="unknown encoder kind"):
        st.content_codes(images, "v")


def test_input_validation(ckpts):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        as_image_batch(torch.full((1, 3, 8, 8), 200.0))
    with pytest.raises(ValueError, match="shape"):
        as_image_batch(torch.zeros(1, 1, 8, 8))
    from PIL import Image
    x = as_image_batch([Image.new("L", (32, 32), 255), Image.new("RGB", (64, 64))], size=64)
    assert x.shape == (2, 3, 64, 64) and x[0].min() == 1 and x[1].max() == -1
    with pytest.raises(ValueError, match="unknown style"):
        Stylizer("mini", "watercolour")


def test_a_style_of_ones_own_with_an_explicit_generator(ckpts, images):
    st = _stylizer(ckpts, "watercolour")
    assert st.psi == 1.0 and st.general(images).shape == (2, 3, 64, 64)


def test_missing_checkpoint_is_reported_lazily(tmp_path):
    st = Stylizer("mini", "cartoon", device="cpu", generator=str(tmp_path / "nope.pt"))
    with pytest.raises(hub.CheckpointError):
        st.g_style


# ---- multimodal (section 3.3, Fig. 11) ----------------------------------------------------------------------

def test_mix_layer_units():
    assert resolve_mix_layer(6, 18) == 6 and resolve_mix_layer(6, 10) == scale_mix_layer(6, 10)
    assert resolve_mix_layer(7, 10, "native") == 7
    with pytest.raises(ValueError):
        resolve_mix_layer(11, 10, "native")
    with pytest.raises(ValueError):
        resolve_mix_layer(3, 10, "rows")


@pytest.mark.parametrize("layer", [3, 7])
def test_multimodal_rows(ckpts, images, layer):
    st = _stylizer(ckpts, "cartoon")
    out, codes = st.multimodal(images, n_samples=3, layer=layer, seed=5, units="native", return_codes=True)
    assert out.shape == (2, 3, 3, 64, 64) and codes.shape == (2, 3, st.n_latent, 128)
    content = st.truncate(st.content_codes(images))
    for b in range(2):
        for s in range(3):
            assert torch.equal(codes[b, s, :layer], content[b, :layer])  # rows < layer: the content code
    for s in range(1, 3):  # rows >= layer: a different random code per sample, the same across inputs
        assert not torch.allclose(codes[0, s, layer:], codes[0, 0, layer:])
    assert torch.equal(codes[0, :, layer:], codes[1, :, layer:])
    # the random rows are truncated G-mapped Z+ samples (section 3.3)
    assert torch.allclose(codes[0, :, layer:], st.random_codes(3, seed=5)[:, layer:])
    assert not torch.allclose(out[0, 0], out[0, 1])
    again = st.multimodal(images, n_samples=3, layer=layer, seed=5, units="native")
    assert torch.equal(out, again)


def test_multimodal_paper_units_and_extremes(ckpts, images):
    st = _stylizer(ckpts)
    _, codes = st.multimodal(images[:1], n_samples=2, layer=6, return_codes=True)  # paper units by default
    k = scale_mix_layer(6, st.n_latent)
    content = st.truncate(st.content_codes(images[:1]))
    assert torch.equal(codes[0, :, :k], content[:, :k].expand(2, -1, -1))
    # layer = all rows: nothing of the noise is left, the result is the general stylization
    out = st.multimodal(images[:1], n_samples=2, layer=st.n_latent, units="native")
    assert torch.allclose(out[0, 0], st.general(images[:1])[0], atol=1e-4)  # batch size changes rounding
    assert st.mix_layers() == list(get_profile("mini").mix_layers)


# ---- reference-guided (section 3.3, Fig. 12) ----------------------------------------------------------------

def test_reference_with_given_codes(ckpts, images):
    st = _stylizer(ckpts, "fantasy")
    ref = torch.randn(2, 128, generator=torch.Generator().manual_seed(3))
    layer = 4
    out, codes = st.reference(images, ref_codes=ref, layer=layer, units="native", return_codes=True)
    assert out.shape == (2, 2, 3, 64, 64)
    content = st.truncate(st.content_codes(images))
    for b in range(2):
        for r in range(2):
            assert torch.equal(codes[b, r, :layer], content[b, :layer])
            # rows >= layer: the reference W repeated into W+, untruncated
            assert torch.equal(codes[b, r, layer:], ref[r].expand(st.n_latent - layer, -1))
    with pytest.raises(ValueError, match="ref_codes"):
        st.reference(images)
    with pytest.raises(ValueError, match="reference codes"):
        st.reference(images, ref_codes=torch.zeros(2, 7))


def test_reference_from_images_uses_the_injected_inversion(ckpts, images):
    st = _stylizer(ckpts)
    calls = []
    fixed = torch.randn(1, 128, generator=torch.Generator().manual_seed(4))

    def fake_invert(x, g):
        calls.append((tuple(x.shape), g))
        return fixed

    _, codes = st.reference(images, ref_images=images[:1], layer=2, units="native", invert_fn=fake_invert,
                            return_codes=True)
    assert len(calls) == 1 and calls[0][0] == (1, 3, 64, 64) and calls[0][1] is st.g_style  # inverted into G'
    assert torch.equal(codes[:, 0, 2:], fixed.expand(2, st.n_latent - 2, -1))


# ---- baselines ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gens(ckpts):
    return hub.load_generator(ckpts["g"], device="cpu").g_ema, hub.load_generator(ckpts["g2"], device="cpu").g_ema


def _render(g, w):
    with torch.no_grad():
        return g.synthesis(w, noise_mode="const")


def test_key_resolution():
    assert B.key_resolution("style.1.weight") is None
    assert B.key_resolution("input.input") == 4 and B.key_resolution("conv1.conv.weight") == 4
    assert B.key_resolution("to_rgb1.bias") == 4
    assert B.key_resolution("convs.0.conv.weight") == 8 and B.key_resolution("convs.1.noise.weight") == 8
    assert B.key_resolution("convs.7.activate.bias") == 64 and B.key_resolution("to_rgbs.3.bias") == 64
    assert B.key_resolution("noises.noise_0") == 4 and B.key_resolution("noises.noise_2") == 8


def test_layer_swap_extremes_give_one_model_exactly(gens):
    g, gs = gens
    w = g.mapping(torch.randn(2, 128, generator=torch.Generator().manual_seed(0))).detach()
    all_low = B.layer_swap(g, gs, switch_res=128)  # every layer is "low": the style model's synthesis
    assert torch.equal(_render(all_low, w), _render(gs, w))
    sd = all_low.state_dict()
    assert all(torch.equal(sd[k], g.state_dict()[k]) for k in sd if k.startswith("style."))  # base mapping
    all_high = B.layer_swap(g, gs, switch_res=4)  # every layer "high": the base model
    assert torch.equal(_render(all_high, w), _render(g, w))
    assert torch.equal(_render(B.layer_swap(g, gs, 128, low_from="base"), w), _render(g, w))
    # inputs untouched
    assert not torch.equal(_render(g, w), _render(gs, w))


def test_layer_swap_equals_manual_merge(gens):
    g, gs = gens
    w = g.mapping(torch.randn(2, 128, generator=torch.Generator().manual_seed(1))).detach()
    sb, ss = g.state_dict(), gs.state_dict()
    manual = {}
    for k in sb:
        if k.startswith(("input.", "conv1.", "to_rgb1.")) or k in ("noises.noise_0",):
            manual[k] = ss[k]  # 4 px < 16: style
        elif k.startswith("convs."):
            manual[k] = ss[k] if int(k.split(".")[1]) < 2 else sb[k]  # convs 0, 1 at 8 px
        elif k.startswith("to_rgbs."):
            manual[k] = ss[k] if int(k.split(".")[1]) < 1 else sb[k]
        elif k.startswith("noises."):
            manual[k] = ss[k] if int(k.split("_")[1]) < 3 else sb[k]  # noise 1, 2 at 8 px
        else:
            manual[k] = sb[k]
    import copy
    ref = copy.deepcopy(g)
    ref.load_state_dict(manual)
    swapped = B.layer_swap(g, gs, switch_res=16)
    assert torch.equal(_render(swapped, w), _render(ref, w))
    merged = B.layer_swap(sb, ss, switch_res=16)  # state dicts in, state dict out
    assert all(torch.equal(merged[k], manual[k]) for k in manual)


def test_layer_swap_blend(gens):
    g, gs = gens
    assert B.high_weight(8, 16, None) == 0.0 and B.high_weight(16, 16, None) == 1.0
    assert 0 < B.high_weight(8, 16, 1.0) < 0.5 < B.high_weight(16, 16, 1.0) < 1
    assert abs(B.high_weight(8, 16, 1.0) + B.high_weight(16, 16, 1.0) - 1) < 1e-9  # centred between levels
    sd = B.layer_swap(g.state_dict(), gs.state_dict(), 16, blend_width=1.0)
    a = B.high_weight(32, 16, 1.0)
    k = "convs.4.conv.weight"  # 32 px
    assert torch.allclose(sd[k], (1 - a) * gs.state_dict()[k] + a * g.state_dict()[k], atol=1e-6)
    sharp = B.layer_swap(g.state_dict(), gs.state_dict(), 16, blend_width=1e-4)
    hard = B.layer_swap(g.state_dict(), gs.state_dict(), 16)
    assert all(torch.allclose(sharp[k], hard[k]) for k in hard)
    with pytest.raises(ValueError, match="low_from"):
        B.layer_swap(g, gs, 16, low_from="left")


def test_ui2i_pipeline(gens):
    g, gs = gens
    content = g.mapping(torch.randn(2, 128, generator=torch.Generator().manual_seed(2))).detach()
    refs = g.mapping(torch.randn(3, 128, generator=torch.Generator().manual_seed(3))).detach()
    out = B.ui2i_pipeline(g, gs, content_codes=content, ref_codes=refs, switch_res=32, layer=6, units="native")
    assert out.shape == (2, 3, 3, 64, 64) and torch.isfinite(out).all()
    # the reference really drives rows >= layer, fed as W (no second pass through the mapping)
    swapped = B.ui2i_generator(g, gs, 32)
    codes = torch.cat([content[1:2].unsqueeze(1).expand(1, 6, -1), refs[2:3].unsqueeze(1).expand(1, 4, -1)], 1)
    assert torch.allclose(out[1, 2], _render(swapped, codes)[0], atol=1e-5)
    assert not torch.allclose(out[0, 0], out[0, 1])
    # low resolutions from G, high from G*; mapping is G's
    sd = swapped.state_dict()
    assert torch.equal(sd["conv1.conv.weight"], g.state_dict()["conv1.conv.weight"])
    assert torch.equal(sd["convs.7.conv.weight"], gs.state_dict()["convs.7.conv.weight"])
    assert torch.equal(sd["style.1.weight"], g.state_dict()["style.1.weight"])
    # multimodal variant (no references) and inversion through an injected function
    multi = B.ui2i_pipeline(g, gs, content_codes=content, n_samples=2, seed=0)
    assert multi.shape == (2, 2, 3, 64, 64)
    seen = []

    def fake_invert(x, gen):
        seen.append(gen)
        return content[: len(x)]

    B.ui2i_pipeline(g, gs, images=torch.zeros(2, 3, 64, 64), ref_images=torch.zeros(1, 3, 64, 64),
                    invert_fn=fake_invert)
    assert seen[0] is g and seen[1] is gs  # content into G, reference into G*


def test_reference_through_the_real_inversion_and_its_cache(ckpts, images, tmp_path):
    """The default path: facestyle.method.invert's V-space inversion (2 steps here) behind its disk cache."""
    pytest.importorskip("lpips")
    from facestyle.method.stylize import make_invert_fn

    st = _stylizer(ckpts)
    fn = make_invert_fn("mini", "cpu", cache_dir=tmp_path / "emb", iters=2, batch=2)
    out, codes = st.reference(images, ref_images=images[:1], layer=3, units="native", invert_fn=fn,
                              return_codes=True)
    assert out.shape == (2, 1, 3, 64, 64) and torch.isfinite(out).all()
    w = codes[0, 0, 3]
    assert torch.equal(codes[:, 0, 3:], w.expand(2, st.n_latent - 3, -1))
    assert any((tmp_path / "emb").rglob("*.pt"))  # stored for reuse
    assert fn.last_call == {"from_cache": 0, "inverted": 1}
    again = st.reference(images, ref_images=images[:1], layer=3, units="native", invert_fn=fn, return_codes=True)[1]
    assert torch.equal(again, codes) and fn.last_call == {"from_cache": 1, "inverted": 0}  # served from the cache


def test_explorer_renders_every_mode_and_builds_its_widgets(ckpts, tmp_path):
    from facestyle.explorer import Explorer

    ex = Explorer("mini", "cpu", n_inputs=2, n_refs=2, invert_iters=2, cache_dir=tmp_path,
                  generators={s: ckpts["g2"] for s in ("cartoon", "anime")})
    ex._stylizers["cartoon"] = _stylizer(ckpts, "cartoon")  # the stand-in encoders of this module
    ex._stylizers["anime"] = _stylizer(ckpts, "anime")
    general = ex.render("cartoon", "general")
    assert general.shape[0] > general.shape[1] / 2 and general.dtype.name == "uint8"  # 2 rows of 2 images
    multi = ex.render("cartoon", "multimodal", layer=3, n_samples=3)
    assert multi.shape[0] > general.shape[0]  # inputs + 3 sample rows
    ref = ex.render("anime", "reference", layer=3, reference=1)
    assert ref.shape == general.shape
    with pytest.raises(ValueError, match="unknown mode"):
        ex.render("cartoon", "sketch")
    box = ex.widget("cartoon")
    image = box.children[-1]
    before = image.value
    box.children[1].value = "multimodal"  # the mode buttons redraw the image
    assert image.value != before and image.value[:4] == b"\x89PNG"
