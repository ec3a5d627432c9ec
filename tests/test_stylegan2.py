"""StyleGAN2 generator / discriminator: checkpoint compatibility with rosinality/stylegan2-pytorch, golden
outputs recorded from that implementation, the two modulated-convolution paths, and the latent operations.

``tests/golden/stylegan2_golden.json`` holds only seeds and numbers recorded from the reference (see its
``recording`` entry); the weights are rebuilt here with the same key-seeded filler.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from facestyle.config import MINI_CHANNELS
from facestyle.method import latents as L
from facestyle.nn.ops import make_kernel, upfirdn2d
from facestyle.nn.stylegan2 import Discriminator, Generator, ModulatedConv2d, set_modconv_impl
from helpers import fill_state_dict

GOLDEN = json.loads((Path(__file__).parent / "golden" / "stylegan2_golden.json").read_text())
TOL = 1e-4


def sg2_fill(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Key-seeded weights for any rosinality-layout StyleGAN2 module (same policy the goldens were recorded with).

    Unit-variance weights in *effective* units (stored value / lr_mul), small biases and noise strengths, and
    random (asymmetric) blur kernels so that a flipped-kernel convention would show up in the goldens.
    """

    def scale(key: str, t: torch.Tensor) -> float:
        if key.endswith("kernel"):
            return 0.25
        if key.startswith("noises."):
            return 1.0
        if key.endswith("noise.weight"):
            return 0.1
        owner = model.get_submodule(key.rsplit(".", 1)[0])
        lr_mul = getattr(owner, "lr_mul", 1.0)
        return (0.1 if key.endswith("bias") else 1.0) / lr_mul

    return fill_state_dict(model, seed, scale)


def golden_inputs(cfg: dict, n_latent: int, num_layers: int) -> dict:
    """Inputs drawn in the same order as the recording script."""
    gen = torch.Generator().manual_seed(cfg["input_seed"])
    b, dim, size = cfg["batch"], cfg["style_dim"], cfg["size"]
    out = {
        "z": torch.randn(b, dim, generator=gen),
        "z2": torch.randn(b, dim, generator=gen),
        "noise": [torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), generator=gen)
                  for i in range(num_layers)],
        "wplus": torch.randn(b, n_latent, dim, generator=gen),
        "images": torch.randn(cfg["d_batch"], 3, size, size, generator=gen),
    }
    return out


def assert_matches(rec: dict, t: torch.Tensor) -> float:
    assert list(t.shape) == rec["shape"]
    flat = t.detach().flatten()
    sample = flat[:: rec["stride"]]
    ref = torch.tensor(rec["values"], dtype=torch.float32)
    assert sample.shape == ref.shape
    diff = max((sample - ref).abs().max().item(), abs(flat.mean().item() - rec["mean"]),
               abs(flat.std().item() - rec["std"]))
    assert diff <= TOL, f"max abs diff {diff:.3g} > {TOL}"
    print(f"golden {list(t.shape)}: max abs diff to rosinality {diff:.3g}")  # shown by pytest -s
    return diff


def build_pair(cfg: dict, impl: str = "auto"):
    kw = {"channels": {int(k): v for k, v in cfg["channels"].items()}} if cfg.get("channels") else {}
    g = Generator(cfg["size"], cfg["style_dim"], cfg["n_mlp"], channel_multiplier=cfg["channel_multiplier"],
                  modconv_impl=impl, **kw)
    d = Discriminator(cfg["size"], channel_multiplier=cfg["channel_multiplier"], **kw)
    return sg2_fill(g, cfg["weight_seed"]).eval(), sg2_fill(d, cfg["weight_seed"] + 1).eval()


# ----------------------------------------------------------------------------------------------------------------
# checkpoint layout
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(GOLDEN["state_dicts"]))
def test_state_dict_keys_and_shapes_match_reference(name):
    rec = GOLDEN["state_dicts"][name]
    with torch.device("meta"):
        g = Generator(rec["size"], 512, 8, channel_multiplier=rec["channel_multiplier"])
        d = Discriminator(rec["size"], channel_multiplier=rec["channel_multiplier"])
    for model, ref in ((g, rec["generator"]), (d, rec["discriminator"])):
        got = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert list(got) == list(ref), set(got) ^ set(ref)
        assert got == ref


