"""facestyle.eval.metrics, facestyle.nn.perceptual and facestyle.hub.perceptual: formulas against closed forms,
determinism of the mini LPIPS, offline loading of the ffhq backbones from files the test writes, and the semantic
distance's zero.

No test touches the network: every socket connect raises, and the checkpoint caches point into tmp dirs.
"""
from __future__ import annotations

import copy
import json
import math
import os
import socket

import pytest
import torch

from facestyle import hub
from facestyle.config import MINI_CHANNELS
from facestyle.eval import metrics as M
from facestyle.hub import perceptual as HP
from facestyle.nn import perceptual as P
from facestyle.world import FACTORS, STYLE_BIAS, factor_index, render, sample_content


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own cache dirs, no stray overrides, and any attempt to open a network connection fails loudly."""
    monkeypatch.setenv("FACESTYLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FACESTYLE_OFFLINE", "1")
    for k in list(os.environ):
        if k.startswith("FACESTYLE_CKPT_"):
            monkeypatch.delenv(k)

    def no_network(*a, **k):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    hub._MEMO.clear()
    yield


def _images(n: int, seed: int, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# --------------------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------------------

def test_fid_identical_features_is_zero():
    f = torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
    assert M.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)
    assert M.fid_from_features(f, M.feature_stats(f)) == pytest.approx(0.0, abs=1e-8)


def test_fid_closed_form_for_diagonal_and_commuting_covariances():
    g = torch.Generator().manual_seed(1)
    d = 6
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    s1 = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    s2 = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.1
    expect = float((mu1 - mu2).pow(2).sum() + (s1.sqrt() - s2.sqrt()).pow(2).sum())
    got = M.frechet_distance_from_stats(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(expect, rel=1e-9)
    # rotating both covariances by the same orthogonal matrix keeps them commuting and the FID unchanged
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    c1, c2 = q @ torch.diag(s1) @ q.T, q @ torch.diag(s2) @ q.T
    assert M.frechet_distance_from_stats(mu1, c1, mu2, c2) == pytest.approx(expect, rel=1e-9)


def test_fid_of_sampled_shifted_gaussians_matches_closed_form():
    g = torch.Generator().manual_seed(2)
    n, d = 20000, 4
    s1, s2 = torch.tensor([1.0, 0.5, 2.0, 1.0]), torch.tensor([0.25, 0.5, 1.0, 4.0])
    mu2 = torch.tensor([1.0, -0.5, 0.0, 2.0])
    a = torch.randn(n, d, generator=g) * s1.sqrt()
    b = torch.randn(n, d, generator=g) * s2.sqrt() + mu2
    expect = float(mu2.pow(2).sum() + (s1.sqrt() - s2.sqrt()).pow(2).sum())
    assert M.frechet_distance(a, b) == pytest.approx(expect, abs=0.1)


def test_fid_rank_deficient_is_finite():
    f1 = torch.randn(10, 32, generator=torch.Generator().manual_seed(3))
    f2 = torch.randn(10, 32, generator=torch.Generator().manual_seed(4)) + 1
    v = M.frechet_distance(f1, f2)
    assert math.isfinite(v) and v > 0


# --------------------------------------------------------------------------------------------------------------
# attributes
# --------------------------------------------------------------------------------------------------------------

def test_attribute_agreement_on_constructed_contents():
    a = sample_content(40, seed=0)
    b = a.clone()
    gl, sm = factor_index("glasses"), factor_index("smile")
    b[:10, gl] = (b[:10, gl] + 1) % 3           # 10 of 40 glasses codes changed -> 0.75
    b[:, sm] = (b[:, sm] + 0.05).clamp(0, 1)     # within tolerance everywhere -> 1.0
    b[:20, factor_index("yaw")] = 1 - b[:20, factor_index("yaw")]  # changed where |1 - 2 yaw| >= 0.1
    out = M.attribute_agreement(a, b, tolerance=0.1)
    assert out["glasses"] == pytest.approx(0.75)
    assert out["smile"] == 1.0 and out["background"] == 1.0
    yaw = a[:20, factor_index("yaw")]
    expect_yaw = (20 + int(((1 - 2 * yaw).abs() < 0.1).sum())) / 40
    assert out["yaw"] == pytest.approx(expect_yaw)
    cats = [f.name for f in FACTORS if f.kind == "categorical"]
    conts = [f.name for f in FACTORS if f.kind == "continuous"]
    assert out["mean_categorical"] == pytest.approx(sum(out[n] for n in cats) / len(cats))
    assert out["mean_continuous"] == pytest.approx(sum(out[n] for n in conts) / len(conts))
    assert out["mean_all"] == pytest.approx(sum(out[f.name] for f in FACTORS) / len(FACTORS))
    assert M.attribute_agreement(a, a)["mean_all"] == 1.0


def test_category_frequencies_and_gap():
    c = sample_content(8, seed=0)
    gl = factor_index("glasses")
    c[:, gl] = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2], dtype=torch.float32)
    freqs = M.category_frequencies(c)
    assert freqs["glasses"] == pytest.approx([0.75, 0.125, 0.125])
    gap = M.frequency_gap(c, {"glasses": STYLE_BIAS["cartoon"]["glasses"]})
    assert gap["glasses"] == pytest.approx(25.0)  # 75 % vs the cartoon set's 100 % "none"
    assert gap["max"] == max(v for k, v in gap.items() if k != "max")


class _StubOracle(torch.nn.Module):
    """predict() -> domain index encoded in the image's mean (enough to test the bookkeeping)."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def predict(self, x, batch=256):
        return torch.zeros(len(x), len(FACTORS)), x.mean((1, 2, 3)).round().long()


