"""What a job needs to know of a backend named in its config without building one, as the
backend class declares it (``connectors.base.Backend``): its options, the options that leave
results unchanged, and the GPUs a replica needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import backend_class


def backend_options(name: str) -> frozenset[str]:
    """The names of the backend's options (``Backend.option_names``)."""
    return backend_class(name).option_names()


def execution_options(name: str) -> frozenset[str]:
    """The backend's ``execution_options``: how queries are sent, never what they return."""
    return backend_class(name).execution_options


def default_gpus(name: str, spec: Mapping[str, Any]) -> float:
    """GPUs of one replica when ``ray.num_gpus_per_actor`` is unset (``Backend.gpus_per_replica``)."""
    return float(backend_class(name).gpus_per_replica(spec))
