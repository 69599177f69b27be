"""The backend contract: examples in, one typed ``Score`` per mask out, and the registry that builds backends.

Mask convention everywhere: ``keep[b, i]`` True/1 = feature ``i`` kept in query row ``b``,
False/0 = feature masked. ``Backend`` states the whole contract a backend of one's own meets:
the job learns what a backend can do only from the class attributes and classmethods declared
there, never from its signatures or raw outputs.
"""

from __future__ import annotations

import abc
import difflib
import functools
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from spex_ray.text import Renderer, Strategy, Unit, featurize

# name -> "module:Class". A backend's options are the keyword arguments of its constructor (and of
# its base's when it passes on ``**options``).
BACKENDS: dict[str, str] = {
    "vader": "connectors.backends.vader:VaderBackend",
    "fake": "connectors.backends.fake:FakeBackend",
    "openai": "connectors.backends.openai_backend:OpenAIBackend",
    "transformers": "connectors.backends.transformers_backend:TransformersBackend",
    "transformers-classifier": "connectors.backends.classifier_backend:ClassifierBackend",
    "vllm": "connectors.backends.vllm_backend:VLLMBackend",
}

# name -> the pyproject extra that installs the backend's third-party dependencies.
BACKEND_EXTRAS: dict[str, str] = {
    "openai": "openai",
    "transformers": "hf",
    "transformers-classifier": "hf",
    "vllm": "vllm",
}

