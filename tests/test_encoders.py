"""pSp encoders (facestyle.nn.encoders): key compatibility and numerical equality with pixel2style2pixel,
mini-profile encoders, Z+ -> W+ mapping (paper Eq. 4) and PSP's latent_avg handling.

The golden file tests/golden/psp_golden.json was produced once by running the reference repository's
encoders (eladrich/pixel2style2pixel, commit recorded in the file) on CPU, outside this repository, with the
weights and input defined by ``psp_weight_scale`` / ``make_input`` below and tests.helpers.fill_state_dict.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from facestyle.config import PROFILES
from facestyle.nn import encoders as E
from tests.helpers import fill_state_dict

GOLDEN = Path(__file__).parent / "golden" / "psp_golden.json"
WEIGHT_SEED_GRADUAL = 1234
WEIGHT_SEED_W = 4321
INPUT_SEED = 7
SAMPLE_STRIDE = 7
TOL = 1e-4  # float32, CPU


def psp_weight_scale(key: str, t: torch.Tensor) -> float:
    """Per-key scale for fill_state_dict that keeps activations O(1) through the 24 IR-SE units, so the
    golden comparison at 1e-4 absolute is meaningful (values far above 1 would make it a relative 1e-7 test).

    Convs: 1/sqrt(fan_in); EqualLinear weights: 1 (they rescale at run time); BatchNorm gains 1 except the
    last BN of each residual branch (0.25, so residual sums do not grow unit after unit); everything else
    (biases, BN shifts and means, PReLU slopes) 0.1.
    """
    if t.dim() >= 2:
        return 1.0 if key.endswith("linear.weight") else 1.0 / math.sqrt(t[0].numel())
    if key.endswith("res_layer.4.weight"):
        return 0.25
    if key.endswith(("res_layer.0.weight", "shortcut_layer.1.weight", "input_layer.1.weight")):
        return 1.0
    return 0.1


def make_input(batch: int = 1, size: int = 256) -> torch.Tensor:
    """Uniform [-1, 1) images from a fixed CPU generator (the range pSp's transforms produce)."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def gradual50():
    """The ffhq-profile W+ encoder (IR-SE50, 18 styles), built once: 267 M parameters take seconds to init."""
    return E.GradualStyleEncoder(50, "ir_se", n_styles=18).eval()


@pytest.fixture(scope="module")
def w50():
    return E.BackboneEncoderW(50, "ir_se").eval()


def _key_shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _mini_cfg():
    return PROFILES["mini"].encoder


def _mini_dims():
    g = PROFILES["mini"].generator
    return int(math.log2(g.size)) * 2 - 2, g.style_dim  # n_latent 10 and style_dim 128 at 64 px


# ----------------------------------------------------------------------------------------------------------
# Key / shape identity with the reference (exact, from the recorded key list)


def test_gradual_encoder_keys_match_reference(golden, gradual50):
    ref = golden["GradualStyleEncoder"]
    enc = gradual50
    assert _key_shapes(enc) == dict((k, s) for k, s in ref["state_dict"])
    assert list(enc.state_dict()) == [k for k, _ in ref["state_dict"]]  # same order too
    assert E.count_params(enc) == ref["num_params"]
    assert enc.taps == (6, 20, 23) and (enc.coarse_ind, enc.middle_ind) == (3, 7)


def test_w_encoder_keys_match_reference(golden, w50):
    ref = golden["BackboneEncoderUsingLastLayerIntoW"]
    enc = w50
    assert _key_shapes(enc) == dict((k, s) for k, s in ref["state_dict"])
    assert E.count_params(enc) == ref["num_params"]


def test_psp_state_dict_is_encoder_plus_decoder(golden):
    """PSP's state dict = pSp checkpoint layout: encoder.* + decoder.* only (latent_avg is stored beside)."""
    with torch.device("meta"):  # keys and shapes only: skip initialising 267 M parameters
        dec = nn.Linear(2, 2)  # stand-in decoder: only the key prefixes matter here
        psp = E.PSP(E.GradualStyleEncoder(50, "ir_se", n_styles=18), dec, latent_avg=torch.zeros(18, 512))
    keys = list(psp.state_dict())
    enc_keys = ["encoder." + k for k, _ in golden["GradualStyleEncoder"]["state_dict"]]
    assert keys == enc_keys + ["decoder.weight", "decoder.bias"]
    # A pSp-layout checkpoint {state_dict, latent_avg, opts} round-trips with strict=True (mini size).
    n_styles, dim = _mini_dims()
    make = lambda: E.PSP(E.build_encoder("wplus", _mini_cfg(), n_styles, dim), ToyGenerator(dim, n_styles))
    src = make()
    src.set_latent_avg(torch.randn(n_styles, dim))
    ckpt = src.psp_checkpoint({"n_styles": n_styles})
    dst = make().load_psp_checkpoint(ckpt)
    assert torch.equal(dst.latent_avg, ckpt["latent_avg"])
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in ckpt["state_dict"].items())


