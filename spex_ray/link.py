"""Links: the surrogate of a bounded output is g(h), with h a sparse Fourier expansion.

A model's output is often a saturating function of a nearly additive score: a probability is the
logistic function of a logit, and VADER's compound score is x/sqrt(x² + 15) of a sum of word
valences. A sparse expansion of such an output needs many high-order terms (on 8 reviews scored
by VADER, 1,400 terms of order ≤ 3 fitted to 40,000 values of the best surrogate reach a median
R² of 0.90), while the score beneath it is nearly additive. So the fit can be made in the link's
space, h = g⁻¹(y), and the explanation is g(h): its terms are in the units of h (log-odds for
``logit``), as SHAP's ``link="logit"`` explains a classifier in log-odds.

Links (``LINKS``): ``identity``; ``logit``, g(h) = 1/(1 + e^(−h)) for outputs in [0, 1];
``algebraic``, g(h) = h/sqrt(1 + h²) for outputs in [−1, 1] (VADER's normalisation, its scale
absorbed in h). Values at or past a bound are clipped ``CLIP`` of the range inside it first.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

LinkName = Literal["identity", "logit", "algebraic"]
#: Outputs within this fraction of the range from a bound are clipped to it before the inverse.
CLIP = 1.25e-4


class Link:
    """A monotone map g from the expansion's value h to the output y, and its inverse."""

    name: str = "identity"
    #: The closed range of outputs the link covers; None: all reals.
    bounds: tuple[float, float] | None = None

    def forward(self, h: np.ndarray) -> np.ndarray:
        """y = g(h), float (B,)."""
        return h

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """h = g⁻¹(y), float (B,), for outputs within ``bounds`` (clipped ``CLIP`` inside them)."""
        return y

    def covers(self, y: np.ndarray) -> bool:
        """Whether every output lies within ``bounds``."""
        return self.bounds is None or bool(np.all((y >= self.bounds[0]) & (y <= self.bounds[1])))

    def _clipped(self, y: np.ndarray) -> np.ndarray:
        lo, hi = self.bounds
        margin = CLIP * (hi - lo)
        return np.clip(y, lo + margin, hi - margin)


class Logit(Link):
    name, bounds = "logit", (0.0, 1.0)

    def forward(self, h: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * h))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        p = self._clipped(y)
        return np.log(p) - np.log1p(-p)


class Algebraic(Link):
    name, bounds = "algebraic", (-1.0, 1.0)

    def forward(self, h: np.ndarray) -> np.ndarray:
        return h / np.sqrt(1.0 + h * h)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = self._clipped(y)
        return y / np.sqrt(1.0 - y * y)


LINKS: dict[str, Link] = {link.name: link for link in (Link(), Logit(), Algebraic())}


def get_link(name: str) -> Link:
    """The link called ``name``; ValueError naming the choices for another."""
    if name not in LINKS:
        raise ValueError(f"unknown link {name!r}; choose one of {', '.join(LINKS)} (or 'auto' in explain)")
    return LINKS[name]


def candidate_links(values: np.ndarray) -> list[Link]:
    """The links ``link="auto"`` weighs for these outputs: identity, then each bounded link whose
    range holds every value (logit for outputs in [0, 1], algebraic for outputs in [−1, 1])."""
    return [link for link in LINKS.values() if link.covers(values)]
