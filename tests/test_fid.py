"""The paper's FID: pytorch-fid's Inception over a file the hub resolves and checks (offline, random weights of
the official layout), and facestyle's Frechet distance against pytorch-fid's own."""
import numpy as np
import pytest
import torch

from facestyle import hub
from facestyle.eval import metrics as M


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / "pt_inception-random.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(hub.fid_inception_architecture().state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESTYLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FACESTYLE_OFFLINE", "1")
    monkeypatch.delenv("FACESTYLE_CKPT_FID_INCEPTION", raising=False)


def test_features_through_the_hub_and_fid(inception_file, monkeypatch, single_thread):
    monkeypatch.setenv("FACESTYLE_CKPT_FID_INCEPTION", str(inception_file))
    net = hub.load_fid_inception("fid-inception", device="cpu")  # by name, as the ffhq profile asks for it
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    b = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    fa = M.inception_features(a, net, batch=2)
    assert fa.shape == (3, 2048) and torch.isfinite(fa).all()
    assert torch.allclose(fa, M.inception_features(a, net, batch=3), atol=1e-5)  # batching changes nothing
    assert M.fid_inception(a, a, net) == pytest.approx(0.0, abs=1e-3)
    assert M.fid_inception(a, b, net) > 0


def test_frechet_distance_equals_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    g = torch.Generator().manual_seed(2)
    fa = torch.randn(300, 16, generator=g, dtype=torch.float64)
    fb = torch.randn(200, 16, generator=g, dtype=torch.float64) * 1.3 + 0.2
    ours = M.frechet_distance(fa, fb)
    mu_a, mu_b = fa.mean(0).numpy(), fb.mean(0).numpy()
    theirs = calculate_frechet_distance(mu_a, np.cov(fa.numpy(), rowvar=False), mu_b, np.cov(fb.numpy(), rowvar=False))
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_a_cached_file_that_does_not_match_the_published_prefix_is_refused(inception_file):
    cached = hub.cache_dir() / hub.get_entry("fid-inception").filename
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(inception_file.read_bytes())
    with pytest.raises(hub.ChecksumError, match="6726825d"):
        hub.load_fid_inception("fid-inception", device="cpu")


def test_a_file_that_is_not_the_fid_inception_says_so(tmp_path):
    wrong = tmp_path / "not_inception.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(hub.CheckpointError, match="not the FID Inception"):
        hub.load_fid_inception(wrong, device="cpu")
    sd = hub.fid_inception_architecture().state_dict()
    sd["fc.weight"] = sd["fc.weight"][:10]
    torch.save(sd, wrong)
    with pytest.raises(hub.CheckpointError, match="does not fit the FID Inception"):
        hub.load_fid_inception(wrong, device="cpu")
