"""Parent side of ``reference_oracle_runner.py``: reference explainers querying a local value function.

    with ReferenceOracle() as oracle:
        parts, status = oracle.run({"case": "spex", "n": 40, "bs": [4, 6]}, value_fn, timeout_s=120)

``value_fn``: bool (R, n), True = kept -> float (R,). The runner (bench venv, one process for many
jobs) picks the masks; this side evaluates them. A job that runs past ``timeout_s`` seconds (time
spent in ``value_fn`` excluded) stops the runner; the partial results it had sent are returned and
the next job starts a fresh runner. ``shapiq_available()`` says whether the bench venv has shapiq.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.reference import THREAD_VARIABLES, venv_python

RUNNER = Path(__file__).resolve().with_name("reference_oracle_runner.py")


def shapiq_available() -> bool:
    python = venv_python()
    check = "import importlib.util, sys; sys.exit(importlib.util.find_spec('shapiq') is None)"
    return python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def install_shapiq() -> bool:
    """pip-install shapiq into the bench venv (if absent); True when it is importable there."""
    if shapiq_available():
        return True
    python = venv_python()
    if not python.exists():
        return False
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "shapiq"],
                   capture_output=True)
    return shapiq_available()


class ReferenceOracle:
    """A long-lived reference runner in the bench venv; ``available`` is False without the venv."""

    def __init__(self, threads: int = 1):
        self.threads = threads
        self.available = venv_python().exists()
        self._proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    def __enter__(self) -> ReferenceOracle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
            env.update({name: str(self.threads) for name in THREAD_VARIABLES})
            self._proc = subprocess.Popen(
                [str(venv_python()), str(RUNNER)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
            )
        return self._proc

    def stderr_tail(self, lines: int = 10) -> str:
        self._log.seek(0)
        return "\n".join(self._log.read().decode(errors="replace").strip().splitlines()[-lines:])

    def run(self, job: dict, value_fn: Callable[[np.ndarray], np.ndarray], timeout_s: float) -> tuple[list[dict], str]:
        """Run one job; returns (partials, status) with status "ok", "timeout" or "error: <reason>"."""
        if not self.available:
            return [], "error: no bench venv"
        proc = self._start()
        proc.stdin.write((json.dumps(job) + "\n").encode())
        proc.stdin.flush()
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        partials: list[dict] = []
        n = int(job["n"])
        deadline = time.monotonic() + timeout_s
        buffer = b""
        try:
            while True:
                if b"\n" not in buffer:
                    if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                        self.close()
                        return partials, "timeout"
                    chunk = os.read(proc.stdout.fileno(), 1 << 22)
                    if not chunk:
                        self.close()
                        return partials, f"error: runner exited: {self.stderr_tail()}"
                    buffer += chunk
                    continue
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                if "query" in message:
                    rows = int(message["rows"])
                    packed = np.frombuffer(base64.b64decode(message["query"]), dtype=np.uint8).reshape(rows, -1)
                    masks = np.unpackbits(packed, axis=1, count=n).astype(bool)
                    started = time.monotonic()
                    values = np.asarray(value_fn(masks), dtype=np.float64)
                    deadline += time.monotonic() - started
                    proc.stdin.write((json.dumps({"values": base64.b64encode(values.tobytes()).decode()}) + "\n").encode())
                    proc.stdin.flush()
                elif "partial" in message:
                    partials.append(message["partial"])
                elif message.get("done"):
                    return partials, "ok"
                else:
                    return partials, f"error: {message.get('error')}"
        finally:
            selector.close()
