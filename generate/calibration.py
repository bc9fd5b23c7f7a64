"""Does a confidence separate right judgments from wrong ones? GFRIEND's levels rest on the premise
that exp(-PPL / tau) does; this measures it, and the same for other confidences a refinement run
gives for free, on the samples refinement logged:

    python -m generate.calibration --refine_dir ckpt/refine        # calibration.md / .json / .png

Confidences (higher = more confident), each of a sampled judgment:
- `score`: the paper's exp(-PPL / tau), PPL length-normalised over the response tokens (the
  levels' confidence by default; refinement's --score can take one of the others instead);
- `total_logp`: the response's total log-probability, not length-normalised (-tokens x log PPL);
- `verdict_prob`: the probability of the verdict token where the judge wrote it (recorded by
  refinement when it scores with the sampler's log-probs; absent otherwise);
- `agreement`: the share of the item's samples (all prompts and orders) that pick the same answer.

For each: the AUROC of right against wrong judgments pooled over all samples, and within a prompt
(only pairs of a right and a wrong judgment of the same item and exact prompt, as refinement's
pairs are built; 0.5 = no signal), and P(right) above and below the confidence's median. A judgment
without a verdict is wrong.

Where the task can check reasoning (the synthetic task: toy/oracle.py's `sound_reasoning`, every
claim it can verify true), one more column: among the *right* judgments of one prompt, does the
confidence rank those with true reasoning above those that reach the right verdict by false
reasoning? That is the ranking the strong/weak split needs; right against wrong the gold label
already gives.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from utils.config import parse_args, require, run_main
from utils.io import read_jsonl, write_json

CONFIDENCES = ("score", "total_logp", "verdict_prob", "agreement")


def verdict_token_logp(tokenizer, completion) -> float | None:
    """The sampled log-probability of the token that holds the verdict letter, where the response's
    text re-tokenizes to the sampled ids (so a character maps to a sampled token); None otherwise."""
    from data.tokens import encode_response
    from generate.parsing import verdict_position

    _, pos = verdict_position(completion.text)
    if pos is None or completion.logprobs is None or not getattr(tokenizer, "is_fast", False):
        return None
    if list(completion.token_ids) != encode_response(tokenizer, completion.text, completion.finished):
        return None
    spans = tokenizer(completion.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return next((completion.logprobs[i] for i, (start, end) in enumerate(spans) if start <= pos < end), None)


def picks(record: dict) -> str | None:
    """The answer a judgment picks: 'pos', 'neg', or None without a verdict."""
    if record["verdict"] not in ("A", "B"):
        return None
    return "pos" if record["verdict"] == record["pos_slot"] else "neg"


def confidences(records: list[dict]) -> dict[str, list[float | None]]:
    """Each confidence of each record (None where the record cannot give it)."""
    by_item = defaultdict(Counter)
    for r in records:
        by_item[r["item_id"]][picks(r)] += 1
    out = {name: [] for name in CONFIDENCES}
    for r in records:
        out["score"].append(r.get("ppl_score", r["score"]))  # the paper's, whichever confidence set the levels
        tokens = r.get("tokens")
        out["total_logp"].append(None if tokens is None else -tokens * math.log(r["ppl"]))
        logp = r.get("verdict_logp")
        out["verdict_prob"].append(None if logp is None else math.exp(logp))
        counts = by_item[r["item_id"]]
        out["agreement"].append(counts[picks(r)] / sum(counts.values()) if picks(r) else 0.0)
    return out


def auroc(right: list[float], wrong: list[float]) -> float | None:
    """P(a right judgment's confidence > a wrong one's), ties counted half (Mann-Whitney U)."""
    if not right or not wrong:
        return None
    ranked = sorted([(v, 1) for v in right] + [(v, 0) for v in wrong])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += sum(label for _, label in ranked[i:j]) * (i + j + 1) / 2
        i = j
    n1, n0 = len(right), len(wrong)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def _within_prompt_wins(records: list[dict], values: list[float | None],
                        labels: list[bool | None] | None = None) -> dict[str, tuple[float, int]]:
    """Per item: (pairs a positive judgment wins, ties half; pairs) over the (positive, negative)
    pairs of each of its prompts. `labels` says which judgment is positive (None: left out); by
    default a right one is, a wrong one negative."""
    labels = [r["correct"] for r in records] if labels is None else labels
    groups = defaultdict(lambda: ([], []))
    for r, v, label in zip(records, values, labels):
        if v is not None and label is not None:
            groups[(r["item_id"], r["prompt_id"])][0 if label else 1].append(v)
    per_item = defaultdict(lambda: (0.0, 0))
    for (item, _), (right, wrong) in groups.items():
        a = auroc(right, wrong)
        if a is not None:
            wins, pairs = per_item[item]
            per_item[item] = (wins + a * len(right) * len(wrong), pairs + len(right) * len(wrong))
    return per_item


def within_prompt_auroc(records: list[dict], values: list[float | None],
                        labels: list[bool | None] | None = None) -> tuple[float | None, int]:
    """The AUROC over (right, wrong) pairs of the same item and prompt (or the (positive, negative)
    pairs `labels` gives), every pair counted once: (value, number of pairs)."""
    counts = _within_prompt_wins(records, values, labels).values()
    wins, pairs = sum(w for w, _ in counts), sum(p for _, p in counts)
    return (wins / pairs if pairs else None), pairs


def bootstrap_intervals(records: list[dict], values: list[float | None], n_boot: int = 200, seed: int = 0,
                        faithful: list[bool | None] | None = None) -> dict[str, tuple[float, float] | None]:
    """95% intervals of the pooled and within-prompt AUROC over items resampled with replacement
    (an item's judgments move together). Within-prompt pairs never cross items, so each item's
    wins and pairs are counted once and a resample only adds them up."""
    import random

    by_item = defaultdict(lambda: ([], []))  # the item's right and wrong values
    for r, v in zip(records, values):
        if v is not None:
            by_item[r["item_id"]][0 if r["correct"] else 1].append(v)
    within_counts = _within_prompt_wins(records, values)
    among_counts = _within_prompt_wins(records, values, faithful) if faithful is not None else {}
    items, rng = sorted(by_item), random.Random(seed)
    pooled, within, among = [], [], []
    for _ in range(n_boot):
        drawn = [rng.choice(items) for _ in items]
        a = auroc([v for item in drawn for v in by_item[item][0]], [v for item in drawn for v in by_item[item][1]])
        wins = sum(within_counts.get(item, (0.0, 0))[0] for item in drawn)
        pairs = sum(within_counts.get(item, (0.0, 0))[1] for item in drawn)
        pooled += [a] if a is not None else []
        within += [wins / pairs] if pairs else []
        wins = sum(among_counts.get(item, (0.0, 0))[0] for item in drawn)
        pairs = sum(among_counts.get(item, (0.0, 0))[1] for item in drawn)
        among += [wins / pairs] if pairs else []

    def interval(xs):
        xs = sorted(xs)
        return (xs[int(0.025 * len(xs))], xs[min(len(xs) - 1, int(0.975 * len(xs)))]) if xs else None

    return {"auroc": interval(pooled), "auroc_within_prompt": interval(within), "auroc_among_right": interval(among)}


def among_right_labels(records: list[dict], faithful: list[bool]) -> list[bool | None]:
    """For the among-right AUROC: a right judgment is positive when its reasoning is the true one,
    negative when not; a wrong judgment is left out."""
    return [f if r["correct"] else None for r, f in zip(records, faithful)]


def calibration(records: list[dict], n_boot: int = 200, faithful: list[bool] | None = None) -> dict:
    """The table: per confidence, how many samples have it, pooled and within-prompt AUROC with 95%
    intervals over items, and P(right) above and below its median; plus the samples per level. With
    `faithful` (whether each judgment's reasoning is true), also the within-prompt AUROC among right
    judgments of true against false reasoning."""
    among_labels = None if faithful is None else among_right_labels(records, faithful)
    table = {}
    for name, values in confidences(records).items():
        known = [(r, v) for r, v in zip(records, values) if v is not None]
        if not known:
            continue
        right = [v for r, v in known if r["correct"]]
        wrong = [v for r, v in known if not r["correct"]]
        median = sorted(v for _, v in known)[len(known) // 2]
        above = [r["correct"] for r, v in known if v > median]
        below = [r["correct"] for r, v in known if v <= median]
        within, pairs = within_prompt_auroc(records, values)
        among, among_pairs = within_prompt_auroc(records, values, among_labels) if faithful else (None, 0)
        table[name] = {"samples": len(known), "auroc": auroc(right, wrong), "auroc_within_prompt": within,
                       "within_prompt_pairs": pairs, "auroc_among_right": among, "among_right_pairs": among_pairs,
                       "intervals": bootstrap_intervals(records, values, n_boot, faithful=among_labels),
                       "p_right_above_median": sum(above) / len(above) if above else None,
                       "p_right_below_median": sum(below) / len(below) if below else None}
    levels = defaultdict(list)
    for r in records:
        if r.get("level"):
            levels[r["level"]].append(r["correct"])
    true_right = None if faithful is None else sum(f and r["correct"] for r, f in zip(records, faithful))
    return {"samples": len(records), "right": sum(r["correct"] for r in records), "right_true_reasoning": true_right,
            "confidences": table,
            "levels": {lv: {"samples": len(v), "p_right": sum(v) / len(v)} for lv, v in sorted(levels.items())}}


def _ci(x) -> str:
    return "" if not x else f" [{x[0]:.3f}, {x[1]:.3f}]"


def _fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(report: dict, source: str) -> str:
    among = report.get("right_true_reasoning") is not None
    lines = [f"Calibration of {source}: {report['samples']} judgments, {report['right']} right "
             f"({100 * report['right'] / max(1, report['samples']):.1f}%). AUROC of right against wrong judgments "
             "(0.5 = no signal) with 95% intervals over items; within a prompt = only pairs of the same item and "
             "exact prompt, the pairs refinement builds."
             + (f" Among right (within a prompt): right judgments with true reasoning (every claim the task "
                f"can check true: {report['right_true_reasoning']} of the {report['right']}) against right ones "
                "with false or no checkable reasoning (toy/oracle.py)." if among else ""), "",
             "| confidence | samples | AUROC pooled | AUROC within prompt (pairs) |"
             + (" AUROC among right (pairs) |" if among else "") + " P(right) above median | below |",
             "|---|---|---|---|" + ("---|" if among else "") + "---|---|"]
    for name, c in report["confidences"].items():
        ci = c.get("intervals", {})
        extra = (f" {_fmt(c['auroc_among_right'])}{_ci(ci.get('auroc_among_right'))} ({c['among_right_pairs']}) |"
                 if among else "")
        lines.append(f"| {name} | {c['samples']} | {_fmt(c['auroc'])}{_ci(ci.get('auroc'))} | "
                     f"{_fmt(c['auroc_within_prompt'])}{_ci(ci.get('auroc_within_prompt'))} "
                     f"({c['within_prompt_pairs']}) |{extra} {_fmt(c['p_right_above_median'])} | "
                     f"{_fmt(c['p_right_below_median'])} |")
    levels = ", ".join(f"{lv} {v['samples']}" for lv, v in report["levels"].items())
    lines += ["", f"Levels: {levels}. Accept or reject comes from the gold label (SA/WA are the right judgments, "
                  "WR/SR the wrong ones), so what the score adds is only the strong/weak split: P(right) above "
                  "against below the median score."]
    return "\n".join(lines) + "\n"


def figure(records: list[dict], path: str) -> None:
    """Each confidence's distribution for right and wrong judgments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = {k: v for k, v in confidences(records).items() if any(x is not None for x in v)}
    fig, axes = plt.subplots(1, len(values), figsize=(3.2 * len(values), 2.8))
    for ax, (name, vs) in zip(axes if len(values) > 1 else [axes], values.items()):
        for correct, colour in ((True, "tab:green"), (False, "tab:red")):
            xs = [v for r, v in zip(records, vs) if v is not None and r["correct"] == correct]
            ax.hist(xs, bins=20, alpha=0.6, color=colour, label="right" if correct else "wrong", density=True)
        ax.set_title(name, fontsize=9)
    axes_list = axes if len(values) > 1 else [axes]
    axes_list[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class CalibrationArguments:
    refine_dir: str = field(default=None, metadata={"help": "A finished refinement's output_dir (samples.jsonl)."})
    output_dir: str = field(default=None, metadata={
        "help": "Where calibration.{md,json,png} go (default: refine_dir)."})
    pref_file: str = field(default=None, metadata={
        "help": "The labelled pairs (default: the refinement's); on the synthetic task the report adds the "
                "AUROC among right judgments of true against false reasoning."})


def parse(argv=None) -> tuple[CalibrationArguments]:
    return parse_args((CalibrationArguments,), argv)


def true_reasoning_flags(records: list[dict], pref_file: str | None) -> list[bool] | None:
    """Whether each judgment's reasoning is sound (every claim the task can check is true), where the
    labelled pairs are the synthetic task's (toy/oracle.py); None for any other task."""
    from data.schemas import load_prefs
    from toy.oracle import sound_reasoning

    if not pref_file or not os.path.exists(pref_file):
        return None
    try:
        return sound_reasoning(records, {str(r["id"]): r for r in load_prefs(pref_file)})
    except (ValueError, KeyError):
        return None


def main(argv=None) -> dict:
    (a,) = parse(argv)
    require(refine_dir=a.refine_dir)
    records = read_jsonl(os.path.join(a.refine_dir, "samples.jsonl"))
    out = a.output_dir or a.refine_dir
    os.makedirs(out, exist_ok=True)
    pref_file = a.pref_file
    if pref_file is None and os.path.exists(os.path.join(a.refine_dir, "refine_args.json")):
        with open(os.path.join(a.refine_dir, "refine_args.json"), encoding="utf-8") as f:
            pref_file = json.load(f).get("pref_file")
    report = calibration(records, faithful=true_reasoning_flags(records, pref_file))
    write_json(os.path.join(out, "calibration.json"), report)
    text = markdown(report, a.refine_dir)
    with open(os.path.join(out, "calibration.md"), "w", encoding="utf-8") as f:
        f.write(text)
    figure(records, os.path.join(out, "calibration.png"))
    print(text, end="")
    return report


if __name__ == "__main__":
    run_main(main)
