"""The mini world's self-supervised perceptual backbone and the cross-domain identity data (issue "faithful
stylization", hypotheses 1 and 2): they train, export and load where the training LPIPS / ID loss is built."""
import pytest
import torch

from facestyle.pretrain import judges as J
from facestyle.pretrain import perceptual as P


def test_views_keep_shape_and_strong_colour_differs_from_mild():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    mild = P.augment_views(x, torch.Generator().manual_seed(0), "mild")
    strong = P.augment_views(x, torch.Generator().manual_seed(0), "strong")
    assert mild.shape == strong.shape == x.shape and not torch.equal(mild, strong)
    with pytest.raises(ValueError, match="colour augmentation"):
        P.augment_views(x, torch.Generator(), "wild")


def test_shift_zero_keeps_every_view_in_place():
    x = -torch.ones(16, 3, 32, 32)
    x[:, :, 9:12, 20:23] = 1.0  # a bright spot off-centre: where it lands shows the geometric warp

    def spots(shift):
        v = P.augment_views(x, torch.Generator().manual_seed(1), "mild", shift=shift).mean(1).flatten(1)
        return set(v.argmax(1).tolist())

    assert spots(0.0) <= {r * 32 + c for r in range(9, 12) for c in range(20, 23)}
    assert len(spots(0.1)) > 3


def test_train_export_and_load_as_the_training_lpips(tmp_path):
    from facestyle.method.losses import LossModels
    from facestyle.nn.perceptual import lpips_distance

    torch.set_num_threads(1)
    cfg = P.PerceptualConfig(out=str(tmp_path / "run"), n_per_domain=6, steps=2, batch=8, threads=1, device="cpu")
    model = P.train(cfg, progress=False)
    path = P.export(model, cfg, tmp_path / "lp.pt")
    lm = LossModels.build("mini", "cpu", identity=False, lpips_weights=str(path))
    assert lm.lpips.backbone_mode == "pretrained"
    w = dict(lm.lpips.net.named_parameters())["slice1.0.weight"]
    assert torch.allclose(w, model.features[0].weight.half().float())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert float(lpips_distance(x, x, lm.lpips).max()) < 1e-6
    assert float(lpips_distance(x, x.flip(-1), lm.lpips).min()) > 0


def test_identity_views_in_every_domain():
    data = J.identity_data(12, 32, seed=3, domains="all")
    assert data["a"].shape == data["b"].shape == (12, 3, 32, 32) and data["a"].dtype == torch.uint8
    real = J.identity_data(4, 32, seed=3)
    assert torch.equal(real["a"], J.render_u8(real["c"], "real", 32, 3 * 31))  # the first net's data, unchanged
    with pytest.raises(ValueError, match="identity domains"):
        J.identity_data(4, 32, seed=3, domains="photo")
