"""Inference-time judging measured: accuracy with k sampled judgments per answer order, by majority
verdict and by mean P(better answer), from one `run_eval.py --num_samples K` file per judge.

    python -m pipeline.voting --ks 1,4,8 SFT=eval/sft_k8.json GFRIEND=eval/gfriend_k8.json

The first k of the K samples of each order are taken, so one run at K = 8 gives k = 1, 4 and 8 on
the same judgments (k = 1 sampled, not greedy: the greedy judge is its own row of the study).
- majority: each order's most frequent readable verdict among its k samples (a tie or nothing
  readable is wrong), each order counting half, as run_eval.py's accuracy;
- mean P: the mean of P(better answer) over the k samples of both orders (a sample with no readable
  verdict has none and is left out); right when at least TIE (1e-3) above 0.5, as the Judge's own
  verdict; within TIE of 0.5, below it, or with none, wrong.
Intervals: 95% bootstrap over test items.
"""
from __future__ import annotations

import argparse
import sys


from generate.parsing import TIE, majority_verdict
from pipeline.reports import eval_items
from utils.bootstrap import mean_interval
from utils.io import DataError


def samples_per_order(records: list[dict], path: str) -> int:
    counts = {len(o["verdicts"]) for r in records for o in r["orders"]}
    if len(counts) != 1 or any("p_pos_samples" not in o for r in records for o in r["orders"]):
        raise DataError(f"{path}: not one run_eval.py run with --num_samples K (and per-sample P) throughout")
    return counts.pop()


def vote_scores(records: list[dict], k: int) -> tuple[list[float], list[float]]:
    """Per item: (majority score in {0, 0.5, 1}, mean-P score in {0, 1}) with the first k samples."""
    majority, mean_p = [], []
    for r in records:
        majority.append(sum(majority_verdict(o["verdicts"][:k]) == o["pos_slot"] for o in r["orders"]) / 2)
        ps = [p for o in r["orders"] for p in o["p_pos_samples"][:k] if p is not None]
        mean_p.append(float(bool(ps) and sum(ps) / len(ps) - 0.5 >= TIE))
    return majority, mean_p


def voting_table(named: list[tuple[str, str]], ks: list[int]) -> str:
    lines = ["| judge | k | test pairs | majority verdict (%) | mean P(better) (%) |", "|---|---|---|---|---|"]
    for name, path in named:
        records = eval_items(path)
        most = samples_per_order(records, path)
        if min(ks) > most:
            raise DataError(f"{path}: k = {min(ks)} asked, the run sampled {most} per order")
        for k in (k for k in ks if k <= most):  # a greedy or direct judge: its k = 1 row only
            cells = [f"{m:.1f} [{lo:.1f}, {hi:.1f}]" for m, lo, hi in map(mean_interval, vote_scores(records, k))]
            lines.append(f"| {name} | {k} | {len(records)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipeline.voting", description=__doc__.split("\n\n")[0])
    ap.add_argument("evals", nargs="+", help="NAME=run_eval.py results file (run with --num_samples K)")
    ap.add_argument("--ks", default="1,4,8", help="comma-separated sample counts k <= K")
    args = ap.parse_args(argv)
    try:
        named = [tuple(e.split("=", 1)) if "=" in e else (e, e) for e in args.evals]
        print(voting_table(named, [int(k) for k in args.ks.split(",")]))
    except (DataError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
