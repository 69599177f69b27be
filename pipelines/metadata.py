"""What every explanation part carries in its Parquet metadata: config, hash, versions, backend."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from typing import Any

import spex_ray
from pipelines.config import JobConfig, redact
from pipelines.schema import EXPLANATION_SCHEMA_VERSION

_LIBRARIES = ("numpy", "scipy", "pyarrow", "ray", "scikit-learn")


def library_versions() -> dict[str, str]:
    """Versions of Python, spex-ray and the libraries that shape results ("not installed" when missing)."""
    versions = {"python": platform.python_version(), "spex-ray": spex_ray.__version__}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_metadata(config: JobConfig, backend_identity: dict[str, Any]) -> dict[str, str]:
    """Parquet key-value metadata: ``spex_ray.schema_version``, ``spex_ray.config`` (secrets
    redacted), ``spex_ray.config_hash``, ``spex_ray.versions`` and ``spex_ray.backend``, each JSON text."""
    return {
        "spex_ray.schema_version": EXPLANATION_SCHEMA_VERSION,
        "spex_ray.config": json.dumps(redact(config.to_dict()), sort_keys=True),
        "spex_ray.config_hash": config.result_hash(),
        "spex_ray.versions": json.dumps(library_versions(), sort_keys=True),
        "spex_ray.backend": json.dumps(redact(backend_identity), sort_keys=True),
    }
