"""The main job behind ``make demo``: stylize a set of portraits in five styles and three modes, one figure.

For every style whose finetuned generator G' is available (shipped mini checkpoints, or the ffhq cache) the
figure shows, per input portrait, the general stylization (section 3), one multimodal sample (section 3.3,
mixed from the paper's layer 6) and a reference-guided result (section 3.3; the reference is the ideal
rendering of another input in that style, inverted into V space of G'). For a style whose G' is not
available yet the demo says so and shows the mini world's *ideal* stylization of the same content instead
(the renderer's own drawing), labelled as such, so the command always produces its figure.
"""
from __future__ import annotations

import torch

from .viz import figure_path, save_grid


def run_demo(profile: str = "mini", device: str = "auto", seed: int = 0, n: int = 4, out=None, invert_iters=100):
    from . import world
    from .config import STYLES, get_profile
    from .hub import CheckpointError

    prof = get_profile(profile)
    if prof.name != "mini":
        raise ValueError("the demo draws its inputs from the mini world: use --profile mini "
                         "(for photos, use `facestyle stylize`)")
    size = prof.generator.size
    content = world.sample_content(n, seed=seed)
    inputs = world.render(content, "real", size=size, seed=seed)
    rows, notes = [inputs], []
    for style in STYLES:
        try:
            rows += stylize_three_modes(inputs, content, style, prof, device, seed, invert_iters)
        except CheckpointError as exc:
            notes.append((style, str(exc).splitlines()[0]))
            rows.append(world.render(content, style, size=size, seed=seed))
    # one column per input portrait, one row per (style, mode)
    grid = torch.stack(rows, 0).transpose(0, 1).reshape(-1, *inputs.shape[1:])
    path = save_grid(grid, out or figure_path(prof.name, "demo.png"), nrow=len(rows), scale=2)
    for reason in dict.fromkeys(r for _, r in notes):
        styles = ", ".join(s for s, r in notes if r == reason)
        print(f"note: {styles}: showing the ideal rendering instead, because {reason}")
    return path


def stylize_three_modes(inputs, content, style, prof, device, seed, invert_iters):
    from . import world
    from .method.stylize import Stylizer, make_invert_fn

    st = Stylizer(prof, style, device=device)
    general = st.general(inputs)
    multi = st.multimodal(inputs, n_samples=1, layer=6, seed=seed)[:, 0]
    ref_img = world.render(content.roll(1, 0)[:1], style, size=inputs.shape[-1], seed=seed)
    invert_fn = make_invert_fn(prof, device, progress=False, iters=invert_iters)
    ref = st.reference(inputs, ref_images=ref_img, layer=6, invert_fn=invert_fn)[:, 0]
    return [general.cpu(), multi.cpu(), ref.cpu()]
