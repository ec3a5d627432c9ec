"""`make gpu-check` on a CPU: the same code at the rehearsal size, so the day a GPU is lent it runs."""
import json
import math

import torch

from facestyle.cli import main
from facestyle.gpu_check import H100_TARGETS, format_gpu_check, gpu_check


def test_gpu_check_runs_on_cpu_at_the_rehearsal_size(single_thread, tmp_path, capsys):
    out = tmp_path / "gpu-check.json"
    assert main(["gpu-check", "--device", "cpu", "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["profile"] == "rehearsal" and r["generator_size"] == 32
    for key in ("stylize_fp32_batch1_images_per_s", "stylize_bf16_batch2_images_per_s", "finetune_s_per_iter",
                "pairs_s_per_batch_iter", "reference_s_per_iter", "finetune_1000_iters_min", "pairs_317_images_min",
                "reference_16_images_s"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    # bf16 autocast gives close but not identical pictures; the line says how close
    assert 0 < r["bf16_vs_fp32_max_abs"] < 1 and r["bf16_vs_fp32_psnr_db"] > 20
    # channels-last is a layout, not a different computation: bf16 rounding is all that may differ
    assert r["stylize_bf16_channels_last_batch2_images_per_s"] > 0 and r["channels_last_vs_default_max_abs"] < 0.1
    # the CPU run has no batch of 32, so that target is left out rather than compared
    assert set(r["targets"]) == set(H100_TARGETS) - {"stylize_bf16_batch32_images_per_s"}
    for word in ("stylize fp32, batch 1", "finetune +SC&PC, batch 4", "pairs level 2", "reference embedding",
                 "correctness: bf16 against fp32", "stylize bf16_channels_last, batch 2", "channels-last against"):
        assert word in printed, word


def test_stylizer_bf16_keeps_fp32_codes_and_outputs(mini_ckpts, single_thread):
    from facestyle.method.stylize import Stylizer

    x = torch.rand(2, 3, 64, 64) * 2 - 1
    st = Stylizer("mini", "cartoon", "cpu", generator=mini_ckpts["g2"], encoder=mini_ckpts["w"],
                  base_generator=mini_ckpts["g"], precision="bf16")
    y, codes = st.general(x, return_codes=True)
    ref = Stylizer("mini", "cartoon", "cpu", generator=mini_ckpts["g2"], encoder=mini_ckpts["w"],
                   base_generator=mini_ckpts["g"]).general(x)
    assert y.dtype == torch.float32 and codes.dtype == torch.float32
    assert 0 < (y - ref).abs().max() < 0.5


def test_format_marks_targets_not_met():
    r = {"profile": "ffhq", "generator_size": 1024, "device": "x", "torch": "t", "settings": {"iters": 1},
         "stylize_bf16_batch32_images_per_s": 100.0, "stylize_bf16_batch32_peak_gb": 2.0,
         "finetune_s_per_iter": 1.0, "finetune_1000_iters_min": 16.7, "finetune_peak_gb": None,
         "pairs_s_per_batch_iter": 0.1, "pairs_batch": 32, "pairs_317_images_min": 16.7, "pairs_peak_gb": None,
         "reference_s_per_iter": 0.01, "n_refs": 16, "reference_16_images_s": 10.0, "reference_peak_gb": None,
         "wall_s": 1.0}
    r["targets"] = {k: {"target": v, "kind": kind, "met": (r[k] >= v) if kind == "min" else (r[k] <= v)}
                    for k, (v, kind) in H100_TARGETS.items()}
    text = format_gpu_check(r)
    assert ">= 300 (NOT met)" in text and "<= 60 (met)" in text and "2.0 GB" in text


def test_stylizer_channels_last_gives_the_default_layouts_pictures(mini_ckpts, single_thread):
    from facestyle.method.stylize import Stylizer

    x = torch.rand(2, 3, 64, 64) * 2 - 1
    kw = dict(generator=mini_ckpts["g2"], encoder=mini_ckpts["w"], base_generator=mini_ckpts["g"])
    cl = Stylizer("mini", "cartoon", "cpu", channels_last=True, **kw)
    y = cl.general(x)
    convs = [p for p in cl.encoder().parameters() if p.ndim == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert torch.allclose(y, Stylizer("mini", "cartoon", "cpu", **kw).general(x), atol=1e-5)