def test_official_1024_parameter_counts():
    with torch.device("meta"):
        g = Generator(1024)
        d = Discriminator(1024)
    n_g = sum(p.numel() for p in g.parameters())
    n_d = sum(p.numel() for p in d.parameters())
    assert round(n_g / 1e6, 2) == 30.37
    assert round(n_d / 1e6, 1) == 29.0
    assert n_g == GOLDEN["state_dicts"]["1024_cm2"]["generator_params"]
    assert (g.log_size, g.num_layers, g.n_latent) == (10, 17, 18)


def test_mini_profile_layout():
    g = Generator(64, 128, 4, channels=MINI_CHANNELS)
    assert g.n_latent == 10 and g.num_layers == 9
    assert g.conv1.conv.weight.shape == (1, 128, 128, 3, 3)
    assert g.convs[-1].conv.weight.shape == (1, 32, 32, 3, 3)
    assert [k for k in g.state_dict() if k.startswith("style.")] == [
        f"style.{i}.{p}" for i in range(1, 5) for p in ("weight", "bias")]


# ----------------------------------------------------------------------------------------------------------------
# golden equivalence with the reference implementation
# ----------------------------------------------------------------------------------------------------------------

# The reference runs the grouped algorithm; the small config checks both paths, the 256 px one the shared path.
CASES = [("mini_64", "auto"), ("mini_64", "grouped"), ("official_256_cm2", "shared")]


@pytest.mark.parametrize("config,impl", CASES)
def test_golden_outputs(config, impl):
    cfg = GOLDEN["configs"][config]
    g, d = build_pair(cfg, impl)
    x = golden_inputs(cfg, g.n_latent, g.num_layers)
    rec = cfg["outputs"]
    with torch.no_grad():
        w_avg = g.mean_latent(cfg["mean_n"], generator=torch.Generator().manual_seed(cfg["mean_seed"]))
        assert_matches(rec["mean_latent"], w_avg)
        img, lat = g([x["z"]], truncation=0.7, truncation_latent=w_avg, noise=x["noise"], return_latents=True)
        assert_matches(rec["a_truncated_z"], img)
        assert lat.shape == (cfg["batch"], g.n_latent, cfg["style_dim"])
        img, _ = g([x["z"], x["z2"]], inject_index=cfg["inject_index"], randomize_noise=False)
        assert_matches(rec["b_mixing"], img)
        img, _ = g([x["wplus"]], input_is_latent=True, noise=x["noise"])
        assert_matches(rec["c_wplus"], img)
        assert_matches(rec["d_discriminator"], d(x["images"]))


def test_golden_explicit_api_agrees_with_forward():
    cfg = GOLDEN["configs"]["mini_64"]
    g, _ = build_pair(cfg)
    x = golden_inputs(cfg, g.n_latent, g.num_layers)
    with torch.no_grad():
        w_avg = g.mean_latent(cfg["mean_n"], generator=torch.Generator().manual_seed(cfg["mean_seed"]))
        w = L.truncate(g.mapping(x["z"]), w_avg, 0.7)
        assert_matches(cfg["outputs"]["a_truncated_z"], g.synthesis(w, noise=x["noise"]))
        w1, w2 = g.mapping(x["z"]), g.mapping(x["z2"])
        ws = L.mix(L.to_wplus(w1, g.n_latent), w2, cfg["inject_index"])
        assert_matches(cfg["outputs"]["b_mixing"], g.synthesis(ws, noise_mode="const"))


# ----------------------------------------------------------------------------------------------------------------
# ops
# ----------------------------------------------------------------------------------------------------------------

def _upfirdn_naive(x, k, up, down, pad):
    """Literal definition: zero insertion, padding / cropping, true convolution, subsampling."""
    b, c, h, w = x.shape
    z = torch.zeros(b, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    p0, p1 = pad
    z = torch.nn.functional.pad(z, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    z = z[:, :, max(-p0, 0): z.shape[2] - max(-p1, 0), max(-p0, 0): z.shape[3] - max(-p1, 0)]
    kh, kw = k.shape
    oh, ow = z.shape[2] - kh + 1, z.shape[3] - kw + 1
    out = torch.zeros(b, c, oh, ow)
    for i in range(kh):
        for j in range(kw):
            out += k[kh - 1 - i, kw - 1 - j] * z[:, :, i:i + oh, j:j + ow]
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (-1, 3)),
                                         (1, 1, (-1, 0))])
