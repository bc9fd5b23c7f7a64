#!/usr/bin/env bash
# GPU check, run from any directory on a GPU machine (no network needed):
#  1. throughput: bf16 + SDPA on a ~0.5B-parameter random Llama built from a config: SFT and
#     M-DPO training tokens/s with model FLOPs utilisation, and generation tokens/s;
#  2. the project's scripts on the GPU: the pipeline on the tiny model (benchmarks/gpu_smoke.yaml);
#  3. if DeepSpeed is installed: M-DPO with precomputed reference log-probs under ZeRO-2 and
#     ZeRO-3 (accelerate launch, one process). At the first step the policy is the reference, so
#     the logged reward margin must be ~0: that checks the reference pass saw whole weights.
# Extra arguments go to step 1 (e.g. --batch 8 --seq 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
out=outputs/gpu_check
python -m benchmarks.gpu_check --size 0.5b "$@"
python run_pipeline.py --config benchmarks/gpu_smoke.yaml --output_dir "$out/pipeline"
if python -c "import deepspeed" 2>/dev/null; then
  for stage in zero2 zero3; do
    accelerate launch --config_file "configs/accelerate/$stage.yaml" --num_processes 1 run_m_dpo.py \
      --config configs/mdpo_demo.yaml --model_name_or_path "$out/pipeline/sft" \
      --pairs_file "$out/pipeline/refine/pairs.jsonl" --output_dir "$out/mdpo_$stage" \
      --bf16 true --max_steps 20 --logging_steps 1 --warmup_steps 0 --learning_rate 1e-4
    python - "$out/mdpo_$stage" "$stage" <<'PY'
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
