"""The one home of image-file I/O below the method: suffixes, PIL <-> tensor conversion, folders and file lists.

Photos that still need face alignment go through :func:`facestyle.align.load_image` first (EXIF orientation,
size limits, one-line errors for unusable files); what reaches the method is an aligned portrait or a style image,
read here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

__all__ = ["IMAGE_SUFFIXES", "to_tensor", "load_files", "load_folder", "pils_to_tensor", "tensor_to_pil"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def to_tensor(img, size: int) -> torch.Tensor:
    """One PIL image -> ``[3, size, size]`` in [-1, 1]: 16/32-bit greyscale scaled to 8 bits, transparency
    composited over white, non-square images centre-cropped (portraits are centred), Lanczos resize."""
    import numpy as np
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit / 32-bit greyscale: PIL's convert("RGB") would clip at 255, so scale to 8 bits first.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray((arr / top * 255).round().clip(0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency over white rather than dropping alpha (which reveals arbitrary colours).
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    img = img.convert("RGB")
    w, h = img.size
    if w != h:  # centre-crop to square: faces are aligned in the centre of portrait datasets
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return x / 127.5 - 1.0


def load_files(paths: Sequence[str | Path], size: int, what: str = "image") -> torch.Tensor:
    """Image files -> ``[N, 3, size, size]`` in [-1, 1]; a missing or unreadable file raises one ``ValueError``."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for p in paths:
        p = Path(p).expanduser()
        if not p.is_file():
            raise ValueError(f"{what} {p} does not exist")
        try:
            with Image.open(p) as img:
                img.load()
                out.append(to_tensor(img, int(size)))
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(f"{p} is not a readable image ({exc}); remove or replace it") from None
    return torch.stack(out)


def load_folder(folder: str | Path, size: int, what: str = "image folder", todo: str = "put images there"
                ) -> torch.Tensor:
    """Every image file of ``folder`` (sorted by name) as ``[N, 3, size, size]`` in [-1, 1]."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"{what} {folder} does not exist or is not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); {todo}")
    return load_files(files, size)


def pils_to_tensor(images) -> torch.Tensor:
    """Same-size PIL images -> ``[N, 3, H, W]`` in [-1, 1] (no resizing)."""
    import numpy as np

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1


def tensor_to_pil(x: torch.Tensor):
    """``[3, H, W]`` in [-1, 1] -> an RGB PIL image."""
    from PIL import Image

    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr)
