"""Paid once, even across a kill: a real ``spex-ray run`` of the puzzles config against the local
fake OpenAI server loses a scorer actor at about 20% of its queries and is killed with SIGKILL at
about 40%; its re-run finishes the job. The server counts what it was paid for: beyond one
answer per query, at most the requests in flight at the two kills (``max_in_flight`` each, one
actor), and the re-run's dollars include those. The killed job's Ray processes end with it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("bpe_openai")

from openai_server import FakeOpenAIServer  # noqa: E402

from pipelines.config import load_config  # noqa: E402
from pipelines.inputs import load_examples  # noqa: E402
from pipelines.method import MethodSpec  # noqa: E402
from pipelines.parts import read_parts  # noqa: E402
from pipelines.watchdog import processes  # noqa: E402
from pipelines.schema import QUERY_LOG_SCHEMA  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PUZZLES = ROOT / "configs" / "puzzles-gpt4o-mini.yaml"
KEY = "sk-test-kill-0000000000000000"
EXAMPLES, MAX_IN_FLIGHT = 2, 8
USD_IN, USD_OUT = 0.15, 0.60  # the config's prices per million tokens


def settings(server: FakeOpenAIServer) -> list[str]:
    return [f"backend.base_url={server.base_url}", "backend.rpm=null", "backend.tpm=null", "backend.max_cost_usd=5",
            f"backend.max_in_flight={MAX_IN_FLIGHT}", "b=3", "t=3", "holdout=20", "method=spex-hard",
            "ray.num_actors=1", "ray.flush_seconds=10", "progress=false"]


def run_command(server: FakeOpenAIServer, output: Path) -> list[str]:
    sets = [part for setting in settings(server) for part in ("--set", setting)]
    return [sys.executable, "-m", "pipelines.cli", "run", str(PUZZLES), "--output", str(output),
            "--limit", str(EXAMPLES), *sets]


def descendants(pid: int) -> dict[int, str]:
    """pid -> start time of ``pid``'s descendants now."""
    now = processes()
    found: dict[int, str] = {}
    grown = True
    while grown:
        grown = False
        for child, (parent, start) in now.items():
            if (parent == pid or parent in found) and child not in found:
                found[child] = start
                grown = True
    return found


def scorer_actor(pid: int) -> int | None:
    for child in descendants(pid):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"ray::ScorerActor"):
                return child
        except OSError:
            continue
    return None


def paid(server: FakeOpenAIServer) -> int:
    return sum(r.status == 200 for r in list(server.received))


def billed_usd(server: FakeOpenAIServer) -> float:
    """Dollars of every answered request, as the server's usage counts them (prompt + 1 token)."""
    tokens = [r.tokens for r in list(server.received) if r.status == 200]  # prompt tokens + max output (1)
    return sum((t - 1) * USD_IN + USD_OUT for t in tokens) / 1e6


def kill_mid_run(server: FakeOpenAIServer, output: Path, needed: int, log: Path) -> dict[str, object]:
    """Start the job; SIGKILL its scorer actor at 20% of ``needed`` answers and the job at 40%."""
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as stderr:
        process = subprocess.Popen(run_command(server, output), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    deadline = time.monotonic() + 120
    actor_killed = False
    try:
        while paid(server) < 0.4 * needed:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the job answered too few queries in time"
            if not actor_killed and paid(server) >= 0.2 * needed:
                actor = scorer_actor(process.pid)
                if actor is not None:
                    os.kill(actor, signal.SIGKILL)
                    actor_killed = True
            time.sleep(0.02)
        ray_processes = descendants(process.pid)
    finally:
        process.kill()
        process.wait()
    return {"actor_killed": actor_killed, "ray_processes": ray_processes, "paid_before_rerun": paid(server)}


def test_a_killed_paid_job_and_its_rerun_pay_at_most_the_requests_in_flight_twice(tmp_path):
    output = tmp_path / "out"
    config = load_config(PUZZLES, [f"output={output}", "b=3", "t=3", "holdout=20"])
    spec = MethodSpec.from_config(config)
    needed = sum(spec.layout(example.n).num_queries for example in load_examples(config, EXAMPLES))
    with FakeOpenAIServer(api_key=KEY, latency_s=0.05) as server:
        killed = kill_mid_run(server, output, needed, tmp_path / "first.log")
        assert killed["actor_killed"], "no scorer actor was found to kill"
        assert 0.4 * needed <= killed["paid_before_rerun"] < needed, "the job was not killed mid-run"

        # the killed job's Ray processes (GCS, raylet, agents, workers) end with it
        deadline = time.monotonic() + 20
        started = killed["ray_processes"]
        while left := [pid for pid, start in started.items() if processes().get(pid, (0, ""))[1] == start]:
            assert time.monotonic() < deadline, f"Ray processes outlived the killed job: {left}"
            time.sleep(0.2)

        env = {**os.environ, "OPENAI_API_KEY": KEY}
        env.pop("RAY_ADDRESS", None)
        rerun = subprocess.run(run_command(server, output), cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        answered, billed = paid(server), billed_usd(server)

    log = read_parts(output / "querylog", QUERY_LOG_SCHEMA).to_pylist()
    assert len({(row["example_id"], row["query_id"]) for row in log}) == len(log) == needed
    assert all(row["error"] is None for row in log)
    own_requests = sum("same_as_row" not in row["raw"] for row in log)
    paid_twice = answered - own_requests
    print(f"\nqueries {needed}, answers paid {answered}, paid twice {paid_twice} "
          f"(at most 2 x max_in_flight = {2 * MAX_IN_FLIGHT})")
    assert 0 <= paid_twice <= 2 * MAX_IN_FLIGHT

    first_log = (tmp_path / "first.log").read_text()
    assert "answers recovered from the journal" in first_log  # the dead actor's batch kept its answers
    summary = json.loads((output / "summary.json").read_text())
    recovery = summary["recovery"]
    assert recovery["recovered"] > 0 and recovery["unanswered"] > 0 and recovery["note"] in rerun.stderr
    # the re-run's dollars are the whole job's, the answers paid twice included (estimated from
    # their prompts, so a request killed before it reached the server counts too)
    spent = summary["limiter"]["spent_usd"]
    most_per_request = (max(r.tokens for r in server.received) * USD_IN + USD_OUT) / 1e6
    assert billed - 1e-9 <= spent <= billed + 2 * MAX_IN_FLIGHT * most_per_request
    assert not list((output / "journal").glob("2*.jsonl")), "the finished run left its journals"
