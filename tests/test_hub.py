"""facestyle.hub: official checkpoint layouts round-trip through the loaders; bad files fail with one clear error.

Every file here is written by the test itself with ``torch.save`` in the layout the reference projects use
(docs/reference.md sections 1-2). Nothing touches the network: ``urlopen`` is replaced by a function that raises.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from facestyle import hub
from facestyle.config import MINI_CHANNELS, PROFILES, EncoderConfig
from facestyle.hub import registry, store
from facestyle.nn.encoders import PSP, BackboneEncoderW, GradualStyleEncoder
from facestyle.nn.stylegan2 import Discriminator, Generator

MINI_BLOCKS = PROFILES["mini"].encoder.blocks
STYLE_DIM = 128


# --------------------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own cache dirs, no network, no stray overrides."""
    monkeypatch.setenv("FACESTYLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FACESTYLE_OFFLINE", raising=False)
    for k in list(os.environ):
        if k.startswith("FACESTYLE_CKPT_"):
            monkeypatch.delenv(k)

    def no_network(*a, **k):
        raise URLError("network disabled in tests")

    monkeypatch.setattr(store, "urlopen", no_network)
    hub._MEMO.clear()
    yield


def _perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Make zero-initialised parameters (noise weights, biases) non-trivial so that a wrong load shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return _perturb(Generator(64, STYLE_DIM, 4, channel_multiplier=1, channels=MINI_CHANNELS), 1).eval()


@pytest.fixture(scope="module")
def disc():
    torch.manual_seed(1)
    return _perturb(Discriminator(64, channel_multiplier=1, channels=MINI_CHANNELS), 2).eval()


def _enc_wplus():
    torch.manual_seed(2)
    return _perturb(GradualStyleEncoder(mode="ir_se", n_styles=10, blocks=MINI_BLOCKS, style_dim=STYLE_DIM,
                                        input_size=64), 3).eval()


