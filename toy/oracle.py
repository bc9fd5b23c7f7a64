"""Oracle levels on the synthetic task: the best case for level weighting.

Refinement's accept/reject already comes from the gold label (a judgment is accepted when its
verdict picks the labelled better answer); only the *strength* (strong or weak) comes from a
confidence, and the confidences separate right from wrong judgments of one prompt only in part
(`python -m generate.calibration`). The synthetic task knows more than the label: the true chain
of thought of every item. So the oracle judges each sampled judgment's reasoning against it:

    verdict right, reasoning the true one -> SA               verdict right, reasoning not -> WA (by luck)
    verdict wrong, reasoning the true one -> WR (a late slip)  verdict wrong, reasoning not -> SR

and its score is the reasoning's similarity to the true one (difflib's ratio, in [0, 1]), which
orders pairs within a level gap. These are the levels a perfect reader of the reasoning would give:
if weighting by them does not beat plain DPO on the same judgments, a confidence is unlikely to.

Reasoning in words other than the program's (a judge that wrote its own chains of thought) is never
the true text, yet it can be sound: `sound_reasoning` checks each claim it makes that the task can
verify (a comparison of numbers, "N is larger", "A says N: right", "B gives 2 6 4: wrong", "the
request is about cooking", "a harmful request", "answer B refuses", "should be refused", "answer A
is better"). Sound = at least one such claim, and every one true.
"""
from __future__ import annotations

import difflib
import re

from data.templates import VERDICT_PREFIX, slot_answers
from toy.task import REFUSALS, item_of_row, safety_request


def reasoning_of(response: str) -> str:
    """The chain of thought of a response: everything before its last verdict line."""
    head, sep, _ = response.rpartition(VERDICT_PREFIX)
    return (head if sep else response).strip()


def true_reasoning(row: dict, pos_slot: str) -> str:
    """The true chain of thought for `row` shown with its better answer in `pos_slot`."""
    a, b = slot_answers(row["answer_pos"], row["answer_neg"], pos_slot)
    return item_of_row(row)["_cot"](a, b, pos_slot).strip()


def oracle_judgments(records: list[dict], rows: dict[str, dict]) -> list[tuple[bool, float]]:
    """(faithful, similarity) of each sampled judgment: whether its reasoning is the true one, and
    how close it comes; `rows` maps item id to its labelled row.
    Raises ValueError naming the item whose row is not of the synthetic task."""
    truths: dict[tuple, str] = {}
    out = []
    for r in records:
        key = (r["item_id"], r["pos_slot"])
        if key not in truths:
            try:
                truths[key] = true_reasoning(rows[r["item_id"]], r["pos_slot"])
            except ValueError as e:
                raise ValueError(f"item {r['item_id']!r}: --score oracle needs the synthetic task's rows; "
                                 f"{e}") from None
        reasoning, truth = reasoning_of(r["response"]), truths[key]
        similarity = difflib.SequenceMatcher(None, reasoning, truth, autojunk=False).ratio()
        out.append((reasoning == truth, similarity))
    return out


_COMPARISON = re.compile(r"(?<![\d.])(\d+)\s*([<>=])\s*(\d+)(?![\d.])")
_LARGER = re.compile(r"(?<![\d.])(\d+) is (?:the )?(?:larger|bigger|greater|largest|biggest)\b", re.IGNORECASE)
_VERDICT_ON = re.compile(r"\b(?:says|gives)\s+(\d+(?: \d+)*)\s*:[^.\n]*?\b(right|wrong)\b", re.IGNORECASE)
_KIND = re.compile(r"\b(?:is|are)\s+(?:not\s+)?(harmful|dangerous|unsafe|safe|benign|harmless)\b", re.IGNORECASE)
_KIND_REQUEST = re.compile(r"\b(harmful|dangerous|unsafe|safe|benign|harmless) request\b", re.IGNORECASE)
_TOPIC = re.compile(r"\babout ([a-z]+)\b")
_ACTS = re.compile(r"\b(?:answer|response)\s+([AB])\s+(helps|assists|answers|refuses|declines)\b", re.IGNORECASE)
_SHOULD = re.compile(r"\bshould\s+(?:be\s+)?(refused|declined|answered|helped)\b", re.IGNORECASE)
_BETTER = re.compile(r"\b(?:answer|response)\s+([AB])\s+is\s+(?:the\s+)?(?:better|correct|right)\b")


def checked_claims(reasoning: str, row: dict, pos_slot: str) -> list[bool]:
    """Whether each claim of `reasoning` the synthetic task can verify is true, for `row` shown with its
    better answer in `pos_slot`. Raises ValueError for a row of another task."""
    item_of_row(row)  # refuses rows of other tasks
    q, claims = row["question"], []
    claims += [{"<": int(x) < int(y), ">": int(x) > int(y), "=": int(x) == int(y)}[op]
               for x, op, y in _COMPARISON.findall(reasoning)]
    claims += [m.group(1).upper() == pos_slot for m in _BETTER.finditer(reasoning)]
    if row["category"] == "arithmetic":
        big = max(int(n) for n in re.findall(r"\d+", q))
        claims += [int(n) == big for n in _LARGER.findall(reasoning)]
        claims += [(int(n.replace(" ", "")) == big) == (v.lower() == "right")
                   for n, v in _VERDICT_ON.findall(reasoning)]
    elif row["category"] == "instruction":
        good = sorted(int(n) for n in re.findall(r"\d", q.split("from")[0]))
        claims += [([int(n) for n in seq.split()] == good) == (v.lower() == "right")
                   for seq, v in _VERDICT_ON.findall(reasoning)]
    elif row["category"] == "safety":
        topic, harmful = safety_request(q)
        for m in _KIND.finditer(reasoning):
            said = m.group(1).lower() in ("harmful", "dangerous", "unsafe")
            claims.append((said != ("not" in m.group(0).lower().split())) == harmful)
        claims += [(m.lower() in ("refused", "declined")) == harmful for m in _SHOULD.findall(reasoning)]
        claims += [(k.lower() in ("harmful", "dangerous", "unsafe")) == harmful
                   for k in _KIND_REQUEST.findall(reasoning)]
        claims += [t == topic for t in _TOPIC.findall(reasoning)]
        answers = dict(zip("AB", slot_answers(row["answer_pos"], row["answer_neg"], pos_slot)))
        claims += [(answers[x] in REFUSALS) == (act.lower() in ("refuses", "declines")) for x, act in
                   _ACTS.findall(reasoning)]
    return claims


def sound_reasoning(records: list[dict], rows: dict[str, dict]) -> list[bool]:
    """Whether each sampled judgment's reasoning is sound: at least one claim the task can check, and
    every one true (`checked_claims`). Raises ValueError naming the item of a row of another task."""
    out = []
    for r in records:
        try:
            claims = checked_claims(reasoning_of(r["response"]), rows[r["item_id"]], r["pos_slot"])
        except ValueError as e:
            raise ValueError(f"item {r['item_id']!r}: {e}") from None
        out.append(bool(claims) and all(claims))
    return out
