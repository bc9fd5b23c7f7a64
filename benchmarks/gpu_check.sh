#!/usr/bin/env bash
# Run on a GPU machine from the repository root: bf16 + SDPA on a ~0.5B random Llama.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m benchmarks.gpu_check --size 0.5b "$@"