def test_upfirdn2d_matches_definition(up, down, pad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 7, generator=gen)
    k = torch.randn(4, 3, generator=gen)[:3, :3]  # asymmetric on purpose
    out = upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = _upfirdn_naive(x, k, up, down, pad)
    assert out.shape == ref.shape
    assert out.shape[-1] == (7 * up + pad[0] + pad[1] - 3 + down) // down
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_make_kernel():
    k = make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4) and abs(k.sum().item() - 1) < 1e-6 and torch.equal(k, k.t())


# ----------------------------------------------------------------------------------------------------------------
# modulated convolution: grouped (reference) vs shared-weight path
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["plain", "upsample", "downsample", "torgb"])
def test_modconv_paths_equivalent_forward_and_grad(kind):
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 1 if kind == "torgb" else 3, 8, demodulate=kind != "torgb",
                           upsample=kind == "upsample", downsample=kind == "downsample")
    x = torch.randn(3, 6, 8, 8)
    s = torch.randn(3, 8)
    results = {}
    for impl in ("grouped", "shared"):
        conv.impl = impl
        conv.zero_grad()
        xi, si = x.clone().requires_grad_(), s.clone().requires_grad_()
        out = conv(xi, si)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results[impl] = (out.detach(), xi.grad, si.grad, conv.weight.grad.clone(), conv.modulation.weight.grad.clone())
    for a, b in zip(results["grouped"], results["shared"]):
        torch.testing.assert_close(a, b, atol=TOL, rtol=1e-4)


def test_generator_paths_equivalent_forward_and_grad():
    cfg = GOLDEN["configs"]["mini_64"]
    g, _ = build_pair(cfg)
    x = golden_inputs(cfg, g.n_latent, g.num_layers)
    outs = {}
    for impl in ("grouped", "shared"):
        set_modconv_impl(g, impl)
        g.zero_grad()
        img = g.synthesis(g.mapping(x["z"]), noise=x["noise"])
        img.square().mean().backward()
        outs[impl] = (img.detach(), g.convs[2].conv.weight.grad.clone(), g.style[1].weight.grad.clone())
    for a, b in zip(outs["grouped"], outs["shared"]):
        torch.testing.assert_close(a, b, atol=TOL, rtol=1e-3)
    with pytest.raises(ValueError, match="grouped"):
        set_modconv_impl(g, "fast")


# ----------------------------------------------------------------------------------------------------------------
# latent operations
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mini_g():
    return sg2_fill(Generator(64, 128, 4, channels=MINI_CHANNELS), 7).eval()


@pytest.mark.parametrize("size,n", [(32, 8), (64, 10), (256, 14), (1024, 18)])
def test_n_latent_per_size(size, n):
    assert L.n_latent_for_size(size) == n
    with torch.device("meta"):
        assert Generator(size, 64, 1).n_latent == n


def test_truncation_moves_toward_mean():
    w_avg = torch.randn(1, 16)
    w = torch.randn(5, 16)
    assert torch.equal(L.truncate(w, w_avg, 1.0), w)
    torch.testing.assert_close(L.truncate(w, w_avg, 0.0), w_avg.expand(5, -1))
    d1 = (L.truncate(w, w_avg, 0.7) - w_avg).norm(dim=1)
    torch.testing.assert_close(d1, 0.7 * (w - w_avg).norm(dim=1))
    wp = L.to_wplus(w, 10)
    torch.testing.assert_close(L.truncate(wp, w_avg, 0.5), L.to_wplus(L.truncate(w, w_avg, 0.5), 10))


def test_mix_layer_semantics():
    a = torch.zeros(2, 10, 4)
    b = torch.ones(1, 10, 4)
    m = L.mix(a, b, 3)
    assert m.shape == (2, 10, 4)
    assert m[:, :3].eq(0).all() and m[:, 3:].eq(1).all()
    assert L.mix(a, b, 0).eq(1).all() and L.mix(a, b, 10).eq(0).all()
    assert L.mix(torch.zeros(2, 4), b, 4)[:, :4].eq(0).all()
    with pytest.raises(ValueError):
        L.mix(a, b, 11)


