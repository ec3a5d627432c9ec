"""Face detection and FFHQ alignment for real photos (docs/reference.md sections 5 and 6; docs/design.md section 7).

StyleGAN generators and pSp encoders trained on FFHQ only understand faces cropped and rotated the way FFHQ
was: the paper's test faces are FFHQ images, so a user's photo must go through the same recipe first (and
"results very sensitive to alignment" is a top complaint of the peer projects, docs/reference.md section 8).

* :func:`load_image` reads a file defensively: anything that is not a usable photo raises :class:`ImageError`
  with one line that names the file and says what to do; unusual pixel formats are converted to RGB (see
  :func:`to_rgb` for the exact handling).
* :func:`detect_faces` runs facenet-pytorch's MTCNN (weights ship inside the package, so it works offline) and
  returns boxes, probabilities and the 5 landmarks (eyes, nose, mouth corners).
* :func:`align_face` is the FFHQ crop (NVlabs/ffhq-dataset) driven by those 5 points: eyes are points 0 and 1,
  mouth corners points 3 and 4 (68-point landmarks are accepted too).
* :func:`align_path` chains the three; :func:`save_atomic` writes a result without leaving partial files.
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .utils import atomic_write

__all__ = ["ImageError", "MAX_PIXELS", "MIN_SIDE", "FFHQ_TEMPLATE_512", "ffhq_template", "load_image", "to_rgb",
           "detect_faces", "align_face", "align_path", "save_atomic"]

# Refuse images above this many pixels (a 100 MP photo is 300 MB of RGB before any processing; faces need 1-2 MP).
MAX_PIXELS = 100_000_000
# Refuse images smaller than this on either side: MTCNN's smallest face is 20 px, and a face needs context.
MIN_SIDE = 32
# MTCNN runs on a copy whose long side is at most this (its image pyramid makes 20+ MP photos very slow on a CPU);
# boxes and landmarks are scaled back to the original pixels, and alignment crops from the original.
DETECT_MAX_SIDE = 1600
# MTCNN's own cascade thresholds let through some non-faces at p ~ 0.7-0.9; real faces score > 0.99.
MIN_PROB = 0.9

# Where FFHQ-aligned 512 px faces have their 5 landmarks (eyes, nose, mouth corners): docs/reference.md section 6.
FFHQ_TEMPLATE_512 = np.array([[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41],
                              [313.09, 371.15]], dtype=np.float64)


class ImageError(ValueError):
    """An input photo cannot be used; the message is one line naming the file and what to do."""


def ffhq_template(size: int) -> np.ndarray:
    """The 5-point FFHQ template scaled to a ``size`` px aligned face, ``[5, 2]`` (x, y)."""
    return FFHQ_TEMPLATE_512 * (size / 512.0)


# --------------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------------

def to_rgb(img: Image.Image) -> Image.Image:
    """Normalise any PIL mode to 8-bit RGB, keeping what the photo shows.

    * grey (``L``, ``1``) and palette (``P``) -> RGB by replication / palette lookup;
    * alpha (``RGBA``, ``LA``, ``PA``, ``P`` with transparency) -> composited over **white**: dropping alpha
      instead would reveal whatever colour the transparent pixels happen to store;
    * 16/32-bit grey (``I;16*``, ``I``) -> rescaled to 0-255 (a plain ``convert`` would clip everything above
      255 to white); float (``F``) -> 0-1 data scaled to 0-255, otherwise clipped; 16-bit RGB PNGs already
      arrive as 8-bit RGB from Pillow;
    * ``CMYK`` (print JPEGs, including Adobe's inverted ones, which Pillow's JPEG reader handles), ``YCbCr``,
      ``LAB``, ``HSV`` -> Pillow's RGB conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16"):
            a = a / 257.0
        elif mode == "F":
            a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
        elif a.size and a.max() > 255:  # 32-bit integer: 16-bit data (PNG) or a wider range
            a = a / 257.0 if a.max() <= 65535 else a * (255.0 / a.max())
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    return img.convert("RGB")


