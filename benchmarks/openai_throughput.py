"""Throughput of the OpenAI backend against the local fake server (no network beyond 127.0.0.1).

Two runs, the server in its own process (``tests/openai_server.py``) so client and server do not
share an interpreter:
  1. server latency 200 ms, server limit 600 RPM, backend rpm=600: sustained requests per minute
     (target: at least 90% of the limit, and no 429 from the server);
  2. server latency 200 ms, no limit anywhere: requests per second (target: at least 200).

    python benchmarks/openai_throughput.py [--limited-requests 200] [--free-requests 3000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from connectors import Example
from connectors.backends.openai_backend import OpenAIBackend

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("A group of four people must cross an old rope bridge at night with one torch; they walk at "
        "different speeds and the bridge holds two people at a time, so someone has to bring the torch back.")


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "openai_server.py"), *args],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def run(requests: int, batch: int, server_args: list[str], **options) -> dict[str, float]:
    """Score ``requests`` distinct masks in calls of ``batch`` rows; returns the measured figures."""
    example = Example.from_text("bridge", TEXT, "words", question="True or False: one crossing is enough.")
    keep = np.random.default_rng(0).random((requests, example.n)) < 0.5
    process, base_url = start_server(*server_args)
    try:
        with OpenAIBackend(base_url=base_url, tpm=None, **options) as backend:
            backend.score(example, np.ones((1, example.n), bool))  # connect and warm up
            begin = time.perf_counter()
            scores = []
            for start in range(0, requests, batch):
                scores += backend.score(example, keep[start:start + batch])
            seconds = time.perf_counter() - begin
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    failed = sum(score.error is not None for score in scores)
    return {"requests": len(scores), "failed": failed, "seconds": seconds, "per_second": len(scores) / seconds,
            "per_minute": len(scores) / seconds * 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limited-requests", type=int, default=200, help="requests of the 600 RPM run")
    parser.add_argument("--free-requests", type=int, default=3000, help="requests of the unlimited run")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-local-benchmark")

    limited = run(args.limited_requests, 128, ["--latency", "0.2", "--rpm", "600"], rpm=600, max_in_flight=32)
    share = limited["per_minute"] / 600
    print(f"600 RPM limit, 200 ms latency: {limited['requests']} requests in {limited['seconds']:.1f} s = "
          f"{limited['per_minute']:.0f} requests/min ({share:.1%} of the limit), {limited['failed']} failed "
          f"[target >= 90%: {'ok' if share >= 0.9 and not limited['failed'] else 'MISSED'}]")

    free = run(args.free_requests, 1000, ["--latency", "0.2"], rpm=None, max_in_flight=256)
    print(f"no limit, 200 ms latency: {free['requests']} requests in {free['seconds']:.1f} s = "
          f"{free['per_second']:.0f} requests/s, {free['failed']} failed "
          f"[target >= 200/s: {'ok' if free['per_second'] >= 200 and not free['failed'] else 'MISSED'}]")


if __name__ == "__main__":
    main()
