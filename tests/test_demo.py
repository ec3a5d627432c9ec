"""The main job (`make demo`) writes its one figure, whatever checkpoints are shipped."""
from PIL import Image

from facestyle.demo import run_demo


def test_demo_writes_figure(tmp_path):
    out = run_demo(n=2, out=tmp_path / "demo.png", invert_iters=2)
    img = Image.open(out)
    assert img.width > 100 and img.height > 100
