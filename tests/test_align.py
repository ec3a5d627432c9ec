"""facestyle.align on a real photo that ships with matplotlib, and on every kind of bad input (docs/design.md 7)."""
from __future__ import annotations

import io
import os
import pathlib
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facestyle import align

pytest.importorskip("facenet_pytorch")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def portrait_path():
    import matplotlib

    p = pathlib.Path(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not p.is_file():
        pytest.skip("matplotlib's sample portrait grace_hopper.jpg is not installed")
    return p


@pytest.fixture(scope="module")
def portrait(portrait_path):
    return align.load_image(portrait_path)


def _one_line_error(excinfo, path, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


# ---- detection and alignment --------------------------------------------------------------------------------

def test_detects_one_face_with_landmarks_inside_its_box(portrait):
    boxes, probs, lms = align.detect_faces(portrait)
    assert boxes.shape == (1, 4) and probs.shape == (1,) and lms.shape == (1, 5, 2)
    assert boxes.dtype == probs.dtype == lms.dtype == np.float64
    assert probs[0] > 0.99
    x0, y0, x1, y1 = boxes[0]
    assert np.all((lms[0, :, 0] > x0) & (lms[0, :, 0] < x1) & (lms[0, :, 1] > y0) & (lms[0, :, 1] < y1))
    assert lms[0, 0, 0] < lms[0, 1, 0]  # left eye (in the image) first


@pytest.mark.parametrize("size", [256, 512])
def test_alignment_puts_the_face_on_the_ffhq_template(portrait, size):
    _, _, lms = align.detect_faces(portrait)
    out = align.align_face(portrait, lms[0], size=size)
    assert out.size == (size, size) and out.mode == "RGB"
    _, _, lm2 = align.detect_faces(out)
    assert len(lm2) == 1
    err = np.abs(lm2[0] - align.ffhq_template(size))
    assert err[:2].max() < 0.03 * size, err  # eyes within 3 % of the image size
    assert err.max() < 0.05 * size, err


def test_alignment_pads_when_the_face_fills_the_photo(portrait):
    """A tight crop makes the FFHQ quad leave the photo: reflect padding with fading, still on the template."""
    boxes, _, lms = align.detect_faces(portrait)
    x0, y0, x1, y1 = boxes[0].round().astype(int)
    tight = portrait.crop((x0, y0, x1, y1))
    out = align.align_face(tight, lms[0] - [x0, y0], size=256)
    assert out.size == (256, 256)
    corner = np.asarray(out, dtype=np.float32)[:20, :20]
    # the corner lies outside the photo: filled (not black) and faded towards the median (blurred, flat)
    assert corner.mean() > 30 and corner.std(axis=(0, 1)).max() < 20
    _, _, lm2 = align.detect_faces(out)
    assert len(lm2) >= 1
    assert np.abs(lm2[0][:2] - align.ffhq_template(256)[:2]).max() < 0.05 * 256


def test_align_path_largest_face_by_default_and_all_on_request(portrait, tmp_path):
    small = portrait.resize((portrait.width // 2, portrait.height // 2), Image.LANCZOS)
    both = Image.new("RGB", (portrait.width + small.width, portrait.height), (90, 110, 160))
    both.paste(portrait, (0, 0))
    both.paste(small, (portrait.width, 0))
    path = tmp_path / "two.png"
    both.save(path)
    one = align.align_path(path, size=128)
    assert len(one) == 1 and one[0].size == (128, 128)
    alone = tmp_path / "alone.png"
    portrait.save(alone)
    ref = np.asarray(align.align_path(alone, size=128)[0], dtype=np.float32)
    assert np.abs(np.asarray(one[0], dtype=np.float32) - ref).mean() < 3  # the big face, not the small one
    two = align.align_path(path, size=128, all_faces=True)
    assert len(two) == 2 and all(im.size == (128, 128) for im in two)


def test_no_face_is_a_clear_error(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(path)
    with pytest.raises(align.ImageError) as e:
        align.align_path(path, size=64)
    _one_line_error(e, path, "no face found")


# ---- bad inputs -------------------------------------------------------------------------------------------

def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(align.ImageError) as e:
        align.load_image(path)
    _one_line_error(e, path, "not an image")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(align.ImageError, match="no such file"):
        align.load_image(tmp_path / "missing.jpg")
    with pytest.raises(align.ImageError, match="folder"):
        align.load_image(tmp_path)


def test_truncated_jpeg(portrait_path, tmp_path):
    data = portrait_path.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(align.ImageError) as e:
        align.load_image(path)
    _one_line_error(e, path, "truncated")


def test_one_pixel_image(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(path)
    with pytest.raises(align.ImageError) as e:
        align.load_image(path)
    _one_line_error(e, path, "1x1", "too small")


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): a huge header, a tiny file."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    b = bytearray(buf.getvalue())
    assert b[12:16] == b"IHDR"
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    return bytes(b)


def test_huge_header_is_refused_without_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(20000, 20000))
    with pytest.raises(align.ImageError) as e:
        align.load_image(path)
    _one_line_error(e, path, "too large", "downscale")


def test_own_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    monkeypatch.setattr(align, "MAX_PIXELS", 50_000)
    with pytest.raises(align.ImageError) as e:
        align.load_image(path)
    _one_line_error(e, path, "300x200", "downscale")
    assert align.load_image(path, max_pixels=60_000).size == (300, 200)


def test_grayscale_becomes_rgb_and_still_detects(portrait, tmp_path):
    path = tmp_path / "grey.jpg"
    portrait.convert("L").save(path)
    img = align.load_image(path)
    assert img.mode == "RGB" and img.size == portrait.size
    a = np.asarray(img)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
    assert len(align.detect_faces(img)[0]) == 1


def test_rgba_is_composited_over_white(tmp_path):
    arr = np.zeros((64, 64, 4), np.uint8)
    arr[..., 0] = 200
    arr[:, :32, 3] = 255  # left half opaque red, right half fully transparent (stored colour: red)
    path = tmp_path / "alpha.png"
    Image.fromarray(arr, "RGBA").save(path)
    img = np.asarray(align.load_image(path))
    assert img.shape == (64, 64, 3)
    assert tuple(img[0, 0]) == (200, 0, 0) and tuple(img[0, 63]) == (255, 255, 255)


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    arr = np.zeros((40, 40), np.uint16)
    arr[:, :20] = 65535
    arr[:, 20:] = 32896  # 128 * 257
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    img = np.asarray(align.load_image(path))
    assert img.shape == (40, 40, 3)
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[0, 39]) == (128, 128, 128)


def test_cmyk_jpeg_becomes_rgb(portrait, tmp_path):
    path = tmp_path / "print.jpg"
    portrait.convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    img = align.load_image(path)
    assert img.mode == "RGB" and img.size == portrait.size
    diff = np.abs(np.asarray(img, dtype=np.float32) - np.asarray(portrait, dtype=np.float32)).mean()
    assert diff < 12, diff


# ---- writing ----------------------------------------------------------------------------------------------

def test_save_atomic_writes_or_leaves_nothing(tmp_path, monkeypatch):
    img = Image.new("RGB", (16, 16), (10, 20, 30))
    out = align.save_atomic(img, tmp_path / "sub" / "a.png")
    assert Image.open(out).size == (16, 16)
    with pytest.raises(ValueError, match="unknown image suffix"):
        align.save_atomic(img, tmp_path / "b.xyz")

    def boom(self, fh, *a, **k):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(RuntimeError):
        align.save_atomic(img, tmp_path / "c.png")
    assert sorted(os.listdir(tmp_path)) == ["sub"]