def test_ir_mode_and_deeper_tables_build():
    with torch.device("meta"):
        ir = E.GradualStyleEncoder(50, "ir", n_styles=18)
        se_keys = set(_key_shapes(E.GradualStyleEncoder(50, "ir_se", n_styles=18)))
    assert set(_key_shapes(ir)) == {k for k in se_keys if ".res_layer.5." not in k}
    assert len(E.unit_specs(E.BLOCK_TABLES[100])) == 49 and len(E.unit_specs(E.BLOCK_TABLES[152])) == 50
    with pytest.raises(ValueError):
        E.GradualStyleEncoder(34)


# ----------------------------------------------------------------------------------------------------------
# Golden numerical equivalence with the reference implementation (float32, eval mode)


def _check_golden(enc, entry):
    enc.eval()
    fill_state_dict(enc, entry["weight_seed"], psp_weight_scale)
    with torch.no_grad():
        out = enc(make_input())
    assert list(out.shape) == entry["output_shape"]
    flat = out.flatten()
    sample = torch.tensor(entry["sample"])
    diff = (flat[:: SAMPLE_STRIDE] - sample).abs().max().item()
    assert diff <= TOL, f"max abs diff to reference {diff:.3g} > {TOL}"
    assert abs(flat.mean().item() - entry["mean"]) <= TOL
    assert abs(flat.std().item() - entry["std"]) <= TOL
    return diff


@pytest.mark.slow
def test_gradual_encoder_golden(golden, gradual50):
    """IR-SE50 GradualStyleEncoder, 18 styles, 256 px input (267 M parameters; a few seconds on CPU)."""
    entry = golden["GradualStyleEncoder"]
    assert entry["max_abs_diff_at_generation"] <= TOL
    diff = _check_golden(gradual50, entry)
    print(f"GradualStyleEncoder IR-SE50: max abs diff to reference sample {diff:.3g}")


def test_w_encoder_golden(golden, w50):
    entry = golden["BackboneEncoderUsingLastLayerIntoW"]
    assert entry["max_abs_diff_at_generation"] <= TOL
    diff = _check_golden(w50, entry)
    print(f"BackboneEncoderW IR-SE50: max abs diff to reference sample {diff:.3g}")


def test_golden_weights_are_discriminating(golden, w50):
    """Perturbing one deep-body weight must move the output far beyond the tolerance (the test has teeth)."""
    entry = golden["BackboneEncoderUsingLastLayerIntoW"]
    enc = fill_state_dict(w50, entry["weight_seed"], psp_weight_scale)
    with torch.no_grad():
        enc.body[20].res_layer[3].weight.mul_(1.5)
        out = enc(make_input())
    fill_state_dict(w50, entry["weight_seed"], psp_weight_scale)  # restore for other users of the fixture
    sample = torch.tensor(entry["sample"])
    assert (out.flatten()[::SAMPLE_STRIDE] - sample).abs().max().item() > 100 * TOL


# ----------------------------------------------------------------------------------------------------------
# Mini profile encoders (64 px input, 10 styles, style_dim 128)


@pytest.mark.parametrize("kind", ["w", "wplus", "zplus"])
def test_mini_encoders_shapes(kind):
    n_styles, dim = _mini_dims()
    assert (n_styles, dim) == (10, 128)
    enc = E.build_encoder(kind, _mini_cfg(), n_styles=n_styles, style_dim=dim).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    t = time.time()
    with torch.no_grad():
        out = enc(x)
    elapsed = time.time() - t
    assert out.shape == ((2, dim) if kind == "w" else (2, n_styles, dim))
    assert torch.isfinite(out).all()
    n = E.count_params(enc)
    print(f"mini {kind} encoder: {n} params, forward batch 2 in {elapsed * 1000:.0f} ms")
    assert n < 10_000_000
    if kind != "w":
        # Taps at the end of the last three blocks: 16, 8, 4 px for the 4-block mini backbone at 64 px.
        assert enc.taps == (1, 2, 3) and enc.block_sizes[-3:] == (16, 8, 4)
        assert (enc.coarse_ind, enc.middle_ind) == (3, 7)


def test_mini_encoder_trains_one_step():
    n_styles, dim = _mini_dims()
    enc = E.build_encoder("wplus", _mini_cfg(), n_styles, dim).train()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    loss = enc(torch.rand(2, 3, 64, 64) * 2 - 1).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in enc.parameters())
    opt.step()


def test_build_encoder_rejects_unknown_kind():
    with pytest.raises(ValueError, match="wplus"):
        E.build_encoder("v", _mini_cfg(), 10, 128)