def _err(path, what: str, todo: str) -> ImageError:
    return ImageError(f"{path}: {what}; {todo}")


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Read a photo as an RGB PIL image, or raise :class:`ImageError` with one clear line.

    Refused: missing files and folders, files that are not images (e.g. text named ``.jpg``), truncated or
    corrupt files, images smaller than :data:`MIN_SIDE` px on a side, and images above ``max_pixels``
    (default :data:`MAX_PIXELS`, 100 MP; checked from the header before decoding, and Pillow's own
    decompression-bomb guard, which fires above ``2 * Image.MAX_IMAGE_PIXELS`` (179 MP by default; raise it too
    for a larger ``max_pixels``), is reported the same way). EXIF orientation is applied (phone photos), the first
    frame of animations is used, and the pixel format is normalised by :func:`to_rgb`.
    """
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    p = Path(path)
    if p.is_dir():
        raise _err(p, "is a folder, not an image file", "pass a JPEG or PNG photo")
    if not p.exists():
        raise _err(p, "no such file", "check the path")
    todo_big = "downscale it (a face needs only 1-2 megapixels) and try again"

    def too_big(what: str) -> ImageError:
        return _err(p, f"is too large: {what}, more than the {limit / 1e6:g} megapixels facestyle accepts", todo_big)

    def bomb(exc) -> ImageError:  # Pillow's guard fired before facestyle saw the header: report its pixel count
        m = re.search(r"\((\d+) pixels\)", str(exc))
        return too_big(f"{int(m.group(1)) / 1e6:.1f} megapixels" if m else "over Pillow's decompression-bomb limit")
    try:
        with warnings.catch_warnings():
            # facestyle applies its own limit below; Pillow's warning band (89-179 MP) would only add noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(p)
    except Image.DecompressionBombError as exc:
        raise bomb(exc) from None
    except Image.UnidentifiedImageError:
        raise _err(p, "is not an image Pillow can read", "pass a JPEG or PNG photo") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _err(p, f"cannot be opened ({type(exc).__name__}: {exc})", "check that the file is a readable image") \
            from None
    with img:
        w, h = img.size
        if w * h > limit:
            raise too_big(f"{w}x{h} = {w * h / 1e6:.1f} megapixels")
        if min(w, h) < MIN_SIDE:
            raise _err(p, f"is only {w}x{h} pixels, too small to hold a face",
                       f"use a photo at least {MIN_SIDE} px on each side (256 px or more is best)")
        try:
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
        except Image.DecompressionBombError as exc:
            raise bomb(exc) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            reason = str(exc).split("\n")[0] or type(exc).__name__
            raise _err(p, f"is truncated or corrupt ({reason})", "re-download or re-export the image") from None


# --------------------------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _mtcnn(device: str):
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise ImportError("face detection needs facenet-pytorch: pip install --no-deps facenet-pytorch "
                          "(its metadata pins old torch/numpy, yet it runs with current ones)") from exc
    return MTCNN(keep_all=True, device=device)


def detect_faces(img: Image.Image, device: Any = "cpu", min_prob: float = MIN_PROB,
                 max_side: int = DETECT_MAX_SIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MTCNN faces in ``img``: ``(boxes [N, 4] x0 y0 x1 y1, probs [N], landmarks [N, 5, 2])`` in ``img`` pixels.

    Landmarks are (left eye, right eye, nose, mouth left, mouth right) as seen in the image. Faces below
    ``min_prob`` are dropped; the rest are sorted by box area, largest first. ``N = 0`` gives empty arrays of
    those shapes. facenet-pytorch returns ``None`` or ``dtype=object`` arrays; these are float64 arrays.
    """
    import torch

    from .utils import get_device

    dev = str(get_device(device))
    img = to_rgb(img)
    scale = 1.0
    if max(img.size) > max_side:
        scale = max(img.size) / max_side
        img = img.resize((max(1, round(img.width / scale)), max(1, round(img.height / scale))), Image.BILINEAR)
    with torch.no_grad():
        boxes, probs, points = _mtcnn(dev).detect(img, landmarks=True)
    empty = (np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2)))
    if boxes is None or points is None:
        return empty
    boxes = np.asarray(np.stack([np.asarray(b, dtype=np.float64) for b in boxes]), dtype=np.float64).reshape(-1, 4)
    probs = np.asarray([np.nan if p is None else float(p) for p in np.ravel(probs)], dtype=np.float64)
    points = np.asarray(np.stack([np.asarray(p, dtype=np.float64) for p in points]), dtype=np.float64).reshape(-1, 5, 2)
    keep = np.nan_to_num(probs, nan=0.0) >= min_prob
    boxes, probs, points = boxes[keep] * scale, probs[keep], points[keep] * scale
    if not len(boxes):
        return empty
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-area, kind="stable")
    return boxes[order], probs[order], points[order]


# --------------------------------------------------------------------------------------------------------------
# FFHQ alignment
# --------------------------------------------------------------------------------------------------------------

