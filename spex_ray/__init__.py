"""spex-ray core: SPEX query designs, BCH peeling decoding, interaction indices, faithfulness.

Pure numpy/scipy; usable alone with any Python value function::

    import spex_ray
    interactions = spex_ray.explain(value_fn, n=200, budget=10_000)   # value_fn: bool (B, n) -> (B,)
    interactions.to("fbii", order=2).top(10)
    spex_ray.explain_text("not bad at all", model_fn)                 # model_fn: list of B texts -> B floats

Methods: ``METHODS`` names the registered ``Method`` classes (default ``DEFAULT_METHOD``), each a
query design and a fit; ``MethodOptions`` holds the options of all of them (``plan_method``).
Masks are bool rows, **True = feature kept**, False = masked. ``spex_ray.run(config, **overrides)``
runs a batch job on Ray (``pipelines.api.run``, imported on first use: ``import spex_ray`` loads
neither Ray nor the job's dependencies).
"""

from typing import TYPE_CHECKING

from spex_ray.peeling import decode
from spex_ray.design import SpexDesign, UniformDesign, design_from_params, spex_num_queries
from spex_ray.explain import explain
from spex_ray.explain_text import explain_text
from spex_ray.faithfulness import faithfulness, uniform_masks
from spex_ray.interactions import Interactions
from spex_ray.methods import DEFAULT_METHOD, METHODS, Method, MethodOptions, plan_method
from spex_ray.results import read_explanations

if TYPE_CHECKING:
    from pipelines.api import run

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Interactions",
    "Method",
    "MethodOptions",
    "SpexDesign",
    "UniformDesign",
    "decode",
    "design_from_params",
    "explain",
    "explain_text",
    "faithfulness",
    "plan_method",
    "read_explanations",
    "run",
    "spex_num_queries",
    "uniform_masks",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "run":  # the job API needs the pipelines (Ray, pyarrow, yaml): loaded on first use
        from pipelines.api import run

        return run
    raise AttributeError(f"module 'spex_ray' has no attribute {name!r}")
