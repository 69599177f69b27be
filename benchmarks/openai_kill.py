"""What a SIGKILL costs a paid job: the puzzles config (3 riddles, b=3: 1,434 queries, 2 actors,
32 requests in flight each, 3,000 RPM, flush every 10 s) against the local fake OpenAI server
(200 ms per request), killed at 40% of its queries answered and run again to the end. Counts the
requests the server answered beyond one per query the job needed (paid twice) and compares the
dollars the re-run reports with those the server billed.

    python benchmarks/openai_kill.py [--checkout DIR]   # DIR: another checkout of the project, to compare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from openai_server import FakeOpenAIServer  # noqa: E402

KEY = "sk-local-benchmark"
SETTINGS = ["backend.rpm=3000", "backend.tpm=null", "backend.max_cost_usd=5", "b=3", "t=3", "holdout=20",
            "progress=false"]
QUERIES, EXAMPLES = 1434, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the project checkout whose code runs the job")
    args = parser.parse_args()
    output = Path(tempfile.mkdtemp()) / "out"
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    env.pop("RAY_ADDRESS", None)
    with FakeOpenAIServer(api_key=KEY, latency_s=0.2) as server:
        sets = [f"backend.base_url={server.base_url}", *SETTINGS]
        command = [sys.executable, "-m", "pipelines.cli", "run", str(args.checkout / "configs/puzzles-gpt4o-mini.yaml"),
                   "--output", str(output), "--limit", str(EXAMPLES), *[x for s in sets for x in ("--set", s)]]

        def paid() -> int:
            return sum(r.status == 200 for r in list(server.received))

        job = subprocess.Popen(command, cwd=args.checkout, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        while paid() < 0.4 * QUERIES:
            if job.poll() is not None:
                raise SystemExit("the job ended before it was killed")
            time.sleep(0.02)
        job.kill()
        job.wait()
        at_kill = paid()
        rerun = subprocess.run(command, cwd=args.checkout, env=env, capture_output=True, text=True)
        if rerun.returncode:
            raise SystemExit(rerun.stderr[-3000:])
        answered = paid()
        billed = sum(((r.tokens - 1) * 0.15 + 0.6) / 1e6 for r in server.received if r.status == 200)
    log = pq.read_table(output / "querylog").to_pylist()
    own = sum("same_as_row" not in row["raw"] for row in log)  # identical masks in one call share a request
    summary = json.loads((output / "summary.json").read_text())
    print(f"{args.checkout}: killed with {at_kill} answers paid; {answered} paid in all for {own} requests the job "
          f"needed: {answered - own} paid twice; billed ${billed:.5f}, the re-run reports "
          f"${summary['limiter']['spent_usd']:.5f}")


if __name__ == "__main__":
    main()