def _eyes_mouth(lm: np.ndarray):
    lm = np.asarray(lm, dtype=np.float64)
    if lm.shape == (5, 2):
        return lm[0], lm[1], lm[3], lm[4]
    if lm.shape == (68, 2):  # dlib/iBUG 68 points, FFHQ's original input
        return lm[36:42].mean(0), lm[42:48].mean(0), lm[48], lm[54]
    raise ValueError(f"landmarks must be [5, 2] (MTCNN) or [68, 2] (dlib), got {list(lm.shape)}")


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The FFHQ crop rectangle (oriented quad, corners TL, BL, BR, TR) and its side length, from landmarks.

    docs/reference.md section 6: the crop is centred a little below the eyes (``c = eye_avg + 0.1 eye_to_mouth``),
    oriented along the eye line corrected by the eye-mouth axis, and sized by
    ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)`` so that profile and frontal faces get similar framing.
    """
    eye_l, eye_r, mouth_l, mouth_r = _eyes_mouth(landmarks)
    eye_avg = (eye_l + eye_r) * 0.5
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) * 0.5 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    n = np.hypot(*x)
    if not np.isfinite(n) or n < 1e-6:
        raise ValueError("degenerate landmarks: the eyes and mouth coincide")
    x = x / n * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def align_face(img: Image.Image, landmarks: np.ndarray, size: int = 1024, transform_size: int | None = None,
               enable_padding: bool = True) -> Image.Image:
    """FFHQ alignment (NVlabs/ffhq-dataset recipe, docs/reference.md section 6) of one face -> ``size`` px RGB.

    Steps: the oriented quad of :func:`ffhq_quad`; shrink the photo first when the quad is more than twice
    the output (faster, and antialiased); crop to the quad plus a border; where the quad leaves the photo,
    reflect-pad and fade the padding with a blur and towards the median colour (no hard mirror seams for the
    generator to copy); sample the quad onto a ``transform_size`` square (default ``4 * size``, FFHQ's 4096
    for 1024) and downsample it to ``size`` with Lanczos (a supersampled, alias-free result).
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    img = to_rgb(img)
    transform_size = int(transform_size or 4 * size)
    quad, qsize = ffhq_quad(landmarks)

    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        img = img.resize((int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink))), Image.LANCZOS)
        quad = quad / shrink
        qsize = qsize / shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.width), min(crop[3] + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        quad = quad - crop[:2]

    pad = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
           int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.width + border, 0), max(pad[3] - img.height + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        img = _pad_and_fade(img, pad, qsize)
        quad = quad + pad[:2]
    img = img.transform((transform_size, transform_size), Image.QUAD, (quad + 0.5).flatten().tolist(),
                        Image.BILINEAR)
    if size < transform_size:
        img = img.resize((size, size), Image.LANCZOS)
    return img


def _pad_and_fade(img: Image.Image, pad, qsize: float) -> Image.Image:
    """Reflect-pad by ``pad`` = (left, top, right, bottom) and fade the padding (FFHQ recipe): blend towards a
    blurred copy (sigma ``0.02 qsize``) and towards the median colour, more strongly further from the photo."""
    pl, pt, pr, pb = (int(v) for v in pad)
    arr = np.pad(np.asarray(img), ((pt, pb), (pl, pr), (0, 0)), mode="reflect")
    h, w, _ = arr.shape
    yy, xx = np.ogrid[:h, :w]
    xx, yy = xx.astype(np.float32), yy.astype(np.float32)
    mask = np.maximum(1.0 - np.minimum(xx / max(pl, 1), (w - 1 - xx) / max(pr, 1)),
                      1.0 - np.minimum(yy / max(pt, 1), (h - 1 - yy) / max(pb, 1)))[..., None]
    # Pillow's Gaussian blur (radius = standard deviation) on the uint8 padded photo: the same filter the recipe
    # applies in float, without a scipy dependency; the result is rounded to uint8 anyway.
    blurred = np.asarray(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(qsize * 0.02)), dtype=np.float32)
    out = arr.astype(np.float32)
    out += (blurred - out) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    out += (np.median(out, axis=(0, 1)) - out) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def align_path(path: str | os.PathLike, size: int = 1024, all_faces: bool = False, device: Any = "cpu",
               min_prob: float = MIN_PROB) -> list[Image.Image]:
    """Load a photo, detect faces and return FFHQ-aligned ``size`` px crops.

    By default only the largest face (a portrait's subject); ``all_faces=True`` returns every face, largest
    first. Raises :class:`ImageError` for unusable files (:func:`load_image`) and "no face found".
    """
    img = load_image(path)
    boxes, _, points = detect_faces(img, device=device, min_prob=min_prob)
    if not len(boxes):
        raise _err(path, "no face found", "use a photo with a clearly visible, roughly frontal face at least "
                                          "40 px wide (or crop closer to the face)")
    chosen = points if all_faces else points[:1]
    return [align_face(img, lm, size=size) for lm in chosen]


def save_atomic(img: Image.Image, path: str | os.PathLike, format: str | None = None, **params) -> Path:
    """Save a PIL image through :func:`facestyle.utils.atomic_write`: a crash never leaves a partial file.

    The format comes from ``format`` or the file suffix (``.png``, ``.jpg`` ...); unknown suffixes are refused
    before anything is written.
    """
    path = Path(path)
    fmt = format or Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r}; use .png or .jpg (or pass format=)")
    if fmt.upper() == "JPEG" and img.mode not in ("RGB", "L", "CMYK"):
        img = to_rgb(img)
    with atomic_write(path) as fh:
        img.save(fh, format=fmt, **params)
    return path