def _images(n=2, size=64, seed=5):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _render(g, seed=4):
    z = torch.randn(1, STYLE_DIM, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return g([z], randomize_noise=False)[0]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _adam_state(module):
    """What ``torch.optim.Adam(...).state_dict()`` holds after some steps (written by hand: no optimiser import)."""
    params = list(module.parameters())
    state = {i: {"step": torch.tensor(100.0), "exp_avg": torch.full_like(p, 1e-3),
                 "exp_avg_sq": torch.full_like(p, 1e-6)}
             for i, p in enumerate(params)}
    group = {"lr": 0.002, "betas": (0.0, 0.99), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "maximize": False,
             "foreach": None, "capturable": False, "differentiable": False, "fused": None,
             "params": list(range(len(params)))}
    return {"state": state, "param_groups": [group]}


def _cache_files():
    d = hub.cache_dir()
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --------------------------------------------------------------------------------------------------------------
# official layouts load and reproduce the writer's outputs
# --------------------------------------------------------------------------------------------------------------

def test_converted_official_file(tmp_path, gen):
    avg = torch.randn(STYLE_DIM)
    f = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": gen.state_dict(), "latent_avg": avg}, f)
    lg = hub.load_generator(f, device="cpu")
    assert lg.format == "rosinality-converted" and lg.latent_avg_source == "file"
    assert lg.config.size == 64 and lg.config.style_dim == STYLE_DIM and lg.config.n_mlp == 4
    assert lg.config.channels == MINI_CHANNELS
    assert torch.equal(lg.latent_avg, avg)
    assert not lg.g_ema.training and not any(p.requires_grad for p in lg.g_ema.parameters())
    assert torch.equal(_render(lg.g_ema), _render(gen))
    assert lg.d is None and lg.g is None


def test_default_channel_table_is_recognised(tmp_path):
    torch.manual_seed(0)
    g = Generator(8, 64, 2, channel_multiplier=2)  # rosinality's default table (512 ch at 4 and 8 px)
    f = tmp_path / "g8.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(64)}, f)
    cfg = hub.load_generator(f, device="cpu").config
    assert cfg.channels is None and cfg.size == 8 and cfg.style_dim == 64 and cfg.n_mlp == 2


def test_training_file_with_namespace_args(tmp_path, gen, disc):
    g_optim, d_optim = _adam_state(gen), _adam_state(disc)
    args = argparse.Namespace(size=64, latent=STYLE_DIM, n_mlp=4, channel_multiplier=1, batch=4, r1=10.0,
                              path="/data/ffhq", augment=False, start_iter=1000)
    ckpt = {"g": gen.state_dict(), "d": disc.state_dict(), "g_ema": gen.state_dict(),
            "g_optim": g_optim, "d_optim": d_optim, "args": args, "ada_aug_p": 0.12}
    f = tmp_path / "001000.pt"
    torch.save(ckpt, f)
    # The reason for the allow-list: plain weights_only loading refuses the pickled Namespace.
    with pytest.raises(Exception, match="Namespace"):
        torch.load(f, weights_only=True)
    lg = hub.load_generator(f, device="cpu", training=True)
    assert lg.format == "rosinality-train"
    assert isinstance(lg.args, argparse.Namespace) and lg.args.size == 64
    assert lg.extras["ada_aug_p"] == 0.12 and "state" in lg.extras["g_optim"]
    assert _same_weights(lg.g_ema, gen) and _same_weights(lg.g, gen)
    x = _images(1)
    with torch.no_grad():
        assert torch.equal(lg.d(x), disc(x))
    assert lg.latent_avg.shape == (STYLE_DIM,) and "computed" in lg.latent_avg_source
    assert _same_weights(hub.load_discriminator(f, device="cpu", expected_size=64), disc)


def test_g_ema_only_file_computes_mean_latent(tmp_path, gen):
    f = tmp_path / "550000.pt"
    torch.save({"g_ema": gen.state_dict()}, f)
    rng_before = torch.get_rng_state()
    lg = hub.load_generator(f, device="cpu")
    assert torch.equal(torch.get_rng_state(), rng_before)  # loading leaves the global RNG stream alone
    assert lg.format == "rosinality (g_ema only)"
    assert lg.latent_avg_source.startswith("computed") and "4096" in lg.latent_avg_source
    assert lg.latent_avg.shape == (STYLE_DIM,)
    z = torch.randn(4096, STYLE_DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(lg.latent_avg, gen.style(z).mean(0), atol=1e-5)
    assert torch.equal(lg.latent_avg, hub.load_generator(f, device="cpu").latent_avg)  # deterministic


def test_psp_wplus_file(tmp_path, gen):
    enc = _enc_wplus()
    avg = torch.randn(10, STYLE_DIM)
    model = PSP(enc, gen, avg).eval()
    opts = {"encoder_type": "GradualStyleEncoder", "output_size": 64, "start_from_latent_avg": True,
            "learn_in_w": False, "input_nc": 3, "exp_dir": "/runs/psp", "checkpoint_path": None}
    f = tmp_path / "psp_mini.pt"
    torch.save({"state_dict": model.state_dict(), "opts": opts, "latent_avg": avg}, f)
    loaded = hub.load_psp(f, device="cpu")
    assert loaded.encoder_config.blocks == MINI_BLOCKS and loaded.encoder_config.input_size == 64
    assert loaded.encoder.n_styles == 10 and not loaded.training
    x = _images()
    with torch.no_grad():
        codes = loaded.encode(x)
        assert torch.equal(codes, model.encode(x))
    assert _same_weights(loaded, model) and torch.equal(loaded.latent_avg, avg)
    assert torch.equal(loaded.decode(codes[:1]), model.decode(codes[:1]))


def test_psp_w_encoder_file(tmp_path, gen):
    torch.manual_seed(3)
    enc = _perturb(BackboneEncoderW(mode="ir_se", blocks=MINI_BLOCKS, style_dim=STYLE_DIM, input_size=64), 6).eval()
    avg = torch.randn(STYLE_DIM)
    model = PSP(enc, gen, avg).eval()
    f = tmp_path / "psp_w.pt"
    torch.save({"state_dict": model.state_dict(), "latent_avg": avg,
                "opts": {"encoder_type": "BackboneEncoderUsingLastLayerIntoW", "output_size": 64, "input_size": 64}}, f)
    loaded = hub.load_psp(f, device="cpu")
    assert isinstance(loaded.encoder, BackboneEncoderW)
    x = _images()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), model.encode(x))