def test_style_accuracy_counts_target_domain():
    x = torch.zeros(4, 3, 8, 8)
    x[:3] += 2  # DOMAINS[2] == "anime"
    assert M.style_accuracy(x, "anime", _StubOracle()) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        M.style_accuracy(x, "sketch", _StubOracle())


# --------------------------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lpips_alex_mini():
    return HP.build_lpips("alex", "mini", "cpu")


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_mini_lpips_is_deterministic_and_leaves_global_rng_alone(net):
    torch.manual_seed(1)
    m1 = HP.build_lpips(net, "mini", "cpu")
    after = torch.rand(3)
    torch.manual_seed(1)
    expect = torch.rand(3)
    torch.manual_seed(12345)
    m2 = HP.build_lpips(net, "mini", "cpu")
    assert torch.equal(after, expect), "building the mini LPIPS must not consume the global RNG"
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert m1.backbone_mode == "seeded" and not any(p.requires_grad for p in m1.parameters())


def test_mini_lpips_is_a_pseudo_distance(lpips_alex_mini):
    x, y = _images(4, 0), _images(4, 1)
    assert torch.equal(P.lpips_distance(x, x, lpips_alex_mini), torch.zeros(4))
    d = P.lpips_distance(x, y, lpips_alex_mini, size=64)
    assert d.shape == (4,) and (d > 0).all()
    assert torch.allclose(d, P.lpips_distance(y, x, lpips_alex_mini, size=64), atol=1e-7)
    # a small perturbation is closer than an unrelated image; resizing to the loss size works
    near = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(-1, 1)
    assert (P.lpips_distance(x, near, lpips_alex_mini) < d).all()
    assert P.lpips_distance(_images(2, 0, 128), _images(2, 1, 128), lpips_alex_mini, size=64).shape == (2,)


def test_mini_lpips_gradient_reaches_inputs(lpips_alex_mini):
    x = _images(2, 0).requires_grad_(True)
    P.lpips_distance(x, _images(2, 1), lpips_alex_mini).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_with_cached_target_features_equals_lpips(net):
    model = HP.build_lpips(net, "mini", "cpu")
    x, y = _images(3, 0, 96).requires_grad_(True), _images(3, 1, 96)
    x2 = x.detach().clone().requires_grad_(True)
    d = P.lpips_distance(x, y, model, size=64)
    feats = P.lpips_features(y, model, size=64)
    assert not any(f.requires_grad for f in feats)  # targets carry no graph from one step to the next
    d2 = P.lpips_to_features(x2, feats, model, size=64)
    assert torch.allclose(d, d2, atol=1e-6, rtol=1e-5)
    d.sum().backward(), d2.sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-7, rtol=1e-4)
    with pytest.raises(TypeError, match="lpips.LPIPS"):
        P.lpips_features(y, torch.nn.Identity())


def test_identity_with_cached_target_embedding_equals_identity_distance():
    from facestyle.nn.judges import IdentityNet

    torch.manual_seed(0)
    net = IdentityNet(input_size=64).eval()
    x, y = _images(3, 0), _images(3, 1)
    d = P.identity_distance(x, y, net, 64)
    assert torch.allclose(d, P.identity_to_embedding(x, P.identity_embedding(y, net, 64), net, 64), atol=1e-6)


