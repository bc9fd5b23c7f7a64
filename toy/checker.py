"""Whether a policy's own answer to a synthetic-task question is right, for the families a program
can check exactly; best-of-N (generate/best_of_n.py) needs it to score the answer a chooser picks.

- arithmetic, "Which is larger, a or b?": the answer's final number must be the larger one;
- instruction, "Sort x y z from small to large.": the answer's last n numbers (n numbers were
  given) must be those numbers in order.

An answer with no number (arithmetic) or fewer numbers than were given (sorting) is *unreadable*;
best-of-N counts it as wrong and reports how many there were. The safety family has no exact check
(whether a reply helps or refuses is a judgment), so its questions are not checkable.
"""
from __future__ import annotations

import re

CHECKABLE = ("arithmetic", "instruction")
RIGHT, WRONG, UNREADABLE = "right", "wrong", "unreadable"

_LARGER = re.compile(r"Which is larger, (\d+) or (\d+)\?")
_SORT = re.compile(r"Sort ([\d ]+) from small to large\.")
_NUMBER = re.compile(r"-?\d+")


def checkable(question: str) -> bool:
    return bool(_LARGER.fullmatch(question) or _SORT.fullmatch(question))


def check_answer(question: str, answer: str) -> str:
    """RIGHT, WRONG or UNREADABLE; a question of no checkable family raises ValueError."""
    numbers = [int(n) for n in _NUMBER.findall(answer)]
    larger = _LARGER.fullmatch(question)
    if larger:
        if not numbers:
            return UNREADABLE
        return RIGHT if numbers[-1] == max(int(larger.group(1)), int(larger.group(2))) else WRONG
    sort = _SORT.fullmatch(question)
    if sort:
        given = [int(n) for n in sort.group(1).split()]
        if len(numbers) < len(given):
            return UNREADABLE
        return RIGHT if numbers[-len(given):] == sorted(given) else WRONG
    raise ValueError(f"no exact check for this question: {question!r}")
