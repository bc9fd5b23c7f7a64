#!/usr/bin/env bash
# GPU check, run from any directory on a GPU machine (no network needed):
#  1. the real shape: M-DPO, SFT and the reference pass on a random ~1.2B-parameter Llama with
#     Llama 3's 128,256-token vocabulary, before/after the memory-bounded log-probs, with tokens/s,
#     MFU and peak memory; Liger kernels if installed; the project's MDPOTrainer end to end; HF
#     generation (benchmarks/gpu_check.py);
#  2. the log-prob kernels alone on the GPU (benchmarks/bench_logprobs.py);
#  3. with GPU_CHECK_PIPELINE=1: the project's scripts end to end on the tiny model
#     (benchmarks/gpu_smoke.yaml) and, if DeepSpeed is installed, M-DPO under ZeRO-2 and ZeRO-3
#     (accelerate launch, one process). At the first step the policy is the reference, so the
#     logged reward margin must be ~0: that checks the reference pass saw whole weights.
# Extra arguments go to step 1 (e.g. --batch 8 --seq 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
out=outputs/gpu_check
$PY -m benchmarks.gpu_check "$@"
$PY -m benchmarks.bench_logprobs
[ "${GPU_CHECK_PIPELINE:-0}" = 1 ] || exit 0
$PY run_pipeline.py --config benchmarks/gpu_smoke.yaml --output_dir "$out/pipeline"
if $PY -c "import deepspeed" 2>/dev/null; then
  for stage in zero2 zero3; do
    $PY -m accelerate.commands.accelerate_cli launch --config_file "configs/accelerate/$stage.yaml" --num_processes 1 \
      run_m_dpo.py --config configs/mdpo_demo.yaml --model_name_or_path "$out/pipeline/sft" \
      --pairs_file "$out/pipeline/refine/pairs.jsonl" --output_dir "$out/mdpo_$stage" \
      --bf16 true --max_steps 20 --logging_steps 1 --warmup_steps 0 --learning_rate 1e-4
    $PY - "$out/mdpo_$stage" "$stage" <<'PY'
import json, sys
logs = [h for h in json.load(open(sys.argv[1] + "/trainer_state.json"))["log_history"] if "loss" in h]
first, last = logs[0], logs[-1]
print(f"{sys.argv[2]}: first-step margin {first['rewards/margins']:+.5f} (must be ~0), "
      f"loss {first['loss']:.4f} -> {last['loss']:.4f}, margin -> {last['rewards/margins']:+.4f}")
assert abs(first["rewards/margins"]) < 0.02, "reference log-probs do not match the starting policy"
PY
  done
else
  echo "deepspeed is not installed: ZeRO-2/ZeRO-3 checks skipped"
fi