def test_mix_matches_generator_inject_index(mini_g):
    g = mini_g
    gen = torch.Generator().manual_seed(3)
    z1, z2 = L.sample_z(2, 128, gen), L.sample_z(2, 128, gen)
    with torch.no_grad():
        _, lat = g([z1, z2], inject_index=4, return_latents=True, randomize_noise=False)
        torch.testing.assert_close(lat, L.mix(g.mapping(z1), L.to_wplus(g.mapping(z2), g.n_latent), 4))


def test_scale_mix_layer():
    assert [L.scale_mix_layer(l, 18) for l in (3, 6, 9, 12)] == [3, 6, 9, 12]
    small = [L.scale_mix_layer(l, 10) for l in (3, 6, 9, 12)]
    assert small == sorted(small) and all(1 <= v <= 9 for v in small)
    assert L.scale_mix_layer(0, 10) == 0 and L.scale_mix_layer(18, 10) == 10


def test_w_equals_wplus_with_equal_rows(mini_g):
    g = mini_g
    w = g.mapping(L.sample_z(2, 128, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        torch.testing.assert_close(g.synthesis(w, noise_mode="const"),
                                   g.synthesis(L.to_wplus(w, g.n_latent), noise_mode="const"))


def test_zplus_mapping_is_rowwise(mini_g):
    g = mini_g
    zp = L.sample_zplus(2, g.n_latent, 128, torch.Generator().manual_seed(2))
    assert zp.shape == (2, g.n_latent, 128)
    with torch.no_grad():
        wp = g.mapping(zp)
        rows = torch.stack([g.mapping(zp[:, r]) for r in range(g.n_latent)], 1)
    torch.testing.assert_close(wp, rows)
    with pytest.raises(ValueError):
        g.mapping(torch.randn(2, 64))


def test_noise_modes(mini_g):
    g = mini_g
    w = g.mapping(L.sample_z(1, 128, torch.Generator().manual_seed(4))).detach()
    with torch.no_grad():
        c1, c2 = g.synthesis(w, noise_mode="const"), g.synthesis(w, noise_mode="const")
        z1, z2 = g.synthesis(w, noise_mode="zero"), g.synthesis(w, noise_mode="zero")
        r1, r2 = g.synthesis(w), g.synthesis(w)
        explicit = g.synthesis(w, noise=g.const_noise())
        zeros = g.synthesis(w, noise=[torch.zeros_like(n) for n in g.make_noise()])
    assert torch.equal(c1, c2) and torch.equal(z1, z2) and torch.equal(explicit, c1) and torch.equal(zeros, z1)
    assert not torch.equal(r1, r2) and not torch.equal(c1, z1)
    a = g.make_noise(torch.Generator().manual_seed(0))
    b = g.make_noise(torch.Generator().manual_seed(0))
    assert len(a) == g.num_layers and all(torch.equal(x, y) for x, y in zip(a, b))
    assert [n.shape[-1] for n in a] == [4, 8, 8, 16, 16, 32, 32, 64, 64]
    with pytest.raises(ValueError, match="noise_mode"):
        g.synthesis(w, noise_mode="fixed")


def test_mean_latent_seeded(mini_g):
    a = mini_g.mean_latent(64, generator=torch.Generator().manual_seed(0))
    b = mini_g.mean_latent(64, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 128) and torch.equal(a, b) and not a.requires_grad


def test_truncation_without_latent_is_a_clear_error(mini_g):
    with pytest.raises(ValueError, match="truncation_latent"):
        mini_g([torch.randn(1, 128)], truncation=0.5)


def test_discriminator_shapes():
    d = sg2_fill(Discriminator(64, channels=MINI_CHANNELS), 0)
    with torch.no_grad():
        for b in (1, 2, 4, 6, 8):
            assert d(torch.randn(b, 3, 64, 64)).shape == (b, 1)
    assert math.isclose(d.convs[0][0].scale, 1 / math.sqrt(3))
