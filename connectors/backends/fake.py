"""A deterministic test backend: a planted sparse Fourier function of the mask, with fault-injection hooks.

For tests and demos of the pipeline only; production backends carry no such hooks.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence

import numpy as np

from connectors.base import Backend, Example, Score

FAIL_MODES: tuple[str, ...] = ("raise", "error")
DIE_MARKER = "fake-backend-died"


class FakeBackend(Backend):
    """Value of mask x (x_i = 1: feature i kept) = constant + sum_k c_k (-1)^(sum_{i in k} x_i) + noise.

    ``terms``: ``[[[feature indices], coefficient], ...]``, e.g. ``[[[0, 3], 1.5], [[2], -0.7]]``.
    ``noise``: standard deviation of Gaussian noise, a deterministic function of
    (``seed``, example id, mask), so a re-scored mask gets the same value.
    Test hooks:
      ``sleep_per_batch_s``: sleep this long per ``score`` call (stand-in for GPU/network latency).
      ``fail_queries``: masks, each given as its list of kept feature indices, that fail; with
        ``fail_mode`` "raise" a batch holding one raises RuntimeError, with "error" those rows get
        a Score with ``value=None`` and an ``error``.
      ``counter_path``: after each successful call, append the number of rows scored and a newline.
      ``die_after_batches``: after k successful calls, the next call ends the process with
        ``os._exit(1)``, once across all processes: the first to create the marker file in
        ``die_marker_dir`` dies, later ones carry on.
    """

    name = "fake"

    def __init__(
        self,
        *,
        terms: Sequence[tuple[Sequence[int], float]] = (),
        constant: float = 0.0,
        noise: float = 0.0,
        seed: int = 0,
        sleep_per_batch_s: float = 0.0,
        fail_queries: Sequence[Sequence[int]] = (),
        fail_mode: str = "raise",
        counter_path: str | None = None,
        die_after_batches: int | None = None,
        die_marker_dir: str | None = None,
    ) -> None:
        self.terms = [_term(term, i) for i, term in enumerate(terms)]
        self.constant = float(constant)
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if sleep_per_batch_s < 0:
            raise ValueError(f"sleep_per_batch_s must be >= 0, got {sleep_per_batch_s}")
        if fail_mode not in FAIL_MODES:
            raise ValueError(f"unknown fail_mode {fail_mode!r}; expected one of {', '.join(FAIL_MODES)}")
        if (die_after_batches is None) != (die_marker_dir is None):
            raise ValueError("die_after_batches and die_marker_dir must be given together")
        if die_after_batches is not None and die_after_batches < 0:
            raise ValueError(f"die_after_batches must be >= 0, got {die_after_batches}")
        self.noise = float(noise)
        self.seed = int(seed)
        self.sleep_per_batch_s = float(sleep_per_batch_s)
        self.fail_queries = {frozenset(_indices(mask, f"fail_queries[{i}]")) for i, mask in enumerate(fail_queries)}
        self.fail_mode = fail_mode
        self.counter_path = counter_path
        self.die_after_batches = die_after_batches
        self.die_marker_dir = die_marker_dir
        self.batches = 0

    def identity(self) -> dict:
        return {
            "backend": self.name,
            "terms": [[list(indices), coefficient] for indices, coefficient in self.terms],
            "constant": self.constant,
            "noise": self.noise,
            "seed": self.seed,
        }

    def signal(self, keep: np.ndarray) -> np.ndarray:
        """The planted function without noise: float (B,) for keep bool (B, n)."""
        keep = np.asarray(keep, dtype=bool)
        needed = max((max(indices) + 1 for indices, _ in self.terms if indices), default=0)
        if keep.ndim != 2 or keep.shape[1] < needed:
            raise ValueError(f"keep must be bool (B, n) with n >= {needed} for these terms, got shape {keep.shape}")
        values = np.full(keep.shape[0], self.constant)
        for indices, coefficient in self.terms:
            parity = keep[:, list(indices)].sum(axis=1) % 2
            values += coefficient * (1.0 - 2.0 * parity)
        return values

    def _score(self, example: Example, keep: np.ndarray) -> list[Score]:
        """One Score per row of ``keep``: bool (B, n), True = kept; see the class docstring for the hooks."""
        self._maybe_die()
        if self.sleep_per_batch_s:
            time.sleep(self.sleep_per_batch_s)
        signal = self.signal(keep)
        failed = [frozenset(np.flatnonzero(row).tolist()) in self.fail_queries for row in keep]
        if self.fail_mode == "raise" and any(failed):
            row = failed.index(True)
            raise RuntimeError(f"planted failure for query row {row} (kept features {np.flatnonzero(keep[row]).tolist()})")
        scores = []
        for row, clean, fail in zip(keep, signal, failed):
            if fail:
                scores.append(Score(value=None, raw="{}", error="planted failure"))
                continue
            noise = self.noise * self._standard_normal(example.example_id, row) if self.noise else 0.0
            scores.append(Score(value=float(clean + noise), raw=json.dumps({"signal": float(clean), "noise": noise})))
        self.batches += 1
        if self.counter_path is not None:
            with open(self.counter_path, "a") as counter:
                counter.write(f"{len(scores)}\n")
        return scores

    def _standard_normal(self, example_id: str, row: np.ndarray) -> float:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{self.seed}\0{example_id}\0{row.size}\0".encode())
        digest.update(np.packbits(row).tobytes())
        return float(np.random.default_rng(int.from_bytes(digest.digest(), "little")).standard_normal())

    def _maybe_die(self) -> None:
        if self.die_after_batches is None or self.batches < self.die_after_batches:
            return
        try:
            fd = os.open(os.path.join(self.die_marker_dir, DIE_MARKER), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


def _indices(indices: Sequence[int], where: str) -> tuple[int, ...]:
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence):
        raise ValueError(f"{where} must be a list of feature indices, got {indices!r}")
    checked = []
    for index in indices:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
            raise ValueError(f"{where} must hold non-negative integer feature indices, got {index!r}")
        checked.append(int(index))
    if len(set(checked)) != len(checked):
        raise ValueError(f"{where} repeats a feature index: {indices!r}")
    return tuple(sorted(checked))


def _term(term: Sequence, position: int) -> tuple[tuple[int, ...], float]:
    if isinstance(term, (str, bytes)) or not isinstance(term, Sequence) or len(term) != 2:
        raise ValueError(f"terms[{position}] must be [[feature indices], coefficient], got {term!r}")
    indices, coefficient = term
    if isinstance(coefficient, bool) or not isinstance(coefficient, (int, float, np.number)):
        raise ValueError(f"terms[{position}] coefficient must be a number, got {coefficient!r}")
    return _indices(indices, f"terms[{position}] indices"), float(coefficient)