def test_psp_with_ir_se50_backbone(tmp_path, gen):
    """The real IR-SE50 body (pSp's table), at 64 px and with 128-d heads to stay small on a CPU."""
    torch.manual_seed(7)
    enc = GradualStyleEncoder(num_layers=50, mode="ir_se", n_styles=10, style_dim=STYLE_DIM, input_size=64).eval()
    model = PSP(enc, gen, torch.randn(10, STYLE_DIM)).eval()
    f = tmp_path / "psp_irse50.pt"
    torch.save({"state_dict": model.state_dict(), "latent_avg": model.latent_avg,
                "opts": {"encoder_type": "GradualStyleEncoder", "output_size": 64}}, f)
    loaded = hub.load_psp(f, device="cpu")
    assert loaded.encoder_config.num_layers == 50 and loaded.encoder_config.blocks is None
    assert loaded.encoder_config.input_size == 64 and _same_weights(loaded, model)


def test_facestyle_format_full_and_half(tmp_path, gen, disc):
    avg = torch.randn(STYLE_DIM)
    f32 = hub.save_generator_checkpoint(tmp_path / "g32.pt", gen, latent_avg=avg, d=disc, meta={"iters": 10})
    f16 = hub.save_generator_checkpoint(tmp_path / "g16.pt", gen, latent_avg=avg, half=True)
    assert f16.stat().st_size < 0.6 * f32.stat().st_size
    ck = hub.load_facestyle_checkpoint(f16, kind="stylegan2")
    assert ck["format"] == hub.FORMAT_TAG and ck["half"] is True
    assert all(v.dtype == torch.float32 for v in ck["state_dict"].values() if v.is_floating_point())
    lg = hub.load_generator(f32, device="cpu", training=True)
    assert lg.format == hub.FORMAT_TAG and lg.meta["iters"] == 10
    assert _same_weights(lg.g_ema, gen) and torch.equal(lg.latent_avg, avg)
    assert _same_weights(hub.load_discriminator(f32, device="cpu"), disc)
    lh = hub.load_generator(f16, device="cpu")
    assert next(lh.g_ema.parameters()).dtype == torch.float32
    assert (_render(lh.g_ema) - _render(gen)).abs().max() < 0.05
    with pytest.raises(hub.CheckpointError, match="'stylegan2' checkpoint, expected encoder"):
        hub.load_facestyle_checkpoint(f32, kind="encoder")


def test_facestyle_format_tag_is_checked(tmp_path, gen):
    f = tmp_path / "future.pt"
    torch.save({"format": "facestyle/99", "kind": "stylegan2", "state_dict": gen.state_dict()}, f)
    with pytest.raises(hub.CheckpointError, match="facestyle/99"):
        hub.load_facestyle_checkpoint(f)
    g = tmp_path / "plain.pt"
    torch.save({"g_ema": gen.state_dict()}, g)
    with pytest.raises(hub.CheckpointError, match="not a facestyle checkpoint"):
        hub.load_facestyle_checkpoint(g)


def test_facestyle_encoder_checkpoint_with_decoder_reference(tmp_path, gen):
    g_file = hub.save_generator_checkpoint(tmp_path / "g.pt", gen, latent_avg=torch.randn(STYLE_DIM))
    model = PSP(_enc_wplus(), gen, torch.randn(10, STYLE_DIM)).eval()
    ecfg = EncoderConfig(input_size=64, num_layers=0, blocks=MINI_BLOCKS)
    full = hub.save_psp_checkpoint(tmp_path / "e_full.pt", model, kind="wplus", encoder_config=ecfg)
    slim = hub.save_psp_checkpoint(tmp_path / "e_slim.pt", model, kind="zplus", encoder_config=ecfg,
                                   decoder_ckpt=str(g_file))
    assert slim.stat().st_size < full.stat().st_size
    assert _same_weights(hub.load_psp(full, device="cpu"), model)
    zp = hub.load_psp(slim, device="cpu")
    assert zp.is_zplus and _same_weights(zp, model)


# --------------------------------------------------------------------------------------------------------------
# bad inputs: one clear error naming the file
# --------------------------------------------------------------------------------------------------------------

