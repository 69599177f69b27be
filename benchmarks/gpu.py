"""The GPU figures of BENCHMARKS.md in one command, on a random model of realistic size (nothing downloaded).

    bash benchmarks/gpu.sh                          # = python benchmarks/gpu.py: Llama-3.2-1B's shape, ~6 min
    python benchmarks/gpu.py --preset llama-8b      # Llama-3.1-8B's shape (~9 min by its estimate: three engine starts)
    python benchmarks/gpu.py --dry-run              # CPU: a tiny model, every step, the same table (the tests run it)

Needs torch with CUDA, transformers, and vllm for the vLLM rows (``pip install -e '.[hf,vllm]'``;
without vllm those rows say so). Steps, each timed:
  1. a randomly initialised Llama of the preset's shape is built on the device in bfloat16 and
     saved with the tests' byte-level tokenizer (its ids are a subset of the preset's vocabulary);
  2. the device's dense matmul throughput (best of a few square bfloat16 matmuls);
  3. the transformers backend scores masked prompts of the tiny_qa examples (word features, the
     given answer, ``--preamble-tokens`` of fixed text before the context): queries/s and MFU =
     prefill FLOP floor / time / measured matmul throughput, with the floor = 2 × block
     parameters × prompt tokens + 2 × output-layer parameters × kept positions;
  4. ``benchmarks/bench_vllm.py``'s measurement: vLLM's offline ``LLM.generate`` on every query of
     a job, the whole ``spex-ray run`` job on one actor, offline again; queries/s and the ratio.
Before steps 3 and 4 the query counts are sized from the measured matmul throughput so that the
whole run fits ``--budget-s`` (480 s) by the script's own estimate, which it prints next to the
time actually taken. Writes a Markdown table (``--out``, default benchmarks/results/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

PRESETS: dict[str, dict] = {
    # Llama shapes (hidden, MLP width, layers, heads, KV heads, vocabulary, tied output layer)
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=None, tie_word_embeddings=False),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
# Assumed for the time estimate, before anything is measured: the fraction of the measured matmul
# throughput a prefill reaches, one vLLM engine start (seconds: load, compile, CUDA graphs) and
# building plus saving the model (seconds per billion parameters).
ASSUMED_MFU = 0.3
ENGINE_START_S = {"cpu": 40.0, "cuda": 75.0}
BUILD_S_PER_BILLION = 12.0
FIXED_S = 40.0  # Ray start-up, imports, process starts


def build_model(preset: str, directory: Path, device: str, dtype: str, max_positions: int) -> int:
    """A random Llama of ``preset``'s shape saved to ``directory`` with the test tokenizer; its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tiny_lm import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    shape = dict(PRESETS[preset])
    shape["vocab_size"] = shape["vocab_size"] or len(tokenizer)
    config = LlamaConfig(**shape, max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return parameters


def tiny_qa_examples(count: int) -> list:
    from connectors.base import Example

    records = [json.loads(line) for line in (ROOT / "connectors" / "data" / "tiny_qa.jsonl").read_text().splitlines()]
    return [Example.from_text(r["id"], r["context"], "words", question=r["question"], target=r["answer"])
            for r in records[:count]]


def transformers_figures(args, model_dir: Path, matmul: float, queries: int) -> dict:
    """Queries/s and MFU of the transformers backend on ``queries`` masked prompts."""
    import torch
    from bench_transformers import matmul_flops, parameter_split
    from bench_vllm import template

    from connectors.base import build_backend

    backend = build_backend({
        "name": "transformers", "model": str(model_dir), "device": args.device, "dtype": args.dtype,
        "batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens,
        "template": template(args.preamble_tokens),
    })
    examples = tiny_qa_examples(6)
    rng = np.random.default_rng(0)
    per_example = max(1, queries // len(examples))
    work = [(example, rng.random((per_example, example.n)) < 0.5) for example in examples]
    backend.score(work[0][0], work[0][1][: args.batch_size])  # warm-up
    tokens, kept = [], 0
    for example, keep in work:
        continuation = len(backend._ready(example).continuations[0])
        kept = max(kept, continuation + 1)
        tokens.extend(len(ids) + continuation for ids in backend.prompt(example).ids(keep))
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for example, keep in work:
        backend.score(example, keep)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    blocks, head = parameter_split(backend.model)
    floor = 2 * blocks * sum(tokens) + 2 * head * kept * len(tokens)
    after = matmul_flops(device, getattr(torch, args.dtype), args.matmul_size, 3)
    backend.close()
    return {"queries": len(tokens), "mean_prompt_tokens": float(np.mean(tokens)), "seconds": seconds,
            "queries_per_s": len(tokens) / seconds, "floor_flops": floor, "achieved_flops": floor / seconds,
            "mfu": floor / seconds / max(matmul, after), "matmul_after": after,
            "block_parameters": blocks, "head_parameters": head}


def vllm_args(args, queries: int):
    """bench_vllm's options for a job of about ``queries`` queries (b and the examples chosen here)."""
    from bench_vllm import build_parser

    from pipelines.method import MethodSpec

    examples = tiny_qa_examples(6)
    options = []
    for b in (2, 3, 4, 5, 6):
        spec = MethodSpec(method="spex-hard", budget=None, b=b, t=5, seed=0, max_order=2, refit="ls",
                          holdout=args.holdout, indices=("fbii",))
        for count in range(1, len(examples) + 1):
            options.append((sum(spec.layout(e.n).num_queries for e in examples[:count]), b, count))
    fitting = [option for option in options if option[0] <= queries]
    total, b, count = max(fitting) if fitting else min(options)  # the largest job within the time, else the smallest
    options = ["--profile", "--examples", str(count), "--b", str(b), "--holdout", str(args.holdout), "--repeat", "1",
               "--preamble-tokens", str(args.preamble_tokens), "--max-model-len", str(args.max_model_len),
               "--batch-size", str(args.vllm_batch_size), "--dtype", args.dtype, "--value", args.value]
    if args.device == "cuda":
        options += ["--gpu", "--max-num-batched-tokens", "16384"]
    return build_parser().parse_args(options), total


def estimate(args, parameters: int, matmul: float, tokens_per_query: float, hf_queries: int, vllm_queries: int,
             with_vllm: bool) -> dict:
    """Seconds each remaining step should take (ASSUMED_MFU of the measured matmul throughput)."""
    per_query = 2 * parameters * tokens_per_query / (ASSUMED_MFU * matmul)
    steps = {"transformers": 10 + hf_queries * per_query}
    if with_vllm:
        # offline (every query, then the prompt-logprob reference), the pipeline, offline again
        steps["vllm"] = 3 * ENGINE_START_S[args.device] + FIXED_S + 4 * vllm_queries * per_query
    return steps


def plan(args, parameters: int, matmul: float, spent: float, with_vllm: bool) -> tuple[int, object, int, dict]:
    """Query counts for the steps left after ``spent`` seconds: (transformers queries, bench_vllm's
    options, vLLM queries, estimated seconds per step). The time left goes a third to the
    transformers backend, two thirds to vLLM's engine starts and four timed passes."""
    tokens = args.preamble_tokens + 150  # the tiny_qa prompts with the test tokenizer
    per_query = 2 * parameters * tokens / (ASSUMED_MFU * matmul)
    left = args.budget_s - spent
    vllm_fixed = (3 * ENGINE_START_S[args.device] + FIXED_S) if with_vllm else 0.0
    cap = 128 if args.dry_run else 4096  # on a CPU the small model's overheads, not FLOPs, set the time
    hf_queries = int(max(64, min(cap, (left - vllm_fixed) / 3 / per_query)))
    vllm_queries = int(max(64, min(4 * cap, (left - vllm_fixed) * 2 / 3 / 4 / per_query)))
    options, vllm_queries = vllm_args(args, vllm_queries) if with_vllm else (None, 0)
    return hf_queries, options, vllm_queries, estimate(args, parameters, matmul, tokens, hf_queries, vllm_queries,
                                                       with_vllm)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llama-1b")
    parser.add_argument("--dry-run", action="store_true", help="CPU, the tiny preset, a few queries: checks every step")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole run's time, by the estimate")
    parser.add_argument("--preamble-tokens", type=int, default=384, help="fixed text before the context")
    parser.add_argument("--value", choices=["answer", "labels"], default="answer",
                        help="vLLM rows: the given answer (several tokens: prompt log-probs) or one-token label odds")
    parser.add_argument("--holdout", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32, help="transformers backend: prompts per forward")
    parser.add_argument("--max-batch-tokens", type=int, default=32768)
    parser.add_argument("--vllm-batch-size", type=int, default=1024, help="queries per actor call")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.md"))
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    began = time.perf_counter()
    import torch

    if args.dry_run:
        args.preset, args.device, args.dtype = "tiny", "cpu", "float32"
        args.preamble_tokens, args.holdout, args.matmul_size, args.batch_size = 32, 20, 512, 8
        args.max_model_len, args.budget_s = 512, min(args.budget_s, 300.0)
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU here: use --dry-run for the CPU check")
        args.device, args.dtype = "cuda", "bfloat16"
    try:
        import vllm

        vllm_version = vllm.__version__
    except ImportError as err:
        vllm_version, vllm_missing = None, f"vllm not installed ({err}): pip install -e '.[vllm]'"
    from bench_transformers import matmul_flops

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        start = time.perf_counter()
        parameters = build_model(args.preset, scratch / "model", args.device, args.dtype, args.max_model_len)
        timings["model built and saved"] = time.perf_counter() - start
        start = time.perf_counter()
        matmul = matmul_flops(torch.device(args.device), getattr(torch, args.dtype), args.matmul_size, 5)
        timings["matmul"] = time.perf_counter() - start

        spent = time.perf_counter() - began
        hf_queries, options, vllm_queries, planned = plan(args, parameters, matmul, spent, bool(vllm_version))
        total_estimate = spent + sum(planned.values())
        print(f"gpu.py: {args.preset} ({parameters / 1e9:.2f} B parameters) built in {timings['model built and saved']:.0f} s; "
              f"matmul {matmul / 1e12:.1f} TFLOP/s; plan: transformers {hf_queries} queries (~{planned['transformers']:.0f} s)"
              + (f", vLLM {vllm_queries} queries (~{planned['vllm']:.0f} s)" if vllm_version else "")
              + f"; estimated total {total_estimate:.0f} s of {args.budget_s:.0f} s", file=sys.stderr, flush=True)

        start = time.perf_counter()
        hf = transformers_figures(args, scratch / "model", matmul, hf_queries)
        timings["transformers backend"] = time.perf_counter() - start
        vllm_results = None
        if vllm_version:
            from bench_vllm import measure

            start = time.perf_counter()
            vllm_results = measure(options, scratch / "vllm", str(scratch / "model"))
            timings["vLLM offline, pipeline, offline"] = time.perf_counter() - start
    total = time.perf_counter() - began
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    rows = [
        ("device", device_name),
        ("model", f"random Llama, {args.preset} shape, {parameters / 1e9:.3f} B parameters, {args.dtype}"),
        ("dense matmul, measured", f"{matmul / 1e9:,.1f} GFLOP/s ({args.matmul_size}², best of 5)"),
        ("transformers backend: queries/s", f"{hf['queries_per_s']:.1f} ({hf['queries']} queries of "
                                            f"{hf['mean_prompt_tokens']:.0f} tokens, batch {args.batch_size})"),
        ("transformers backend: achieved", f"{hf['achieved_flops'] / 1e9:,.1f} GFLOP/s of prefill floor"),
        ("**transformers backend: MFU vs measured matmul**", f"**{hf['mfu']:.1%}**"),
    ]
    if vllm_results is not None:
        first, pipe, last = vllm_results["offline_0"], vllm_results["pipeline_1"], vllm_results["offline_2"]
        floor_per_query = 2 * hf["block_parameters"] * first["prompt_tokens"] / first["queries"]
        rows += [
            ("vLLM offline `LLM.generate`: queries/s", f"{first['queries_per_s']:.1f} before, {last['queries_per_s']:.1f} after "
                                                      f"({first['queries']} queries)"),
            ("vLLM through `spex-ray run`: queries/s", f"{pipe['queries_per_s']:.1f}"),
            ("**vLLM pipeline / offline**", f"**{vllm_results['ratio']:.2f}**"),
            ("vLLM offline: block FLOPs / time / matmul",
             f"{floor_per_query * max(first['queries_per_s'], last['queries_per_s']) / matmul:.1%}"),
            ("vLLM engine call's share of the pipeline's scoring window", f"{pipe['engine_share']:.1%}"),
        ]
        if "prompt_logprobs_queries_per_s" in last:
            rows.append(("vLLM offline, every query read from prompt log-probs",
                         f"{last['prompt_logprobs_queries_per_s']:.1f} q/s"))
    else:
        rows.append(("vLLM rows", vllm_missing))
    rows.append(("time: estimated / taken", f"{total_estimate:.0f} s / {total:.0f} s ("
                 + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ")"))
    text = ("| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"transformers": hf, "vllm": vllm_results, "matmul_flops": matmul, "parameters": parameters,
         "seconds": total, "estimated_seconds": total_estimate, "timings": timings, "vllm_version": vllm_version,
         "device": device_name, "preset": args.preset, "dry_run": args.dry_run}, indent=2, default=float))
    print(text)


if __name__ == "__main__":
    main()
