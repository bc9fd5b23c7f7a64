#!/usr/bin/env bash
# The README's first hour on CPU, timed step by step in a fresh clone of this checkout's commit:
#   bash benchmarks/first_hour.sh [WORK_DIR]
# Each step's output goes to WORK_DIR/first_hour_logs/<step>.log; the table printed at the end gives
# each command, its exit code, its wall time and the last line it printed. Run it alone: two
# torch-heavy processes on a small machine slow each other.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/gfriend_first_hour}
rm -rf "$work" && git clone -q "$src" "$work" && cd "$work" || exit 1
logs=$work/first_hour_logs
mkdir -p "$logs"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
rows=()
step() {
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  local last
  last=$(tr '\r' '\n' < "$logs/$name.log" | grep -v '^\s*$' | grep -v 'it/s\]\|s/it\]\|item/s\]' | tail -1)
  rows+=("| \`$*\` | $rc | $((SECONDS - t0)) | $last |")
  echo "${rows[-1]}"
}
echo "commit $(git rev-parse HEAD); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(nproc) cores"
step setup make setup real-model data
step sft .venv/bin/python run_sft.py
step refine .venv/bin/python run_preference_refinement.py
step mdpo .venv/bin/python run_m_dpo.py
step eval .venv/bin/python run_eval.py
echo
echo "| command | exit | seconds | last line |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