# The option through which the job hands a backend that shares a rate limit the job-wide limiter.
LIMITER_OPTION = "limiter"


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
    output as JSON text (stored in the query log as it is, for the record), ``error`` a
    message when the row failed (None when ok). ``sent`` False: the backend never sent the row
    (e.g. its dollar cap is spent); it is neither retried nor logged, so a resumed job sends it.
    ``cost_usd``: the dollars the row cost (0 when free, or answered by another row's request).
    ``fingerprint``: the serving model's fingerprint (e.g. OpenAI's ``system_fingerprint``), None
    when unknown.
    """

    value: float | None
    raw: str
    error: str | None = None
    sent: bool = field(default=True, kw_only=True)
    cost_usd: float = field(default=0.0, kw_only=True)
    fingerprint: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class RateLimits:
    """The limits of one job-wide limiter (``connectors.ratelimit.RateLimiter``): requests and
    tokens per minute and dollars in all, each None for no limit."""

    rpm: float | None
    tpm: float | None
    max_cost_usd: float | None


class Backend(abc.ABC):
    """A value function: scores masked versions of an example. One instance per actor/replica.

    The contract every backend meets, a backend of one's own (``backend.name:
    "package.module:Class"``) included. Adding a backend never edits the job: it reads only this.

    Options (the one place they are declared): the keyword parameters of ``__init__`` (and, when
    it takes ``**options`` and passes them on, those of its base class's ``__init__``), set in
    a config's ``backend`` section (plain YAML values: they are stored in ``job.json``). Taking
    ``strategy`` and ``mask_token`` gets the config's ``masking`` settings. The config's options
    are checked when it loads, before Ray starts (``check_options``: unknown or missing names,
    then ``check_values``); ``__init__`` runs once in each scorer actor: it loads the model.

    Methods:

    - ``_score(example, keep)``: implement it; one ``Score`` per row of ``keep`` (bool (B, n),
      True = kept, already checked by ``score``), in order. The masked text is
      ``example_renderer(example, strategy, mask_token).render_batch(keep)``. Equal example and
      mask must give an equal value: the query log stands in for a query on a resume. A row that
      fails gets ``Score(None, raw, error)``; an exception fails the batch, whose rows are then
      retried one by one up to ``ray.max_attempts`` times.
    - ``score(example, keep)``: what the job calls; checks the masks (``check_masks``), then
      calls ``_score``.
    - ``identity()``: JSON-able facts about the model (no secrets) for the Parquet metadata.
    - ``close()``: releases what ``__init__`` took.
    - ``target(example) -> str | None``: only with ``makes_targets``.

    Declared capabilities (class attributes and classmethods; the defaults suit a local model):

    - ``name``: shown in messages and the explanations' metadata (default: the import path).
    - ``execution_options``: options that change how queries are sent (rate limits, cost caps,
      timeouts, retries), never their values; left out of the result hash, so a resumed job may
      change them.
    - ``internal_options``: constructor options the job supplies itself (``limiter``); a config
      may not set them and error messages never list them.
    - ``check_values(options)``: one message per bad option value, without loading a model or
      opening a connection (default: none).
    - ``timed_in_process``: cheap to build and call in any process (CPU, nothing to load), so a
      dry run times a few calls here.
    - ``makes_targets``: the backend defines ``target(example)``, asked once per example without
      a target, of one replica, before its queries (e.g. a model's own answer); the job keeps
      the targets so a resume scores against the same ones.
    - ``streams_scores``: ``_score`` takes keyword hooks ``on_send(row, usd)`` (called before a
      request goes out, with its dollars if answered) and ``on_score(row, score)`` (as soon as a
      row's Score is final), so the job journals each answer as it comes (API backends).
    - ``state_dir_option``: the option naming a folder where the backend keeps state across runs
      (e.g. ids of submitted batches); the job points it into its output folder unless set.
    - ``shared_limits(options)``: a ``RateLimits`` for a backend whose replicas share one rate
      limit and dollar cap; the job then builds each replica with ``limiter=`` one job-wide
      limiter with ``RateLimiter``'s interface (an internal option). Default None: no limiter.
    - ``gpus_per_replica(options)``: GPUs one replica's actor needs when the config sets no
      ``ray.num_gpus_per_actor`` (default 0).
    - ``estimate(examples, num_queries, **options)``: the dry run's estimate (prompt tokens,
      dollars, ``seconds``...) as a dict, or None (the default) to let the job time the backend.
    """

    name: ClassVar[str]
    execution_options: ClassVar[frozenset[str]] = frozenset()
    internal_options: ClassVar[frozenset[str]] = frozenset()
    timed_in_process: ClassVar[bool] = False
    makes_targets: ClassVar[bool] = False
    streams_scores: ClassVar[bool] = False
    state_dir_option: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "name"):
            cls.name = f"{cls.__module__}:{cls.__qualname__}"
        if cls.makes_targets and not callable(getattr(cls, "target", None)):
            raise TypeError(f"backend {cls.name!r} declares makes_targets but defines no target(example)")

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """The names of the backend's options: the keyword parameters of ``__init__`` (and of its
        base's ``__init__`` when it passes on ``**options``)."""
        return frozenset(_options(cls)[0])

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

    @classmethod
    def shared_limits(cls, options: Mapping[str, Any]) -> RateLimits | None:
        """The job-wide limits for ``options`` when the replicas share one limiter, else None."""
        return None

    @classmethod
    def gpus_per_replica(cls, options: Mapping[str, Any]) -> float:
        """GPUs of one replica with these options when the config gives none. The default: 0."""
        return 0.0

    @classmethod
    def estimate(cls, examples: Iterable[Example], num_queries: Iterable[int], **options: Any) -> dict | None:
        """The dry run's estimate for ``examples`` with ``num_queries`` queries each (same order)
        and the config's ``options`` (masking settings the backend takes included), or None."""
        return None

    def identity(self) -> dict:
        """Backend and model identity for Parquet metadata (JSON-able, no secrets)."""
        return {"backend": self.name}

    def score(self, example: Example, keep: np.ndarray, *, on_send: Callable[[int, float], None] | None = None,
              on_score: Callable[[int, Score], None] | None = None) -> list[Score]:
        """Score ``example`` under each row of ``keep`` (bool or 0/1, (B, n), True = kept): one
        Score per row. ValueError for masks of another shape. The hooks go to a backend that
        ``streams_scores`` (see the class docstring); others ignore them."""
        keep = check_masks(keep, example.n)
        if self.streams_scores:
            return self._score(example, keep, on_send=on_send, on_score=on_score)
        return self._score(example, keep)

    @abc.abstractmethod
    def _score(self, example: Example, keep: np.ndarray) -> list[Score]:
        """One Score per row of ``keep``: bool (B, n), True = kept, checked by ``score``."""

    def close(self) -> None:
        """Release models, connections and files. The default holds nothing."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_masks(keep: Any, n: int) -> np.ndarray:
    """``keep`` as a bool (B, n) array; ValueError unless it is 2-D with ``n`` columns of
    booleans or 0/1 values."""
    keep = np.asarray(keep)
    if keep.ndim != 2 or keep.shape[1] != n:
        raise ValueError(f"keep must have shape (B, n) with n={n}, got {keep.shape}")
    if keep.dtype != bool:
        if not np.isin(keep, (0, 1)).all():
            raise ValueError("keep must be boolean or 0/1 valued")
        keep = keep.astype(bool)
    return keep


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
    """(allowed option names, required option names, accepts any name) of ``cls``'s constructor:
    its keyword parameters; a constructor that takes ``**options`` passes them to the next
    constructor up the class's bases, whose keyword parameters count too."""
    allowed: set[str] = set()
    required: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        var_keyword = False
        for param in list(inspect.signature(klass.__init__).parameters.values())[1:]:
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                var_keyword = True
            elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
                allowed.add(param.name)
                if param.default is inspect.Parameter.empty:
                    required.add(param.name)
        if not var_keyword:
            return allowed, required, False
    return allowed, required, True


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