def _torchvision_backbone_file(path, net: str, seed: int) -> dict:
    """Random weights under torchvision's key names (features.N.*), as in vgg16-397923af.pth."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        arch = torchvision.models.vgg16 if net == "vgg" else torchvision.models.alexnet
        features = arch(weights=None).features
    sd = {f"features.{k}": v.clone() for k, v in features.state_dict().items()}
    sd["classifier.6.bias"] = torch.zeros(1000)  # the real files hold the classifier too; it must be ignored
    torch.save(sd, path)
    return sd


@pytest.mark.parametrize("net,env", [("alex", "FACESTYLE_CKPT_LPIPS_ALEXNET"), ("vgg", "FACESTYLE_CKPT_LPIPS_VGG16")])
def test_ffhq_lpips_loads_torchvision_backbone_offline(tmp_path, monkeypatch, net, env):
    path = tmp_path / f"{net}-backbone.pth"
    sd = _torchvision_backbone_file(path, net, seed=7)
    monkeypatch.setenv(env, str(path))
    model = HP.build_lpips(net, "ffhq", "cpu")
    assert model.backbone_mode == "pretrained"
    loaded = model.net.state_dict()
    for key, t in loaded.items():  # slice{k}.N.leaf <- features.N.leaf
        _, idx, leaf = key.split(".")
        assert torch.equal(t, sd[f"features.{idx}.{leaf}"]), key
    # the calibrated heads are the package's, identical in both profiles
    mini = HP.build_lpips(net, "mini", "cpu")
    assert torch.equal(model.lin0.model[1].weight, mini.lin0.model[1].weight)
    x, y = _images(2, 0), _images(2, 1)
    assert (P.lpips_distance(x, y, model, size=64) > 0).all()


def test_ffhq_lpips_missing_backbone_fails_with_hub_error():
    with pytest.raises(hub.CheckpointError, match="vgg16-397923af.pth"):
        HP.build_lpips("vgg", "ffhq", "cpu")


def test_ffhq_lpips_cached_file_with_wrong_hash_prefix_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    _torchvision_backbone_file(cache / "alexnet-owt-7be5be79.pth", "alex", seed=3)
    with pytest.raises(hub.ChecksumError, match="7be5be79"):
        HP.build_lpips("alex", "ffhq", "cpu")


def test_ffhq_lpips_wrong_file_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "not-vgg.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, path)
    monkeypatch.setenv("FACESTYLE_CKPT_LPIPS_ALEXNET", str(path))
    with pytest.raises(hub.CheckpointError, match="AlexNet"):
        HP.build_lpips("alex", "ffhq", "cpu")


# --------------------------------------------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------------------------------------------

def test_facenet_identity_from_state_dict(tmp_path, monkeypatch):
    from facenet_pytorch import InceptionResnetV1

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        ref = InceptionResnetV1(pretrained=None, classify=False).eval()
    sd = dict(ref.state_dict())
    # the released file also carries the VGGFace2 classifier; facestyle must drop it
    sd["logits.weight"], sd["logits.bias"] = torch.zeros(8631, 512), torch.zeros(8631)
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(sd, path)
    monkeypatch.setenv("FACESTYLE_CKPT_FACENET_VGGFACE2", str(path))
    model = HP.build_identity("ffhq", "cpu")
    assert isinstance(model, P.FaceNetIdentity)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.net.state_dict().items())
    x = _images(2, 0, 256)
    e = model(x)
    assert e.shape == (2, 512)
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    # preprocessing = pSp crop of the 256 image -> 160 px -> facenet standardisation
    with torch.no_grad():
        direct = ref(torch.nn.functional.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], 160) * (127.5 / 128))
    assert torch.allclose(e, direct, atol=1e-5)
    assert P.identity_distance(x, x, model).abs().max() < 1e-5


def test_build_identity_rejects_other_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(2)}, path)
    with pytest.raises(hub.CheckpointError, match="facenet"):
        HP.build_identity("ffhq", "cpu", ckpt=path)


# --------------------------------------------------------------------------------------------------------------
# semantic distance, ideal distance
# --------------------------------------------------------------------------------------------------------------

def test_semantic_distance_zero_for_same_generator_positive_after_perturbation(lpips_alex_mini):
    from facestyle.nn.judges import IdentityNet
    from facestyle.nn.stylegan2 import Generator

    torch.manual_seed(0)
    g = Generator(64, 128, 4, channel_multiplier=1, channels=MINI_CHANNELS).eval()
    idnet = IdentityNet(input_size=64).eval()
    ws = M.semantic_latents(g, n=8, seed=0)
    assert torch.equal(ws, M.semantic_latents(g, n=8, seed=0))
    same = M.semantic_distance(g, g, ws, lpips_alex_mini, idnet, profile="mini", batch=4)
    assert same["semantic_distance"] == pytest.approx(0.0, abs=1e-6)
    assert same["n"] == 8 and same["size"] == 64 and same["lambda_id"] == pytest.approx(0.1)

    g2 = copy.deepcopy(g)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in g2.convs.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    moved = M.semantic_distance(g, g2, ws, lpips_alex_mini, idnet, profile="mini", batch=4)
    assert moved["lpips"] > 0 and moved["id"] > 0
    assert moved["semantic_distance"] == pytest.approx(moved["lpips"] + 0.1 * moved["id"], rel=1e-5)


def test_ideal_distance_zero_for_ideal_outputs(lpips_alex_mini):
    c = sample_content(4, seed=0)
    ideal = render(c, "cartoon", size=64, seed=0)
    assert M.ideal_distance(ideal, c, "cartoon", lpips_alex_mini) == pytest.approx(0.0, abs=1e-7)
    real = render(c, "real", size=64, seed=0)
    per = M.ideal_distance(real, c, "cartoon", lpips_alex_mini, reduction="none")
    assert per.shape == (4,) and (per > 0).all()


# --------------------------------------------------------------------------------------------------------------
# registry and results
# --------------------------------------------------------------------------------------------------------------

def test_registry_names_state_protocols():
    for name in ("fid_oracle", "fid_inception", "lpips_alex", "id_distance", "semantic_distance",
                 "attr_agreement", "ideal_distance", "style_accuracy"):
        m = M.get_metric(name)
        assert m.protocol and "\n" not in m.protocol
        assert m.function and hasattr(M if m.function not in ("lpips_distance", "identity_distance") else P,
                                      m.function)
    assert {m.name for m in M.list_metrics("ffhq")} >= {"fid_inception", "lpips_alex", "semantic_distance"}
    assert "fid_oracle" not in {m.name for m in M.list_metrics("ffhq")}
    with pytest.raises(ValueError, match="fid_oracle"):
        M.get_metric("fid")


def test_results_table_writes_markdown_and_json(tmp_path):
    rows = [{"method": "ours", "fid_oracle": 12.3456789, "lpips_alex": torch.tensor(0.25), "note": "a|b"},
            {"method": "toonify", "fid_oracle": float("nan"), "style_accuracy": 0.9}]
    md, js = M.results_table(rows, tmp_path / "out" / "table.md", tmp_path / "out" / "table.json", title="Demo")
    text = md.read_text()
    assert text.startswith("# Demo")
    assert "| method | fid_oracle | lpips_alex | note | style_accuracy |" in text
    assert "| ours | 12.3457 | 0.2500 | a\\|b | - |" in text
    assert "- `fid_oracle`: " in text
    doc = json.loads(js.read_text())
    assert doc["columns"][0] == "method" and doc["rows"][0]["lpips_alex"] == 0.25
    assert doc["rows"][1]["fid_oracle"] is None
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_fid_oracle_in_oracle_feature_space():
    from facestyle.nn.judges import Oracle

    torch.manual_seed(0)
    kinds = [(f.kind, 1 if f.kind == "continuous" else len(f.values)) for f in FACTORS]
    oracle = Oracle(kinds, n_domains=6, input_size=64).eval()
    x, y = _images(12, 0), _images(12, 1) * 0.2
    feats = M.oracle_features(x, oracle, batch=5)
    assert feats.shape == (12, 256)
    assert M.fid_oracle(x, x, oracle) == pytest.approx(0.0, abs=1e-6)
    assert M.fid_oracle(x, M.feature_stats(M.oracle_features(y, oracle)), oracle) == pytest.approx(
        M.fid_oracle(x, y, oracle), rel=1e-9)
    assert M.fid_oracle(x, y, oracle) > 0


def test_labelled_grid_checks_titles_and_writes_png(tmp_path):
    from PIL import Image

    from facestyle.viz import labelled_grid

    rows = [torch.rand(3, 3, 8, 8) * 2 - 1 for _ in range(2)]
    p = labelled_grid(rows, tmp_path / "g.png", row_titles=["input", "G'"], col_titles=["a", "b", "c"], title="t")
    assert Image.open(p).size[0] > 100
    with pytest.raises(ValueError, match="row titles"):
        labelled_grid(rows, tmp_path / "h.png", row_titles=["input"])
    with pytest.raises(ValueError, match="column titles"):
        labelled_grid(rows, tmp_path / "h.png", row_titles=["a", "b"], col_titles=["x"])
