"""Time the SPEX reference (``sparse-transform`` 0.2.1) on one job; run with the bench venv's python.

Reads one JSON job (argv[1], or stdin when absent) and prints one JSON line on stdout. Jobs:

``{"case": "planted", "n", "b", "t": 5, "terms": [[[i, j], coef], ...], "constant": 0.0,
"noise_sigma": 0.0, "seed": 0, "decoder": "hard"|"soft", "repeat": 2}``
    Runs the reference pipeline ``repeat`` times in this process on
    f(x) = constant + Σ β_k (−1)^{<k,x>} (+ N(0, noise_sigma²) per query), and reports
    ``cold_s`` (first run: BCH construction, numba JIT, queries, WHTs, decode), ``warm_s``
    (fastest later run, same steps; the machine is shared, so use ``repeat`` >= 3 for figures),
    ``design_s`` (first run's subsampling matrices + BCH code constructions, one for the delay
    matrix and one for the decoder, as spectralexplain does), ``decode_cold_s`` /
    ``decode_warm_s`` (the peeling decoder alone), each also as ``*_cpu_s`` (process CPU time,
    steadier than wall time on a shared machine), ``bch_decodes`` (BCH decoder calls in one run),
    the per-run ``runs`` breakdown (design, masks, f, wht, decode, total; ``_s`` and ``_cpu_s``),
    ``num_queries``, ``recovered``, ``r2_holdout`` and ``peak_rss_mb``.
    Optional: ``"mobius_terms": [[[i, j], a], ...]`` adds Σ a_S Π_{i∈S} x_i;
    ``"min_b": 3`` (the smallest b whose WHTs are precomputed, as in spectralexplain);
    ``"decoder_noise_sd": 0.0`` (the reference's zeroton threshold input; spectralexplain
    hard-codes 0); ``"holdout": 1000`` (uniform masks for ``r2_holdout`` against the
    noiseless f).
``{"case": "masks", "n", "b", "t": 5, "seed": 0}``
    Times the reference's own query-mask generation: ``design_s`` (subsampling matrices
    and BCH delay matrix) and ``masks_s`` (every query mask of the design).
``{"case": "proxyspex", "n", "num_queries", "terms", ..., "max_order": 5, "repeat": 1}``
    spectralexplain 0.0.4's ``proxy_spex`` on uniform random masks, as its ``Explainer`` does.

Threads: galois runs its BCH kernels as numba parallel loops (LightGBM uses OpenMP in the
proxyspex case). On an idle machine one thread or one per core makes <= 30% difference, but when
other processes share the cores every tiny parallel launch waits on a descheduled thread: the
warm n = 32 decode went from 0.007 s to 19 s at load 7. ``"threads": k`` in a job records the
intended count; the libraries read it from the environment at import (``NUMBA_NUM_THREADS``,
``OMP_NUM_THREADS``, ...), so the caller sets those (``run_reference`` does, default 1) and the
runner refuses a numba thread count that differs. ``threads`` absent or null: the libraries'
defaults.

Conventions. The reference passes the sampling function a 0/1 int array (rows, n) and, as in
spectralexplain's examples, bit 1 = feature kept; its Fourier basis is (−1)^{<k,x>} (the
q = 2 case of exp(2πi<k,x>/q)). Both match spex-ray's, so planted terms go in and recovered
terms come out without any flip: ``recovered`` is ``[[sorted feature indices], value]``
sorted by |value| descending, ``[]`` for the constant term. Randomness (subsampling
matrices, group order, uniform masks) comes from numpy's global generator, seeded with
``seed`` before every run, so all runs of one job are identical; the query noise uses a
separate generator seeded with ``seed``.

The decoder settings mirror spectralexplain 0.0.4's ``support_recovery``: C = 3 groups, joint
BCH-coded delays, multi-detect peeling with residual-energy cutoff 0.9, peel averaging,
trap exit; soft decoding = SISO channel + ``parity_decode_2chase_t2_max_likelihood`` with
chase depth 2t. Its ``regress="lasso"`` is ignored by ``transform`` (``report=False``), so
no refit is done here either.
"""

import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from functools import partial
from importlib import metadata

import numba
import numpy as np

from sparse_transform.qsft.codes.BCH import BCH
from sparse_transform.qsft.qsft import transform
from sparse_transform.qsft.signals.input_signal_subsampled import SubsampledSignal

NUM_GROUPS = 3


class _Timings:
    """Wall (perf_counter) and CPU (process_time, all threads) seconds accumulated per phase."""

    def __init__(self):
        self.wall, self.cpu = {}, {}

    @contextmanager
    def phase(self, name):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu

    def as_dict(self):
        """{phase_s, phase_cpu_s, ..., total_s, total_cpu_s}; "masks" excludes time spent in f."""
        out = {}
        for clock, suffix in ((self.wall, "_s"), (self.cpu, "_cpu_s")):
            values = dict(clock)
            if "masks" in values:
                values["masks"] -= values.get("f", 0.0)
            out.update({name + suffix: v for name, v in values.items()})
            out["total" + suffix] = sum(values.values())
        return out


class _TimedSignal(SubsampledSignal):
    """The reference's subsampled signal with each construction step timed (same order).

    Takes one more keyword than ``SubsampledSignal``: ``timings``, a ``_Timings``.
    """

    def _init_signal(self):
        with self.timings.phase("design"):
            self._set_Ms_and_Ds_qsft()
        with self.timings.phase("masks"):
            self._subsample_qsft()
        with self.timings.phase("wht"):
            self._compute_transforms()

    def subsample(self, query_indices):
        with self.timings.phase("f"):
            return super().subsample(query_indices)

    def _set_params(self, **kwargs):
        self.timings = kwargs["timings"]
        super()._set_params(**kwargs)


def _planted_function(job, noise_rng):
    """f: int 0/1 (rows, n) -> float (rows,), 1 = kept; noise only when noise_rng is given."""
    fourier = [(np.asarray(idx, dtype=int), float(c)) for idx, c in job.get("terms", [])]
    mobius = [(np.asarray(idx, dtype=int), float(a)) for idx, a in job.get("mobius_terms", [])]
    constant = float(job.get("constant", 0.0))
    sigma = float(job.get("noise_sigma", 0.0))

    def f(x):
        x = np.asarray(x)
        y = np.full(x.shape[0], constant)
        for idx, c in fourier:
            y += c * (1 - 2 * (x[:, idx].sum(axis=1) & 1))
        for idx, a in mobius:
            y += a * x[:, idx].all(axis=1)
        if noise_rng is not None and sigma > 0:
            y += noise_rng.normal(0.0, sigma, size=y.shape)
        return y

    return f


def _query_args(job):
    b, t = int(job["b"]), int(job.get("t", 5))
    return {
        "query_method": "complex",
        "num_subsample": NUM_GROUPS,
        "delays_method_source": "joint-coded",
        "subsampling_method": "qsft",
        "delays_method_channel": "identity-siso",
        "num_repeat": 1,
        "b": b,
        "all_bs": list(range(min(int(job.get("min_b", 3)), b), b + 1)),
        "t": t,
    }


def _decoder(kind, n, t, counter):
    """(source decoder, channel method) as spectralexplain builds them; counter["bch_decodes"] counts
    every BCH parity decode (a soft decode may run many)."""
    if kind not in ("hard", "soft"):
        raise ValueError(f"decoder must be 'hard' or 'soft', got {kind!r}")
    code = BCH(n, t)
    parity_decode = code.parity_decode

    def counted(parity, **kwargs):
        counter["bch_decodes"] += 1
        return parity_decode(parity, **kwargs)

    code.parity_decode = counted
    if kind == "hard":
        return code.parity_decode, "identity"
    return partial(code.parity_decode_2chase_t2_max_likelihood, chase_depth=2 * t), "identity-siso"


def _spex_transform(signal, b, decoder, channel, noise_sd=0.0):
    """The reference SPEX on ``signal`` as spectralexplain runs it: BCH-coded source, C = NUM_GROUPS,
    multi-detect peeling with averaged peels; returns {0/1 tuple: coefficient}."""
    return transform(
        signal,
        num_subsample=NUM_GROUPS,
        num_repeat=1,
        reconstruct_method_source="coded",
        reconstruct_method_channel=channel,
        b=b,
        source_decoder=decoder,
        peeling_method="multi-detect",
        noise_sd=noise_sd,
        res_energy_cutoff=0.9,
        trap_exit=True,
        peel_average=True,
    )


def _to_indices(transform_dict):
    """{0/1 tuple: complex} -> [[indices], real value], sorted by |value| descending."""
    out = [[[int(i) for i in np.flatnonzero(key)], float(np.real(v))] for key, v in transform_dict.items()]
    return sorted(out, key=lambda kv: (-abs(kv[1]), kv[0]))


def _r2(recovered, f, n, count, seed):
    if count <= 0:
        return None
    masks = np.random.default_rng([seed, 2]).integers(0, 2, size=(count, n))
    y = f(masks)
    y_hat = np.zeros(count)
    for idx, v in recovered:
        y_hat += v * (1 - 2 * (masks[:, idx].sum(axis=1) & 1)) if idx else v
    denom = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - y_hat) ** 2)) / denom if denom > 0 else None


