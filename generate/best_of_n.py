"""Best-of-N: what a judge is worth when it picks among a policy's own answers (run_best_of_n.py).

The policy answers each checkable question (toy/checker.py) N times; a program marks each answer
right, wrong or unreadable (unreadable counts as wrong). Then each chooser picks one answer of the
first n, for every n = 2, 4, ..., N:
- a generative judge by a **knockout**: candidates meet in pairs (0 v 1, 2 v 3, ...), each match
  judged in both answer orders (generate.judge.Judge: P(first better), the orders averaged), the
  winner going on; no readable preference, or exactly 0.5, sends the first (lower-numbered) one on.
  The bracket of the first n candidates is a sub-bracket of the whole one, so one knockout of N
  gives the pick at every n, with N - 1 matches;
- a scalar (BT) judge by its score (a tie goes to the lower-numbered candidate);
- a random pick, as its expected accuracy (the share of right answers among the first n);
- the oracle: right when any of the first n is (pass@n, the ceiling).
The policy's own accuracy, pass@1, is the share of right answers among all N (the floor).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from toy.checker import RIGHT, check_answer
from utils.bootstrap import mean_interval
from utils.io import DataError


@dataclass
class BestOfNArguments:
    questions: str = field(default=None, metadata={
        "help": "JSONL of the synthetic task's rows (test.jsonl): the checkable questions are answered."})
    output_dir: str = field(default=None, metadata={
        "help": "candidates.jsonl, picks_<judge>.jsonl, results.json and table.md (written last)."})
    policy: str = field(default=None, metadata={"help": "The policy: a checkpoint folder or hub id."})
    judges: str = field(default="", metadata={"help": "Generative judges, 'name=path,name=path'."})
    scalar_judges: str = field(default="", metadata={"help": "Scalar (BT) reward models, 'name=path,...'."})
    num_candidates: int = field(default=8, metadata={"help": "N answers per question, a power of two."})
    temperature: float = field(default=0.7, metadata={"help": "The policy's sampling temperature."})
    max_new_tokens: int = field(default=64, metadata={"help": "The policy's answer length."})
    max_questions: int = field(default=None, metadata={"help": "Answer only the first N checkable questions."})
    template: str = field(default="compare", metadata={"help": "The generative judges' template id."})
    judge_max_new_tokens: int = field(default=96, metadata={"help": "The judges' judgment length (evaluation's)."})
    judge_max_prompt_length: int = field(default=256, metadata={"help": "The judges' prompt budget."})
    scalar_max_length: int = field(default=512, metadata={"help": "Tokens a scalar judge reads (question + answer)."})
    batch_size: int = field(default=64, metadata={"help": "Rows decoded or scored together."})
    items_per_chunk: int = field(default=16, metadata={"help": "Questions per resumable chunk."})
    dtype: str = field(default="fp32", metadata={"help": "Precision of every model (see models/loading.py)."})
    seed: int = field(default=0)

    RESUMABLE = ("max_questions", "judges", "scalar_judges", "output_dir")


def named_paths(spec: str, flag: str) -> dict[str, str]:
    """'name=path,name=path' as {name: path}, in order; a part without '=' is refused."""
    named = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, path = part.partition("=")
        if not sep or not name.strip() or not path.strip() or not name.strip().replace("_", "").isalnum():
            raise DataError(f"--{flag} must look like 'name=path,name=path' (names of letters, digits, _), "
                            f"got {part!r}")
        named[name.strip()] = path.strip()
    return named


def sizes(num_candidates: int) -> list[int]:
    """The n reported: 2, 4, ..., N."""
    if num_candidates < 2 or num_candidates & (num_candidates - 1):
        raise DataError(f"--num_candidates must be a power of two of at least 2, got {num_candidates}")
    return [2 ** k for k in range(1, int(math.log2(num_candidates)) + 1)]


def fates_of(question: str, answers: list[str]) -> list[str]:
    return [check_answer(question, a) for a in answers]


def knockout(records: list[dict], prefer_first) -> list[dict]:
    """{id, picks: {n: index}, matches} per record ({id, question, candidates}). `prefer_first(rows)`
    judges [{question, answer_a, answer_b}] and returns P(answer_a better) or None per row; every
    match of a round, over all records, is judged in one call."""
    alive = {r["id"]: list(range(len(r["candidates"]))) for r in records}
    picks = {r["id"]: {} for r in records}
    matches = {r["id"]: [] for r in records}
    by_id = {r["id"]: r for r in records}
    n = 1
    while any(len(v) > 1 for v in alive.values()):
        n *= 2
        games = [(rid, left, right) for rid, v in alive.items() for left, right in zip(v[::2], v[1::2])]
        ps = prefer_first([{"question": by_id[rid]["question"], "answer_a": by_id[rid]["candidates"][left],
                            "answer_b": by_id[rid]["candidates"][right]} for rid, left, right in games])
        for rid in alive:
            alive[rid] = []
        for (rid, left, right), p in zip(games, ps):
            winner = right if p is not None and p < 0.5 else left
            alive[rid].append(winner)
            matches[rid].append({"round": n, "first": left, "second": right, "p_first": p, "winner": winner})
        for rid, v in alive.items():
            picks[rid][str(n)] = v[0]  # the winner of the first n candidates' bracket
    return [{"id": rid, "picks": picks[rid], "matches": matches[rid]} for rid in alive]


def score_picks(records: list[dict], scores_of) -> list[dict]:
    """{id, picks: {n: index}, scores} per record, each pick the highest score among the first n
    (the lower index on a tie). `scores_of(rows)` scores [{question, answer}] in one call."""
    rows = [{"question": r["question"], "answer": a} for r in records for a in r["candidates"]]
    flat, out, k = scores_of(rows), [], 0
    for r in records:
        scores = flat[k : k + len(r["candidates"])]
        k += len(r["candidates"])
        picks = {str(n): int(np.argmax(scores[:n])) for n in sizes(len(r["candidates"]))}
        out.append({"id": r["id"], "picks": picks, "scores": scores})
    return out


def chooser_scores(candidates: list[dict], picks: dict[str, list[dict]]) -> dict[str, dict[int, list[float]]]:
    """{chooser: {n: per-question score}}: 1 when the pick is right (random: the expected value)."""
    right = {c["id"]: [f == RIGHT for f in c["fates"]] for c in candidates}
    n_all = sizes(len(candidates[0]["fates"]))
    table = {"pass@1 (the policy)": {n: [sum(right[c["id"]]) / len(right[c["id"]]) for c in candidates]
                                     for n in n_all},
             "random pick": {n: [sum(right[c["id"]][:n]) / n for c in candidates] for n in n_all}}
    for name, records in picks.items():
        by_id = {r["id"]: r["picks"] for r in records}
        table[name] = {n: [float(right[c["id"]][by_id[c["id"]][str(n)]]) for c in candidates] for n in n_all}
    table["oracle (pass@n)"] = {n: [float(any(right[c["id"]][:n])) for c in candidates] for n in n_all}
    return table


def results_table(candidates: list[dict], picks: dict[str, list[dict]]) -> tuple[str, dict]:
    """Markdown (accuracy of the picked answer per chooser and n, 95% intervals over questions) and
    the same numbers as a dict."""
    scores = chooser_scores(candidates, picks)
    n_all = sizes(len(candidates[0]["fates"]))
    fates = [f for c in candidates for f in c["fates"]]
    lines = [f"Accuracy (%) of the picked answer over {len(candidates)} questions, {len(fates)} answers "
             f"({sum(f == 'unreadable' for f in fates)} unreadable, counted wrong); 95% intervals over questions.",
             "", "| chooser | " + " | ".join(f"n = {n}" for n in n_all) + " |", "|---" * (len(n_all) + 1) + "|"]
    summary = {}
    for name, per_n in scores.items():
        cells = {n: mean_interval(v) for n, v in per_n.items()}
        summary[name] = {str(n): [round(x, 2) for x in c] for n, c in cells.items()}
        shown = (f"{m:.1f} [{lo:.1f}, {hi:.1f}]" for m, lo, hi in cells.values())
        lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return "\n".join(lines), summary
