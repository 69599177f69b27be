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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from connectors.base import BACKENDS, backend_class, did_you_mean, is_import_path
from connectors.features.documents import DOCUMENT_UNITS
from connectors.features.image import FILLS
from spex_ray.text import STRATEGIES, UNITS
from pipelines.backends import backend_options, execution_options
from pipelines.sources import infer_format, names_data
from spex_ray.interactions import INDICES
from spex_ray.link import LINKS
from spex_ray.methods import DEFAULT_METHOD, METHODS, MethodOptions, cross_validated_methods, method_class

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
# Keys a config may no longer use -> the key that replaced them (named in the error).
RENAMED_KEYS: dict[str, str] = {"ray.num_cpus_per_decode": "ray.num_cpus_per_fit"}


class ConfigError(ValueError):
    """A config that cannot run; the message names the key."""


@dataclass
class InputConfig:
    """Where the examples are and which record fields hold what. Image examples
    (``featurizer.unit: patches``) take an image file path from ``image_field``, relative to the
    input file's folder. Multi-document examples take a list of ``{title, text}`` (or
    ``{title, sentences}``) records from ``documents_field`` instead of a text (see
    ``connectors.features.documents``)."""

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
    (``spex_ray.text.featurize``), documents into whole documents or their sentences, an image
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
    ``num_cpus_per_fit`` is 0 by default because scorer actors usually hold every CPU; the
    driver runs at most ``num_actors`` fit tasks at once. ``max_attempts`` bounds the tries of
    one query; ``flush_seconds`` bounds the scored work a kill can lose.
    """

    address: str | None = None
    num_actors: int = 2
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float | None = None
    num_cpus_per_fit: float = 0.0
    batch_size: int = 128
    max_restarts: int = 3
    max_attempts: int = 3
    flush_seconds: float = 10.0


@dataclass
class JobConfig:
    """A whole job. ``method`` and the ``MethodOptions`` keys (budget, b, t, refit, trees, max_order,
    seed) choose the method and size its query design; ``adaptive`` makes that size a cap (the
    queries go out in stages, ``spex_ray.adaptive``); ``link`` (identity, logit or algebraic;
    ``spex_ray.link``) fits every example through that link, its rows' terms in the link's units;
    ``holdout`` uniform masks per example measure faithfulness (R^2) of the fitted explanation."""

    input: InputConfig
    backend: dict[str, Any]
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    method: str = DEFAULT_METHOD
    budget: int | None = None
    b: int | None = None
    adaptive: bool = False
    link: str = "identity"
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

    def method_options(self) -> MethodOptions:
        """The method's options (checked by ``config_from_dict``)."""
        return MethodOptions(budget=self.budget, b=self.b, t=self.t, seed=self.seed, max_order=self.max_order,
                             refit=self.refit, trees=self.trees)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data (secrets included)."""
        return dataclasses.asdict(self)

    def result_config(self) -> dict[str, Any]:
        """The part of the config that can change results, secrets redacted: all but ray/output/progress
        and the backend's ``execution_options`` (e.g. rate limits and cost caps)."""
        data = {key: value for key, value in redact(self.to_dict()).items() if key not in EXECUTION_KEYS}
        if not data["adaptive"]:
            del data["adaptive"]  # the hash of a job with a fixed design is the one before the key existed
        if data["link"] == "identity":
            del data["link"]  # likewise for a job without a link
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
        reason = "the value is not valid YAML" if _is_secret(parts[-1]) else err  # never echo a secret
        raise ConfigError(f"config: cannot parse the value of {key!r}: {reason}") from None


def config_from_dict(data: Mapping[str, Any], base_dir: Path | None = None) -> JobConfig:
    """Validate plain data into a JobConfig; resolves a relative input path against ``base_dir``.

    Every problem is found before any is reported: the ConfigError lists them all, one a line.
    """
    problems: list[str] = []
    config = _build(JobConfig, data, "", problems)
    if config is not None:
        problems += _check(config)
        problems += _attempt(lambda: _resolve_input(config, base_dir))
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"config: {len(problems)} problems:\n" + "\n".join(f"  {problem}" for problem in problems))
    return config


def _resolve_input(config: JobConfig, base_dir: Path | None) -> None:
    config.input.path = resolve_input_path(config.input.path, base_dir)
    if config.input.format is None:
        config.input.format = _infer_format(config.input.path)


def _attempt(check: Callable[[], None]) -> list[str]:
    """[] if ``check()`` passes, else its ConfigError's message."""
    try:
        check()
    except ConfigError as err:
        return [str(err)]
    return []


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


# Bounds of the numeric keys besides the method's (``MethodOptions.BOUNDS``): (key, lowest,
# highest); None = unbounded.
_BOUNDS: tuple[tuple[str, float, float | None], ...] = (
    ("featurizer.max_features", 2, 100_000),
    ("holdout", 0, 1_000_000),
    ("ray.num_actors", 1, 100_000),
    ("ray.num_cpus_per_actor", 0, None),
    ("ray.num_gpus_per_actor", 0, None),
    ("ray.num_cpus_per_fit", 0, None),
    ("ray.batch_size", 1, 1_000_000),
    ("ray.max_restarts", 0, 10_000),
    ("ray.max_attempts", 1, 100),
    ("ray.flush_seconds", 0, 86_400),
    ("masking.blur_sigma", 1e-9, None),
)


