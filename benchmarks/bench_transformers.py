"""Transformers backend throughput against the physical floor of the same device.

    python benchmarks/bench_transformers.py                       # random Llama on the CPU
    python benchmarks/bench_transformers.py --device cuda --dtype bfloat16 --hidden 2048 --layers 16
    python benchmarks/bench_transformers.py --model /models/Qwen2.5-0.5B --device cuda

Workload: the HotpotQA-style examples of connectors/data/tiny_qa.jsonl (sentence features, the
given answer as target, "answer_logprob"), ``--masks`` uniform random masks each.
Floor: one query is one prefill, ``2 × P_blocks × T`` FLOPs for T prompt tokens (P_blocks: the
parameters of the transformer blocks; embeddings are a lookup) plus ``2 × P_head × K`` for the
output layer on the K positions whose logits are kept; attention's own ``~2 × layers × T² × d``
is left out (its share is printed). Achieved FLOP/s = floor FLOPs / wall time, compared with the
best FLOP/s of a square matmul of the same dtype on the same device, measured before and after. Prints a Markdown table
and, with ``--json``, the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from connectors.base import build_backend  # noqa: E402
from connectors.features.documents import documents_example  # noqa: E402

DATA = ROOT / "connectors" / "data" / "tiny_qa.jsonl"
TEMPLATE = "Context:\n{context}\n\nQuestion: {question}\nAnswer:"


def matmul_flops(device: torch.device, dtype: torch.dtype, size: int, repeat: int) -> float:
    """Best FLOP/s of a (size × size) @ (size × size) matmul."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeat + 1):
        _sync(device)
        start = time.perf_counter()
        (a @ b).sum().item()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def examples() -> list:
    records = [json.loads(line) for line in DATA.read_text().splitlines()]
    return [
        documents_example(r["id"], r["documents"], "sentences", question=r["question"], target=r["answer"])
        for r in records
    ]


def parameter_split(model) -> tuple[int, int]:
    """(transformer-block parameters, output-layer parameters)."""
    head = model.get_output_embeddings().weight.numel()
    embeddings = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return total - embeddings - (0 if tied else head), head


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model
        if model_dir is None:
            from tiny_lm import save_tiny_llama

            model_dir = save_tiny_llama(Path(scratch), seed=0, layers=args.layers, hidden=args.hidden)
        spec = {
            "name": "transformers",
            "model": str(model_dir),
            "device": args.device,
            "dtype": args.dtype,
            "batch_size": args.batch_size,
            "max_batch_tokens": args.max_batch_tokens,
            "template": TEMPLATE,
        }
        backend = build_backend(spec)
    blocks, head = parameter_split(backend.model)
    rng = np.random.default_rng(0)
    work = [(example, rng.random((args.masks, example.n)) < 0.5) for example in examples()]
    backend.score(work[0][0], work[0][1][:2])  # warm-up: first kernels, prompt cache
    dtype = getattr(torch, backend.dtype)
    peak_before = matmul_flops(backend.device, dtype, args.matmul_size, args.repeat)
    # prompt construction alone (the part shared with the vLLM backend)
    start = time.perf_counter()
    token_counts = []
    for example, keep in work:
        prompt = backend.prompt(example)
        target = len(backend._ready(example).continuations[0])
        token_counts.extend(len(ids) + target for ids in prompt.ids(keep))
    build_seconds = time.perf_counter() - start
    _sync(backend.device)
    start = time.perf_counter()
    for example, keep in work:
        backend.score(example, keep)
    _sync(backend.device)
    seconds = time.perf_counter() - start
    queries = len(token_counts)
    tokens = int(np.sum(token_counts))
    kept = max(len(backend._ready(e).continuations[0]) for e, _ in work) + 1
    floor = 2 * blocks * tokens + 2 * head * kept * queries
    hidden = backend.model.config.hidden_size
    layers = backend.model.config.num_hidden_layers
    attention = sum(2 * layers * t * t * hidden for t in token_counts)
    # the best of the matmul runs before and after: on a shared machine the load changes meanwhile
    peak = max(peak_before, matmul_flops(backend.device, dtype, args.matmul_size, args.repeat))
    return {
        "device": str(backend.device),
        "dtype": backend.dtype,
        "threads": torch.get_num_threads(),
        "block_parameters": blocks,
        "head_parameters": head,
        "queries": queries,
        "mean_prompt_tokens": tokens / queries,
        "seconds": seconds,
        "queries_per_s": queries / seconds,
        "tokens_per_s": tokens / seconds,
        "floor_flops_per_query": floor / queries,
        "achieved_flops": floor / seconds,
        "matmul_flops": peak,
        "fraction_of_matmul": floor / seconds / peak,
        "attention_share_of_floor": attention / floor,
        "prompt_build_us_per_query": build_seconds / queries * 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a local model directory (default: a random Llama made here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--masks", type=int, default=16, help="random masks per example")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    figures = run(args)
    print("| figure | value |\n|---|---|")
    print(f"| device, dtype, threads | {figures['device']}, {figures['dtype']}, {figures['threads']} |")
    print(f"| parameters (blocks + head) | {figures['block_parameters']:,} + {figures['head_parameters']:,} |")
    print(f"| queries, mean prompt tokens | {figures['queries']}, {figures['mean_prompt_tokens']:.0f} |")
    print(f"| queries/s | {figures['queries_per_s']:.1f} |")
    print(f"| prompt tokens/s | {figures['tokens_per_s']:,.0f} |")
    print(f"| floor GFLOP/query | {figures['floor_flops_per_query'] / 1e9:.3f} |")
    print(f"| achieved GFLOP/s | {figures['achieved_flops'] / 1e9:.1f} |")
    print(f"| matmul GFLOP/s (same device, dtype) | {figures['matmul_flops'] / 1e9:.1f} |")
    print(f"| achieved / matmul | {figures['fraction_of_matmul']:.1%} |")
    print(f"| attention FLOPs left out (share of floor) | {figures['attention_share_of_floor']:.1%} |")
    print(f"| prompt construction µs/query | {figures['prompt_build_us_per_query']:.1f} |")
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
