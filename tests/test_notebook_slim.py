"""Stored notebook figures are shrunk for display (issue #19 item 9): small PNGs, everything else byte for byte."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from facestyle.notebook import DISPLAY_MAX_PX, main, show, shrink_png, slim_notebook


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise: compresses about as badly as the notebooks' face grids."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_large_png_is_shrunk_to_max_px_on_its_longer_side():
    big = png(photo_like(600, 1500))
    small = shrink_png(big, max_px=500)
    assert size_of(small) == (500, 200) and len(small) < len(big)
    assert shrink_png(small, max_px=500) == small  # a second pass changes nothing


def test_small_png_comes_back_unchanged():
    tiny = png(photo_like(64, 96))
    assert shrink_png(tiny) is tiny
    # never enlarged, even when it is far under max_px
    assert size_of(shrink_png(tiny, max_px=4096)) == (96, 64)


def test_nearest_neighbour_grid_keeps_its_pixels_and_shrinks():
    """viz.save_grid(scale=2) repeats pixels: the shrunk copy must still fit max_px and be smaller."""
    grid = np.repeat(np.repeat(photo_like(300, 500, seed=1), 2, 0), 2, 1)  # 1000 x 600
    data = png(grid)
    small = shrink_png(data, max_px=800)
    assert size_of(small) == (800, 480) and len(small) < len(data)


def test_lossless_mode_keeps_full_colour():
    data = png(photo_like(400, 1200))
    small = shrink_png(data, max_px=600, colors=None)
    img = Image.open(io.BytesIO(small))
    assert img.size == (600, 200) and img.mode == "RGB"


def test_show_displays_the_shrunk_file(tmp_path):
    path = tmp_path / "fig.png"
    path.write_bytes(png(photo_like(500, 2000)))
    shown = show(path)
    assert max(size_of(shown.data)) == DISPLAY_MAX_PX and len(shown.data) < path.stat().st_size


def _notebook(tmp_path, image: bytes | None):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    outputs = [nbformat.v4.new_output("stream", name="stdout", text="step 1000, loss 0.25\n")]
    if image is not None:
        outputs.append(nbformat.v4.new_output(
            "display_data", data={"image/png": base64.b64encode(image).decode("ascii"),
                                  "text/plain": "<IPython.core.display.Image object>"}))
    cell = nbformat.v4.new_code_cell("print('step 1000, loss 0.25')\nnotebook.show(fig)", outputs=outputs)
    nb.cells = [nbformat.v4.new_markdown_cell("# A figure — with a non-ASCII dash"), cell]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_slim_notebook_shrinks_only_the_image(tmp_path):
    import nbformat

    image = png(photo_like(900, 1800))
    path = _notebook(tmp_path, image)
    original = path.read_bytes()
    before_nb = nbformat.read(str(path), as_version=4)
    before, after = slim_notebook(path)
    assert before == len(original) and after < before and path.stat().st_size == after
    # byte for byte but the image's line: the file is rewritten in nbformat's own layout
    old_lines, new_lines = original.splitlines(), path.read_bytes().splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
    assert len(old_lines) == len(new_lines) and len(changed) == 1 and b'"image/png"' in changed[0][1]
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    out_stream, out_image = nb.cells[1].outputs
    assert out_stream == before_nb.cells[1].outputs[0]
    assert nb.cells[1].source == before_nb.cells[1].source and nb.cells[0] == before_nb.cells[0]
    assert out_image.data["text/plain"] == "<IPython.core.display.Image object>"
    shrunk = base64.b64decode(out_image.data["image/png"])
    assert max(size_of(shrunk)) == DISPLAY_MAX_PX and len(shrunk) < len(image)

    text = path.read_bytes()
    assert slim_notebook(path) == (after, after) and path.read_bytes() == text  # idempotent


def test_notebook_without_images_round_trips_byte_identical(tmp_path):
    path = _notebook(tmp_path, image=None)
    text = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert slim_notebook(path) == (len(text), len(text))
    assert path.read_bytes() == text and path.stat().st_mtime_ns == mtime  # not even rewritten


def test_cli_prints_sizes(tmp_path, capsys):
    path = _notebook(tmp_path, png(photo_like(900, 1800)))
    assert main(["slim", str(path)]) == 0
    out = capsys.readouterr().out
    assert str(path) in out and "MB ->" in out
