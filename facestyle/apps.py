"""Photo in, images out: the ``facestyle align`` and ``facestyle stylize`` commands.

Inputs are files or folders (folders are scanned for images, not recursively). Each input is handled on its
own: a bad file (not an image, truncated, no face...) is reported in one line and the run goes on; the exit
status is 1 when any input failed, 2 for a usage error. Every output is written atomically, so an interrupted
run never leaves a partial image.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .align import ImageError, align_path, save_atomic
from .images import IMAGE_SUFFIXES, tensor_to_pil
from .images import pils_to_tensor as pil_to_tensor

MODES = ("general", "multimodal", "reference")


def expand_inputs(inputs) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted); a missing path is a usage error."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return out


def aligned_faces(path: Path, size: int, all_faces: bool, device) -> list:
    """Aligned crops of one photo (largest face first; only the largest unless ``all_faces``)."""
    return align_path(path, size=size, all_faces=all_faces, device=device)


def run_each(paths: list[Path], work) -> int:
    """Call ``work(path)`` for every input; report failures per file and keep going."""
    failed = 0
    for path in paths:
        try:
            for out in work(path):
                print(out)
        except (ImageError, ValueError) as exc:
            failed += 1
            print(f"facestyle: {exc}" if str(path) in str(exc) else f"facestyle: {path}: {exc}", file=sys.stderr)
    if failed:
        print(f"facestyle: {failed} of {len(paths)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def align_main(args) -> int:
    """``facestyle align``: FFHQ-aligned crops (docs/reference.md section 6) of every face found."""
    out_dir = Path(args.out)
    paths = expand_inputs(args.inputs)

    def work(path):
        faces = aligned_faces(path, args.size, args.all_faces, args.device)
        for k, face in enumerate(faces):
            name = f"{path.stem}.png" if len(faces) == 1 else f"{path.stem}_face{k}.png"
            yield save_atomic(face, out_dir / name)

    return run_each(paths, work)


def stylize_main(args) -> int:
    """``facestyle stylize``: general, multimodal or reference-guided stylization of photos (paper 3, 3.3)."""
    from .config import get_profile
    from .method.stylize import Stylizer, make_invert_fn

    prof = get_profile(args.profile)
    if prof.photo_note:
        print(prof.photo_note, file=sys.stderr)
    size = prof.generator.size
    st = Stylizer(prof, args.style, device=args.device, generator=args.generator, encoder=args.encoder,
                  base_generator=args.base_generator, precision=args.precision)
    out_dir = Path(args.out)
    paths = expand_inputs(args.inputs)
    refs = None
    if args.mode == "reference":
        if not args.ref:
            raise ValueError("--mode reference needs --ref IMAGE (a portrait in the target style)")
        ref_faces = [f for r in args.ref for f in
                     (aligned_faces(Path(r), size, False, args.device) if not args.aligned
                      else [_load_resized(Path(r), size)])]
        refs = pil_to_tensor(ref_faces)
        invert_fn = make_invert_fn(prof, args.device, progress=True,
                                   **({} if args.ref_iters is None else {"iters": args.ref_iters}))

    def work(path):
        faces = aligned_faces(path, size, args.all_faces, args.device) if not args.aligned \
            else [_load_resized(path, size)]
        x = pil_to_tensor(faces)
        if args.mode == "general":
            outs = st.general(x).unsqueeze(1)
        elif args.mode == "multimodal":
            outs = st.multimodal(x, n_samples=args.n_samples, layer=args.layer, seed=args.seed)
        else:
            outs = st.reference(x, ref_images=refs, layer=args.layer, invert_fn=invert_fn)
        for k in range(outs.shape[0]):
            for j in range(outs.shape[1]):
                face = "" if outs.shape[0] == 1 else f"_face{k}"
                sample = "" if outs.shape[1] == 1 else f"_{j}"
                yield save_atomic(tensor_to_pil(outs[k, j]), out_dir / f"{path.stem}{face}_{args.style}{sample}.png")

    return run_each(paths, work)


def _load_resized(path: Path, size: int):
    from PIL import Image

    from .align import load_image

    return load_image(path).resize((size, size), Image.LANCZOS)


def add_align_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="photos or folders of photos")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--all-faces", action="store_true", help="keep every face (default: the largest)")
    p.add_argument("--device", default="cpu", help="MTCNN device (cpu is fast enough for detection)")


def add_stylize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="photos or folders of photos")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--profile", default="mini")
    p.add_argument("--style", default="cartoon", help="cartoon, anime, fantasy, illustration or impasto")
    p.add_argument("--mode", choices=MODES, default="general")
    p.add_argument("--ref", nargs="*", default=None, help="reference portrait(s) for --mode reference")
    p.add_argument("--ref-iters", type=int, default=None,
                   help="steps of the reference embedding (default: profile.invert_iters; cached per setting)")
    p.add_argument("--layer", type=int, default=6, help="mixing layer in the paper's 18-row units (3, 6, 9, 12)")
    p.add_argument("--n-samples", type=int, default=4, help="outputs per input for --mode multimodal")
    p.add_argument("--aligned", action="store_true", help="inputs are already aligned crops: skip detection")
    p.add_argument("--all-faces", action="store_true", help="stylize every face (default: the largest)")
    p.add_argument("--generator", default=None, help="G' checkpoint (default: the profile's for --style)")
    p.add_argument("--encoder", default=None, help="W encoder checkpoint (default: the profile's)")
    p.add_argument("--base-generator", default=None, help="pretrained G (default: the profile's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: encoder and G' under bf16 autocast (GPUs with bf16 tensor cores)")
