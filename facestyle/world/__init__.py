"""The mini world: procedural portraits with known content (docs/design.md section 3).

Every image is drawn from a content vector (20 factors, see :data:`FACTORS`) in one of six domains: ``"real"``
(soft photographic shading, the role of FFHQ) and five style analogues (cartoon, anime, fantasy, illustration,
impasto), each with its own geometry and treatment of the same content, so real -> style is a translation.

Quick use::

    from facestyle.world import sample_content, render, style_dataset, content_from_z
    c = sample_content(16, seed=0)                 # [16, F] real-domain content
    x = render(c, "real", size=64, seed=0)         # [16, 3, 64, 64] in [-1, 1]
    y = render(c, "anime", size=64, seed=0)        # the ideal anime stylization of the same portraits
    imgs, content = style_dataset("cartoon")       # the paper-sized, biased cartoon set (317 images)

Style-set biases are documented in :mod:`facestyle.world.content` and held in :data:`STYLE_BIAS`.
"""
from .content import (
    CATEGORICAL,
    CONTINUOUS,
    DOMAINS,
    FACTORS,
    NUM_FACTORS,
    STYLE_BIAS,
    Factor,
    base_content,
    check_domain,
    content_from_z,
    describe,
    factor_index,
    factor_names,
    sample_content,
)
from .render import render
from .datasets import domain_batch, style_content, style_dataset, vary_factor

__all__ = [
    "FACTORS", "DOMAINS", "Factor", "STYLE_BIAS", "NUM_FACTORS", "CONTINUOUS", "CATEGORICAL",
    "factor_names", "factor_index", "sample_content", "content_from_z", "base_content", "describe",
    "check_domain", "render", "style_dataset", "style_content", "domain_batch", "vary_factor",
]
