"""Reading the verdict out of a judge's response.

Three forms are understood: the project's own line "Verdict: A", the paper's JSON
{"CoT": ..., "Chosen answer": "A"} (also when the JSON around it is malformed), and RewardBench's
"[[A]]". Every claim in the text is collected; exactly one distinct letter is the verdict. No
claim, or claims for both letters, gives None: an unreadable judgment is never guessed (the
authors' code silently turned them into "A", which hides failures and teaches position bias).
"""
from __future__ import annotations

import re

_LETTER = r"\[{0,2}\s*[\"'*(]*\s*([AaBb])\s*[\"'*)]*\s*\]{0,2}"
_VERDICT_LINE = re.compile(
    r"verdict\s*[:=]\s*\**\s*(?:(?:answer|response|option)\s+)?" + _LETTER
    + r"(?=$|[\s.,;!:])(\s*(?:or|and|/|&)\s*(?:(?:answer|response|option)\s+)?\[{0,2}[AaBb]\b)?",
    re.IGNORECASE | re.MULTILINE,
)
_JSON_CHOICE = re.compile(r"[\"']?chosen[ _]answer[\"']?\s*:\s*[\"']?\s*(?:answer\s+)?([AaBb])\b", re.IGNORECASE)
_DOUBLE_BRACKET = re.compile(r"\[\[\s*([AaBb])\s*\]\]")


def parse_verdict(response: str) -> str | None:
    """'A', 'B', or None when there is no verdict or it is ambiguous."""
    if not response:
        return None
    claims: set[str] = set()
    for m in _VERDICT_LINE.finditer(response):
        if m.group(2):  # "Verdict: A or B"
            return None
        claims.add(m.group(1).upper())
    claims.update(m.group(1).upper() for m in _JSON_CHOICE.finditer(response))
    claims.update(m.group(1).upper() for m in _DOUBLE_BRACKET.finditer(response))
    return claims.pop() if len(claims) == 1 else None
