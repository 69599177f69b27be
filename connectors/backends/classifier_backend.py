"""Hugging Face sequence classifier backend: a label's logit or log-probability of the masked text.

A local ``AutoModelForSequenceClassification`` directory (BERT, RoBERTa, DeBERTa, Llama... heads;
nothing is downloaded) scores the rendered masked texts in padded batches, on CPU or GPU. Needs
the ``hf`` extra (torch, transformers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from connectors.backends.transformers_backend import model_identity
from connectors.base import Backend, Example, Score, example_renderer
from spex_ray.text import STRATEGIES, Strategy

VALUES: tuple[str, ...] = ("logit", "logprob")
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
_INSTALL = "pip install 'spex-ray[hf]'"


class ClassifierBackend(Backend):
    """Value = the logit (``value: logit``) or log-probability (``logprob``, log-softmax over the
    labels) of ``label`` for the masked text, from a local sequence-classification model.

    ``label``: the label's name in the model's ``id2label`` or its index. An example's
    ``question`` (``input.question_field``), when it has one, is the second text of the pair
    (e.g. an NLI hypothesis), never masked. Texts are truncated to ``max_length`` tokens (None:
    the tokenizer's limit). ``device``: a torch device (None: "cuda" when available, else
    "cpu"); ``dtype``: one of DTYPES (None: float32). ``raw`` is JSON ``{"logits": [...]}``,
    every label's logit.
    """

    name = "transformers-classifier"

    def __init__(
        self,
        *,
        model: str,
        label: str | int,
        value: str = "logit",
        tokenizer: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        strategy: Strategy = "remove",
        mask_token: str = "[MASK]",
    ) -> None:
        problems = self.check_values({"model": model, "label": label, "value": value, "dtype": dtype,
                                      "batch_size": batch_size, "max_length": max_length, "strategy": strategy})
        if problems:
            raise ValueError("; ".join(problems))
        try:
            import torch
            import transformers
        except ImportError as err:
            raise ImportError(f"the {self.name} backend needs torch and transformers: {_INSTALL} ({err})") from err
        self._torch = torch
        self.model_path = str(Path(model).resolve())
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or "float32"
        self.value = value
        self.batch_size = batch_size
        self.max_length = max_length
        self.strategy = strategy
        self.mask_token = mask_token
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer or model, local_files_only=True)
        if self.tokenizer.pad_token is None:  # decoder-only models (Llama, GPT-2) often have none
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            model, local_files_only=True, dtype=getattr(torch, self.dtype)
        ).to(self.device).eval()
        if self.model.config.pad_token_id is None and self.tokenizer.pad_token_id is not None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id  # decoder heads find the last token by it
        self.label_index = _label_index(label, self.model.config.id2label)
        self.label_name = str(self.model.config.id2label[self.label_index])

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> list[str]:
        """Bad option values, the label checked against the model's ``config.json`` (no model loaded)."""
        problems = []
        model = options.get("model")
        if not isinstance(model, str) or not model.strip():  # the folder may be on the GPU nodes only
            problems.append(f"'backend.model' must name a local model directory, got {model!r}")
        value = options.get("value", "logit")
        if value not in VALUES:
            problems.append(f"'backend.value' must be one of {', '.join(VALUES)}; got {value!r}")
        dtype = options.get("dtype")
        if dtype is not None and dtype not in DTYPES:
            problems.append(f"'backend.dtype' must be one of {', '.join(DTYPES)}; got {dtype!r}")
        batch_size, max_length = options.get("batch_size", 1), options.get("max_length")
        if not _is_int_at_least(batch_size, 1):
            problems.append(f"'backend.batch_size' must be a positive integer, got {batch_size!r}")
        if max_length is not None and not _is_int_at_least(max_length, 1):
            problems.append(f"'backend.max_length' must be a positive integer or null, got {max_length!r}")
        strategy = options.get("strategy", "remove")
        if strategy not in STRATEGIES:
            problems.append(f"'backend.strategy' must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        label = options.get("label")
        config_file = Path(model) / "config.json" if isinstance(model, str) else None
        if config_file is not None and config_file.is_file():
            try:
                _label_index(label, json.loads(config_file.read_text()).get("id2label") or {})
            except ValueError as err:
                problems.append(f"'backend.label': {err}")
        return problems

    def identity(self) -> dict:
        return {**model_identity(self.name, self.model_path, self.model, self.device, self.dtype),
                "label": self.label_name, "label_index": self.label_index, "value": self.value,
                "strategy": self.strategy, "mask_token": self.mask_token}

    def _score(self, example: Example, keep: np.ndarray) -> list[Score]:
        """One Score per row of ``keep``: bool (B, n), True = kept."""
        texts = example_renderer(example, self.strategy, self.mask_token).render_batch(keep)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        logits: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for index, row in zip(chunk, self._logits([texts[i] for i in chunk], example.question)):
                logits[index] = row
        scores = []
        for row in logits:
            chosen = row[self.label_index]
            if self.value == "logprob":
                chosen -= float(np.logaddexp.reduce(row))
            scores.append(Score(value=float(chosen), raw=json.dumps({"logits": row})))
        return scores

    def close(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    def _logits(self, texts: list[str], pair: str | None) -> list[list[float]]:
        """Every label's logit for each text (with ``pair`` as the second text of each pair)."""
        torch = self._torch
        pairs = None if pair is None else [pair] * len(texts)
        inputs = self.tokenizer(texts, pairs, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            return self.model(**inputs).logits.float().cpu().tolist()


def _label_index(label: object, id2label: Mapping[Any, Any]) -> int:
    """The index of ``label`` (a name in ``id2label`` or an index into it); ValueError otherwise."""
    names = {int(index): str(name) for index, name in id2label.items()}
    if isinstance(label, str) and label in names.values():
        return next(index for index, name in names.items() if name == label)
    if _is_int_at_least(label, 0) and label in names:
        return int(label)
    listed = ", ".join(f"{index}: {name}" for index, name in sorted(names.items()))
    raise ValueError(f"label {label!r} is not a label of the model (a name or an index of {listed})")


def _is_int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum
