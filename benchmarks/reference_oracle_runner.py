"""Reference explainers on values computed by the caller; run with the bench venv's python.

The reference methods (``sparse-transform`` 0.2.1 SPEX, ``shapiq`` KernelSHAP) choose their own
masks. Here they query a *remote* value function: every batch of masks goes to the parent process
(``benchmarks/reference_oracle.py``), which evaluates it with any model (planted functions, VADER,
a pipeline backend) and sends the values back. So a model the bench venv cannot import is still
explained by the reference code, on exactly the masks that code picked, at the query count it
reports. One process serves many jobs: numba's JIT and galois's field set-up are paid once.

Protocol: one JSON object per line. The parent writes a job on stdin; while the job runs the
runner writes ``{"query": <base64 of np.packbits(masks, axis=1)>, "rows": R}`` (masks 0/1 with
1 = feature kept) and reads ``{"values": <base64 of float64 (R,)>}``; each finished piece of work
is a ``{"partial": {...}}`` line (so a timeout keeps what was done) and the job ends with
``{"done": true}`` or ``{"error": "<reason>"}``. Library output is diverted to stderr so stdout
carries only the protocol.

Jobs:
``{"case": "spex", "n", "bs": [4, 6], "t": 5, "seed": 0, "decoders": ["hard", "soft"]}``
    Queries the reference's own design once at max(bs) (its designs are nested: a smaller b
    reuses a subset of the samples) and decodes at every b and decoder, as
    ``reference_runner.run_planted`` does (same settings as spectralexplain 0.0.4). Partials:
    ``{"b", "decoder", "num_queries", "recovered": [[indices], value], "seconds"}``; all hard
    decodes come before the soft ones (soft decoding can run for minutes on noisy values).
``{"case": "kernelshap", "n", "budgets": [...], "seed": 0}``
    ``shapiq.KernelSHAP(n, random_state=seed).approximate(budget, game)`` per budget. Partials:
    ``{"budget", "num_queries" (rows the game was asked for), "baseline", "values": [phi_0..phi_{n-1}],
    "seconds"}``.
"""

import base64
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference_runner import _decoder, _query_args, _spex_transform, _to_indices  # noqa: E402
from sparse_transform.qsft.signals.input_signal_subsampled import SubsampledSignal  # noqa: E402


class _Channel:
    """The protocol's two pipes: JSON lines out on the saved stdout, in on stdin."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # anything a library prints goes to stderr
        self.queries = 0

    def send(self, message):
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def receive(self):
        line = sys.stdin.readline()
        if not line:
            raise EOFError("parent closed the pipe")
        return json.loads(line)

    def values(self, masks):
        """float (R,) of the remote value function at masks 0/1 (R, n)."""
        masks = np.asarray(masks)
        if len(masks) == 0:
            return np.zeros(0)
        packed = np.packbits(masks.astype(bool), axis=1)
        self.send({"query": base64.b64encode(packed.tobytes()).decode(), "rows": len(masks)})
        reply = self.receive()
        values = np.frombuffer(base64.b64decode(reply["values"]), dtype=np.float64)
        if len(values) != len(masks):
            raise RuntimeError(f"asked for {len(masks)} values, got {len(values)}")
        self.queries += len(masks)
        return values.copy()


def run_spex(job, channel):
    n, t, seed = int(job["n"]), int(job.get("t", 5)), int(job.get("seed", 0))
    bs = sorted({int(b) for b in job["bs"]})
    np.random.seed(seed)
    args = dict(_query_args({"b": max(bs), "t": t}), all_bs=bs)
    signal = SubsampledSignal(func=channel.values, n=n, q=2, query_args=args, folder=None)
    queried = sum(samples.size for samples in signal.all_samples)  # at max(bs)
    for decoder_kind in job.get("decoders", ["hard", "soft"]):
        for b in bs:
            counter = {"bch_decodes": 0}
            start = time.perf_counter()
            np.random.seed(seed)
            decoder, channel_method = _decoder(decoder_kind, n, t, counter)
            result = _spex_transform(signal, b, decoder, channel_method)
            channel.send({"partial": {
                "b": b,
                "decoder": decoder_kind,
                "num_queries": queried >> (max(bs) - b),
                "recovered": _to_indices(result),
                "bch_decodes": counter["bch_decodes"],
                "seconds": time.perf_counter() - start,
            }})


def run_kernelshap(job, channel):
    import shapiq

    n, seed = int(job["n"]), int(job.get("seed", 0))
    for budget in job["budgets"]:
        before = channel.queries
        start = time.perf_counter()
        approximator = shapiq.KernelSHAP(n=n, random_state=seed)
        values = approximator.approximate(int(budget), channel.values)
        phi = [float(values[(i,)]) for i in range(n)]
        channel.send({"partial": {
            "budget": int(budget),
            "num_queries": channel.queries - before,
            "baseline": float(values.baseline_value),
            "values": phi,
            "seconds": time.perf_counter() - start,
        }})


CASES = {"spex": run_spex, "kernelshap": run_kernelshap}


def main():
    channel = _Channel()
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        job = json.loads(line)
        try:
            if job.get("case") not in CASES:
                raise ValueError(f"case must be one of {sorted(CASES)}, got {job.get('case')!r}")
            CASES[job["case"]](job, channel)
            channel.send({"done": True})
        except EOFError:
            return
        except Exception as err:  # report and serve the next job
            channel.send({"error": f"{type(err).__name__}: {err}"})


if __name__ == "__main__":
    main()
