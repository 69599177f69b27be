"""Pipeline speed and scale (issue 3): the job on Ray next to the same job in one process, scorer
scaling, driver memory.

    python benchmarks/bench_pipeline.py              # all three cases, full size (~9 min on 2 busy cores)
    python benchmarks/bench_pipeline.py --quick      # everything shrunk (70-90 s, mostly 4 Ray start-ups)
    python benchmarks/bench_pipeline.py --case 2     # one case (repeatable)

Cases:
  1. The 100 reviews of at most 256 words in ../shared/data/sentiment.csv (beside the checkout), VADER, spex-hard b = 6,
     200 held-out masks, fbii: the wall time of the job on a fresh local Ray cluster
     (``RayExecutor``; process start to exit, Ray start included) with 2 actors next to the same
     job run by ``LocalExecutor`` (the same steps, one backend replica and every fit in one
     process, no Ray; same masks, batches, query log and explanation parts), also a fresh
     process. Target: Ray <= 1.2x local. The Ray job's driver records when Ray and the actors are
     up, when each batch is scored and each explanation is written (whether fitting overlapped
     scoring), and the CPU time of all its processes, which unlike the wall time does not depend
     on how much of the shared machine the job got.
  2. FakeBackend sleeping 50 ms per batch (a stand-in for GPU or network latency): queries/s with
     1, 2, 4, 8 actors of 0.25 CPU each, four jobs in one driver process and one Ray cluster;
     throughput is counted from "all actors up" to the last scored batch. Target: about linear.
  3. Peak RSS of the driver process (``ru_maxrss``, one process per job) for 200 and 2,000 examples
     (FakeBackend without sleep, n = 12, b = 3, a planted function). Target: no growth with the
     number of examples.

Jobs run in driver processes (``--driver``: ``pipelines.runner.run_job`` with a ``RayExecutor``
subclass noting timestamps; ``--local``: with a timed ``LocalExecutor``) with ``ray.address:
local``, so a cluster left by ``ray start`` is never joined; everything is
written into a temporary folder. ``--quick`` figures are a smoke test: Ray and actor start-up
dominate them. Prints one Markdown table per case.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT_CSV = ROOT.parent / "shared" / "data" / "sentiment.csv"
MAX_WORDS = 256
VADER_BATCH = 256
SLEEP_PER_BATCH_S = 0.05
FAKE_BATCH = 128
ACTOR_COUNTS = (1, 2, 4, 8)
TERMS = [[[0, 1], 1.0], [[2], -0.5], [[3, 5], 0.7], [[4], 0.3]]
SIZES = {
    # name: (reviews, examples per actor in case 2, case 3 example counts)
    "full": (100, 6, (200, 2000)),
    "quick": (10, 1, (20, 200)),
}


# ---------------------------------------------------------------- the instrumented driver process

def drive(spec_file: str) -> None:
    """Run each job of the spec in this process on a timed ``RayExecutor``; write the timestamps as JSON.

    Spec: ``{"jobs": [{"config", "output"}], "shared_cluster": bool, "result": path}``. With
    ``shared_cluster`` one local Ray instance serves every job; otherwise each job starts its own.
    Times are seconds since this function began.
    """
    began, began_epoch = time.perf_counter(), time.time()
    spec = json.loads(Path(spec_file).read_text())

    def clock() -> float:
        return time.perf_counter() - began

    import logging

    import ray

    from pipelines.config import load_config
    from pipelines.runner import run_job

    events: dict = {}
    executor = timed_ray_executor(events, clock)
    if spec["shared_cluster"]:
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    jobs = []
    for job in spec["jobs"]:
        events.clear()
        events.update(scored=[], fitted=[], begin=clock(), tree_cpu_begin_s=_tree_cpu_s())
        cpu = time.process_time()
        config = load_config(job["config"])
        config.output = job["output"]
        run_job(config, executor=executor)
        events.update(end=clock(), rss_end_mb=_rss_mb(), maxrss_end_mb=_maxrss_mb(),
                      driver_cpu_s=time.process_time() - cpu)
        events["summary"] = json.loads(Path(job["output"], "summary.json").read_text())
        jobs.append(dict(events))
    if spec["shared_cluster"]:
        ray.shutdown()
    Path(spec["result"]).write_text(json.dumps({"jobs": jobs, "began_epoch": began_epoch, "end": clock()}))


def timed_ray_executor(events: dict, clock) -> type:
    """``RayExecutor`` noting into ``events``: when Ray is up (``ray_start``: [begin, end]), when the
    actors are (``pool_ready``, with the driver's peak RSS), each scored batch (``scored``: [time,
    rows]), each explanation written (``fitted``), and the CPU of the process tree before the
    actors are shut down (``tree_cpu_s``)."""
    from pipelines.calls import BatchResult, FitResult
    from pipelines.ray_executor import RayExecutor

    class TimedRayExecutor(RayExecutor):
        def __enter__(self):
            start = clock()
            super().__enter__()
            events["ray_start"] = [start, clock()]
            return self

        def start(self, backend, spec, journal):
            infos = super().start(backend, spec, journal)
            events["pool_ready"] = clock()
            events["maxrss_ready_mb"] = _maxrss_mb()
            return infos

        def wait(self):
            for result in super().wait():
                if isinstance(result, BatchResult) and result.rows is not None:
                    events["scored"].append([clock(), result.rows.num_rows])
                yield result  # the job writes it before asking for the next
                if isinstance(result, FitResult):
                    events["fitted"].append(clock())

        def shutdown(self):
            events["tree_cpu_s"] = _tree_cpu_s() - events["tree_cpu_begin_s"]
            super().shutdown()

    return TimedRayExecutor


def _tree_cpu_s() -> float:
    """CPU seconds (user + system, reaped children included) of this process and its live descendants:
    the driver, Ray's processes it started, the actors and the fit workers."""
    parents, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = sum(int(ticks) for ticks in fields[11:15])
    tree, frontier = set(), [os.getpid()]
    while frontier:
        pid = frontier.pop()
        tree.add(pid)
        frontier.extend(child for child, parent in parents.items() if parent == pid and child not in tree)
    return sum(cpu.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the local run process

def local_run(spec_file: str) -> None:
    """Run a job config with ``LocalExecutor`` (the job's steps in this one process, no Ray) into
    ``spec["output"]``; write timings as JSON: seconds in scoring calls and in fits, CPU seconds."""
    began, began_epoch = time.perf_counter(), time.time()
    spec = json.loads(Path(spec_file).read_text())

    from pipelines.calls import FitResult
    from pipelines.config import load_config
    from pipelines.executor import LocalExecutor
    from pipelines.runner import run_job

    seconds = {"scoring": 0.0, "fitting": 0.0}

    class TimedLocalExecutor(LocalExecutor):
        def wait(self):
            start = time.perf_counter()
            for result in super().wait():  # one call or fit, run before it is yielded
                seconds["fitting" if isinstance(result, FitResult) else "scoring"] += time.perf_counter() - start
                yield result

    config = load_config(spec["config"])
    config.output = spec["output"]
    summary = run_job(config, executor=TimedLocalExecutor)
    Path(spec["result"]).write_text(json.dumps({
        "scoring_s": seconds["scoring"], "fitting_s": seconds["fitting"], "queries": summary.queries_sent,
        "examples": summary.examples_ok + summary.examples_error, "errors": summary.examples_error,
        "mean_r2": summary.mean_faithfulness_r2, "cpu_s": time.process_time(), "began_epoch": began_epoch,
        "end": time.perf_counter() - began,
    }))


# ---------------------------------------------------------------- running the processes

def run_process(mode: str, spec: dict, folder: Path, name: str) -> tuple[float, dict]:
    """Run this file with ``--<mode> spec`` in a fresh interpreter; returns (wall seconds, its JSON).

    The JSON gets ``offset``: seconds from launching the process to its clock zero (interpreter start).
    """
    spec = {**spec, "result": str(folder / f"{name}.result.json")}
    spec_file = folder / f"{name}.spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start, launch_epoch = time.perf_counter(), time.time()
    done = subprocess.run([sys.executable, __file__, f"--{mode}", str(spec_file)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0 or not Path(spec["result"]).exists():
        raise RuntimeError(f"{name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(Path(spec["result"]).read_text())
    result["offset"] = result["began_epoch"] - launch_epoch
    return wall, result


def write_config(folder: Path, name: str, input_path: Path, backend: dict, *, b: int, ray: dict) -> Path:
    """A job config (YAML) in ``folder``; a fresh local Ray instance unless the driver shares one."""
    import yaml

    config = {
        "input": {"path": str(input_path), "text_field": "text", "id_field": "id"},
        "featurizer": {"unit": "words", "max_features": MAX_WORDS},
        "backend": backend,
        "method": "spex-hard", "b": b, "t": 5, "refit": "ls", "indices": ["fbii"], "max_order": 2,
        "holdout": 200, "seed": 0,
        "ray": {"address": "local", **ray},
        "progress": False,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_jsonl(path: Path, texts: list[str]) -> Path:
    with open(path, "w") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"ex-{i:05d}", "text": text}) + "\n")
    return path


def synthetic_texts(count: int, words: int) -> list[str]:
    return [" ".join(f"w{i}" for i in range(words))] * count


def sentiment_reviews(count: int) -> list[str]:
    """The first ``count`` reviews of at most MAX_WORDS words (column ``n``) in the shared data set."""
    if not SENTIMENT_CSV.is_file():
        raise SystemExit(f"bench_pipeline: {SENTIMENT_CSV} is missing; case 1 needs its 'review' and 'n' columns")
    with open(SENTIMENT_CSV, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"review", "n"} <= set(rows[0]):
        raise SystemExit(f"bench_pipeline: {SENTIMENT_CSV} must have columns 'review' and 'n'")
    reviews = [row["review"] for row in rows if int(row["n"]) <= MAX_WORDS]
    if len(reviews) < count:
        raise SystemExit(f"bench_pipeline: {SENTIMENT_CSV} has {len(reviews)} reviews of <= {MAX_WORDS} "
                         f"words, {count} needed")
    return reviews[:count]


def querylog_latency_s(output: str) -> float:
    """Seconds the actors spent in backend calls (sum of the query log's per-row latency)."""
    import pyarrow.compute as pc

    from pipelines.parts import QUERY_LOG_DIR, read_parts
    from pipelines.schema import QUERY_LOG_SCHEMA

    table = read_parts(Path(output) / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, ["latency_ms"])
    return float(pc.sum(table.column("latency_ms")).as_py() or 0.0) / 1e3


# ---------------------------------------------------------------- the cases

def case_ray_vs_local(folder: Path, reviews: int, quick: bool) -> list[str]:
    data = write_jsonl(folder / "reviews.jsonl", sentiment_reviews(reviews))
    config = write_config(folder, "vader", data, {"name": "vader"}, b=6,
                          ray={"num_actors": 2, "num_cpus_per_actor": 1, "batch_size": VADER_BATCH})
    output, local_output = folder / "vader-out", folder / "vader-local-out"
    load_before = os.getloadavg()[0]
    local_wall, local = run_process("local", {"config": str(config), "output": str(local_output)}, folder, "local")
    wall, driver = run_process("driver", {"jobs": [{"config": str(config), "output": str(output)}],
                                          "shared_cluster": False}, folder, "vader")
    job, offset = driver["jobs"][0], driver["offset"]
    summary, last_score, fitted = job["summary"], job["scored"][-1][0], job["fitted"]
    backend_s, local_backend_s = querylog_latency_s(str(output)), querylog_latency_s(str(local_output))
    ratio = wall / local_wall
    verdict = ("not judged at --quick size (start-up dominates)" if quick
               else f"{'met' if ratio <= 1.2 else 'MISSED'} ({ratio:.2f}×)")
    return [
        f"### Case 1: spex-ray run on Ray vs in one process ({local['examples']} reviews of <= {MAX_WORDS} words, "
        f"VADER, spex-hard b=6, holdout 200, fbii, batch {VADER_BATCH}, 2 actors × 1 CPU)",
        "",
        "| run | wall | ÷ local | scoring | fitting | start-up and writes | last score → exit | CPU, all processes "
        "| queries | mean R² |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| LocalExecutor, 1 process | {local_wall:.1f} s | 1.00× | {local['scoring_s']:.1f} s "
        f"| {local['fitting_s']:.1f} s | {local_wall - local['scoring_s'] - local['fitting_s']:.1f} s "
        f"| — | {local['cpu_s']:.1f} s | {local['queries']:,} | {local['mean_r2']:.4f} |",
        f"| RayExecutor, fresh Ray | {wall:.1f} s | **{ratio:.2f}×** | {last_score - job['pool_ready']:.1f} s "
        f"| overlapped | {offset + job['pool_ready']:.1f} s (Ray {job['ray_start'][1] - job['ray_start'][0]:.1f} s) "
        f"| {wall - offset - last_score:.1f} s | {job['tree_cpu_s']:.1f} s (driver {job['driver_cpu_s']:.1f} s) "
        f"| {summary['queries_sent']:,} | {summary['mean_faithfulness_r2']:.4f} |",
        "",
        f"Target Ray ≤ 1.2× local: {verdict}. "
        f"Overlap: {sum(1 for t in fitted if t <= last_score)} of {len(fitted)} fits finished before the "
        f"last scored batch; last score → last explanation {fitted[-1] - last_score:.2f} s → run_job returned "
        f"(flush, actors and Ray shut down) {job['end'] - fitted[-1]:.2f} s → exit {wall - offset - job['end']:.2f} s. "
        f"Actors up → last explanation: {fitted[-1] - job['pool_ready']:.1f} s "
        f"({(fitted[-1] - job['pool_ready']) / local_wall:.2f}× the local run). "
        f"Backend calls (the query logs' latencies): {backend_s:.1f} s on the actors (both summed), "
        f"{local_backend_s:.1f} s in the local run: {backend_s / local_backend_s:.2f}× per query, same code and "
        f"masks (above 1: the actors did not get a core each). The Ray run used "
        f"{job['tree_cpu_s'] / local['cpu_s']:.2f}× the local run's CPU, "
        f"{job['tree_cpu_s'] / (job['end'] - job['begin']):.2f} cores on average. "
        f"Load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. "
        f"Examples: {summary['examples_ok']} ok, {summary['examples_error']} error.",
    ]


def case_scaling(folder: Path, per_actor: int) -> list[str]:
    backend = {"name": "fake", "terms": TERMS, "constant": 0.2, "sleep_per_batch_s": SLEEP_PER_BATCH_S}
    jobs = []
    for actors in ACTOR_COUNTS:
        data = write_jsonl(folder / f"scaling-{actors}.jsonl", synthetic_texts(per_actor * actors, 64))
        config = write_config(folder, f"scaling-{actors}", data, backend, b=6,
                              ray={"num_actors": actors, "num_cpus_per_actor": 0.25, "batch_size": FAKE_BATCH})
        jobs.append({"config": str(config), "output": str(folder / f"scaling-{actors}-out")})
    _, driver = run_process("driver", {"jobs": jobs, "shared_cluster": True}, folder, "scaling")
    for job, spec in zip(driver["jobs"], jobs):
        job["output"] = spec["output"]
    lines = [
        f"### Case 2: scorer scaling (FakeBackend, {SLEEP_PER_BATCH_S * 1e3:.0f} ms sleep per batch of "
        f"{FAKE_BATCH}, n=64, b=6, {per_actor} examples per actor, 0.25 CPU per actor, one Ray cluster)",
        "",
        "| actors | queries | all actors up → last score | queries/s | ideal q/s (k·B/sleep) | speed-up vs 1 "
        "| scaling efficiency | of ideal | backend call (mean) | CPU, all processes (cores) | driver CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = None
    for actors, job in zip(ACTOR_COUNTS, driver["jobs"]):
        queries = sum(rows for _, rows in job["scored"])
        seconds = job["scored"][-1][0] - job["pool_ready"]
        rate = queries / seconds
        base = base or rate
        ideal = actors * FAKE_BATCH / SLEEP_PER_BATCH_S
        call_ms = querylog_latency_s(job["output"]) / len(job["scored"]) * 1e3
        lines.append(f"| {actors} | {queries:,} | {seconds:.2f} s | {rate:,.0f} | {ideal:,.0f} | {rate / base:.2f}× "
                     f"| {rate / base / actors:.0%} | {rate / ideal:.0%} | {call_ms:.0f} ms "
                     f"| {job['tree_cpu_s']:.1f} s ({job['tree_cpu_s'] / (job['end'] - job['begin']):.2f}) "
                     f"| {job['driver_cpu_s']:.1f} s of {job['end'] - job['begin']:.1f} s |")
    lines += ["", f"Load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    return lines


def case_memory(folder: Path, counts: tuple[int, int]) -> list[str]:
    backend = {"name": "fake", "terms": TERMS, "constant": 0.2}
    rows = []
    for count in counts:
        data = write_jsonl(folder / f"memory-{count}.jsonl", synthetic_texts(count, 12))
        config = write_config(folder, f"memory-{count}", data, backend, b=3,
                              ray={"num_actors": 2, "num_cpus_per_actor": 1})
        wall, driver = run_process("driver", {"jobs": [{"config": str(config), "output": str(folder / f"memory-{count}-out")}],
                                              "shared_cluster": False}, folder, f"memory-{count}")
        rows.append((count, wall, driver["jobs"][0]))
    lines = [
        "### Case 3: driver memory (FakeBackend, no sleep, n=12, b=3, holdout 200, 2 actors)",
        "",
        "| examples | queries | job (all actors up → end) | driver peak RSS at actors up | driver peak RSS at end "
        "| growth during the job | RSS at end |",
        "|---|---|---|---|---|---|---|",
    ]
    for count, wall, job in rows:
        lines.append(f"| {count:,} | {job['summary']['queries_sent']:,} | {job['end'] - job['pool_ready']:.1f} s "
                     f"| {job['maxrss_ready_mb']:.0f} MB | {job['maxrss_end_mb']:.0f} MB "
                     f"| {job['maxrss_end_mb'] - job['maxrss_ready_mb']:+.0f} MB | {job['rss_end_mb']:.0f} MB |")
    (small, _, a), (large, _, b) = rows
    lines.append(f"| **{large:,} / {small:,}** | | | | **{b['maxrss_end_mb'] / a['maxrss_end_mb']:.2f}×** | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shrink every case (a smoke test, 70-90 s)")
    parser.add_argument("--case", type=int, action="append", choices=(1, 2, 3), help="run only this case")
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    parser.add_argument("--local", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        drive(args.driver)
        return
    if args.local:
        local_run(args.local)
        return
    reviews, per_actor, counts = SIZES["quick" if args.quick else "full"]
    cases = sorted(set(args.case or (1, 2, 3)))
    if 1 in cases:
        sentiment_reviews(reviews)  # fail before anything runs when the data is missing
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as temporary:
        folder = Path(temporary)
        for case in cases:
            if case == 1:
                lines = case_ray_vs_local(folder, reviews, args.quick)
            elif case == 2:
                lines = case_scaling(folder, per_actor)
            else:
                lines = case_memory(folder, counts)
            print("\n".join(lines) + "\n", flush=True)


if __name__ == "__main__":
    main()
