"""Value functions for spex-ray: text featurizers/maskers and model backends.

Mask convention: ``keep[b, i]`` True/1 = feature ``i`` kept in query row ``b``, False/0 = masked.
"""

from connectors.base import BACKENDS, Backend, Example, RateLimits, Score, build_backend, example_renderer
from spex_ray.text import Renderer, Strategy, Unit, featurize, render
from connectors.vader import VaderBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "Example",
    "RateLimits",
    "Renderer",
    "Score",
    "Strategy",
    "Unit",
    "VaderBackend",
    "build_backend",
    "example_renderer",
    "featurize",
    "render",
]