def _check(config: JobConfig) -> list[str]:
    """Value checks beyond types: every problem, one message each."""
    checks = [
        lambda: _one_of("input.format", config.input.format, FORMATS, optional=True),
        lambda: _one_of("featurizer.unit", config.featurizer.unit, (*UNITS, DOCUMENTS, PATCHES)),
        lambda: _one_of("method", config.method, METHODS),
        lambda: _one_of("link", config.link, tuple(LINKS)),
        lambda: _check_masking(config),
        lambda: _check_documents(config),
        lambda: _check_indices(config.indices),
    ]
    problems = [problem for check in checks for problem in _attempt(check)]
    problems += [f"config: {key!r} {problem}" for key, problem in config.method_options().problems()]
    if config.featurizer.unit == "spans" and config.featurizer.spans_field is None:
        problems.append("config: 'featurizer.spans_field' is required when 'featurizer.unit' is spans")
    if config.budget is not None and config.b is not None:
        problems.append("config: set either 'budget' or 'b', not both")
    problems += _adaptive_problems(config)
    for key, low, high in _BOUNDS:
        section, _, name = key.rpartition(".")
        value = getattr(getattr(config, section) if section else config, name)
        if value is not None and value < low:
            problems.append(f"config: {key!r} must be >= {low}, got {value}")
        elif value is not None and high is not None and value > high:
            problems.append(f"config: {key!r} must be <= {high}, got {value}")
    return problems + _check_backend(config)


def _adaptive_problems(config: JobConfig) -> list[str]:
    """``adaptive`` needs a method that cross-validates its fit and a budget (or b) to cap."""
    if not config.adaptive:
        return []
    problems = []
    if config.method in METHODS and not method_class(config.method).cross_validates:
        problems.append(f"config: 'adaptive' needs method {cross_validated_methods()} (a cross-validated fit), "
                        f"got {config.method!r}")
    if config.budget is None and config.b is None:
        problems.append("config: 'adaptive' needs 'budget' (or 'b'): the most queries an example may spend")
    return problems


def _check_masking(config: JobConfig) -> None:
    if config.featurizer.unit == PATCHES:
        _check_patches(config)
        return
    _one_of("masking.strategy", config.masking.strategy, STRATEGIES)
    for key in ("input.image_field", "featurizer.grid"):
        section, name = key.split(".")
        if getattr(getattr(config, section), name) is not None:
            raise ConfigError(f"config: {key!r} is only for images ('featurizer.unit: {PATCHES}')")


def _check_indices(indices: list[str]) -> None:
    if not indices:
        raise ConfigError("config: 'indices' must list at least one index")
    for position, index in enumerate(indices):
        _one_of(f"indices[{position}]", index, INDICES)
    if len(set(indices)) != len(indices):
        raise ConfigError(f"config: 'indices' repeats an index: {indices}")


def _check_backend(config: JobConfig) -> list[str]:
    """The backend's name and every option the backend class finds wrong (it loads no model and
    opens no connection), masking options it takes included."""
    name = config.backend.get("name")
    if name is None:
        return ["config: 'backend.name' is required"]
    if not isinstance(name, str) or (name not in BACKENDS and not is_import_path(name)):
        return [f"config: 'backend.name' must be one of {', '.join(sorted(BACKENDS))} or an import path "
                f"'package.module:Class'; got {name!r}"]
    try:
        cls = backend_class(name)
    except (ImportError, ValueError) as err:
        return [f"config: 'backend.name' {name!r}: {err}"]
    spec = config.backend_spec(backend_options(name))
    return [f"config: {problem}" for problem in cls.check_options({k: v for k, v in spec.items() if k != "name"})]


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


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    """Instantiate dataclass ``cls`` from ``data``; each unknown key, missing key or badly typed
    value adds a problem and leaves that field at its default. None when ``data`` is no mapping
    or a required key is missing."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(data, Mapping):
        problems.append(f"config: {where!r} must be a mapping, got {type(data).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems += [_unknown_key(prefix, key, fields) for key in sorted(str(key) for key in data if key not in fields)]
    values = {}
    complete = True
    for name, spec in fields.items():
        key = prefix + name
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                problems.append(f"config: missing required key {key!r}")
                complete = False
            continue
        try:
            values[name] = _convert(hints[name], data[name], key, problems)
        except ConfigError as err:
            problems.append(str(err))
            complete = complete and not (spec.default is dataclasses.MISSING
                                         and spec.default_factory is dataclasses.MISSING)
            continue
        if values[name] is None and data[name] is not None:  # a section that could not be built
            del values[name]
            complete = complete and not (spec.default is dataclasses.MISSING
                                         and spec.default_factory is dataclasses.MISSING)
    return cls(**values) if complete else None


def _unknown_key(prefix: str, key: str, fields: Iterable[str]) -> str:
    """The problem of an unknown key ``prefix + key``: renamed (naming the new key), or listing the
    allowed ``fields`` with the closest as a did-you-mean."""
    if prefix + key in RENAMED_KEYS:
        return f"config: key {prefix + key!r} is now {RENAMED_KEYS[prefix + key]!r}"
    return f"config: unknown key {prefix + key!r} (allowed: {', '.join(sorted(fields))}){did_you_mean(key, fields)}"


def _convert(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    """``value`` as type ``hint``; ConfigError naming ``key`` when it is not (a nested section adds
    its problems to ``problems`` and converts to None when it cannot be built)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(inner, value, key, problems)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".", problems)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config: {key!r} must be a list, got {value!r}")
        return [_convert(args[0], item, f"{key}[{i}]", problems) for i, item in enumerate(value)]
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
