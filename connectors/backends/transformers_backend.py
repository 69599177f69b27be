"""Hugging Face transformers backend: a local causal LM scores token-id prompts in padded batches.

The value functions are those of ``connectors.backends.logprob``, the prompts those of
``connectors.features.prompts``; this module only loads the
model and runs the forward passes (CPU or GPU). Needs the ``hf`` extra (torch, transformers).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from connectors.backends.logprob import LogprobBackend, Request

DTYPES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16")
_INSTALL = "pip install 'spex-ray[hf]'"


class TransformersBackend(LogprobBackend):
    """A causal LM from a local directory (``model``; nothing is downloaded) on ``device``.

    ``device``: a torch device ("cpu", "cuda", "cuda:1"); None = "cuda" when available, else
    "cpu". ``dtype``: one of DTYPES; None = float32 on CPU, bfloat16 on GPU. A forward pass holds
    at most ``batch_size`` prompts and ``max_batch_tokens`` padded tokens (a longer prompt goes
    alone). Prompts are left-padded with position ids counted from each prompt's first token.
    ``attn_implementation``: passed to ``from_pretrained`` ("sdpa", "eager", ...; None = its default).
    Value-function options: see ``connectors.backends.logprob.LogprobBackend``.
    """

    name = "transformers"

    def __init__(
        self,
        *,
        model: str,
        tokenizer: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        max_batch_tokens: int = 8192,
        attn_implementation: str | None = None,
        **value_options: Any,
    ) -> None:
        torch, transformers = _import_hf()
        for option, number in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens)):
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                raise ValueError(f"{option} must be a positive integer, got {number!r}")
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        if not Path(model).is_dir():
            raise ValueError(f"model must be a local model directory, got {model!r}")
        super().__init__(**value_options)
        self._torch = torch
        self.model_path = str(Path(model).resolve())
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype if dtype is not None else ("float32" if self.device.type == "cpu" else "bfloat16")
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self._setup(transformers.AutoTokenizer.from_pretrained(tokenizer or model, local_files_only=True))
        self._load_model(transformers.AutoModelForCausalLM, attn_implementation)

    def _load_model(self, auto_class: Any, attn_implementation: str | None) -> None:
        """Load the model in ``self.dtype`` onto ``self.device``; read its context length, EOS ids,
        padding id and whether its forward pass keeps only the last logits."""
        options = {"local_files_only": True,
                   "dtype": self.dtype if self.dtype == "auto" else getattr(self._torch, self.dtype)}
        if attn_implementation is not None:
            options["attn_implementation"] = attn_implementation
        self.model = auto_class.from_pretrained(self.model_path, **options).to(self.device).eval()
        self.max_length = getattr(self.model.config, "max_position_embeddings", None)
        generation_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if generation_eos is not None:
            self.eos_ids |= set(np.atleast_1d(generation_eos).tolist())
        self._pad_id = next((i for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) if i is not None), 0)
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.parameters = sum(p.numel() for p in self.model.parameters())

    def identity(self) -> dict:
        return {**model_identity(self.name, self.model_path, self.model, self.device, self.dtype),
                "parameters": self.parameters, **self.settings()}

    def close(self) -> None:
        self.model = None
        self._cache.clear()
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    def _logprobs(self, requests: Sequence[Request]) -> list[float]:
        if any(request.image is not None for request in requests):
            raise ValueError("the transformers backend scores text prompts only")
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].ids))
        values = [0.0] * len(requests)
        start = 0
        while start < len(order):
            width = len(requests[order[start]].ids)
            stop = start + max(1, min(self.batch_size, self.max_batch_tokens // width))
            chunk = order[start:stop]
            for index, value in zip(chunk, self._forward([requests[i] for i in chunk])):
                values[index] = value
            start = stop
        return values

    def _forward(self, requests: Sequence[Request]) -> list[float]:
        """One left-padded forward pass; the sums of each request's continuation log-probs."""
        torch = self._torch
        width = max(len(r.ids) for r in requests)
        keep = max(r.continuation for r in requests) + 1
        ids = np.full((len(requests), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(requests), width), dtype=np.int64)
        for row, request in enumerate(requests):
            ids[row, width - len(request.ids) :] = request.ids
            mask[row, width - len(request.ids) :] = 1
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        inputs = {
            "input_ids": torch.from_numpy(ids).to(self.device),
            "attention_mask": torch.from_numpy(mask).to(self.device),
            "position_ids": torch.from_numpy(positions).to(self.device),
        }
        if self._keeps_logits:
            inputs["logits_to_keep"] = keep
        with torch.inference_mode():
            logits = self.model(**inputs, use_cache=False).logits[:, -keep:]
            logprobs = logits.float().log_softmax(dim=-1)
            # logits at window position w predict the token at sequence position width - keep + w + 1
            targets = torch.from_numpy(ids[:, width - keep + 1 :]).to(self.device)
            picked = logprobs[:, :-1].gather(-1, targets[..., None])[..., 0]
            counts = torch.tensor([r.continuation for r in requests], device=self.device)
            window = torch.arange(keep - 1, device=self.device)
            used = window[None, :] >= (keep - 1 - counts)[:, None]
            return torch.where(used, picked, 0.0).sum(dim=1).tolist()

    def _generate(self, ids: np.ndarray, image: np.ndarray | None, max_new_tokens: int) -> list[int]:
        if image is not None:
            raise ValueError("the transformers backend scores text prompts only")
        torch = self._torch
        inputs = torch.from_numpy(np.asarray(ids, dtype=np.int64)[None, :]).to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=self._pad_id,
            )
        return output[0, inputs.shape[1] :].tolist()


def _import_hf() -> tuple[Any, Any]:
    """The ``torch`` and ``transformers`` modules; ImportError naming the extra when missing."""
    try:
        import torch
        import transformers
    except ImportError as err:
        raise ImportError(f"the transformers backend needs torch and transformers: {_INSTALL} ({err})") from err
    return torch, transformers


def model_identity(backend: str, model_path: str, model: Any, device: Any, dtype: str) -> dict:
    """What identifies a transformers model in the Parquet metadata: the backend, the model folder,
    its type and ``config.json`` hash, the device, dtype, and the torch/transformers versions."""
    config_file = Path(model_path) / "config.json"
    return {
        "backend": backend,
        "model": model_path,
        "model_type": getattr(model.config, "model_type", None),
        "config_sha256": hashlib.sha256(config_file.read_bytes()).hexdigest() if config_file.is_file() else None,
        "device": str(device),
        "dtype": dtype,
        "torch": importlib.metadata.version("torch"),
        "transformers": importlib.metadata.version("transformers"),
    }
