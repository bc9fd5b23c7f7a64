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
"""
from __future__ import annotations

import difflib

from data.templates import VERDICT_PREFIX, slot_answers
from toy.task import item_of_row


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
