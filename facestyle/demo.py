"""The main job behind ``make demo``: stylize a set of portraits in five styles and three modes, one figure.

For every style whose finetuned generator G' is available (shipped mini checkpoints, or the ffhq cache) the
figure shows, per input portrait, the general stylization (section 3), one multimodal sample (section 3.3,
mixed from the profile's third level, native row 5 of 10 for mini) and a reference-guided result (section 3.3;
the reference is the ideal rendering of another input in that style, inverted into V space of G'). For a style
whose G' is not available yet the demo says so and shows the mini world's *ideal* stylization of the same
content instead (the renderer's own drawing), labelled as such, so the command always produces its figure.
"""
from __future__ import annotations

import torch

from .viz import figure_path, labelled_grid

MODES = ("general", "multimodal", "reference")


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
    cols, titles, notes = [inputs], ["input"], []
    for style in STYLES:
        try:
            cols += stylize_three_modes(inputs, content, style, prof, device, seed, invert_iters)
            titles += [f"{style}\n{mode}" for mode in MODES]
        except CheckpointError as exc:
            notes.append((style, str(exc).splitlines()[0]))
            cols.append(world.render(content, style, size=size, seed=seed))
            titles.append(f"{style}\n(ideal: no G')")
    # One row per input portrait, one column per (style, mode): each row reads as one person in every style.
    rows = list(torch.stack(cols, 1))
    path = labelled_grid(rows, out or figure_path(prof.name, "demo.png"),
                         row_titles=[f"portrait {i + 1}" for i in range(len(rows))], col_titles=titles,
                         title="make demo: each portrait (left) in five styles x three modes (general, multimodal "
                               "sample, reference-guided; section 3.3)")
    for reason in dict.fromkeys(r for _, r in notes):
        styles = ", ".join(s for s, r in notes if r == reason)
        print(f"note: {styles}: showing the ideal rendering instead, because {reason}")
    return path


def stylize_three_modes(inputs, content, style, prof, device, seed, invert_iters):
    from . import world
    from .method.stylize import Stylizer, make_invert_fn

    st = Stylizer(prof, style, device=device)
    general = st.general(inputs)
    # Mix from the level whose rows below carry pose and face shape (rows 0-4 of the mini generator, measured in
    # docs/faithful-stylization.md), not from the paper's layer 6 at the same relative depth (native row 3),
    # which hands the head's shape to the sample.
    layer = int(prof.mix_layers[2])
    multi = st.multimodal(inputs, n_samples=1, layer=layer, seed=seed, units="native")[:, 0]
    ref_img = world.render(content.roll(1, 0)[:1], style, size=inputs.shape[-1], seed=seed)
    invert_fn = make_invert_fn(prof, device, progress=False, iters=invert_iters)
    ref = st.reference(inputs, ref_images=ref_img, layer=layer, units="native", invert_fn=invert_fn)[:, 0]
    return [general.cpu(), multi.cpu(), ref.cpu()]
