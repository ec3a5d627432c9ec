"""Short runs of the mini trainers: each must lower its loss, resume where it stopped, and export through the hub."""
import json

import pytest
import torch

from facestyle import hub
from facestyle.pretrain import encoders as pe
from facestyle.pretrain import generator as pg
from facestyle.pretrain import judges as pj
from facestyle.runs import JsonlLog, compact_state, expand_state


def _log(path):
    return JsonlLog(path).read()


def test_generator_warm_start_lowers_loss_and_resumes(tmp_path):
    cfg = pg.GeneratorTrainConfig(out=str(tmp_path / "g"), snapshot=str(tmp_path / "snap.pt"), batch=4,
                                  warm_steps=30, adv_steps=0, sample_every=1000, threads=2)
    pg.train(cfg, progress=False)
    log = _log(tmp_path / "g" / "log.jsonl")
    assert [r["step"] for r in log] == [10, 20, 30]
    assert log[-1]["rec"] < 0.8 * log[0]["rec"]
    # resume: extend the run by an adversarial phase; it must start from step 30, not from scratch
    cfg.adv_steps, cfg.keep_every = 10, 5
    state = pg.train(cfg, progress=False)
    assert state["step"] == 40
    # intermediate adversarial G_ema files, loadable as generators (to choose the adversarial step count)
    kept = sorted(p.name for p in (tmp_path / "g").glob("g_ema_*.pt"))
    assert kept == ["g_ema_000035.pt", "g_ema_000040.pt"]
    assert hub.load_generator(tmp_path / "g" / kept[0], device="cpu").g_ema.size == 64
    log = _log(tmp_path / "g" / "log.jsonl")
    assert [r["step"] for r in log] == [10, 20, 30, 40] and log[-1]["phase"] == "adv" and "d" in log[-1]
    # the committed snapshot is compact and still resumable
    snap = torch.load(tmp_path / "snap.pt", weights_only=True)
    assert snap["g"]["style.1.weight"].dtype == torch.float16 and "rng" not in snap
    assert expand_state(snap)["g"]["style.1.weight"].dtype == torch.float32
    # export -> hub loads it as a ready generator
    out = tmp_path / "mini-g.pt"
    pg.export_generator(tmp_path / "g" / "state.pt", out)
    loaded = hub.load_generator(out, device="cpu")
    assert loaded.g_ema.size == 64 and loaded.latent_avg.shape[-1] == 128
    assert hub.load_discriminator(out, device="cpu").size == 64
    # branch from a kept file (init): its weights and step, fresh optimisers; the file itself is left alone
    digest = hub.sha256_file(tmp_path / "g" / kept[0])
    branch = pg.GeneratorTrainConfig(out=str(tmp_path / "b"), snapshot=None, init=str(tmp_path / "g" / kept[0]),
                                     batch=4, warm_steps=30, adv_steps=10, sample_every=1000, threads=2)
    g, _ = pg.build_models("mini")
    pg.load_shippable(branch.init, g, g, pg.build_models("mini")[1])
    ref = hub.load_generator(tmp_path / "g" / kept[0], device="cpu").g_ema.state_dict()
    assert all(torch.equal(v, ref[k].float()) for k, v in g.state_dict().items())
    state = pg.train(branch, progress=False)
    assert state["step"] == 40 and [r["step"] for r in _log(tmp_path / "b" / "log.jsonl")] == [40]
    assert hub.sha256_file(tmp_path / "g" / kept[0]) == digest


def test_eye_pixels_are_the_irises_and_the_eye_term_trains(tmp_path):
    from facestyle import world

    c = world.sample_content(6, seed=3)
    x = world.render(c, "real", size=64, seed=5)
    m = pg.eye_pixels(c, x, 64, 5, True)
    assert m.shape == (6, 1, 64, 64)
    # a few dozen pixels per face, all in the eye band (rows ~40% down the image), none in the background
    assert ((m.sum((1, 2, 3)) > 10) & (m.mean((1, 2, 3)) < 0.03)).all()
    rows = m.sum((0, 1, 3)).nonzero().flatten()
    assert 20 <= int(rows.min()) and int(rows.max()) <= 40
    # another eye colour changes the render only inside the mask
    i = world.factor_index("eye_color")
    c2 = c.clone()
    c2[:, i] = (c2[:, i] + 2) % 4
    diff = (world.render(c2, "real", size=64, seed=5) - x).abs().sum(1, keepdim=True)
    assert float((diff * (1 - m)).max()) < 0.05 and float((diff * m).sum()) > 1.0
    assert float(pg.masked_l1(x, x + 1.0, m)) == pytest.approx(1.0)
    assert float(pg.masked_l1(x, x + 1.0, torch.zeros_like(m))) == 0.0
    # earrings: the mask lies at the sides of the head, where an earring is or would be
    e = pg.factor_pixels(c, x, "earrings", 64, 5, True)
    assert ((e.sum((1, 2, 3)) > 2) & (e.mean((1, 2, 3)) < 0.03)).all()
    assert float((e * m).sum()) == 0.0 and float(e[..., 24:40].sum()) == 0.0  # not the eyes, not the face middle
    cfg = pg.GeneratorTrainConfig(out=str(tmp_path / "g"), snapshot=None, batch=4, warm_steps=20, adv_steps=0,
                                  sample_every=1000, threads=2, eye_weight=1.0, earring_weight=1.0)
    pg.train(cfg, progress=False)
    log = _log(tmp_path / "g" / "log.jsonl")
    assert "eye" in log[-1] and log[-1]["eye"] < log[0]["eye"]
    assert "earring" in log[-1] and log[-1]["earring"] < log[0]["earring"]