def _run_planted_once(job):
    n, b, t, seed = int(job["n"]), int(job["b"]), int(job.get("t", 5)), int(job.get("seed", 0))
    np.random.seed(seed)
    f = _planted_function(job, np.random.default_rng(seed))
    timings = _Timings()
    signal = _TimedSignal(timings=timings, func=f, n=n, q=2, query_args=_query_args(job), folder=None)
    counter = {"bch_decodes": 0}
    with timings.phase("design"):
        decoder, channel = _decoder(job.get("decoder", "hard"), n, t, counter)
    with timings.phase("decode"):
        result = _spex_transform(signal, b, decoder, channel, float(job.get("decoder_noise_sd", 0.0)))
    num_queries = sum(rows.size for rows in signal.all_samples)
    return {**timings.as_dict(), **counter}, num_queries, _to_indices(result)


def _cold_warm(runs, *phases):
    """First run's and fastest later run's seconds (wall and CPU) of each phase."""
    warm = runs[1:] or runs
    out = {}
    for phase in phases:
        for suffix in ("_s", "_cpu_s"):
            key = phase + suffix
            out[f"{phase}_cold{suffix}"] = runs[0][key]
            out[f"{phase}_warm{suffix}"] = min(r[key] for r in warm)
    return out


def run_planted(job):
    runs = []
    for _ in range(max(1, int(job.get("repeat", 2)))):
        timings, num_queries, recovered = _run_planted_once(job)
        runs.append(timings)
    f_clean = _planted_function(job, None)
    out = _cold_warm(runs, "total", "decode", "design")
    return {
        "cold_s": out.pop("total_cold_s"),
        "warm_s": out.pop("total_warm_s"),
        "cold_cpu_s": out.pop("total_cold_cpu_s"),
        "warm_cpu_s": out.pop("total_warm_cpu_s"),
        "design_s": out.pop("design_cold_s"),
        "design_cpu_s": out.pop("design_cold_cpu_s"),
        **out,
        "bch_decodes": runs[0]["bch_decodes"],
        "runs": runs,
        "num_queries": num_queries,
        "recovered": recovered,
        "r2_holdout": _r2(recovered, f_clean, int(job["n"]), int(job.get("holdout", 1000)), int(job.get("seed", 0))),
    }


def run_masks(job):
    n, b, seed = int(job["n"]), int(job["b"]), int(job.get("seed", 0))
    np.random.seed(seed)
    timings = _Timings()
    args = dict(_query_args(job), all_bs=[b])
    signal = _TimedSignal(timings=timings, func=lambda x: np.zeros(len(x)), n=n, q=2, query_args=args, folder=None)
    t = timings.as_dict()
    return {
        "design_s": t["design_s"],
        "masks_s": t["masks_s"],
        "cold_s": t["design_s"] + t["masks_s"],
        "design_cpu_s": t["design_cpu_s"],
        "masks_cpu_s": t["masks_cpu_s"],
        "cold_cpu_s": t["design_cpu_s"] + t["masks_cpu_s"],
        "num_queries": sum(rows.size for rows in signal.all_samples),
    }


def run_proxyspex(job):
    from spectralexplain.utils import proxy_spex

    n, q, seed = int(job["n"]), int(job["num_queries"]), int(job.get("seed", 0))
    f_clean = _planted_function(job, None)
    runs = []
    for _ in range(max(1, int(job.get("repeat", 1)))):
        np.random.seed(seed)
        f = _planted_function(job, np.random.default_rng(seed))
        timings = _Timings()
        with timings.phase("masks"):
            queries = np.random.choice(2, size=(q, n))
            with timings.phase("f"):
                values = np.asarray(f(queries))
        with timings.phase("fit"):
            fit = proxy_spex((queries, values), max_order=int(job.get("max_order", 5)))
        runs.append(timings.as_dict())
    recovered = _to_indices(fit)
    out = _cold_warm(runs, "total", "fit")
    return {
        "cold_s": out.pop("total_cold_s"),
        "warm_s": out.pop("total_warm_s"),
        "cold_cpu_s": out.pop("total_cold_cpu_s"),
        "warm_cpu_s": out.pop("total_warm_cpu_s"),
        **out,
        "runs": runs,
        "num_queries": q,
        "recovered": recovered,
        "r2_holdout": _r2(recovered, f_clean, n, int(job.get("holdout", 1000)), seed),
    }


CASES = {"planted": run_planted, "masks": run_masks, "proxyspex": run_proxyspex}


def main():
    job = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    if job.get("case") not in CASES:
        raise ValueError(f"case must be one of {sorted(CASES)}, got {job.get('case')!r}")
    wanted = job.get("threads")
    if wanted is not None and int(wanted) != numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"job asks for threads={wanted} but numba runs {numba.config.NUMBA_NUM_THREADS}: set "
            f"NUMBA_NUM_THREADS={wanted} and OMP_NUM_THREADS={wanted} (run_reference does this)"
        )
    out = CASES[job["case"]](job)
    out["case"] = job["case"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    out["omp_threads"] = os.environ.get("OMP_NUM_THREADS")
    out["versions"] = {p: metadata.version(p) for p in ("sparse-transform", "galois", "numba", "numpy")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
