#!/bin/bash
# results/real_v2/differences.md from the committed records: bash results/real_v2/differences.sh > results/real_v2/differences.md
set -e
R=results/real_v2
B=$R/balance_orders/records/seed{seed}
T=$R/tuning_bt/records/seed{seed}
run() { echo; echo '```'; echo "python -m pipeline.reports $*"; echo '```'; echo; python -m pipeline.reports "$@"; }
echo "# SmolLM2-135M-Instruct, seed 1: the collapse, the balanced pairs, the BT model's settings"
echo
echo "Made by \`bash results/real_v2/differences.sh\` from the records committed under this folder."
echo "Intervals: 95%, bootstrap over items (one seed: no variance between training runs in them)."
echo "An unreadable verdict counts as wrong; chance is 50."
echo
echo "## Test (600 pairs, both orders), the recipe before balanced pairs"
run orders SFT=$R/records/seed1/sft.json.gz RFT=$R/records/seed1/rft.json.gz GFRIEND=$R/records/seed1/gfriend.json.gz
run diff --seeds 1 GFRIEND=$R/records/seed{seed}/gfriend.json.gz RFT=$R/records/seed{seed}/rft.json.gz SFT=$R/records/seed{seed}/sft.json.gz
echo
echo "## Validation (200 pairs, both orders): pairs balanced for answer order or not (M-DPO + 16×NLL)"
B1=${B/\{seed\}/1}
run orders SFT=$B1/sft.json.gz unbalanced=$B1/sweep/balance_orders-false/gfriend.json.gz \
  balanced=$B1/sweep/balance_orders-true/gfriend.json.gz
run diff --seeds 1 balanced=$B/sweep/balance_orders-true/gfriend.json.gz \
  unbalanced=$B/sweep/balance_orders-false/gfriend.json.gz SFT=$B/sft.json.gz
echo
echo "## Test: the balanced judge chosen on validation, against the test run above"
run orders balanced=$R/balance_orders/test/gfriend.json.gz
run diff --seeds 1 balanced=$R/balance_orders/test/gfriend.json.gz GFRIEND=$R/records/seed{seed}/gfriend.json.gz \
  RFT=$R/records/seed{seed}/rft.json.gz SFT=$R/records/seed{seed}/sft.json.gz
echo
echo "## Validation: the BT model's learning rate and epochs"
run diff --seeds 1 "bt_1e-4_x4=$T/sweep/bt.learning_rate-1e-4-bt.num_train_epochs-4/bt.json.gz" \
  "bt_recipe_1e-5_x2=$T/sweep/bt.learning_rate-1e-5-bt.num_train_epochs-2/bt.json.gz" \
  "bt_3e-5_x4=$T/sweep/bt.learning_rate-3e-5-bt.num_train_epochs-4/bt.json.gz" \
  "gfriend_balanced=$B/sweep/balance_orders-true/gfriend.json.gz" SFT=$T/sft.json.gz
