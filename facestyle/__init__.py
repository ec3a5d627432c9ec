"""facestyle: StyleGAN-based facial stylization with semantic preservation constraint and pseudo-paired
supervision (Lu & Zhou), implemented as a course of notebooks over this package.

Layers point one way: ``nn`` <- ``method`` <- ``eval`` <- notebooks / CLI.
"""
__version__ = "0.1.0"

from .config import STYLES, get_profile  # noqa: F401
from .utils import get_device  # noqa: F401
