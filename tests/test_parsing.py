import pytest

from generate.parsing import parse_verdict

CASES = [
    # the project's own format
    ("84 + 3 = 87. Answer A says 87. Answer B says 86. Answer A matches 87.\nVerdict: A", "A"),
    ("The request is harmful. Answer B refuses.\nVerdict: B", "B"),
    ("reasoning...\nverdict: b", "B"),  # lower case
    ("Reasoning.\nVerdict: A. I hope this helps, even though B tried.", "A"),  # trailing text
    ("Verdict: **B**", "B"),
    ("Verdict: Answer A is better.", "A"),
    ("Verdict: [[B]]", "B"),
    ("Verdict: A\nVerdict: A", "A"),  # repeated, consistent
    # the paper's JSON form
    ('{"CoT": "A is right because 2+2=4", "Chosen answer": "A"}', "A"),
    ('{"CoT": "B cites a source", "Chosen answer": "b"}', "B"),
    ('{"CoT": "unterminated string, "Chosen answer": "B"', "B"),  # malformed JSON, field readable
    ("```json\n{\"CoT\": \"...\", \"Chosen answer\": \"Answer A\"}\n```", "A"),
    # RewardBench
    ("After comparing both, [[A]]", "A"),
    ("My final verdict is [[B]].", "B"),
    # no verdict / ambiguous -> None, never a guess
    ("Answer A is correct.", None),
    ("I think both are fine.", None),
    ('{"CoT": "no choice given"}', None),
    ('{"CoT": "x", "Chosen answer": ', None),  # malformed JSON, field unreadable
    ("Verdict: A\nVerdict: B", None),
    ("Verdict: A or B", None),
    ("Verdict: Both", None),
    ("Verdict:", None),
    ("Verdict: AB", None),
    ("[[A]] ... on reflection [[B]]", None),
    ('{"Chosen answer": "A"}\nVerdict: B', None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected
