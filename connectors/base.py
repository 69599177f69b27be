"""The backend contract: examples in, one score per mask out, and the registry that builds backends.

Mask convention everywhere: ``keep[b, i]`` True/1 = feature ``i`` kept in query row ``b``,
False/0 = feature masked.
"""

from __future__ import annotations

import abc
import difflib
import functools
import importlib
import inspect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from spex_ray.text import Renderer, Strategy, Unit, featurize

# name -> "module:Class". A backend's options are the keyword arguments of its constructor.
BACKENDS: dict[str, str] = {
    "vader": "connectors.vader:VaderBackend",
    "fake": "connectors.fake:FakeBackend",
    "openai": "connectors.openai_backend:OpenAIBackend",
    "transformers": "connectors.transformers_backend:TransformersBackend",
    "transformers-classifier": "connectors.classifier_backend:ClassifierBackend",
    "vllm": "connectors.vllm_backend:VLLMBackend",
}

# name -> the pyproject extra that installs the backend's third-party dependencies.
BACKEND_EXTRAS: dict[str, str] = {
    "openai": "openai",
    "transformers": "hf",
    "transformers-classifier": "hf",
    "vllm": "vllm",
}

# Backends cheap to build and call in any process (CPU, nothing to load): a dry run may time a few calls.
TIMED_IN_PROCESS: frozenset[str] = frozenset({"vader"})


@dataclass(frozen=True)
class Example:
    """One input to explain: its text split into ``n = len(features)`` features.

    ``spans[i] = (start, end)`` locates feature ``i`` in ``text`` as ``text[start:end]``;
    ``spans`` is None when the features are not substrings of a text.
    """

    example_id: str
    text: str
    features: tuple[str, ...]
    spans: tuple[tuple[int, int], ...] | None
    question: str | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        # normalise lists (e.g. read back from Arrow) to tuples so examples stay hashable
        object.__setattr__(self, "features", tuple(self.features))
        if self.spans is not None:
            object.__setattr__(self, "spans", tuple((int(start), int(end)) for start, end in self.spans))

    @classmethod
    def from_text(
        cls,
        example_id: str,
        text: str,
        unit: Unit = "words",
        *,
        spans=None,
        max_features: int | None = None,
        question: str | None = None,
        target: str | None = None,
    ) -> Example:
        """Featurize ``text`` (see ``spex_ray.text.featurize``) into an Example; ValueError on bad input."""
        features, feature_spans = featurize(text, unit, spans=spans, max_features=max_features)
        return cls(
            example_id=example_id,
            text=text,
            features=tuple(features),
            spans=tuple(feature_spans),
            question=question,
            target=target,
        )

    @property
    def n(self) -> int:
        """Number of features."""
        return len(self.features)


@functools.lru_cache(maxsize=64)
def example_renderer(example: Example, strategy: Strategy = "remove", mask_token: str = "[MASK]") -> Renderer:
    """A (cached) Renderer of ``example``; features without spans are rendered joined by single spaces."""
    if example.spans is not None:
        return Renderer(example.text, example.spans, strategy=strategy, mask_token=mask_token)
    starts = np.cumsum([0, *(len(feature) + 1 for feature in example.features)])[:-1]
    spans = [(int(start), int(start) + len(feature)) for start, feature in zip(starts, example.features)]
    return Renderer(" ".join(example.features), spans, strategy=strategy, mask_token=mask_token)


@dataclass
class Score:
    """The backend's answer for one query row.

    ``value`` is the scalar model output (None when the row failed), ``raw`` the backend's raw
    output as JSON text, ``error`` a message when the row failed (None when ok).
    """

    value: float | None
    raw: str
    error: str | None = None

    @property
    def not_sent(self) -> bool:
        """True for a row the backend never sent (``raw`` JSON has ``"not_sent": true``, e.g. once a
        dollar cap is spent): it is neither retried nor logged, so a resumed job sends it."""
        if self.value is not None or '"not_sent"' not in (self.raw or ""):
            return False
        try:
            return json.loads(self.raw).get("not_sent") is True
        except (ValueError, AttributeError):
            return False


