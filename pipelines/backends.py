"""What a job needs to know of a backend class without building one: its options, the options that
leave results unchanged, and the GPUs a replica needs."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from connectors.base import backend_class

TENSOR_PARALLEL_OPTION = "tensor_parallel_size"


def backend_options(name: str) -> set[str]:
    """Keyword options the backend's constructor accepts."""
    parameters = list(inspect.signature(backend_class(name).__init__).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {parameter.name for parameter in parameters if parameter.kind in kinds}


def execution_options(name: str) -> frozenset[str]:
    """The backend's ``execution_options``: how queries are sent, never what they return."""
    return frozenset(getattr(backend_class(name), "execution_options", frozenset()))


def default_gpus(name: str, spec: Mapping[str, Any]) -> float:
    """GPUs of one replica when ``ray.num_gpus_per_actor`` is unset: the backend's
    ``tensor_parallel_size`` (vLLM: one engine spans that many GPUs; the class default when the
    spec has none), else 0."""
    parameter = inspect.signature(backend_class(name).__init__).parameters.get(TENSOR_PARALLEL_OPTION)
    if parameter is None:
        return 0.0
    default = None if parameter.default is inspect.Parameter.empty else parameter.default
    return float(spec.get(TENSOR_PARALLEL_OPTION, default) or 0)
