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


def _read_value(value: str) -> str | None:
    """The letter a claim's value names, AMBIGUOUS, or None when it names nothing."""
    value = value[_PREFIX.match(value).end():]
    if _TIE.match(value):
        return AMBIGUOUS
    m = _UPPER.match(value) or _LOWER_ALONE.match(value)
    if not m:
        return None
    return AMBIGUOUS if _SECOND.match(value, m.end()) else m.group(1).upper()


def _claims(text: str):
    """(position, letter or AMBIGUOUS) for every verdict claim in `text`."""
    for m in _KEYWORD.finditer(text):
        sep = _SEPARATOR.match(text, m.end())
        if sep:
            value = text[sep.end():].split("\n", 1)[0]
        elif _HEADING_END.match(text, m.end()):  # "### Verdict" with the answer on the next line
            value = text[_HEADING_END.match(text, m.end()).end():].lstrip().split("\n", 1)[0]
        else:
            continue  # "verdict" in prose: "before giving a verdict, ..."
        letter = _read_value(value)
        if letter is not None:
            yield m.start(), letter
    for m in _DOUBLE_BRACKET.finditer(text):
        letter = m.group(1).upper()
        yield m.start(), letter if letter in ("A", "B") else AMBIGUOUS


def parse_verdict(response: str) -> str | None:
    """'A', 'B', or None when there is no verdict or the last one is ambiguous."""
    if not response:
        return None
    claims = sorted(_claims(response), key=lambda c: c[0])
    if not claims or claims[-1][1] == AMBIGUOUS:
        return None
    return claims[-1][1]
