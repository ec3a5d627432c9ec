"""Speed of the method's three slow steps (issue targets for mini on a 2-core CPU: 1000 finetune iterations
<= 10 min, level-2 pseudo pairs for 300 style images <= 5 min, reference embedding of 16 images <= 30 s).

    facestyle bench --method [--profile mini] [--iters 20]

Weights are random with the profile's shapes (speed does not depend on them), written to a temporary folder
in the formats the method reads, so the benchmark needs no checkpoint and also runs the ``ffhq`` shapes on a
GPU. Each step is timed for a few iterations after a warm-up and extrapolated linearly to the full count;
the output says what was measured and what was extrapolated.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from .config import get_profile
from .utils import get_device


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_memory_gb(dev: torch.device, reset: bool = True) -> float | None:
    """Peak GPU memory allocated since the last reset, in GB (None off CUDA: no per-step counter there)."""
    if dev.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(dev) / 1e9
    if reset:
        torch.cuda.reset_peak_memory_stats(dev)
    return peak


def _random_models(profile, dev, root: Path) -> dict:
    from . import hub
    from .nn.judges import IdentityNet
    from .pretrain.generator import build_models

    g, d = build_models(profile)
    g = g.eval()
    with torch.no_grad():
        avg = g.mean_latent(256)
    paths = {"g_path": hub.save_generator_checkpoint(root / "g.pt", g, latent_avg=avg, d=d)}
    if profile.identity_ckpt != "facenet-vggface2":  # mini: its own identity network
        paths["identity"] = hub.save_checkpoint(root / "identity.pt", kind="identity",
                                                config={"size": g.size}, state_dict=IdentityNet(input_size=g.size))
    else:  # facenet's architecture with random weights: its file format, without the download
        from facenet_pytorch import InceptionResnetV1

        paths["identity"] = root / "facenet.pt"
        torch.save(InceptionResnetV1(pretrained=None).state_dict(), paths["identity"])
    return {"g": g.to(dev), "avg": avg.to(dev), **{k: str(v) for k, v in paths.items()}}


def bench_method(profile: str = "mini", device: str = "auto", iters: int = 20, n_style: int = 300,
                 pair_batch: int = 32, n_refs: int = 16, n_stylize: int = 8, stylize_repeats: int = 3,
                 progress: bool = False, pair_precision: str = "fp32", reduced_size: int | None = None) -> dict:
    """Time a finetune (+SC&PC), the level-2 pair optimisation (Eq. 5, forward passes in ``pair_precision``),
    the V-space reference embedding and stylization (encode + G', ``n_stylize`` photos per call,
    ``stylize_repeats`` calls after a warm-up).

    ``reduced_size`` runs the profile's architecture (mapping, channels, encoder, losses) with a generator of
    that resolution instead (a profile named ``<profile>-<size>px``): it checks the whole path on a machine that
    cannot hold the full size (ffhq at 1024 px went past 24 GB on a 2-core CPU machine, docs/speed.md, "The ffhq
    profile"); its speeds are not the profile's."""
    from .method.finetune import FinetuneConfig, finetune
    from .method.invert import invert_v
    from .method.losses import LossModels
    from .method.pairs import level2

    prof = get_profile(profile)
    if reduced_size is not None:  # passed down as an object: no name lookup can find it
        prof = prof.replace(name=f"{prof.name}-{int(reduced_size)}px",
                            generator=dataclasses.replace(prof.generator, size=int(reduced_size)))
    dev = get_device(device)
    out = {"profile": prof.name, "device": str(dev), "threads": torch.get_num_threads(), "iters_timed": iters}
    with tempfile.TemporaryDirectory(prefix="facestyle-bench-") as tmp:
        root = Path(tmp)
        m = _random_models(prof, dev, root)
        g, size, n_latent = m["g"], m["g"].size, m["g"].n_latent
        style = torch.rand(max(pair_batch, 8), 3, size, size) * 2 - 1
        with torch.no_grad():
            wplus = g.mapping(torch.randn(len(style), n_latent, g.style_dim, device=dev)).cpu()
        torch.save({"level": 1, "wplus": wplus, "style": style}, root / "pairs.pt")
        # Random LPIPS backbone too ("seeded": the same torchvision VGG16, seeded weights): the ffhq profile would
        # otherwise need the ImageNet file, which an offline GPU machine may not have, for no change in speed.
        losses = LossModels.build(dataclasses.replace(prof, lpips_backbone="seeded"), dev,
                                  identity_ckpt=m["identity"])
        out.update(generator_size=size, identity_net=type(losses.identity).__name__,
                   lpips_net=f"{losses.lpips.net_name} ({losses.lpips.backbone_mode}), loss size {losses.size}")

        # finetune: the timed window excludes start-up and the first (R1) step
        def run_ft(n: int, out_dir: str) -> float:
            cfg = FinetuneConfig(profile=prof.name, variant="sc_pc", iters=n, generator=m["g_path"],
                                 identity=m["identity"],
                                 pairs=str(root / "pairs.pt"), out=str(root / out_dir), sample_every=0,
                                 device=str(dev), ckpt_every_s=1e9, r1_every=16)
            res = finetune(cfg, progress=progress, lossmodels=losses, style_images=style, profile=prof)
            return float(torch.load(res.out / "state.pt", weights_only=True)["wall_s"])

        peak_memory_gb(dev)
        short, long = run_ft(2, "ft"), run_ft(2 + iters, "ft")
        out["finetune_peak_gb"] = peak_memory_gb(dev)
        per_it = (long - short) / iters
        out["finetune_s_per_iter"] = per_it
        out["finetune_1000_iters_min"] = per_it * prof.finetune_iters / 60

        # level 2 (Eq. 5): one batch of pair_batch codes, `iters` steps (after a 2-step warm-up)
        z0 = torch.randn(pair_batch, n_latent, g.style_dim)
        level2(style[:pair_batch], z0, g, g, losses, iters=2, lr=prof.pair_opt_lr, batch=pair_batch, progress=False,
               precision=pair_precision)
        _sync(dev)
        t0 = time.perf_counter()
        level2(style[:pair_batch], z0, g, g, losses, iters=iters, lr=prof.pair_opt_lr, batch=pair_batch,
               progress=False, precision=pair_precision)
        _sync(dev)
        per_batch_it = (time.perf_counter() - t0) / iters
        out["pairs_peak_gb"] = peak_memory_gb(dev)
        n_batches = math.ceil(n_style / pair_batch)
        out["pairs_s_per_batch_iter"] = per_batch_it
        out["pairs_precision"] = pair_precision
        out["pairs_batch"] = pair_batch
        out[f"pairs_level2_{n_style}_images_min"] = per_batch_it * prof.pair_opt_iters * n_batches / 60

        # reference embedding: n_refs images in V space of G' (here the random G), `iters` steps
        refs = style[:1].repeat(n_refs, 1, 1, 1) + 0.01 * torch.randn(n_refs, 3, size, size)
        invert_v(refs[:2], g, losses.lpips, iters=2, batch=2, size=prof.loss_size)
        _sync(dev)
        t0 = time.perf_counter()
        invert_v(refs, g, losses.lpips, iters=iters, batch=n_refs, size=prof.loss_size)  # as make_invert_fn
        _sync(dev)
        per_it = (time.perf_counter() - t0) / iters
        out["reference_peak_gb"] = peak_memory_gb(dev)
        out["reference_s_per_iter"] = per_it
        out[f"reference_{n_refs}_images_s"] = per_it * prof.invert_iters

        # stylization (Fig. 2): W encoder + G' with the style's truncation, random weights of the profile's shapes
        from .method.stylize import Stylizer
        from .pretrain.encoders import build_psp

        enc = build_psp("w", g, m["avg"], prof).to(dev).eval()
        stylizer = Stylizer(prof, "cartoon", dev, generator=g, encoder=enc, base_generator=g,
                            batch_size=n_stylize)
        photos = torch.rand(n_stylize, 3, size, size) * 2 - 1
        stylizer.general(photos[:1])
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(stylize_repeats):
            stylizer.general(photos)
        _sync(dev)
        out["stylize_images_per_s"] = n_stylize * stylize_repeats / (time.perf_counter() - t0)
        out["stylize_batch"] = n_stylize
        out["invert_iters"] = prof.invert_iters
        out["pair_opt_iters"] = prof.pair_opt_iters
        out["finetune_iters"] = prof.finetune_iters
    return out


def format_method(r: dict) -> str:
    n_style = next(k for k in r if k.startswith("pairs_level2_")).split("_")[2]
    n_refs = next(k for k in r if k.startswith("reference_") and k.endswith("_images_s")).split("_")[1]
    return "\n".join([
        f"method speed, profile {r['profile']}, device {r['device']}, {r['threads']} threads "
        f"(each step timed over {r['iters_timed']} iterations after a warm-up, extrapolated linearly)",
        f"random weights: G {r.get('generator_size', '?')} px, identity {r.get('identity_net', '?')}, "
        f"LPIPS {r.get('lpips_net', '?')}",
        f"finetune +SC&PC      {r['finetune_s_per_iter']:.3f} s/iter -> {r['finetune_iters']} iters "
        f"{r['finetune_1000_iters_min']:.1f} min",
        f"pairs level 2 (Eq.5) {r['pairs_s_per_batch_iter']:.3f} s/iter per batch of {r.get('pairs_batch', 32)} "
        f"({r.get('pairs_precision', 'fp32')}) -> {n_style} images x "
        f"{r['pair_opt_iters']} iters {r[f'pairs_level2_{n_style}_images_min']:.1f} min",
        f"reference embedding  {r['reference_s_per_iter']:.3f} s/iter for {n_refs} images -> {r['invert_iters']} "
        f"iters {r[f'reference_{n_refs}_images_s']:.1f} s",
        f"stylization          {r['stylize_images_per_s']:.2f} images/s (W encoder + G', batch {r['stylize_batch']})",
        f"as rates: finetune {1 / r['finetune_s_per_iter']:.3g} iters/s; pairs "
        f"{float(n_style) / r[f'pairs_level2_{n_style}_images_min']:.3g} /min; references "
        f"{60 * float(n_refs) / r[f'reference_{n_refs}_images_s']:.3g} /min",
    ])


CONVERGENCE_MARKS = (25, 50, 100, 200, 400, 1000)


def convergence(style: str = "cartoon", profile: str = "mini", device: str = "auto", n: int = 32,
                iters: int = 1000, invert_counts=(100, 200, 400, 1000), n_refs: int = 16,
                progress: bool = True, pair_lrs: Sequence[float] | None = None,
                pair_precisions: Sequence[str] = ("fp32",), pair_schedules: Sequence[str] = ("constant",)) -> dict:
    """How many iterations the two optimisations need on the *trained* models of a profile (decides whether the
    mini profile may run fewer than the paper's 1000, see ``bench_method``).

    * Level-2 pairs (Eq. 5): the first ``n`` images of ``style``'s set, z1+ from the Z+ encoder (Eq. 4), G* =
      the study's baseline finetune (trained first if missing, as ``facestyle eval`` would), one Adam run of
      ``iters`` steps; reports the batch-mean semantic loss (Eq. 1) before step k for k in CONVERGENCE_MARKS,
      and the share of the whole run's decrease reached by then; one run per learning rate of ``pair_lrs``
      (default: the profile's ``pair_opt_lr``), precision of ``pair_precisions`` and learning-rate schedule of
      ``pair_schedules`` (``facestyle.method.pairs.SCHEDULES``), from the same z1+. Under
      bf16 the per-step losses are bf16 readings; the start and final losses are always computed in fp32.
    * Reference embedding (V space, section 3.3): the first ``n_refs`` style images inverted into G*, a
      separate run per count in ``invert_counts`` (the projector's learning-rate schedule depends on the
      count); reports each run's final mean LPIPS.
    """
    from . import hub, world
    from .eval.study import StudySettings, finetune_variant
    from .method.invert import invert_v
    from .method.losses import LossModels
    from .method.pairs import level1, level2

    prof = get_profile(profile)
    dev = get_device(device)
    g_star_path = finetune_variant(style, "baseline", StudySettings(profile=prof.name, device=str(dev),
                                                                     progress=progress)).path
    g = hub.load_generator(prof.generator_ckpt, dev).g_ema.eval()
    g_star = hub.load_generator(g_star_path, dev).g_ema.eval()
    s_imgs = world.style_dataset(style, size=g.size, n=max(n, n_refs))[0]
    z1 = level1(s_imgs[:n], hub.load_psp(prof.zplus_encoder_ckpt, dev).eval(), g).zplus
    losses = LossModels.build(prof, dev, lpips=True, identity=prof.lambda_id > 0)
    marks = [k for k in CONVERGENCE_MARKS if k <= iters] + ([iters] if iters not in CONVERGENCE_MARKS else [])
    runs = []
    for lr, precision, schedule in [(lr, pr, sc) for lr in (pair_lrs or (prof.pair_opt_lr,)) for pr in pair_precisions
                                    for sc in pair_schedules]:
        trace: list[float] = []
        t0 = time.perf_counter()
        lvl = level2(s_imgs[:n], z1, g, g_star, losses, iters=iters, lr=float(lr), batch=n,
                     progress=progress, trace=trace, precision=precision, schedule=schedule)
        pairs_s = time.perf_counter() - t0
        final = float(lvl.loss_end.mean())
        trace.append(final)  # trace[k] = loss after k steps
        trace[0] = float(lvl.loss_start.mean())  # fp32 in either precision
        drop = trace[0] - final
        runs.append({"n": n, "iters": iters, "lr": float(lr), "precision": precision, "schedule": schedule,
                     "wall_s": round(pairs_s, 1),
                     "loss": {k: trace[k] for k in marks}, "loss_start": trace[0],
                     "share_of_decrease": {k: (trace[0] - trace[k]) / drop if drop > 0 else 1.0 for k in marks}})
    out = {"profile": prof.name, "style": style, "device": str(dev), "g_star": str(g_star_path),
           "pairs": runs[0], "pair_runs": runs, "invert": {"n": n_refs, "lpips_end": {}, "wall_s": {}}}
    for k in invert_counts:
        t0 = time.perf_counter()
        r = invert_v(s_imgs[:n_refs], g_star, losses.lpips, iters=k, batch=n_refs, size=prof.loss_size,
                     progress=progress)
        out["invert"]["lpips_end"][k] = float(r.lpips.mean())
        out["invert"]["lpips_start"] = float(r.lpips_start.mean())
        out["invert"]["wall_s"][k] = round(time.perf_counter() - t0, 1)
    return out


def format_convergence(r: dict) -> str:
    v = r["invert"]
    lines = [f"convergence on the trained {r['profile']} models, style {r['style']}, device {r['device']}"]
    for p in r.get("pair_runs", [r["pairs"]]):
        lines += [f"level-2 pairs (Eq. 5), {p['n']} images, lr {p['lr']}, {p.get('precision', 'fp32')}, "
                  f"{p.get('schedule', 'constant')} schedule, one run of "
                  f"{p['iters']} steps "
                  f"({p['wall_s']} s); loss at start {p['loss_start']:.4f}",
                  "  steps  semantic loss  share of the run's decrease"]
        lines += [f"  {k:>5}  {p['loss'][k]:.4f}         {p['share_of_decrease'][k]:.1%}" for k in p["loss"]]
    if not v["lpips_end"]:
        return "\n".join(lines)
    lines += [f"reference embedding (V space into G*), {v['n']} images, one run per count; LPIPS at start "
              f"{v['lpips_start']:.4f}", "  iters  final LPIPS  wall s"]
    lines += [f"  {k:>5}  {v['lpips_end'][k]:.4f}       {v['wall_s'][k]}" for k in v["lpips_end"]]
    return "\n".join(lines)