def test_text_empty_html_and_truncated_files(tmp_path, gen):
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    html = tmp_path / "drive.pt"
    html.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>")
    full = tmp_path / "full.pt"
    torch.save({"g_ema": gen.state_dict(), "latent_avg": torch.zeros(STYLE_DIM)}, full)
    trunc = tmp_path / "trunc.pt"
    data = full.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    legacy = tmp_path / "legacy.pt"
    torch.save({"g_ema": gen.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    ltrunc = tmp_path / "ltrunc.pt"
    data = legacy.read_bytes()
    ltrunc.write_bytes(data[: len(data) // 2])
    cases = {text: "text file", empty: "empty", html: "HTML page", trunc: "truncated", ltrunc: "truncated"}
    for f, what in cases.items():
        with pytest.raises(hub.CheckpointError, match=what) as err:
            hub.load_generator(f, device="cpu")
        msg = str(err.value)
        assert str(f) in msg and "\n" not in msg
    assert hub.load_generator(legacy, device="cpu").config.size == 64  # the legacy format itself is fine


def test_missing_local_path_and_directory(tmp_path):
    with pytest.raises(hub.CheckpointNotFound, match="does not exist"):
        hub.load_generator(tmp_path / "nope.pt", device="cpu")
    with pytest.raises(hub.CheckpointError, match="directory"):
        hub.resolve(tmp_path)


def test_encoder_file_given_to_load_generator(tmp_path, gen):
    model = PSP(_enc_wplus(), gen, torch.randn(10, STYLE_DIM))
    f = tmp_path / "psp.pt"
    torch.save({"state_dict": model.state_dict(), "opts": {"encoder_type": "GradualStyleEncoder"},
                "latent_avg": model.latent_avg}, f)
    with pytest.raises(hub.CheckpointError, match="looks like a pSp encoder checkpoint") as err:
        hub.load_generator(f, device="cpu")
    assert str(f) in str(err.value)
    d = tmp_path / "d_only.pt"
    torch.save(Discriminator(64, channels=MINI_CHANNELS).state_dict(), d)
    with pytest.raises(hub.CheckpointError, match="discriminator"):
        hub.load_generator(d, device="cpu")
    with pytest.raises(hub.CheckpointError, match="no StyleGAN2 discriminator"):
        hub.load_discriminator(f, device="cpu")


def test_mismatched_generator_keys_are_listed(tmp_path, gen):
    sd = dict(gen.state_dict())
    sd["style.1.bias"] = torch.zeros(7)  # wrong shape
    sd.pop("to_rgb1.bias")
    sd["extra.weight"] = torch.zeros(1)
    f = tmp_path / "bad.pt"
    torch.save({"g_ema": sd}, f)
    with pytest.raises(hub.CheckpointError) as err:
        hub.load_generator(f, device="cpu")
    msg = str(err.value)
    assert "missing (to_rgb1.bias)" in msg and "unexpected (extra.weight)" in msg and "style.1.bias" in msg


def test_wrong_expected_size(tmp_path, gen):
    f = tmp_path / "g.pt"
    torch.save({"g_ema": gen.state_dict(), "latent_avg": torch.zeros(STYLE_DIM)}, f)
    with pytest.raises(hub.CheckpointError, match="64 px generator, but 1024 px is expected"):
        hub.load_generator(f, device="cpu", expected_size=1024)


class _Evil:
    """A pickle payload that would create a marker file if it were ever executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_not_executed(tmp_path, gen):
    marker = tmp_path / "PWNED"
    for i, legacy in enumerate((False, True)):
        f = tmp_path / f"evil{i}.pt"
        torch.save({"g_ema": gen.state_dict(), "latent_avg": _Evil(marker)}, f,
                   _use_new_zipfile_serialization=not legacy)
        with pytest.raises(hub.UnsafeCheckpointError, match="system") as err:
            hub.load_generator(f, device="cpu")
        assert str(f) in str(err.value) and "NOT executed" in str(err.value)
    assert not marker.exists()


def test_allow_list_is_narrow(tmp_path):
    import numpy as np

    ok = tmp_path / "np_scalars.pt"
    torch.save({"loss": np.float64(0.25), "step": np.int64(3), "args": argparse.Namespace(lr=np.float32(0.5))}, ok)
    out = hub.safe_load(ok)
    assert out["loss"] == 0.25 and out["args"].lr == 0.5
    arr = tmp_path / "np_array.pt"
    torch.save({"a": np.zeros(3)}, arr)  # arbitrary numpy arrays are not on the list
    with pytest.raises(hub.UnsafeCheckpointError, match="_reconstruct"):
        hub.safe_load(arr)


# --------------------------------------------------------------------------------------------------------------
# registry, cache, download
# --------------------------------------------------------------------------------------------------------------

def _fake_entry(monkeypatch, tmp_path, payload: bytes, **kw):
    src = tmp_path / "upstream.bin"
    src.write_bytes(payload)
    fields = dict(name="fake-ckpt", kind="stylegan2", filename="fake.pt", url="https://example.invalid/fake.pt",
                  sha256=None, size_bytes=None, licence="test", profile="ffhq", where="the test")
    fields.update(kw)
    e = hub.Entry(**fields)
    monkeypatch.setitem(hub._ENTRIES, e.name, e)

    def fetch_local(url, fh, hasher, progress=True):  # stands in for the HTTP download
        data = src.read_bytes()
        fh.write(data)
        hasher.update(data)
        return len(data)

    monkeypatch.setattr(store, "_fetch_url", fetch_local)
    return e


def test_sha256_mismatch_leaves_nothing_in_cache(tmp_path, monkeypatch):
    _fake_entry(monkeypatch, tmp_path, b"corrupted payload", sha256="0" * 64)
    with pytest.raises(hub.ChecksumError, match="sha256 mismatch for fake.pt"):
        hub.resolve("fake-ckpt")
    assert [n for n in _cache_files() if n != "sha256.json"] == []
    assert not (hub.cache_dir() / "fake.pt").exists()


def test_download_verifies_and_renames(tmp_path, monkeypatch, gen):
    f = tmp_path / "src.pt"
    torch.save({"g_ema": gen.state_dict(), "latent_avg": torch.zeros(STYLE_DIM)}, f)
    payload = f.read_bytes()
    _fake_entry(monkeypatch, tmp_path, payload, sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload))
    lg = hub.load_generator("fake-ckpt", device="cpu")
    assert lg.path == hub.cache_dir() / "fake.pt"
    assert not [n for n in _cache_files() if n.endswith(".tmp")]
    assert hub.verify("fake-ckpt").status == "verified"
    # the cached copy is used next time, with the download function gone
    monkeypatch.setattr(store, "_fetch_url", None)
    assert hub.resolve("fake-ckpt") == hub.cache_dir() / "fake.pt"


def test_unknown_hash_is_printed_and_recorded(tmp_path, monkeypatch, capsys):
    _fake_entry(monkeypatch, tmp_path, b"some bytes")
    p = hub.resolve("fake-ckpt", download=True)
    digest = hashlib.sha256(b"some bytes").hexdigest()
    assert digest in capsys.readouterr().err
    db = json.loads((hub.cache_dir() / "sha256.json").read_text())
    assert db[str(p.resolve())]["sha256"] == digest


def test_torchvision_prefix_is_checked(tmp_path, monkeypatch):
    _fake_entry(monkeypatch, tmp_path, b"not really vgg", sha256_prefix="397923af", filename="vgg16-397923af.pth")
    with pytest.raises(hub.ChecksumError, match="397923af"):
        hub.resolve("fake-ckpt", download=True)
    assert [n for n in _cache_files() if n != "sha256.json"] == []


def test_torch_hub_cache_is_searched(tmp_path, capsys):
    th = Path(os.environ["TORCH_HOME"])
    (th / "checkpoints").mkdir(parents=True)
    fake = th / "checkpoints" / "20180402-114759-vggface2.pt"
    fake.write_bytes(b"facenet weights stand-in")
    assert hub.resolve("facenet-vggface2") == fake
    assert hashlib.sha256(fake.read_bytes()).hexdigest() in capsys.readouterr().err
    (th / "hub" / "checkpoints").mkdir(parents=True)
    (th / "hub" / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"corrupt")
    with pytest.raises(hub.ChecksumError, match="397923af"):  # found there, then its name prefix is checked
        hub.resolve("lpips-vgg16")


def test_offline_missing_checkpoint_message(monkeypatch):
    e = hub.get_entry("lpips-vgg16")
    dest = hub.cache_dir() / e.filename
    for offline in (False, True):
        if offline:
            monkeypatch.setenv("FACESTYLE_OFFLINE", "1")
        with pytest.raises(hub.CheckpointNotFound) as err:
            hub.resolve("lpips-vgg16")
        msg = str(err.value)
        assert e.filename in msg and e.url in msg and str(dest) in msg and "--ckpt" in msg and e.env_var in msg
        assert ("network disabled" in msg) != offline
    assert not hub.cache_dir().exists() or not _cache_files()
    with pytest.raises(hub.CheckpointNotFound) as err:
        hub.load_generator("stylegan2-ffhq-config-f", device="cpu")
    msg = str(err.value)
    assert "stylegan2-ffhq-config-f.pt" in msg and "rosinality/stylegan2-pytorch" in msg
    assert str(hub.cache_dir() / "stylegan2-ffhq-config-f.pt") in msg


def test_local_path_and_env_override(tmp_path, monkeypatch, gen):
    f = tmp_path / "mine.pt"
    torch.save({"g_ema": gen.state_dict(), "latent_avg": torch.zeros(STYLE_DIM)}, f)
    assert hub.resolve(str(f)) == f
    monkeypatch.setenv(hub.get_entry("stylegan2-ffhq-config-f").env_var, str(f))
    assert hub.load_generator("stylegan2-ffhq-config-f", device="cpu").path == f
    monkeypatch.setenv(hub.get_entry("psp-ffhq-encode").env_var, str(tmp_path / "missing.pt"))
    with pytest.raises(hub.CheckpointNotFound, match="FACESTYLE_CKPT_PSP_FFHQ_ENCODE"):
        hub.resolve("psp-ffhq-encode")


def test_unknown_name_suggests():
    with pytest.raises(hub.CheckpointNotFound, match="did you mean mini-encoder-wplus"):
        hub.resolve("mini-encoder-wplsu")


def test_mini_entries_use_manifest(tmp_path, monkeypatch, gen):
    mini = tmp_path / "mini"
    mini.mkdir()
    monkeypatch.setattr(registry, "MINI_DIR", mini)
    monkeypatch.setattr(registry, "MANIFEST_PATH", mini / "manifest.json")
    with pytest.raises(hub.CheckpointNotFound, match="not trained/shipped yet"):
        hub.resolve("mini-stylegan2-64")
    (mini / "manifest.json").write_text("")
    with pytest.raises(hub.CheckpointNotFound, match="not trained/shipped yet"):
        hub.load_generator("mini-stylegan2-64", device="cpu")
    f = hub.save_generator_checkpoint(mini / "mini-stylegan2-64.pt", gen, latent_avg=torch.zeros(STYLE_DIM))
    rec = {"file": f.name, "sha256": hub.sha256_file(f), "bytes": f.stat().st_size,
           "command": "python scripts/train_mini.py --what generator"}
    (mini / "manifest.json").write_text(json.dumps({"files": {"mini-stylegan2-64": rec}}))
    lg = hub.load_generator("mini-stylegan2-64", device="cpu", expected_size=64)
    assert _same_weights(lg.g_ema, gen)
    rows = {r["name"]: r for r in hub.list_entries("mini")}
    assert rows["mini-stylegan2-64"]["status"] == "shipped" and rows["mini-encoder-w"]["status"] == "not trained yet"
    assert "mini-stylegan2-64" in hub.format_entries(hub.list_entries("mini"))
    rec["sha256"] = "f" * 64
    (mini / "manifest.json").write_text(json.dumps({"files": {"mini-stylegan2-64": rec}}))
    hub._MEMO.clear()
    with pytest.raises(hub.ChecksumError, match="train_mini.py"):
        hub.resolve("mini-stylegan2-64")


def test_manifest_record_keeps_facts_only_for_the_same_file(tmp_path, monkeypatch):
    from facestyle import manifest

    monkeypatch.setattr(manifest, "MINI_DIR", tmp_path)
    monkeypatch.setattr(manifest, "MANIFEST_PATH", tmp_path / "manifest.json")
    f = tmp_path / "style-x.pt"
    f.write_bytes(b"first")
    manifest.record("mini-style-x", f, command="make it", wall_s=1.0)
    manifest.update("mini-style-x", quality={"keep": 0.5}, recipe="the old one")
    manifest.record("mini-style-x", f, command="make it", wall_s=2.0)  # the same bytes: its measured facts stay
    assert manifest.read()["files"]["mini-style-x"]["quality"] == {"keep": 0.5}
    f.write_bytes(b"second")
    entry = manifest.record("mini-style-x", f, command="make it again", wall_s=3.0)
    assert "quality" not in entry and "recipe" not in entry and entry["wall_s"] == 3.0
    assert manifest.record_if_shipped("elsewhere", tmp_path.parent / "x.pt") is None


def test_home_and_listing(tmp_path, monkeypatch):
    assert hub.home() == tmp_path / "home"
    monkeypatch.delenv("FACESTYLE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.home() == tmp_path / "xdg" / "facestyle"
    names = {r["name"] for r in hub.list_entries("ffhq")}
    assert {"stylegan2-ffhq-config-f", "psp-ffhq-encode", "facenet-vggface2", "lpips-vgg16", "lpips-alexnet",
            "fid-inception"} <= names
    for name in ("stylegan2-ffhq-config-f", "psp-ffhq-encode"):
        assert hub.get_entry(name).sha256 is None  # honest: unknown, recorded on first use
    text = hub.format_entries()
    assert "missing (downloadable)" in text and "cache:" in text


def test_unpublished_hash_is_pinned_on_first_load_and_a_change_is_refused(tmp_path, monkeypatch, gen, capsys):
    """Issue #20 item 3: a file nobody publishes a hash for is pinned on its first successful load; a different
    file under the same name is then refused as changed, until `facestyle hub forget NAME`."""
    from facestyle.cli import main

    e = hub.get_entry("stylegan2-ffhq-config-f")
    assert e.sha256 is None and hub.integrity(e) == "not pinned (first use pins)"
    assert hub.integrity(hub.get_entry("lpips-vgg16")).startswith("name prefix")
    assert hub.integrity(hub.get_entry("mini-stylegan2-64")) == "pinned (manifest)"
    dest = hub.cache_dir() / e.filename
    dest.parent.mkdir(parents=True)
    torch.save({"g_ema": gen.state_dict(), "latent_avg": torch.zeros(STYLE_DIM)}, dest)
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    assert "stylegan2-ffhq-config-f" not in hub.pins()  # resolving alone does not pin
    hub.resolve("stylegan2-ffhq-config-f")
    assert "stylegan2-ffhq-config-f" not in hub.pins()
    hub.load_generator("stylegan2-ffhq-config-f", device="cpu")
    assert hub.pins()["stylegan2-ffhq-config-f"]["sha256"] == digest
    assert "on its first load" in capsys.readouterr().err
    row = {r["name"]: r for r in hub.list_entries("ffhq")}["stylegan2-ffhq-config-f"]
    assert row["integrity"].startswith("recorded on first use")
    assert "recorded on first use" in hub.format_entries(hub.list_entries("ffhq"))
    assert hub.verify("stylegan2-ffhq-config-f").status == "matches first use"
    hub.load_generator("stylegan2-ffhq-config-f", device="cpu")  # the same file loads again

    torch.save({"g_ema": _perturb(Generator(64, STYLE_DIM, 4, channel_multiplier=1, channels=MINI_CHANNELS), 3)
                .state_dict(), "latent_avg": torch.zeros(STYLE_DIM)}, dest)
    with pytest.raises(hub.ChecksumError, match="hub forget stylegan2-ffhq-config-f"):
        hub.load_generator("stylegan2-ffhq-config-f", device="cpu")
    monkeypatch.setenv(e.env_var, str(dest))  # pointing the entry at the file by hand is checked as well
    with pytest.raises(hub.ChecksumError, match="changed or was replaced"):
        hub.resolve("stylegan2-ffhq-config-f")
    monkeypatch.delenv(e.env_var)
    assert main(["hub", "forget", "stylegan2-ffhq-config-f"]) == 0
    assert "pin removed" in capsys.readouterr().out
    hub.load_generator("stylegan2-ffhq-config-f", device="cpu")
    assert hub.pins()["stylegan2-ffhq-config-f"]["sha256"] == hashlib.sha256(dest.read_bytes()).hexdigest()
