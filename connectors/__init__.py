"""Value functions for spex-ray: model backends and what turns inputs into features and masked inputs.

``base`` is the backend contract and registry; ``backends/`` the model backends (one module
each, plus what they share: ``logprob``, the OpenAI batch API and value parsing);
``features/`` the featurizers and maskers (documents, image patches, token-id prompts);
``ratelimit`` the pacing of API requests; ``lru`` the per-instance cache.

Mask convention: ``keep[b, i]`` True/1 = feature ``i`` kept in query row ``b``, False/0 = masked.
"""

from connectors.backends.vader import VaderBackend
from connectors.base import BACKENDS, Backend, Example, RateLimits, Score, build_backend, example_renderer
from spex_ray.text import Renderer, Strategy, Unit, featurize, render

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
