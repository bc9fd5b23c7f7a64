#!/bin/bash
# The paired differences of results/study_v4/differences.md, from the committed records: bash results/study_v4/differences.sh
set -e
R=results/study_v4
rec() { echo "$R/$1/records/seed{seed}/sweep/$2/gfriend.json.gz"; }
d() { echo; echo "### $1"; echo; shift; echo '```'; echo "python -m pipeline.reports diff --seeds 0,1,2 $*"; echo '```'; echo; python -m pipeline.reports diff --seeds 0,1,2 "$@"; }
{
echo "# Paired differences on the validation split (200 pairs, both orders), seeds 0-2"
echo
echo "Each interval: 95%, two-level bootstrap (seeds resampled, then items within each seed); each seed's own"
echo "difference beside it. Made by the commands shown, from the committed records under this folder."
for w in "1.0-0.0" "1.0-1.0" "1.0-4.0" "1.0-16.0"; do
  d "Level weights at NLL weight ${w#1.0-} (dataset normalisation, alpha 1, accepted x rejected)" \
    "levels=$(rec weights_nll loss_weights-$w-weighting-levels)" "none=$(rec weights_nll loss_weights-$w-weighting-none)"
done
d "The NLL weight (no level weights)" "nll16=$(rec weights_nll loss_weights-1.0-16.0-weighting-none)" \
  "nll4=$(rec weights_nll loss_weights-1.0-4.0-weighting-none)" "nll1=$(rec weights_nll loss_weights-1.0-1.0-weighting-none)" \
  "nll0=$(rec weights_nll loss_weights-1.0-0.0-weighting-none)" "sft=$R/weights_nll/records/seed{seed}/sft.json.gz"
P=weight_normalization-none-loss_weights-1.0-1.0
d "Unnormalised level weights, accepted x rejected (gaps 2-4), NLL weight 1" \
  "levels=$(rec weights_pairing pairing-accept_reject-weighting-levels-$P)" "none=$(rec weights_pairing pairing-accept_reject-weighting-none-$P)"
d "Unnormalised level weights, any two levels (gaps 1-4), NLL weight 1" \
  "levels=$(rec weights_pairing pairing-all_levels-weighting-levels-$P)" "none=$(rec weights_pairing pairing-all_levels-weighting-none-$P)"
d "Pairing, no level weights" "all_levels=$(rec weights_pairing pairing-all_levels-weighting-none-$P)" \
  "accept_reject=$(rec weights_pairing pairing-accept_reject-weighting-none-$P)"
for a in 1 3; do
  d "Normalisation of the level weights, alpha $a, NLL weight 1 (accepted x rejected); against no level weights" \
    "batch=$(rec weights_normalization weight_normalization-batch-alpha-$a-loss_weights-1.0-1.0)" \
    "dataset=$(rec weights_normalization weight_normalization-dataset-alpha-$a-loss_weights-1.0-1.0)" \
    "none=$(rec weights_normalization weight_normalization-none-alpha-$a-loss_weights-1.0-1.0)" \
    "no_weights=$(rec weights_nll loss_weights-1.0-1.0-weighting-none)"
done
d "Pairs balanced for answer order (the recipe: levels, dataset normalisation, NLL 16)" \
  "balanced=$(rec balance_orders balance_orders-true-loss_weights-1.0-16.0)" "unbalanced=$(rec balance_orders balance_orders-false-loss_weights-1.0-16.0)"
} > $R/differences.md
bt() { echo "$R/tuning_bt/records/seed{seed}/sweep/bt.learning_rate-$1-bt.num_train_epochs-$2/bt.json.gz"; }
{
d "The BT model's own learning rate and epochs (its best cell on validation against the recipe's, and against GFRIEND)" \
  "bt_1e-3_6ep=$(bt 1e-3 6)" "bt_1e-3_3ep=$(bt 1e-3 3)" "gfriend=$(rec weights_nll loss_weights-1.0-16.0-weighting-levels)"
} >> $R/differences.md
