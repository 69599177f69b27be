#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one command on a CUDA machine (see benchmarks/gpu.py; ~6 minutes,
# at most 8 by its own estimate). Needs torch with CUDA, transformers and vllm already installed
# (pip install -e '.[hf,vllm]'): nothing is downloaded while it runs. Arguments go to gpu.py
# (--preset llama-8b, --dry-run, --out FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu.py "$@"