class Backend(abc.ABC):
    """A value function: scores masked versions of an example. One instance per actor/replica.

    The contract every backend meets, a backend of one's own (``backend.name:
    "package.module:Class"``) included:

    - options: the keyword arguments of ``__init__``, set in a config's ``backend`` section (plain
      YAML values: they are stored in ``job.json``); ``__init__`` runs once in each scorer actor, so
      it is where a model is loaded. Taking ``strategy`` and ``mask_token`` gets the config's
      ``masking`` settings; ``check_options`` finds every bad option when the config loads.
    - ``score(example, keep)``: one ``Score`` per row of ``keep`` (bool (B, n), True = kept), in
      order; the masked text is ``example_renderer(example, strategy, mask_token).render_batch(keep)``.
      Equal example and mask must give an equal value: the query log stands in for a query on a
      resume. A row that fails gets ``Score(None, raw, error)``; an exception fails the batch, whose
      rows are then retried one by one up to ``ray.max_attempts`` times.
    - ``name``: shown in messages and the explanations' metadata (a class that sets none: its import path).
    - ``identity()``: JSON-able facts about the model (no secrets) for the Parquet metadata.
    - ``close()``: releases what ``__init__`` took.
    - ``execution_options``: the options that change how queries are sent (rate limits, cost caps,
      timeouts, retries), never their values; a job may change them on a resume.
    - ``internal_options``: constructor options the job supplies itself (e.g. a shared rate
      limiter); a config may not set them and error messages never list them.
    - ``check_values``: a classmethod that validates option values without loading a model or
      opening a connection; returns one message per problem (the default checks nothing).
    - optional ``target(example) -> str | None``: a target to score against, asked once per example
      that has none, of one replica, before its queries (e.g. a model's own answer).
    """

    name: ClassVar[str]
    execution_options: ClassVar[frozenset[str]] = frozenset()
    internal_options: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "name"):
            cls.name = f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Every problem with a config's ``options`` (the ``backend`` section without ``name``),
        one message each naming its key as ``backend.<option>``; [] when they are fine."""
        allowed, required, var_keyword = _options(cls)
        public = allowed - cls.internal_options
        problems = []
        for key in sorted(map(str, options)):
            if key in cls.internal_options or (key not in allowed and not var_keyword):
                problems.append(f"unknown key 'backend.{key}' for backend {cls.name!r} "
                                f"(allowed: {', '.join(sorted(public))}){did_you_mean(key, public)}")
        problems += [f"missing required key 'backend.{key}' for backend {cls.name!r}"
                     for key in sorted(required - set(options))]
        if not problems:
            problems += [f"backend {cls.name!r}: {message}" for message in cls.check_values(options)]
        return problems

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with the option values (known names, required ones present), each naming its
        option; must not load a model or connect. The default finds none."""
        return []

    def identity(self) -> dict:
        """Backend and model identity for Parquet metadata (JSON-able, no secrets)."""
        return {"backend": self.name}

    @abc.abstractmethod
    def score(self, example: Example, keep: np.ndarray) -> list[Score]:
        """Score ``example`` under each row of ``keep``: bool (B, n), True = kept; one Score per row."""

    def close(self) -> None:
        """Release models, connections and files. The default holds nothing."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def did_you_mean(key: str, allowed: Iterable[str]) -> str:
    """'; did you mean 'x' or 'y'?' naming the allowed names closest to a misspelled ``key``, or ''."""
    close = difflib.get_close_matches(key, sorted(allowed), n=2)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def backend_class(name: str) -> type[Backend]:
    """The backend class ``name`` names, without building a backend: a name registered in BACKENDS
    or an import path ``"package.module:Class"`` (a subclass of Backend). ValueError for an unknown
    name or a class that is no Backend; ImportError when the module cannot be imported, naming the
    extra to install when a registered backend's optional dependency is missing."""
    if not isinstance(name, str) or (name not in BACKENDS and not is_import_path(name)):
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}, "
                         "or a class of one's own as 'package.module:Class'")
    target = BACKENDS.get(name, name)
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if name not in BACKENDS:
            raise ImportError(f"cannot import module {module_name!r} ({err}); it must be importable in the "
                              "driver and in every scorer actor") from err
        if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ImportError(f"backend {name!r} is registered as {target!r} but that module is missing") from err
        extra = BACKEND_EXTRAS.get(name)
        if extra is None:
            raise
        raise ImportError(
            f"backend {name!r} needs the {extra} extra: pip install 'spex-ray[{extra}]' "
            f"(missing module {err.name!r})"
        ) from err
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        found = "nothing" if cls is None else repr(cls)
        raise ValueError(f"{module_name}.{class_name} must be a subclass of connectors.Backend, found {found}")
    return cls


def is_import_path(name: str) -> bool:
    """Whether ``name`` looks like ``"package.module:Class"`` (a backend named by its import path)."""
    module_name, sep, class_name = name.partition(":")
    return bool(sep) and class_name.isidentifier() and all(part.isidentifier() for part in module_name.split("."))


def _options(cls: type) -> tuple[set[str], set[str], bool]:
    """(allowed option names, required option names, accepts **kwargs) of ``cls.__init__``."""
    allowed: set[str] = set()
    required: set[str] = set()
    var_keyword = False
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            allowed.add(param.name)
            if param.default is inspect.Parameter.empty:
                required.add(param.name)
    return allowed, required, var_keyword


def build_backend(spec: Mapping[str, Any]) -> Backend:
    """Build a backend from a config's ``backend`` section: ``{"name": "vader", **options}``.

    ``name`` is registered in BACKENDS or an import path ``"package.module:Class"``. Raises
    ValueError for a missing/unknown name, an unknown or missing option; ImportError naming the
    extra to install when a backend's optional dependency is missing.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"backend spec must be a mapping with a 'name', got {type(spec).__name__}")
    name = spec.get("name")
    if name is None:
        raise ValueError(f"backend spec needs a 'name' (one of {', '.join(sorted(BACKENDS))}, "
                         "or 'package.module:Class')")
    cls = backend_class(name)
    options = {key: value for key, value in spec.items() if key != "name"}
    allowed, required, var_keyword = _options(cls)
    unknown = sorted(set(options) - allowed)
    if unknown and not var_keyword:
        public = allowed - cls.internal_options
        raise ValueError(f"backend {name!r} got unknown option {unknown[0]!r}; "
                         f"allowed options: {', '.join(['name', *sorted(public)])}")
    missing = sorted(required - set(options))
    if missing:
        raise ValueError(f"backend {name!r} needs option {missing[0]!r}")
    return cls(**options)
