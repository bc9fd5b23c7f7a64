"""What the pipeline reports: a run's results table, a study's table over seeds and its figure, the
label curve and sweep tables, and paired differences with bootstrap intervals (the manifest that
says how the numbers were made: utils/provenance.py).

Label curve: accuracy against the number of labelled pairs, per method, over seeds, and GFRIEND's
paired differences with a 95% two-level bootstrap interval (seeds, then test items). Sweep: every
setting's accuracy per seed. The runs are {seed: {"sft": eval file, "per": {variant: {judge key: eval file}}}}, the
variant being n for a label curve; the SFT judge uses no labels, so it is one value per seed.

From the command line, for judges of different studies on the same items, and for the why:
  python -m pipeline.reports diff --seeds 0,1,2 A=runs/seed{seed}/x/eval/gfriend.json B=...
  python -m pipeline.reports table --seeds 0,1,2 A=runs/seed{seed}/x/eval/gfriend.json B=...
  python -m pipeline.reports training runs/seed0/n600 runs/seed0/sweep/alpha-2-threshold-median
  python -m pipeline.reports orders SFT=runs/seed1/eval/sft.json refine=runs/seed1/refine/samples.jsonl
"""
from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys

import numpy as np

from utils.io import DataError, open_text, read_jsonl

GFRIEND = "gfriend"


def eval_items(path: str) -> list[dict]:
    """The per-item records of the one eval file in a run_eval.py results file; a .gz file (the
    records committed under results/) is read as well."""
    with open_text(path) as f:
        (rows,) = json.load(f)["items"].values()
    return rows


@functools.lru_cache(maxsize=None)
def item_scores(path: str) -> dict[str, float]:
    """{item id: score} of the one eval file in a run_eval.py results file (the mean is its accuracy);
    read once, as the table, its differences and the figure all ask for the same files."""
    return {str(r["id"]): float(r["correct"]) for r in eval_items(path)}


def scores_of(runs: dict, key: str, n: int) -> list[dict[str, float]] | None:
    """One {item: score} per seed for judge `key` trained on n labels; None where it was not trained
    at n (later rounds run at one label count only)."""
    if key != "sft" and any(key not in r["per"][n] for r in runs.values()):
        return None
    return [item_scores(r["sft"] if key == "sft" else r["per"][n][key]) for r in runs.values()]


def accuracy(scores: dict[str, float]) -> float:
    return 100 * sum(scores.values()) / len(scores)


