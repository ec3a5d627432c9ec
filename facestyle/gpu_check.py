"""``make gpu-check``: the paper's setting timed on one GPU, on random weights of the official shapes.

One command, no network, no checkpoint files: it builds the ``ffhq`` profile's networks (StyleGAN2 config-f at
1024 px, the IR-SE50 pSp W encoder, facenet's InceptionResnetV1, LPIPS-VGG) with random weights, times what a
user waits for and prints one table (and writes JSON):

* stylization (W encoder + G', Fig. 2) in images per second at several batch sizes, fp32 and bf16 autocast,
  and bf16 in the channels-last layout at the largest batch;
* a +SC&PC finetune iteration at the paper's batch of 4 (Eq. 3), level-2 pair iterations at a batch of 32
  (Eq. 5) and the V-space embedding of 16 references (section 3.3), through :func:`facestyle.bench_method`;
* the peak GPU memory of each, and one correctness line: bf16 against fp32 outputs on the same inputs.

Speed does not depend on the weights, so these are the numbers the real files would give. Each slow step is
timed over a few iterations after a warm-up and extrapolated to the profile's count (the table says so), and
compared with the targets for one H100 below. On a CPU the same code runs the ``rehearsal`` profile (32 px) with
small counts, which is how CI keeps it from rotting; those numbers say nothing about a GPU.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

from .bench_method import _sync, bench_method, peak_memory_gb
from .config import get_profile
from .utils import get_device

# What one H100 should reach (the targets): value, and whether the measurement must be at least or at
# most that.
H100_TARGETS = {
    "stylize_bf16_batch32_images_per_s": (300.0, "min"),
    "pairs_317_images_min": (10.0, "max"),
    "finetune_1000_iters_min": (10.0, "max"),
    "reference_16_images_s": (60.0, "max"),
}

GPU_SETTINGS = dict(profile="ffhq", batches=(1, 8, 32), iters=10, pair_batch=32, n_refs=16, repeats=5)
CPU_SETTINGS = dict(profile="rehearsal", batches=(1, 2), iters=2, pair_batch=4, n_refs=2, repeats=1)


def _stylize_models(prof, dev):
    from .hub.legacy import build_generator
    from .nn.encoders import PSP, build_encoder

    torch.manual_seed(0)
    g = build_generator(prof.generator).to(dev).eval()
    with torch.no_grad():
        avg = g.mean_latent(256)
    enc = build_encoder("w", prof.encoder, n_styles=g.n_latent, style_dim=g.style_dim)
    psp = PSP(enc, g, latent_avg=avg.reshape(-1), input_size=prof.encoder.input_size, n_styles=g.n_latent)
    return g, psp.to(dev).eval()


def stylize_throughput(profile, device, batches=(1, 8, 32), precisions=("fp32", "bf16"), repeats: int = 5) -> dict:
    """Images per second and peak memory of general stylization (W encoder + G') per precision and batch size,
    and how far bf16 outputs are from fp32 ones on the same photos (max |difference| and PSNR over [-1, 1])."""
    from .method.stylize import Stylizer

    prof = get_profile(profile)
    dev = get_device(device)
    g, enc = _stylize_models(prof, dev)
    size = prof.generator.size
    out: dict = {}
    photos = torch.rand(max(batches), 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for precision in precisions:
        for b in batches:
            st = Stylizer(prof, "cartoon", dev, generator=g, encoder=enc, base_generator=g, batch_size=b,
                          precision=precision)
            x = photos[:b]
            st.general(x)  # warm-up: kernels chosen, memory pools filled
            _sync(dev)
            peak_memory_gb(dev)
            t0 = time.perf_counter()
            for _ in range(repeats):
                st.general(x)
            _sync(dev)
            out[f"stylize_{precision}_batch{b}_images_per_s"] = b * repeats / (time.perf_counter() - t0)
            out[f"stylize_{precision}_batch{b}_peak_gb"] = peak_memory_gb(dev)
    if "bf16" in precisions and "fp32" in precisions:
        x = photos[:min(4, len(photos))]
        ref = Stylizer(prof, "cartoon", dev, generator=g, encoder=enc, base_generator=g).general(x)
        low = Stylizer(prof, "cartoon", dev, generator=g, encoder=enc, base_generator=g,
                       precision="bf16").general(x)
        diff = (low - ref).float()
        mse = diff.pow(2).mean().item()
        out["bf16_vs_fp32_max_abs"] = diff.abs().max().item()
        out["bf16_vs_fp32_psnr_db"] = 10 * math.log10(4.0 / mse) if mse > 0 else float("inf")
        # Channels-last at the largest batch in bf16, the setting of the throughput target; converting the
        # shared networks last leaves the measurements above in the default layout.
        b = max(batches)
        cl = Stylizer(prof, "cartoon", dev, generator=g, encoder=enc, base_generator=g, batch_size=b,
                      precision="bf16", channels_last=True)
        cl.general(photos[:b])
        _sync(dev)
        peak_memory_gb(dev)
        t0 = time.perf_counter()
        for _ in range(repeats):
            cl.general(photos[:b])
        _sync(dev)
        out[f"stylize_bf16_channels_last_batch{b}_images_per_s"] = b * repeats / (time.perf_counter() - t0)
        out[f"stylize_bf16_channels_last_batch{b}_peak_gb"] = peak_memory_gb(dev)
        out["channels_last_vs_default_max_abs"] = (cl.general(x) - low).abs().max().item()
    return out


def gpu_check(device: str = "auto", profile: str | None = None, settings: dict | None = None,
              progress: bool = False) -> dict:
    """Run every measurement (module docstring); ``settings`` overrides GPU_SETTINGS / CPU_SETTINGS."""
    dev = get_device(device)
    s = dict(GPU_SETTINGS if dev.type == "cuda" else CPU_SETTINGS)
    s.update(settings or {})
    if profile:
        s["profile"] = profile
    prof = get_profile(s["profile"])
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    res = {"device": name,
           "profile": prof.name, "generator_size": prof.generator.size, "torch": torch.__version__,
           "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}}
    res.update(stylize_throughput(prof.name, dev, s["batches"], repeats=s["repeats"]))
    m = bench_method(prof.name, str(dev), iters=s["iters"], n_style=317, pair_batch=s["pair_batch"],
                     n_refs=s["n_refs"], n_stylize=1, stylize_repeats=1, progress=progress)
    res.update({
        "finetune_s_per_iter": m["finetune_s_per_iter"],
        "finetune_1000_iters_min": m["finetune_s_per_iter"] * 1000 / 60,
        "finetune_peak_gb": m["finetune_peak_gb"],
        "pairs_s_per_batch_iter": m["pairs_s_per_batch_iter"], "pairs_batch": s["pair_batch"],
        # 317 images in batches of pair_batch, 1000 iterations each (the paper's cartoon set and count)
        "pairs_317_images_min": m["pairs_s_per_batch_iter"] * 1000 * math.ceil(317 / s["pair_batch"]) / 60,
        "pairs_peak_gb": m["pairs_peak_gb"],
        "reference_s_per_iter": m["reference_s_per_iter"], "n_refs": s["n_refs"],
        "reference_16_images_s": m["reference_s_per_iter"] * 1000 * math.ceil(16 / s["n_refs"]),
        "reference_peak_gb": m["reference_peak_gb"],
    })
    res["wall_s"] = time.perf_counter() - t0
    res["targets"] = {k: {"target": v, "kind": kind, "met": (res[k] >= v) if kind == "min" else (res[k] <= v)}
                      for k, (v, kind) in H100_TARGETS.items() if k in res}
    return res


def _gb(x) -> str:
    return "-" if x is None else f"{x:.1f} GB"


def format_gpu_check(r: dict) -> str:
    """The table ``make gpu-check`` prints."""
    rows = [("measurement", "value", "peak memory", "H100 target")]
    tgt = r.get("targets", {})

    def target(key):
        t = tgt.get(key)
        if not t:
            return ""
        sign = ">=" if t["kind"] == "min" else "<="
        return f"{sign} {t['target']:g} ({'met' if t['met'] else 'NOT met'})"

    for key in sorted(k for k in r if k.startswith("stylize_") and k.endswith("_images_per_s")):
        label = key[len("stylize_"):-len("_images_per_s")].replace("_batch", ", batch ")
        rows.append((f"stylize {label}", f"{r[key]:.1f} images/s", _gb(r.get(key.replace("images_per_s", "peak_gb"))),
                     target(key)))
    rows += [
        ("finetune +SC&PC, batch 4", f"{r['finetune_s_per_iter']:.3f} s/iter -> 1000 iters "
         f"{r['finetune_1000_iters_min']:.1f} min", _gb(r["finetune_peak_gb"]), target("finetune_1000_iters_min")),
        (f"pairs level 2, batch {r['pairs_batch']}", f"{r['pairs_s_per_batch_iter']:.3f} s/iter -> 317 images x 1000 "
         f"iters {r['pairs_317_images_min']:.1f} min", _gb(r["pairs_peak_gb"]), target("pairs_317_images_min")),
        (f"reference embedding, {r['n_refs']} at once", f"{r['reference_s_per_iter']:.3f} s/iter -> 16 images x "
         f"1000 iters {r['reference_16_images_s']:.1f} s", _gb(r["reference_peak_gb"]),
         target("reference_16_images_s")),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"gpu-check: profile {r['profile']} ({r['generator_size']} px), {r['device']}, torch {r['torch']}, "
             f"random weights of the official shapes; slow steps timed over {r['settings']['iters']} iterations "
             f"after a warm-up and extrapolated"]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if "bf16_vs_fp32_psnr_db" in r:
        lines.append(f"correctness: bf16 against fp32 stylization, max |difference| {r['bf16_vs_fp32_max_abs']:.4f}, "
                     f"PSNR {r['bf16_vs_fp32_psnr_db']:.1f} dB (outputs in [-1, 1])")
    if "channels_last_vs_default_max_abs" in r:
        lines.append(f"correctness: channels-last against the default layout (bf16), max |difference| "
                     f"{r['channels_last_vs_default_max_abs']:.4f}")
    lines.append(f"total {r['wall_s']:.0f} s")
    return "\n".join(lines)


def write_json(res: dict, path: str | os.PathLike) -> Path:
    """Write the numbers atomically (a killed run leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, path)
    return path
