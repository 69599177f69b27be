"""Text features and masking for backends: the core's ``spex_ray.text`` (``featurize``, ``Renderer``),
named here beside the other connectors. Mask convention: ``keep[i]`` True = feature ``i`` kept."""

from spex_ray.text import STRATEGIES, UNITS, Renderer, Strategy, Unit, featurize, render

__all__ = ["STRATEGIES", "UNITS", "Renderer", "Strategy", "Unit", "featurize", "render"]
