"""Run the SPEX reference (``sparse-transform`` 0.2.1) beside spex-ray, in its own virtualenv.

The reference is never imported here: ``run_reference`` sends a JSON job to
``benchmarks/reference_runner.py`` under the bench venv's python (``.bench-venv`` at the repository
root, git-ignored; ``SPEX_RAY_BENCH_VENV`` overrides the path) and returns its one JSON line. See
the runner's docstring for the job and result fields. Masks are 0/1 with 1 = feature kept and
terms use the Fourier basis (−1)^{<k,x>} on both sides, so results compare without any flip.

One command sets everything up and runs a job::

    python benchmarks/reference.py --setup '{"case": "masks", "n": 1000, "b": 8}'
"""

import argparse
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().with_name("reference_runner.py")
REFERENCE_PACKAGES = ("sparse-transform==0.2.1", "spectralexplain==0.0.4")
DEFAULT_THREADS = 1
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def venv_dir() -> Path:
    """The bench venv's directory: ``$SPEX_RAY_BENCH_VENV`` or ``<repo>/.bench-venv``."""
    return Path(os.environ.get("SPEX_RAY_BENCH_VENV", REPO_ROOT / ".bench-venv"))


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def _reference_installed(python: Path) -> bool:
    pins = dict(spec.split("==") for spec in REFERENCE_PACKAGES)
    check = f"import importlib.metadata as m, sys; sys.exit(any(m.version(p) != v for p, v in {pins!r}.items()))"
    return python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def ensure_reference_env() -> Path:
    """Create the bench venv and install the pinned reference packages if absent; return its python.

    Isolated from the project's packages (no ``--system-site-packages``). Raises RuntimeError with
    pip's last output lines when the install fails.
    """
    python = venv_python()
    if _reference_installed(python):
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=False).create(venv_dir())
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", *REFERENCE_PACKAGES],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        tail = "\n".join((pip.stdout + pip.stderr).strip().splitlines()[-10:])
        raise RuntimeError(f"installing {' '.join(REFERENCE_PACKAGES)} into {venv_dir()} failed:\n{tail}")
    return python


def run_reference(job: dict, timeout_s: float = 600) -> dict | None:
    """Run one reference job in the bench venv and return the runner's result dict.

    ``job["threads"]`` (default 1; None = the libraries' defaults, one thread per core) sets
    ``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS``
    for the runner: galois's numba-parallel BCH kernels (and LightGBM's OpenMP loops in the
    proxyspex case) slow down by orders of magnitude with more than one thread when other
    processes share the cores, and gain nothing on an idle 2-core machine, so 1 is the
    reference's steadiest and fastest configuration here.

    Returns None, with a one-line reason on stderr, when the bench venv is missing (run
    ``ensure_reference_env()``) or the job ran past ``timeout_s`` seconds. Raises RuntimeError
    with the runner's last stderr lines when the runner fails.
    """
    python = venv_python()
    if not python.exists():
        print(f"reference: no bench venv at {venv_dir()} (run ensure_reference_env())", file=sys.stderr)
        return None
    job = {"threads": DEFAULT_THREADS, **job}
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if job["threads"] is not None:
        env.update({name: str(int(job["threads"])) for name in THREAD_VARIABLES})
    try:
        proc = subprocess.run(
            [str(python), str(RUNNER)],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        print(f"reference: job {job.get('case')!r} ran past {timeout_s} s and was stopped", file=sys.stderr)
        return None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"reference runner exited with {proc.returncode}:\n{tail}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError("reference runner printed no result")
    return json.loads(lines[-1])


def planted_terms(n: int, count: int = 20, max_order: int = 5, seed: int = 0) -> list:
    """``count`` distinct Fourier terms ``[[sorted indices], coef]`` for a planted-sparse job.

    Orders cycle through 1..max_order, features are drawn uniformly without replacement within a
    term, coefficients are ±U[1, 2] (random sign). Deterministic in ``seed``.
    """
    if count > 0 and not 1 <= max_order <= n:
        raise ValueError(f"max_order must be in [1, n={n}], got {max_order}")
    rng = np.random.default_rng(seed)
    terms: dict[tuple[int, ...], float] = {}
    while len(terms) < count:
        order = 1 + len(terms) % max_order
        key = tuple(sorted(int(i) for i in rng.choice(n, size=order, replace=False)))
        if key not in terms:
            terms[key] = float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0))
    return [[list(k), v] for k, v in terms.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one SPEX reference job in the bench venv.")
    parser.add_argument("job", nargs="?", help="JSON job (see benchmarks/reference_runner.py)")
    parser.add_argument("--setup", action="store_true", help="create the bench venv first if absent")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before the job is stopped")
    args = parser.parse_args(argv)
    if args.setup:
        print(f"bench venv: {ensure_reference_env()}", file=sys.stderr)
    if args.job is None:
        return 0
    result = run_reference(json.loads(args.job), timeout_s=args.timeout)
    if result is None:
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
