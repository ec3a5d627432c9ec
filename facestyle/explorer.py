"""An ipywidgets explorer for the quickstart notebook: pick a style, a mode (section 3 general, section 3.3
multimodal or reference-guided), a mixing layer, a truncation, a seed and a reference, and see the result.

The widgets only choose arguments; everything is drawn by :class:`facestyle.method.stylize.Stylizer`, built
once per style and kept. References are the style set's own images, embedded once (the embedding cache of
:mod:`facestyle.method.invert` keeps them on disk), so moving a slider never re-optimises anything.
"""
from __future__ import annotations

from typing import Any

import torch

from . import world
from .config import STYLES, get_profile
from .viz import make_grid

MODES = ("general", "multimodal", "reference")


class Explorer:
    """State and rendering behind the widgets; :meth:`render` is plain Python, so it is testable without a UI."""

    def __init__(self, profile: str = "mini", device: Any = "auto", n_inputs: int = 4, n_refs: int = 4,
                 invert_iters: int | None = None, generators: dict | None = None, cache_dir=None):
        self.profile = get_profile(profile)
        self.device = device
        self.size = self.profile.generator.size
        self.n_refs = n_refs
        self.invert_iters = invert_iters
        self.generators = dict(generators or {})
        self.cache_dir = cache_dir
        self._stylizers: dict = {}
        self._refs: dict = {}
        self._inputs: dict = {}
        self.n_inputs = n_inputs

    def stylizer(self, style: str):
        from .method.stylize import Stylizer

        if style not in self._stylizers:
            self._stylizers[style] = Stylizer(self.profile, style, self.device, generator=self.generators.get(style))
        return self._stylizers[style]

    def inputs(self, seed: int) -> torch.Tensor:
        if seed not in self._inputs:
            content = world.sample_content(self.n_inputs, seed=seed)
            self._inputs[seed] = world.render(content, "real", size=self.size, seed=seed)
        return self._inputs[seed]

    def references(self, style: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The style set's first ``n_refs`` images and their W codes in V space of G' (embedded once)."""
        if style not in self._refs:
            from .method.stylize import make_invert_fn

            imgs, _ = world.style_dataset(style, size=self.size, n=self.n_refs)
            opts = {} if self.invert_iters is None else {"iters": self.invert_iters}
            fn = make_invert_fn(self.profile, self.device, cache_dir=self.cache_dir, **opts)
            self._refs[style] = (imgs, self.stylizer(style).reference_codes(imgs, fn))
        return self._refs[style]

    def render(self, style: str = "cartoon", mode: str = "general", layer: int = 3, psi: float | None = None,
               seed: int = 0, reference: int = 0, n_samples: int = 4):
        """A grid as a uint8 array: inputs on the top row, the chosen mode's outputs below (one row per sample
        or the one reference). ``layer`` is in the generator's own rows."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        st = self.stylizer(style)
        x = self.inputs(seed)
        if mode == "general":
            rows = [st.general(x, psi=psi).cpu()]
        elif mode == "multimodal":
            out = st.multimodal(x, n_samples=n_samples, layer=layer, seed=seed, units="native", psi=psi).cpu()
            rows = list(out.transpose(0, 1))
        else:
            imgs, codes = self.references(style)
            r = int(reference) % len(codes)
            out = st.reference(x, ref_codes=codes[r:r + 1], layer=layer, units="native", psi=psi).cpu()
            rows = [out[:, 0]]
            x = torch.cat([imgs[r:r + 1], x[1:]])  # the reference takes the first input's place on top
        return make_grid(torch.cat([x.cpu()] + [r.clamp(-1, 1) for r in rows]), nrow=len(x))

    def widget(self, style: str = "cartoon", styles=STYLES):
        """The ipywidgets UI (style among ``styles``, mode, layer, truncation, seed, reference) around
        :meth:`render`."""
        import io

        import ipywidgets as W
        from PIL import Image

        st = self.stylizer(style)
        controls = {
            "style": W.Dropdown(options=list(styles), value=style, description="style"),
            "mode": W.ToggleButtons(options=list(MODES), value="general", description="mode"),
            "layer": W.IntSlider(value=st.mix_layers()[1], min=1, max=st.n_latent - 1, description="mix layer"),
            "psi": W.FloatSlider(value=st.psi, min=0.0, max=1.0, step=0.05, description="truncation"),
            "seed": W.IntText(value=0, description="seed"),
            "reference": W.IntSlider(value=0, min=0, max=self.n_refs - 1, description="reference"),
        }
        image = W.Image(format="png")

        def update(_=None):
            arr = self.render(**{k: c.value for k, c in controls.items()})
            buf = io.BytesIO()
            Image.fromarray(arr).resize((arr.shape[1] * 2, arr.shape[0] * 2), Image.NEAREST).save(buf, "png")
            image.value = buf.getvalue()

        def new_style(change):  # each style starts at its own truncation (appendix 6.1)
            controls["psi"].value = self.stylizer(change["new"]).psi

        controls["style"].observe(new_style, names="value")
        for c in controls.values():
            c.observe(update, names="value")
        update()
        return W.VBox([W.HBox([controls["style"], controls["seed"]]), controls["mode"],
                       W.HBox([controls["layer"], controls["psi"], controls["reference"]]), image])
