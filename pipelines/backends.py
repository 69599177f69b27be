"""Backend classes by name, without building a backend (used for masking options and plan estimates)."""

from __future__ import annotations

import inspect

from connectors.base import Backend
from connectors.base import _backend_class as _load_backend_class


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name`` (a validated config's ``backend.name``); ImportError naming
    the extra to install when its optional dependency is missing."""
    return _load_backend_class(name)


def backend_options(name: str) -> set[str]:
    """Keyword options the backend's constructor accepts."""
    parameters = list(inspect.signature(backend_class(name).__init__).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {parameter.name for parameter in parameters if parameter.kind in kinds}
