"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for modules of small batches: they gain nothing from two, and when the 2 cores are
    shared with other jobs OpenMP's barrier waits make small convolutions many times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def mini_ckpts(tmp_path_factory):
    """A random mini G (with its D), a different random G' (standing in for a finetune) and untrained W / W+ / Z+ encoders."""
    from facestyle import hub
    from facestyle.config import get_profile
    from facestyle.pretrain.encoders import build_psp
    from facestyle.pretrain.generator import build_models

    d = tmp_path_factory.mktemp("stylize")
    paths = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g, disc = build_models("mini")
        g.eval()
        latent_avg = g.mean_latent(256, generator=torch.Generator().manual_seed(0))
        paths["g"] = hub.save_generator_checkpoint(d / "g.pt", g, latent_avg=latent_avg, d=disc)
        g2, _ = build_models("mini")
        paths["g2"] = hub.save_generator_checkpoint(d / "g2.pt", g2.eval(), latent_avg=latent_avg)
        for kind in ("w", "wplus", "zplus"):
            psp = build_psp(kind, g, latent_avg)
            paths[kind] = hub.save_psp_checkpoint(d / f"enc_{kind}.pt", psp, kind=kind,
                                                  encoder_config=get_profile("mini").encoder,
                                                  decoder_ckpt=str(paths["g"]))
    return {k: str(v) for k, v in paths.items()}
