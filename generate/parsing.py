"""Reading the verdict out of a judge's response.

Understood: the project's own line "Verdict: A" and its markdown variants ("**Verdict**: B",
"**Verdict:** B", "Verdict: **B**", "### Verdict" with the answer on the next line, "Final verdict
is Answer A"), the paper's JSON {"CoT": ..., "Chosen answer": "A"} (also inside malformed JSON),
and RewardBench / MT-Bench's "[[A]]" (where "[[C]]" is a tie).

Every claim in the text is collected with its position and **the last one wins**: judges often
think aloud ("verdict: A? No, ...") before their final verdict. A last claim that is ambiguous — "a
draw", "tie", "neither", "both", "A and B", "A or B", "[[C]]" — gives None, as does no claim at all:
an unreadable judgment is never guessed (the authors' code silently turned them into "A", which
hides failures and teaches position bias).
"""
from __future__ import annotations

import re

TIE = 1e-3  # |P(A better) - 0.5| below this is no verdict (the judge's, and a vote's by mean P)

AMBIGUOUS = "ambiguous"
_KEYWORD = re.compile(r"(?:final\s+)?verdict|chosen[ _]answer", re.IGNORECASE)
_SEPARATOR = re.compile(r"""[\s*_"'`]*(?::|=|-|–|—|\bis\b)""", re.IGNORECASE)
_HEADING_END = re.compile(r"""[\s*_"'`]*\n""")
_PREFIX = re.compile(r"""(?:[\s*_"'`(\[{#>:]|\b(?:the|better|final|answer|response|option|assistant|output|"""
                     r"""candidate|model|choice|is)\b)*""", re.IGNORECASE)
_TIE = re.compile(r"(?:(?:an?|the|it'?s|its)\s+)?(?:tie|tied|draw|neither|both|equal|equally|none|same|"
                  r"inconclusive|undecided|no\s+(?:clear\s+)?(?:winner|preference|verdict))\b", re.IGNORECASE)
_UPPER = re.compile(r"\[{0,2}\s*([AB])(?![A-Za-z0-9])")
_LOWER_ALONE = re.compile(r"""\[{0,2}\s*([ab])\s*\]{0,2}[\s.!,;:)\]}"'*_`]*$""")
_SECOND = re.compile(r"""[\s*_"'\])]*(?:and|or|&|/|,|=|vs\.?|versus)\s*(?:answer\s+|response\s+|option\s+)?"""
                     r"""\[{0,2}\s*[AaBb](?![A-Za-z0-9])""", re.IGNORECASE)
_DOUBLE_BRACKET = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)


def _read_value(value: str) -> tuple[str, int] | None:
    """(the letter a claim's value names, or AMBIGUOUS; where the letter is in `value`), or None
    when the value names nothing."""
    start = _PREFIX.match(value).end()
    if _TIE.match(value, start):
        return AMBIGUOUS, start
    m = _UPPER.match(value, start) or _LOWER_ALONE.match(value, start)
    if not m:
        return None
    return (AMBIGUOUS if _SECOND.match(value, m.end()) else m.group(1).upper()), m.start(1)


def _claims(text: str):
    """(position of the letter, letter or AMBIGUOUS) for every verdict claim in `text`."""
    for m in _KEYWORD.finditer(text):
        sep = _SEPARATOR.match(text, m.end())
        heading = _HEADING_END.match(text, m.end())
        if sep:
            start = sep.end()
        elif heading:  # "### Verdict" with the answer on the next line
            start = heading.end() + len(text[heading.end():]) - len(text[heading.end():].lstrip())
        else:
            continue  # "verdict" in prose: "before giving a verdict, ..."
        claim = _read_value(text[start:].split("\n", 1)[0])
        if claim is not None:
            yield start + claim[1], claim[0]
    for m in _DOUBLE_BRACKET.finditer(text):
        letter = m.group(1).upper()
        yield m.start(1), letter if letter in ("A", "B") else AMBIGUOUS


def verdict_position(response: str) -> tuple[str | None, int | None]:
    """(verdict, the index in `response` of the letter that states it); (None, None) when there
    is no verdict or the last one is ambiguous."""
    if not response:
        return None, None
    claims = sorted(_claims(response))
    if not claims or claims[-1][1] == AMBIGUOUS:
        return None, None
    return claims[-1][1], claims[-1][0]


def parse_verdict(response: str) -> str | None:
    """'A', 'B', or None when there is no verdict or the last one is ambiguous."""
    return verdict_position(response)[0]


def majority_verdict(verdicts: list[str | None]) -> str | None:
    """The letter most of several samples chose; None on a tie or when none is readable."""
    a, b = verdicts.count("A"), verdicts.count("B")
    return None if a == b else ("A" if a > b else "B")
