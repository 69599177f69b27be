"""Job configuration: YAML file -> validated dataclasses, ``--set`` overrides, hash and redaction.

Every error is a ``ConfigError`` whose message names the offending key, e.g.
``config: unknown key 'input.txt_field' (allowed: format, id_field, ...)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from connectors.base import BACKENDS
from connectors.documents import DOCUMENT_UNITS
from connectors.image import FILLS
from connectors.text import STRATEGIES, UNITS
from pipelines.backends import execution_options
from pipelines.sources import infer_format, names_data
from spex_ray.interactions import INDICES
from spex_ray.methods import METHODS, TREE_LIBRARIES

FORMATS: tuple[str, ...] = ("jsonl", "parquet", "csv")
PATCHES = "patches"
DOCUMENTS = "documents"
PACKAGE_SCHEME = "package://"
# Sections that change how a job runs, never what it computes: left out of the result hash (so are
# the backend class's ``execution_options``).
EXECUTION_KEYS: tuple[str, ...] = ("ray", "output", "progress")
SECRET_WORDS: tuple[str, ...] = ("key", "token", "secret", "password")
# Keys that contain a secret word but name no secret.
NOT_SECRETS: frozenset[str] = frozenset(
    {"mask_token", "max_tokens", "max_new_tokens", "max_completion_tokens", "tokenizer", "top_logprobs",
     "max_num_batched_tokens", "max_batch_tokens"}
)
REDACTED = "<redacted>"


class ConfigError(ValueError):
    """A config that cannot run; the message names the key."""


@dataclass
class InputConfig:
    """Where the examples are and which record fields hold what. Image examples
    (``featurizer.unit: patches``) take an image file path from ``image_field``, relative to the
    input file's folder. Multi-document examples take a list of ``{title, text}`` (or
    ``{title, sentences}``) records from ``documents_field`` instead of a text (see
    ``connectors.documents``)."""

    path: str
    format: str | None = None
    text_field: str = "text"
    documents_field: str | None = None
    image_field: str | None = None
    id_field: str | None = "id"
    question_field: str | None = None
    target_field: str | None = None


@dataclass
class FeaturizerConfig:
    """How an example is split into features: a text into words, sentences or given spans
    (``connectors.text.featurize``), documents into whole documents or their sentences, an image
    into a ``grid`` of [rows, cols] patches."""

    unit: str = "words"
    spans_field: str | None = None
    grid: list[int] | None = None
    max_features: int | None = 256


@dataclass
class MaskingConfig:
    """How a masked feature is rendered, passed to the backends that take these options: text
    features are removed or replaced by ``mask_token``; image patches are blurred (Gaussian of
    ``blur_sigma`` pixels, None = half the shorter patch side) or greyed."""

    strategy: str = "remove"
    mask_token: str = "[MASK]"
    blur_sigma: float | None = None


@dataclass
class RayConfig:
    """Execution settings: where and how wide the job runs. Not part of the result hash.

    ``num_gpus_per_actor`` None: the backend's need (vLLM: ``tensor_parallel_size``; else 0).
    ``num_cpus_per_decode`` is 0 by default because scorer actors usually hold every CPU; the
    driver runs at most ``num_actors`` decode tasks at once. ``max_attempts`` bounds the tries of
    one query; ``flush_seconds`` bounds the scored work a kill can lose.
    """

    address: str | None = None
    num_actors: int = 2
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float | None = None
    num_cpus_per_decode: float = 0.0
    batch_size: int = 128
    max_restarts: int = 3
    max_attempts: int = 3
    flush_seconds: float = 10.0


@dataclass
class JobConfig:
    """A whole job. ``budget`` or ``b``/``t`` size the query design; ``holdout`` uniform masks
    per example measure faithfulness (R^2) of the decoded explanation."""

    input: InputConfig
    backend: dict[str, Any]
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    method: str = "spex-hybrid"
    budget: int | None = None
    b: int | None = None
    t: int = 5
    refit: str | None = "ls"
    trees: str = "lightgbm"
    indices: list[str] = field(default_factory=lambda: ["fbii"])
    max_order: int = 2
    holdout: int = 200
    seed: int = 0
    ray: RayConfig = field(default_factory=RayConfig)
    output: str = "spex-ray-output"
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data (secrets included)."""
        return dataclasses.asdict(self)

    def result_config(self) -> dict[str, Any]:
        """The part of the config that can change results, secrets redacted: all but ray/output/progress
        and the backend's ``execution_options`` (e.g. rate limits and cost caps)."""
        data = {key: value for key, value in redact(self.to_dict()).items() if key not in EXECUTION_KEYS}
        excluded = execution_options(self.backend["name"])
        data["backend"] = {key: value for key, value in data["backend"].items() if key not in excluded}
        return data

    def result_hash(self) -> str:
        """sha256 of ``result_config()``: equal hashes => the same results."""
        return hashlib.sha256(json.dumps(self.result_config(), sort_keys=True).encode()).hexdigest()

    def backend_spec(self, accepted_options: Iterable[str]) -> dict[str, Any]:
        """The ``backend`` section plus the masking (and image grid) settings the backend accepts
        as options; settings given in the ``backend`` section itself win."""
        spec = dict(self.backend)
        settings = {"strategy": self.masking.strategy, "mask_token": self.masking.mask_token}
        if self.featurizer.unit == PATCHES:
            settings["image_grid"] = self.featurizer.grid
            if self.masking.blur_sigma is not None:
                settings["blur_sigma"] = self.masking.blur_sigma
        for option, value in settings.items():
            if option in accepted_options:
                spec.setdefault(option, value)
        return spec


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> JobConfig:
    """Read a YAML job config, apply ``key.path=value`` overrides, validate.

    A relative ``input.path`` is resolved against the config file's folder, then the current
    directory; ``package://pkg/res`` names a file shipped inside an installed package.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"config: cannot read {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {path} is not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping, got {type(data).__name__}")
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data, base_dir=path.resolve().parent)


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in ``data`` in place; the value is parsed with ``yaml.safe_load``."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"config: override {override!r} must look like key.path=value")
    parts = key.strip().split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config: cannot set {key!r}: {'.'.join(parts[: depth + 1])!r} is not a mapping")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"config: cannot parse the value of {key!r}: {err}") from None


def config_from_dict(data: Mapping[str, Any], base_dir: Path | None = None) -> JobConfig:
    """Validate plain data into a JobConfig; resolves a relative input path against ``base_dir``."""
    config = _build(JobConfig, data, "")
    _check(config)
    config.input.path = resolve_input_path(config.input.path, base_dir)
    if config.input.format is None:
        config.input.format = _infer_format(config.input.path)
    return config


def resolve_input_path(path: str, base_dir: Path | None) -> str:
    """An absolute path, or the ``package://`` reference unchanged; ConfigError when missing."""
    if path.startswith(PACKAGE_SCHEME):
        package_path(path)
        return path
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        tried = [candidate]
    else:
        tried = [base_dir / candidate] if base_dir is not None else []
        tried.append(Path.cwd() / candidate)
    for option in tried:
        if names_data(option):
            return str(option.resolve())
    raise ConfigError(f"config: 'input.path' {path!r} not found (looked at {', '.join(map(str, tried))})")


def package_path(reference: str) -> Path:
    """The file behind ``package://pkg/relative/path`` (a package-data file of an importable package)."""
    import importlib.resources

    package, _, resource = reference[len(PACKAGE_SCHEME) :].partition("/")
    if not package or not resource:
        raise ConfigError(f"config: 'input.path' {reference!r} must look like package://package/path/in/package")
    try:
        located = Path(str(importlib.resources.files(package).joinpath(resource)))
    except ModuleNotFoundError:
        raise ConfigError(f"config: 'input.path' {reference!r}: no package {package!r}") from None
    if not located.is_file():
        raise ConfigError(f"config: 'input.path' {reference!r}: package {package!r} has no file {resource!r}")
    return located


def redact(data: Any) -> Any:
    """A copy of ``data`` with the value of every secret-looking key replaced by ``<redacted>``.

    A key is secret when its lower-cased name contains key, token, secret or password (except
    well-known harmless names such as ``mask_token`` and ``max_tokens``).
    """
    if isinstance(data, Mapping):
        return {key: REDACTED if _is_secret(key) else redact(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact(value) for value in data]
    return data


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys: list[str] = []
        for key in sorted(set(old) | set(new)):
            keys.extend(changed_keys(old.get(key), new.get(key), f"{prefix}{key}."))
        return keys
    return [] if old == new else [prefix.rstrip(".")]


def _is_secret(key: object) -> bool:
    name = str(key).lower()
    return name not in NOT_SECRETS and any(word in name for word in SECRET_WORDS)


def _infer_format(path: str) -> str:
    try:
        return infer_format(path)
    except ValueError as err:
        raise ConfigError(f"config: {err}") from None


def _check(config: JobConfig) -> None:
    """Value checks beyond types."""
    _one_of("input.format", config.input.format, FORMATS, optional=True)
    _one_of("featurizer.unit", config.featurizer.unit, (*UNITS, DOCUMENTS, PATCHES))
    _one_of("method", config.method, METHODS)
    _one_of("trees", config.trees, TREE_LIBRARIES)
    _one_of("refit", config.refit, ("ls", "lasso"), optional=True)
    if config.featurizer.unit == PATCHES:
        _check_patches(config)
    else:
        _one_of("masking.strategy", config.masking.strategy, STRATEGIES)
        for key in ("input.image_field", "featurizer.grid"):
            section, name = key.split(".")
            if getattr(getattr(config, section), name) is not None:
                raise ConfigError(f"config: {key!r} is only for images ('featurizer.unit: {PATCHES}')")
    if config.featurizer.unit == "spans" and config.featurizer.spans_field is None:
        raise ConfigError("config: 'featurizer.spans_field' is required when 'featurizer.unit' is spans")
    _check_documents(config)
    if "name" not in config.backend:
        raise ConfigError("config: 'backend.name' is required")
    _one_of("backend.name", config.backend["name"], tuple(sorted(BACKENDS)))
    if config.budget is not None and config.b is not None:
        raise ConfigError("config: set either 'budget' or 'b', not both")
    if not config.indices:
        raise ConfigError("config: 'indices' must list at least one index")
    for position, index in enumerate(config.indices):
        _one_of(f"indices[{position}]", index, INDICES)
    if len(set(config.indices)) != len(config.indices):
        raise ConfigError(f"config: 'indices' repeats an index: {config.indices}")
    for key, value, low in [
        ("featurizer.max_features", config.featurizer.max_features, 2),
        ("budget", config.budget, 1),
        ("b", config.b, 1),
        ("t", config.t, 1),
        ("max_order", config.max_order, 1),
        ("holdout", config.holdout, 0),
        ("seed", config.seed, 0),
        ("ray.num_actors", config.ray.num_actors, 1),
        ("ray.num_cpus_per_actor", config.ray.num_cpus_per_actor, 0),
        ("ray.num_gpus_per_actor", config.ray.num_gpus_per_actor, 0),
        ("ray.num_cpus_per_decode", config.ray.num_cpus_per_decode, 0),
        ("ray.batch_size", config.ray.batch_size, 1),
        ("ray.max_restarts", config.ray.max_restarts, 0),
        ("ray.max_attempts", config.ray.max_attempts, 1),
        ("ray.flush_seconds", config.ray.flush_seconds, 0),
        ("masking.blur_sigma", config.masking.blur_sigma, 1e-9),
    ]:
        if value is not None and value < low:
            raise ConfigError(f"config: {key!r} must be >= {low}, got {value}")
    if config.max_order > 127:
        raise ConfigError(f"config: 'max_order' must be <= 127, got {config.max_order}")


def _check_documents(config: JobConfig) -> None:
    """``input.documents_field`` goes with the units documents or sentences, and needs no spans."""
    unit = config.featurizer.unit
    if config.input.documents_field is None:
        if unit == DOCUMENTS:
            raise ConfigError(f"config: 'input.documents_field' is required when 'featurizer.unit' is {DOCUMENTS}")
        return
    if unit not in DOCUMENT_UNITS:
        raise ConfigError(f"config: 'featurizer.unit' must be one of {', '.join(DOCUMENT_UNITS)} with "
                          f"'input.documents_field'; got {unit!r}")
    if config.featurizer.spans_field is not None:
        raise ConfigError("config: 'featurizer.spans_field' cannot be used with 'input.documents_field'")


def _check_patches(config: JobConfig) -> None:
    """Image settings: an image field, a [rows, cols] grid of at least 2 patches, a patch fill."""
    if config.input.image_field is None:
        raise ConfigError(f"config: 'input.image_field' is required when 'featurizer.unit' is {PATCHES}")
    grid = config.featurizer.grid
    if grid is None or len(grid) != 2 or min(grid) < 1:
        raise ConfigError(f"config: 'featurizer.grid' must be [rows, cols] of positive integers, got {grid!r}")
    patches = grid[0] * grid[1]
    if patches < 2:
        raise ConfigError(f"config: 'featurizer.grid' {grid} gives {patches} patch; at least 2 are needed")
    if config.featurizer.max_features is not None and patches > config.featurizer.max_features:
        raise ConfigError(f"config: 'featurizer.grid' {grid} gives {patches} patches, more than "
                          f"'featurizer.max_features' = {config.featurizer.max_features}")
    _one_of("masking.strategy", config.masking.strategy, FILLS)


def _one_of(key: str, value: Any, allowed: tuple[str, ...], optional: bool = False) -> None:
    if optional and value is None:
        return
    if value not in allowed:
        raise ConfigError(f"config: {key!r} must be one of {', '.join(allowed)}; got {value!r}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``, checking keys and value types."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: {where!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in data if key not in fields)
    if unknown:
        raise ConfigError(f"config: unknown key {prefix + unknown[0]!r} (allowed: {', '.join(sorted(fields))})")
    values = {}
    for name, spec in fields.items():
        key = prefix + name
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"config: missing required key {key!r}")
            continue
        values[name] = _convert(hints[name], data[name], key)
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(inner, value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config: {key!r} must be a list, got {value!r}")
        return [_convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config: {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config: {key!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: {key!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config: {key!r} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config: {key!r} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key!r}")
