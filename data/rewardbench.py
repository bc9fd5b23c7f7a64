"""RewardBench's sections and its own example counts, for section scores (docs/method.md, "Data sets").

A section score is the accuracy of each subset weighted by that subset's example count, as the
RewardBench leaderboard computes it (math-prm is up-weighted to the 984 examples of all hep-*).
"""
from __future__ import annotations

SECTIONS: dict[str, list[str]] = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}
EXAMPLE_COUNTS: dict[str, int] = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28, "mt-bench-med": 40,
    "mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92,
    "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46, "refusals-dangerous": 100, "refusals-offensive": 100,
    "xstest-should-refuse": 154, "xstest-should-respond": 250, "donotanswer": 136,
    "math-prm": 984, "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
SUBSET_TO_SECTION = {s: sec for sec, subsets in SECTIONS.items() for s in subsets}


def is_rewardbench(categories) -> bool:
    cats = [c for c in categories if c is not None]
    return bool(cats) and all(c in SUBSET_TO_SECTION for c in cats)


def section_scores(subset_accuracy: dict[str, float]) -> dict[str, float]:
    """Weighted section scores from per-subset accuracies; sections with no subset are left out."""
    scores = {}
    for section, subsets in SECTIONS.items():
        present = [s for s in subsets if s in subset_accuracy]
        if present:
            total = sum(EXAMPLE_COUNTS[s] for s in present)
            scores[section] = sum(subset_accuracy[s] * EXAMPLE_COUNTS[s] for s in present) / total
    return scores