# ----------------------------------------------------------------------------------------------------------
# Z+ encoder (Eq. 4) and PSP


class ToyGenerator(nn.Module):
    """Duck-typed stand-in for facestyle's Generator: a PixelNorm + linear mapping over [B, dim] and a decoder
    that turns W+ codes into an image-shaped tensor."""

    def __init__(self, dim=128, n_latent=10):
        super().__init__()
        self.n_latent = n_latent
        self.lin = nn.Linear(dim, dim)
        self.calls = []

    def mapping(self, z):
        assert z.dim() == 2  # rows are folded into the batch before mapping
        z = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
        return self.lin(z)

    def forward(self, styles, input_is_latent=False, randomize_noise=True):
        self.calls.append((input_is_latent, randomize_noise))
        w = styles[0]
        return w.mean(1)[:, :3, None, None].expand(-1, 3, 128, 128), None


def test_zplus_rows_are_mapped_independently():
    n_styles, dim = _mini_dims()
    torch.manual_seed(0)
    enc = E.build_encoder("zplus", _mini_cfg(), n_styles, dim).eval()
    gen = ToyGenerator(dim, n_styles)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z, w = enc.encode_wplus(x, gen)
        assert z.shape == w.shape == (2, n_styles, dim)
        for i in range(n_styles):
            assert torch.allclose(w[:, i], gen.mapping(z[:, i]), atol=1e-6)
        assert torch.allclose(E.ZPlusEncoder.to_wplus(z, gen), w)
        # PSP with a Z+ encoder encodes through the mapping and ignores latent_avg.
        psp = E.PSP(enc, gen, latent_avg=torch.ones(dim), start_from_latent_avg=True)
        assert torch.allclose(psp.encode(x), w, atol=1e-6)


def test_psp_encode_adds_latent_avg_and_resizes():
    n_styles, dim = _mini_dims()
    torch.manual_seed(0)
    enc = E.build_encoder("wplus", _mini_cfg(), n_styles, dim).eval()
    gen = ToyGenerator(dim, n_styles)
    avg = torch.randn(n_styles, dim)
    psp = E.PSP(enc, gen, latent_avg=avg, start_from_latent_avg=True).eval()
    assert psp.input_size == 64 and "latent_avg" not in psp.state_dict()
    x = torch.rand(2, 3, 128, 128) * 2 - 1  # larger input: encode resizes to the encoder's 64 px
    with torch.no_grad():
        codes = psp.encode(x)
        raw = enc(psp.preprocess(x))
        assert torch.allclose(codes, raw + avg, atol=1e-6)
        psp.start_from_latent_avg = False
        assert torch.allclose(psp.encode(x), raw, atol=1e-6)
        psp.start_from_latent_avg = True
        img, lat = psp(x, resize=True, return_latents=True)
    assert img.shape == (2, 3, 64, 64) and torch.allclose(lat, codes)
    assert gen.calls[-1] == (True, False)  # codes are latents; deterministic noise by default


def test_psp_w_encoder_replicates_rows():
    n_styles, dim = _mini_dims()
    enc = E.build_encoder("w", _mini_cfg(), n_styles, dim).eval()
    psp = E.PSP(enc, ToyGenerator(dim, n_styles), latent_avg=torch.randn(1, dim))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        codes, raw = psp.encode(x, return_raw=True)
    assert raw.shape == (1, dim) and codes.shape == (1, n_styles, dim)
    assert torch.allclose(codes, (raw + psp.latent_avg).unsqueeze(1).expand_as(codes))
    psp.latent_avg = None
    with pytest.raises(ValueError, match="latent_avg"):
        psp.encode(x)


def test_psp_with_mini_generator():
    """End to end with facestyle's own mini StyleGAN2 as decoder (skipped while that module is absent)."""
    stylegan2 = pytest.importorskip("facestyle.nn.stylegan2")
    g_cfg = PROFILES["mini"].generator
    torch.manual_seed(0)
    gen = stylegan2.Generator(g_cfg.size, g_cfg.style_dim, g_cfg.n_mlp, channel_multiplier=g_cfg.channel_multiplier,
                              lr_mlp=g_cfg.lr_mlp, channels=g_cfg.channels).eval()
    n_styles = gen.n_latent
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    for kind in ("w", "wplus", "zplus"):
        enc = E.build_encoder(kind, _mini_cfg(), n_styles, g_cfg.style_dim)
        psp = E.PSP(enc, gen, latent_avg=gen.mean_latent(256)).eval()
        assert all(k.startswith(("encoder.", "decoder.")) for k in psp.state_dict())
        with torch.no_grad():
            img, codes = psp(x, return_latents=True)
        assert img.shape == (1, 3, 64, 64) and codes.shape == (1, n_styles, g_cfg.style_dim)
        assert torch.isfinite(img).all()
