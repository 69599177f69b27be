"""spex-ray core: SPEX query designs, BCH peeling decoding, interaction indices, faithfulness.

Pure numpy/scipy; usable alone with any Python value function::

    import spex_ray
    interactions = spex_ray.explain(value_fn, n=200, budget=10_000)   # value_fn: bool (B, n) -> (B,)
    interactions.to("fbii", order=2).top(10)

Masks are bool rows, **True = feature kept**, False = masked.
"""

from spex_ray.peeling import decode
from spex_ray.design import SpexDesign, UniformDesign, design_from_params, spex_num_queries
from spex_ray.explain import explain
from spex_ray.faithfulness import faithfulness, uniform_masks
from spex_ray.interactions import Interactions
from spex_ray.methods import METHODS, MethodPlan, plan_method
from spex_ray.results import read_explanations

__all__ = [
    "METHODS",
    "Interactions",
    "MethodPlan",
    "SpexDesign",
    "UniformDesign",
    "decode",
    "design_from_params",
    "explain",
    "faithfulness",
    "plan_method",
    "read_explanations",
    "spex_num_queries",
    "uniform_masks",
]
__version__ = "0.1.0"
