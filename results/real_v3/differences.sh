#!/bin/bash
# results/real_v3/differences.md from the records of every seed committed so far:
#   PATH=.venv/bin:$PATH bash results/real_v3/differences.sh > results/real_v3/differences.md
set -e
R=results/real_v3
SEEDS=$(ls -d $R/seed*/records | sed -E 's#.*/seed([0-9]+)/records#\1#' | sort -n | paste -sd, -)
S=$R/seed{seed}/records/seed{seed}
run() { echo; echo '```'; echo "python -m pipeline.reports ${*@Q}"; echo '```'; echo; python -m pipeline.reports "$@"; }
echo "# SmolLM2-135M-Instruct at the chosen settings: GFRIEND against its baselines, seeds $SEEDS"
echo
echo "Made by \`bash results/real_v3/differences.sh\` from the records committed under \`seed*/records/\`."
echo "Test split, 600 pairs per seed, each judged in both answer orders; an item scores the mean of its"
echo "two orders. An unreadable verdict counts as wrong; chance is 50. Intervals: 95%, a two-level"
echo "bootstrap (seeds resampled, then each taken seed's items), so they hold the variance between"
echo "training runs as well as which items were tested (docs/method.md, \"Intervals\")."
echo
echo "## Accuracy per category, mean ± std over the seeds"
run table --seeds "$SEEDS" "SFT judge=$S/sft.json.gz" "BT-model=$S/bt.json.gz" "plain DPO + 16×NLL=$S/dpo.json.gz" \
  "RFT (16×NLL)=$S/rft.json.gz" "GFRIEND (M-DPO + 16×NLL)=$S/gfriend.json.gz"
echo
echo "## GFRIEND against every baseline from the same SFT judge and labelled pairs"
run diff --seeds "$SEEDS" GFRIEND=$S/gfriend.json.gz plain_DPO=$S/dpo.json.gz RFT=$S/rft.json.gz \
  SFT=$S/sft.json.gz BT=$S/bt.json.gz
echo
echo "## Answer order, per seed (a judge that says one slot whatever it reads shows here)"
for s in ${SEEDS//,/ }; do
  T=${S//\{seed\}/$s}
  echo
  echo "### Seed $s"
  run orders SFT=$T/sft.json.gz RFT=$T/rft.json.gz plain_DPO=$T/dpo.json.gz GFRIEND=$T/gfriend.json.gz
done
