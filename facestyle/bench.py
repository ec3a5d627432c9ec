"""Generator throughput benchmark: the two modulated-convolution paths side by side, optionally with the glibc
allocator tuning of :func:`facestyle.nn.ops.tune_malloc` (docs/design.md section 3).

    python -m facestyle.bench --size 256 --batch 16
    python -m facestyle.bench --size 64 --batch 16 --mini --compare-malloc

Weights are random (speed does not depend on them); each path renders the same codes with the stored noise, so
the table also reports how far the two paths' images differ.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from .nn.ops import malloc_tuning, tune_malloc
from .nn.stylegan2 import Generator, set_modconv_impl
from .utils import get_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_generator(size: int = 256, batch: int = 16, repeats: int = 3, channel_multiplier: int = 2,
                    device: str | torch.device = "auto", style_dim: int = 512, n_mlp: int = 8,
                    channels: dict | None = None, impls: tuple[str, ...] = ("grouped", "shared"),
                    warmup: int = 1, seed: int = 0) -> dict:
    """Time a no-grad ``mapping + synthesis`` of ``batch`` images for each modconv implementation.

    Returns a dict with the setup (size, batch, device, threads, parameter count, whether the allocator was
    tuned), per-implementation timings (``best_s``, ``mean_s``, ``ms_per_image``, ``images_per_s``), the
    speed-up of ``shared`` over ``grouped`` (best times) and the max abs difference between their images.
    """
    dev = get_device(device)
    torch.manual_seed(seed)
    g = Generator(size, style_dim, n_mlp, channel_multiplier=channel_multiplier, channels=channels).to(dev).eval()
    z = torch.randn(batch, style_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    results, images = {}, {}
    with torch.no_grad():
        ws = g.mapping(z)
        for impl in impls:
            set_modconv_impl(g, impl)
            times = []
            for i in range(warmup + repeats):
                _sync(dev)
                t0 = time.perf_counter()
                img = g.synthesis(ws, noise_mode="const")
                _sync(dev)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            images[impl] = img[:2].float().cpu()
            best = min(times)
            results[impl] = {"best_s": best, "mean_s": sum(times) / len(times), "ms_per_image": 1e3 * best / batch,
                             "images_per_s": batch / best}
            del img
    out = {
        "size": size, "batch": batch, "repeats": repeats, "channel_multiplier": channel_multiplier,
        "style_dim": style_dim, "device": str(dev), "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in g.parameters()), "malloc_tuned": malloc_tuning() is not None,
        "torch": torch.__version__, "results": results,
    }
    if "grouped" in results and "shared" in results:
        out["speedup_shared_vs_grouped"] = results["grouped"]["best_s"] / results["shared"]["best_s"]
        out["max_abs_diff"] = (images["grouped"] - images["shared"]).abs().max().item()
    return out


def format_table(runs: list[dict]) -> str:
    """Plain-text table of one or more :func:`bench_generator` results."""
    r0 = runs[0]
    lines = [f"StyleGAN2 generator {r0['size']}px, batch {r0['batch']}, {r0['params'] / 1e6:.2f} M params, "
             f"device {r0['device']}, {r0['threads']} threads, torch {r0['torch']} (best of {r0['repeats']})",
             f"{'malloc':<8} {'impl':<8} {'best s':>8} {'mean s':>8} {'ms/img':>8} {'img/s':>8}"]
    for r in runs:
        tag = "tuned" if r["malloc_tuned"] else "default"
        for impl, t in r["results"].items():
            lines.append(f"{tag:<8} {impl:<8} {t['best_s']:8.3f} {t['mean_s']:8.3f} {t['ms_per_image']:8.1f} "
                         f"{t['images_per_s']:8.2f}")
        if "speedup_shared_vs_grouped" in r:
            lines.append(f"{tag:<8} shared vs grouped: {r['speedup_shared_vs_grouped']:.2f}x faster, "
                         f"max |diff| {r['max_abs_diff']:.2e}")
    if len(runs) == 2 and all("shared" in r["results"] for r in runs):
        d, t = runs[0]["results"]["shared"]["best_s"], runs[1]["results"]["shared"]["best_s"]
        lines.append(f"malloc tuning (shared path): {d / t:.2f}x")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m facestyle.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--channel-multiplier", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--mini", action="store_true", help="the mini profile's generator (style_dim 128, 4 MLP layers, "
                                                       "MINI_CHANNELS); use with --size 64")
    p.add_argument("--tune-malloc", action="store_true", help="apply facestyle.nn.ops.tune_malloc() first")
    p.add_argument("--compare-malloc", action="store_true",
                   help="run twice in fresh processes, default allocator vs tuned")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.compare_malloc:
        base = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--compare-malloc", "--json")]
        runs = []
        for tuned in (False, True):
            cmd = [sys.executable, "-m", "facestyle.bench", *base, "--json"] + (["--tune-malloc"] if tuned else [])
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    else:
        if args.tune_malloc:
            tune_malloc()
        kw = {}
        if args.mini:
            from .config import MINI_CHANNELS
            kw = dict(style_dim=128, n_mlp=4, channels=MINI_CHANNELS)
        runs = [bench_generator(args.size, args.batch, args.repeats, args.channel_multiplier, args.device, **kw)]
    if args.json:
        print(json.dumps(runs if len(runs) > 1 else runs[0]))
    else:
        print(format_table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
