"""What a job needs to know of a backend class without building one: its options and the options
that leave results unchanged."""

from __future__ import annotations

import inspect

from connectors.base import backend_class


def backend_options(name: str) -> set[str]:
    """Keyword options the backend's constructor accepts."""
    parameters = list(inspect.signature(backend_class(name).__init__).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {parameter.name for parameter in parameters if parameter.kind in kinds}


def execution_options(name: str) -> frozenset[str]:
    """The backend's ``execution_options``: how queries are sent, never what they return."""
    return frozenset(getattr(backend_class(name), "execution_options", frozenset()))