def test_compact_state_moments_bfloat16():
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([p])
    p.sum().backward()
    opt.step()
    small = compact_state({"opt": opt.state_dict(), "rng": torch.get_rng_state()})
    st = small["opt"]["state"][0]
    assert st["exp_avg_sq"].dtype == torch.bfloat16 and "rng" not in small


@pytest.mark.parametrize("what", ["oracle", "identity"])
def test_judges_lower_loss_and_export(tmp_path, what):
    cfg = pj.JudgeTrainConfig(what=what, out=str(tmp_path / "{what}"), n_train=48, n_test=16, steps=60, batch=32,
                              lr=3e-3, threads=2)
    model = pj.train(cfg, progress=False)
    log = _log(tmp_path / what / "log.jsonl")
    assert log[-1]["loss"] < log[0]["loss"]
    data = torch.load(tmp_path / what / "data.pt", weights_only=True)
    report = (pj.evaluate_oracle if what == "oracle" else pj.evaluate_identity)(model, data["test"])
    json.dumps(report)
    path = tmp_path / f"{what}.pt"
    pj.export(model, cfg, report, path)
    loaded = (hub.load_oracle if what == "oracle" else hub.load_identity)(path, device="cpu")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    if what == "oracle":
        content, domain = loaded.predict(x)
        assert content.shape == (2, 20) and domain.shape == (2,)
    else:
        e = loaded(x)
        assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-4)


def test_oracle_factor_weights_scale_one_term():
    from facestyle import world

    assert pj.parse_factor_weights("") == {} and pj.parse_factor_weights("eye_color=5, glasses=2") == {
        "eye_color": 5.0, "glasses": 2.0}
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        pj.parse_factor_weights("eye_colour=5")
    torch.manual_seed(0)
    model = pj.build_oracle(64).eval()
    x, c = torch.rand(4, 3, 64, 64) * 2 - 1, world.sample_content(4, seed=1)
    d = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        base = float(pj.oracle_loss(model, x, c, d))
        i = world.factor_index("eye_color")
        eye = float(torch.nn.functional.cross_entropy(model(x)[0][i], c[:, i].long()))
        assert float(pj.oracle_loss(model, x, c, d, {"eye_color": 3.0})) == pytest.approx(base + 2 * eye, rel=1e-5)


@pytest.mark.parametrize("kind", ["w", "wplus", "zplus"])
def test_encoder_training_lowers_loss(tmp_path, kind):
    g, _ = pg.build_models("mini")
    with torch.no_grad():
        avg = g.mean_latent(256)
    gpath = hub.save_generator_checkpoint(tmp_path / "g.pt", g, latent_avg=avg)
    cfg = pe.EncoderTrainConfig(kind=kind, generator=str(gpath), out=str(tmp_path / "e-{kind}"), steps=20, batch=4,
                                threads=2)
    psp = pe.train(cfg, progress=False)
    log = _log(tmp_path / f"e-{kind}" / "log.jsonl")
    first, last = log[0]["img"] + log[0]["lat"], log[-1]["img"] + log[-1]["lat"]
    assert last < first
    out = tmp_path / f"enc-{kind}.pt"
    pe.export(psp, cfg, out)
    loaded = hub.load_psp(out, device="cpu")
    codes = loaded.encode(torch.zeros(1, 3, 64, 64))
    assert codes.shape == (1, 10, 128)


def test_stop_request_saves_then_interrupts(tmp_path):
    import os
    import signal

    from facestyle.runs import Checkpointer, Interrupted

    ck = Checkpointer(tmp_path / "state.pt", every_s=1e9, snapshot=tmp_path / "snap.pt")
    ck.install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # handled: only sets a flag, the process keeps running
        assert ck.due()
        with pytest.raises(Interrupted) as exc:
            ck.save({"w": torch.ones(2), "step": 3})
        assert exc.value.code == 130
    finally:
        ck.restore_signal_handlers()
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 3
    assert ck.load()["step"] == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_config_flags_parse_booleans_and_turn_optional_fields_off():
    from facestyle.cli import build_parser
    from facestyle.pretrain.generator import GeneratorTrainConfig
    from facestyle.runs import config_from_args

    args = build_parser().parse_args(["pretrain", "generator", "--warm-texture", "false", "--snapshot", "none"])
    cfg = config_from_args(GeneratorTrainConfig, args)
    assert cfg.warm_texture is False and cfg.snapshot is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "generator", "--warm-texture", "maybe"])
