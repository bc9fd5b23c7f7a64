"""The verdict parser on judge outputs as real models write them: the last verdict wins,
ambiguous ones are None, markdown and JSON forms are read, and nothing is ever guessed."""
import pytest

from generate.parsing import parse_verdict

LONG_COT = (
    "Let me compare the two responses.\n\n1. **Accuracy**: Response A states that the boiling point of "
    "water at sea level is 100 °C, which is correct. Response B claims 90 °C, which is wrong.\n"
    "2. **Helpfulness**: both are short, but A also explains why pressure matters.\n\n"
)
CASES = [
    # the project's own format, plain and as instruct models decorate it
    ("84 + 3 = 87. Answer A says 87. Answer B says 86. Answer A matches 87.\nVerdict: A", "A"),
    ("The request is harmful. Answer B refuses.\nVerdict: B", "B"),
    ("reasoning...\nverdict: b", "B"),  # lower case, alone on its line
    ("Reasoning.\nVerdict: A. I hope this helps, even though B tried.", "A"),  # trailing text
    (LONG_COT + "**Verdict**: A", "A"),
    (LONG_COT + "**Verdict:** B", "B"),
    (LONG_COT + "Verdict: **B**", "B"),
    (LONG_COT + "### Verdict\n\nResponse A", "A"),
    (LONG_COT + "## Final Verdict\n**B**", "B"),
    ("Verdict: Answer A is better.", "A"),
    ("Final verdict: Response B", "B"),
    ("The verdict is B.", "B"),
    ("Verdict - A", "A"),
    ("Verdict: [[B]]", "B"),
    ("Verdict: (A)", "A"),
    ("Verdict: The better answer is B.", "B"),
    ("Verdict: A\nVerdict: A", "A"),  # repeated, consistent
    # the last verdict wins: judges think aloud before they decide
    ("At first glance, verdict: A looks right, but B handles the edge case.\nVerdict: B", "B"),
    ("Verdict: A\nWait, I misread answer A's number. Let me redo it: 473 > 438, so B is right.\nVerdict: B", "B"),
    ('{"Chosen answer": "A"}\nVerdict: B', "B"),
    ("[[A]] ... on reflection [[B]]", "B"),
    # the paper's JSON form
    ('{"CoT": "A is right because 2+2=4", "Chosen answer": "A"}', "A"),
    ('{"CoT": "B cites a source", "Chosen answer": "b"}', "B"),
    ('{"CoT": "unterminated string, "Chosen answer": "B"', "B"),  # malformed JSON, field readable
    ("```json\n{\"CoT\": \"...\", \"Chosen answer\": \"Answer A\"}\n```", "A"),
    ('{"CoT": "The earlier verdict: B was hasty; A is correct.", "Chosen answer": "A"}', "A"),
    ('{"verdict": "B", "reason": "more complete"}', "B"),
    # RewardBench / MT-Bench
    ("After comparing both, [[A]]", "A"),
    ("My final verdict is [[B]].", "B"),
    ("Both are equally good, so my final verdict is [[C]].", None),  # MT-Bench's tie
    # ambiguous -> None
    ("Verdict: a draw", None),
    ("Verdict: A tie.", None),
    ("Verdict: Neither answer is acceptable.", None),
    ("Verdict: Both", None),
    ("Verdict: A and B are equally correct.", None),
    ("Verdict: A or B", None),
    ("Verdict: A/B", None),
    ('{"CoT": "both fine", "Chosen answer": "tie"}', None),
    ("Verdict: A\nOn second thought they are the same. Verdict: tie", None),  # the last word is a tie
    # no verdict -> None, never a guess
    ("Answer A is correct.", None),
    ("I think both are fine.", None),
    ("Before I give a verdict, let me check answer A once more. A says 87.", None),  # 'verdict' in prose
    ('{"CoT": "no choice given"}', None),
    ('{"CoT": "x", "Chosen answer": ', None),  # malformed JSON, field unreadable
    ("Verdict:", None),
    ("Verdict: AB", None),
    ("Verdict: Apples are healthier.", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_the_table_is_large_and_covers_both_letters_and_none():
    assert len(CASES) >= 25
    assert {e for _, e in CASES} == {"A", "B", None}


@pytest.mark.parametrize("text,expected", [c for c in CASES if c[1] is not None])
def test_the_verdict_position_points_at_the_letter_of_the_last_verdict(text, expected):
    from generate.parsing import verdict_position

    letter, position = verdict_position(text)
    assert letter == expected and text[position].upper() == expected
    assert parse_verdict(text[position + 1:]) is None  # no verdict after it: it is the last one