def item_differences(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[np.ndarray]:
    """Per seed, score(a) - score(b) on each item (paired: both judges on the same items)."""
    out = []
    for sa, sb in zip(a, b):
        if set(sa) != set(sb):
            raise DataError("paired difference: the two judges were tested on different items")
        out.append(np.array([sa[i] - sb[i] for i in sorted(sa)]))
    return out


def seed_differences(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[float]:
    """accuracy(a) - accuracy(b) in points, one per seed."""
    return [float(100 * d.mean()) for d in item_differences(a, b)]


def paired_difference(a: list[dict[str, float]], b: list[dict[str, float]], n_boot: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds of accuracy(a) - accuracy(b) in points, with its 95% percentile interval from
    a two-level bootstrap: each draw takes as many seeds as there are, with replacement, then each
    taken seed's test items with replacement (the same items for both judges, so their shared luck
    cancels). The interval so holds both the variance between training runs and which items were
    tested; with one seed it is the items' alone (docs/method.md, "Intervals")."""
    diffs = item_differences(a, b)
    rng = np.random.default_rng(seed)
    k = len(diffs)
    taken = rng.integers(0, k, size=(n_boot, k))  # which seed fills each of a draw's k places
    boot = np.zeros(n_boot)
    for place in range(k):
        for s, d in enumerate(diffs):  # items resampled afresh for every place, so a seed taken twice varies
            rows = taken[:, place] == s
            boot[rows] += d[rng.integers(0, len(d), size=(int(rows.sum()), len(d)))].mean(axis=1)
    lo, hi = np.percentile(boot / k, [2.5, 97.5])
    point = float(np.mean([d.mean() for d in diffs]))
    return 100 * point, 100 * lo, 100 * hi


def _per_seed(a: list[dict[str, float]], b: list[dict[str, float]]) -> str:
    """' (seeds +x, +y)' where there is more than one seed, so a reader sees how runs disagree."""
    if len(a) < 2:
        return ""
    return " (seeds " + ", ".join(f"{d:+.1f}" for d in seed_differences(a, b)) + ")"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = float(np.mean(values))
    return m, float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean_std(values: list[float]) -> str:
    return "{:.1f} ± {:.1f}".format(*mean_std(values))


def read_result(path: str) -> dict:
    """The summary of the one eval file in a run_eval.py results file (.json or .json.gz)."""
    with open_text(path) as f:
        return next(iter(json.load(f)["results"].values()))


def results_table(rows: list[tuple[str, dict]], label: str) -> str:
    """Markdown: one run's judges, accuracy overall and per category."""
    cats = sorted({c for _, r in rows for c in r["categories"]})
    lines = [f"| judge | all ({label}) | " + " | ".join(cats) + " |", "|---" * (len(cats) + 2) + "|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['accuracy']:.3f} | " +
                     " | ".join(f"{r['categories'][c]['accuracy']:.3f}" for c in cats) + " |")
    return "\n".join(lines)


def study_table(per_seed: list[dict], seeds: list[int], split: str) -> str:
    """Markdown: each judge's accuracy mean ± std over seeds, overall and per category."""
    names = list(per_seed[0])
    cats = sorted({c for res in per_seed for r in res.values() for c in r["categories"]})
    n = per_seed[0][names[0]]["n"]
    lines = [f"Accuracy (%) on {n} held-out {split} pairs, both answer orders; mean ± std over seeds "
             f"{', '.join(map(str, seeds))}.", "",
             "| method | all | " + " | ".join(cats) + " |", "|---" * (len(cats) + 2) + "|"]
    for name in names:
        cells = [_mean_std([100 * getter(res[name]) for res in per_seed])
                 for getter in [lambda r: r["accuracy"]] +
                 [lambda r, c=c: r["categories"][c]["accuracy"] for c in cats]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def study_figure(per_seed: list[dict], path: str) -> None:
    """Bar chart: each judge's accuracy, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_seed[0])
    stats = [mean_std([100 * res[n]["accuracy"] for res in per_seed]) for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(names)), [m for m, _ in stats], yerr=[sd for _, sd in stats], capsize=4,
           color=["#999999", "#bbbbbb", "#88aadd", "#aaccee", "#cccc88", "#dd6644", "#dd6644"][: len(names)])
    ax.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.set_ylabel("pairwise accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Judges, mean ± std over {len(per_seed)} seeds")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


def label_curve_table(runs: dict, counts: list[int], judges: list[tuple[str, str]], split: str) -> str:
    """Markdown: accuracy mean ± std per method and label count, then GFRIEND minus each other
    method with its bootstrap interval."""
    seeds = ", ".join(map(str, runs))
    n_items = len(scores_of(runs, "sft", counts[0])[0])
    head = "| method | " + " | ".join(f"n = {n}" for n in counts) + " |"
    rule = "|---" * (len(counts) + 1) + "|"
    lines = [f"Accuracy (%) on {n_items} held-out {split} pairs, both answer orders, against the number of "
             f"labelled pairs n; mean ± std over seeds {seeds}.", "", head, rule]
    for key, name in judges:
        cells = [scores_of(runs, key, n) for n in counts]
        lines.append(f"| {name} | " + " | ".join("–" if c is None else _mean_std([accuracy(s) for s in c])
                                                 for c in cells) + " |")
    names = dict(judges)
    if GFRIEND in names:
        lines += ["", f"GFRIEND minus each method, points, mean over seeds {seeds} [95% interval: seeds, "
                      "then test items, resampled] (each seed's own difference):", "",
                  head.replace("| method |", "| difference |"), rule]
        for key, name in judges:
            if key == GFRIEND:
                continue
            cells = []
            for n in counts:
                other = scores_of(runs, key, n)
                if other is None:
                    cells.append("–")
                    continue
                mine = scores_of(runs, GFRIEND, n)
                d, lo, hi = paired_difference(mine, other)
                cells.append(f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]{_per_seed(mine, other)}")
            lines.append(f"| GFRIEND − {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def label_curve_figure(runs: dict, counts: list[int], judges: list[tuple[str, str]], path: str) -> None:
    """Accuracy against n (log scale), one line per method, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, name in judges:
        at = [n for n in counts if scores_of(runs, key, n) is not None]
        acc = np.array([[accuracy(s) for s in scores_of(runs, key, n)] for n in at])
        sd = acc.std(axis=1, ddof=1) if acc.shape[1] > 1 else np.zeros(len(at))
        style = {"linestyle": "--", "color": "#777777"} if key == "sft" else {"marker": "o"}
        if key == GFRIEND:
            style.update(color="#dd4422", linewidth=2.2)
        ax.errorbar(at, acc.mean(axis=1), yerr=sd, capsize=3, label=name, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_xlabel("labelled pairs n")
    ax.set_ylabel("pairwise accuracy (%)")
    ax.set_title(f"Label curve on the synthetic task, mean ± std over {len(runs)} seed(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


def sweep_table(runs: dict, judges: dict[str, list[tuple[str, str]]], split: str) -> str:
    """Markdown: each setting's accuracy per judge, per seed and mean ± std (choose on val); `judges`
    gives per setting its judges' (key, name), a name saying the loss that setting ran."""
    seeds = list(runs)
    n_items = len(scores_of(runs, "sft", None)[0])
    lines = [f"Accuracy (%) on {n_items} held-out {split} pairs, both answer orders, for each setting.", "",
             "| setting | judge | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---" * (len(seeds) + 3) + "|"]
    sft = [accuracy(s) for s in scores_of(runs, "sft", None)]
    lines.append("| (none) | SFT judge | " + " | ".join(f"{a:.1f}" for a in sft) + f" | {_mean_std(sft)} |")
    for setting, named in judges.items():
        for key, name in named:
            cells = scores_of(runs, key, setting)
            if cells is None:
                continue
            acc = [accuracy(s) for s in cells]
            lines.append(f"| {setting} | {name} | " + " | ".join(f"{a:.1f}" for a in acc) + f" | {_mean_std(acc)} |")
    return "\n".join(lines)


def seeds_table(named: list[tuple[str, str]], seeds: list[int], split: str) -> str:
    """study_table from evaluation files whose paths hold {seed}: a study whose seeds ran one command
    at a time (or in different sessions) gets its mean ± std per category from the committed records."""
    return study_table([{name: read_result(path.replace("{seed}", str(s))) for name, path in named} for s in seeds],
                       seeds, split)


def diff_table(named: list[tuple[str, str]], seeds: list[int]) -> str:
    """Markdown: each judge's accuracy over seeds, then the first judge minus each other one with a
    95% two-level bootstrap interval and each seed's own difference; paths hold {seed}."""
    scores = [(name, [item_scores(path.replace("{seed}", str(s))) for s in seeds]) for name, path in named]
    lines = [f"Seeds {', '.join(map(str, seeds))}, {len(scores[0][1][0])} items.", "",
             "| judge | accuracy (%) mean ± std |", "|---|---|"]
    lines += [f"| {name} | {_mean_std([accuracy(s) for s in per_seed])} |" for name, per_seed in scores]
    first, a = scores[0]
    lines += ["", "| difference | points [95% interval: seeds, then items, resampled] | each seed |", "|---|---|---|"]
    for name, b in scores[1:]:
        try:
            d, lo, hi = paired_difference(a, b)
        except DataError as e:
            raise DataError(f"{first} and {name}: {e}") from None
        each = ", ".join(f"{x:+.1f}" for x in seed_differences(a, b))
        lines.append(f"| {first} − {name} | {d:+.1f} [{lo:+.1f}, {hi:+.1f}] | {each} |")
    return "\n".join(lines)


TRAINERS = ("mdpo", "dpo", "rft")


def percent(k: int, n: int) -> str:
    """k of n as a table cell, '–' where there is nothing to count."""
    return f"{100 * k / n:.1f}%" if n else "–"


def training_table(runs: list[str]) -> str:
    """Markdown: per run folder (refine/ plus trainer folders) the pairs, their level gaps and the share
    whose chosen judgment says A, and per trainer the first and last logged chosen/rejected log-probs,
    reward margin and accuracy, and mean pair weight: what the DPO term and the level weights had to
    work with, and what they did."""
    lines = ["| run | pairs | level gaps (count) | chosen says A | trainer | logp chosen | logp rejected | margin | "
             "reward acc | mean weight |", "|---" * 10 + "|"]
    for run in runs:
        pairs = read_jsonl(os.path.join(run, "refine", "pairs.jsonl"), required={"gap": (int, float)})
        gaps = collections.Counter(p["gap"] for p in pairs)
        says = [p["chosen_verdict"] for p in pairs if p.get("chosen_verdict") in ("A", "B")]  # a slot the NLL teaches
        slot = percent(says.count("A"), len(says))
        head = (f"| {run} | {sum(gaps.values())} | " + ", ".join(f"{g}: {c}" for g, c in sorted(gaps.items())) +
                f" | {slot} |")
        for stage in TRAINERS:
            state = os.path.join(run, stage, "trainer_state.json")
            if not os.path.exists(state):
                continue
            with open(state, encoding="utf-8") as f:
                logs = [h for h in json.load(f)["log_history"] if "logps/chosen" in h]
            if not logs:
                continue
            a, b = logs[0], logs[-1]
            lines.append(f"{head} {stage} | {a['logps/chosen']:.2f} → {b['logps/chosen']:.2f} | "
                         f"{a['logps/rejected']:.2f} → {b['logps/rejected']:.2f} | "
                         f"{a['rewards/margins']:.3f} → {b['rewards/margins']:.3f} | {b['rewards/accuracies']:.2f} | "
                         f"{b.get('weights/mean', 1.0):.2f} |")
            head = "| | | | |"
    return "\n".join(lines)


def verdicts_of(path: str) -> list[tuple[str, str, str | None, str | None]]:
    """(category, slot of the better answer, verdict or None, level or None) per judgment: of every
    answer order of an evaluation file, of a refinement's samples.jsonl, or of a pairs.jsonl's chosen
    judgments (the slots the NLL term teaches; categories from the samples.jsonl beside it)."""
    name = os.path.basename(path)
    if name == "samples.jsonl":
        return [(r["category"], r["pos_slot"], r.get("verdict"), r.get("level"))
                for r in read_jsonl(path, required={"pos_slot": str})]
    if name == "pairs.jsonl":
        samples = read_jsonl(os.path.join(os.path.dirname(path), "samples.jsonl"))
        category = {r["item_id"]: r["category"] for r in samples}
        return [(category[p["item_id"]], p["chosen_verdict"], p["chosen_verdict"], p.get("chosen_level"))
                for p in read_jsonl(path, required={"chosen_verdict": str})]
    return [(item["category"], o["pos_slot"], o.get("verdict"), None)
            for item in eval_items(path) for o in item["orders"]]


def orders_table(named: list[tuple[str, str]]) -> str:
    """Markdown: per judge and category, how often it is right when the better answer sits in slot A
    and when in slot B, how often it says A, and how often it gives no verdict: a judge that says one
    slot whatever it reads scores 50% by being right in one order only. For refinement samples and
    pairs also the share of right judgments that perplexity called strong (SA), per order: where the
    judge is surer of one slot, the strong level, and the widest-gap pairs, go to that slot."""
    lines = ["| judge | category | judgments | right, better in A | right, better in B | says A | no verdict | "
             "SA of right, A | SA of right, B |", "|---" * 9 + "|"]
    for name, path in named:
        rows = verdicts_of(path)
        for category in ["all", *sorted({r[0] for r in rows})]:
            sel = [r[1:] for r in rows if category in ("all", r[0])]
            cells = [f"| {name} | {category} | {len(sel)}"]
            for slot in "AB":
                right = [v == pos for pos, v, _ in sel if pos == slot]
                cells.append(percent(sum(right), len(right)))
            cells += [percent(sum(v == "A" for _, v, _ in sel), len(sel)),
                      percent(sum(v is None for _, v, _ in sel), len(sel))]
            for slot in "AB":
                levels = [lv for pos, v, lv in sel if pos == slot and v == pos and lv is not None]
                cells.append(percent(levels.count("SA"), len(levels)))
            lines.append(" | ".join(cells) + " |")
            name = ""
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipeline.reports", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    over_seeds = argparse.ArgumentParser(add_help=False)  # diff and table: judges' files over seeds
    over_seeds.add_argument("evals", nargs="+", help="NAME=run_eval.py results file, {seed} standing for the seed")
    over_seeds.add_argument("--seeds", required=True, help="comma-separated seeds")
    sub.add_parser("diff", parents=[over_seeds],
                   help="the first judge minus each other one, paired over items, over seeds")
    table = sub.add_parser("table", parents=[over_seeds],
                           help="each judge's accuracy mean ± std over seeds, overall and per category")
    table.add_argument("--split", default="test", help="the split's name, for the table's caption")
    training = sub.add_parser("training", help="level gaps, log-prob drift, margins and weights of runs")
    training.add_argument("runs", nargs="+", help="folders holding refine/ and mdpo/, dpo/ or rft/")
    orders = sub.add_parser("orders", help="per judge and category: right per answer order, says A, no verdict")
    orders.add_argument("evals", nargs="+", help="NAME=results file, refine samples.jsonl or pairs.jsonl")
    args = ap.parse_args(argv)
    try:
        named = [tuple(e.split("=", 1)) if "=" in e else (e, e) for e in getattr(args, "evals", [])]
        seeds = [int(s) for s in args.seeds.split(",")] if getattr(args, "seeds", None) else None
        if args.command == "orders":
            print(orders_table(named))
        elif args.command == "table":
            print(seeds_table(named, seeds, args.split))
        elif args.command == "diff":
            if len(named) < 2:
                raise DataError("diff needs at least two judges")
            print(diff_table(named, seeds))
        else:
            print(training_table(args.runs))
    except (DataError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
