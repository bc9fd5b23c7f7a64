import random
from collections import defaultdict

import pytest

from generate.levels import LEVEL_VALUES, assign_level, build_pairs, refinement_stats, resolve_threshold


def test_levels_at_and_around_the_threshold():
    p = 0.5
    assert assign_level(True, 0.5000001, p) == "SA"
    assert assign_level(True, 0.5, p) == "WA"  # score <= p is weak
    assert assign_level(True, 0.1, p) == "WA"
    assert assign_level(False, 0.5, p) == "WR"
    assert assign_level(False, 0.4999, p) == "WR"
    assert assign_level(False, 0.51, p) == "SR"  # confidently wrong: most strongly rejected


def test_threshold_specs():
    scores = [0.1, 0.9, 0.3, 0.7]
    assert resolve_threshold("median", scores) == pytest.approx(0.5)
    assert resolve_threshold("0.25", scores) == 0.25
    assert resolve_threshold(0.6, scores) == 0.6
    assert resolve_threshold("q0.25", scores) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        resolve_threshold("mean", scores)
    with pytest.raises(ValueError):
        resolve_threshold("q1.5", scores)
    levels = [assign_level(True, s, resolve_threshold("median", scores)) for s in scores]
    assert levels.count("SA") == 2 and levels.count("WA") == 2


def _random_samples(rng, n_items=6):
    samples = []
    for i in range(n_items):
        for prompt in ("t/A", "t/B", "u/A"):
            for j in range(rng.randint(1, 7)):
                correct = rng.random() < 0.5
                score = rng.random()
                samples.append({"item_id": f"item{i}", "prompt_id": prompt, "prompt": f"P{i}{prompt}",
                                "response": f"r{rng.randint(0, 5)}-{correct}", "correct": correct, "score": score,
                                "level": assign_level(correct, score, 0.5), "verdict": "A", "ppl": 1.0})
    return samples


@pytest.mark.parametrize("seed", range(20))
def test_pairs_stay_inside_one_prompt_and_the_cap_keeps_the_widest_gaps(seed):
    rng = random.Random(seed)
    samples = _random_samples(rng)
    full = build_pairs(samples, None)
    cap = rng.randint(1, 6)
    capped = build_pairs(samples, cap)
    by_key = {(s["item_id"], s["prompt_id"], s["response"]): s for s in samples}
    for p in full:
        c = by_key[(p["item_id"], p["prompt_id"], p["chosen"])]
        r = by_key[(p["item_id"], p["prompt_id"], p["rejected"])]
        assert c["prompt"] == r["prompt"] == p["prompt"]  # never across prompts or items
        assert c["correct"] and not r["correct"]
        assert p["gap"] == LEVEL_VALUES[p["chosen_level"]] - LEVEL_VALUES[p["rejected_level"]] > 0
    # no duplicate (prompt, chosen, rejected) even though responses repeat
    keys = [(p["prompt"], p["chosen"], p["rejected"]) for p in full]
    assert len(keys) == len(set(keys))
    per_item_full, per_item_cap = defaultdict(list), defaultdict(list)
    for p in full:
        per_item_full[p["item_id"]].append(p["gap"])
    for p in capped:
        per_item_cap[p["item_id"]].append(p["gap"])
    for item, gaps in per_item_full.items():
        kept = sorted(per_item_cap[item], reverse=True)
        assert len(kept) == min(cap, len(gaps))
        assert kept == sorted(gaps, reverse=True)[: len(kept)]  # the widest gaps survive


def test_stats_count_items_without_pairs():
    samples = [
        {"item_id": "a", "prompt_id": "t/A", "prompt": "x", "response": "good", "correct": True, "score": 0.9,
         "level": "SA", "verdict": "A", "ppl": 1.0},
        {"item_id": "a", "prompt_id": "t/A", "prompt": "x", "response": "bad", "correct": False, "score": 0.9,
         "level": "SR", "verdict": None, "ppl": 1.0},
        {"item_id": "b", "prompt_id": "t/A", "prompt": "y", "response": "good", "correct": True, "score": 0.1,
         "level": "WA", "verdict": "A", "ppl": 3.0},
    ]
    pairs = build_pairs(samples, 4)
    stats = refinement_stats(samples, pairs, 0.5)
    assert stats["pairs"] == 1 and stats["items_without_pairs"] == 1 and stats["parse_failures"] == 1
    assert stats["levels"] == {"SA": 1, "WA": 1, "WR": 0, "SR": 1}
    assert pairs[0]["gap"] == 4


def _samples_in_both_orders(rng, n_items=8):
    """Judgments of prompts whose better answer sits in A or in B: a right one says that letter."""
    samples = []
    for i in range(n_items):
        for prompt, good in (("t/A", "A"), ("t/B", "B"), ("u/A", "A"), ("u/B", "B")):
            for j in range(rng.randint(0, 6)):
                correct, score = rng.random() < 0.6, rng.random()
                verdict = good if correct else {"A": "B", "B": "A"}[good]
                samples.append({"item_id": f"item{i}", "prompt_id": prompt, "prompt": f"P{i}{prompt}",
                                "response": f"r{j}-{correct}", "correct": correct, "score": score, "ppl": 1.0,
                                "level": assign_level(correct, score, 0.5), "verdict": verdict})
    return samples


@pytest.mark.parametrize("seed", range(10))
def test_all_levels_pairing_adds_the_pairs_inside_the_accepted_and_the_rejected_side(seed):
    samples = _samples_in_both_orders(random.Random(seed))
    paper = build_pairs(samples, None)
    every = build_pairs(samples, None, pairing="all_levels")
    key = lambda p: (p["prompt"], p["chosen"], p["rejected"])  # noqa: E731
    assert {key(p) for p in paper} <= {key(p) for p in every}
    assert all(p["gap"] == LEVEL_VALUES[p["chosen_level"]] - LEVEL_VALUES[p["rejected_level"]] > 0 for p in every)
    inside = [p for p in every if key(p) not in {key(q) for q in paper}]
    assert all(p["gap"] == 1 and {p["chosen_level"], p["rejected_level"]} in ({"SA", "WA"}, {"WR", "SR"})
               for p in inside)
    assert {p["gap"] for p in paper} <= {2, 3, 4}
    with pytest.raises(ValueError, match="--pairing must be one of"):
        build_pairs(samples, None, pairing="every")


@pytest.mark.parametrize("seed", range(10))
def test_balanced_pairs_choose_as_many_a_verdicts_as_b_per_item_and_keep_the_best_of_each(seed):
    rng = random.Random(seed)
    samples = _samples_in_both_orders(rng)
    cap = rng.choice([2, 4, 5, None])
    full = build_pairs(samples, None)
    balanced = build_pairs(samples, cap, balance_orders=True)
    rank = lambda p: (-p["gap"], -(p["chosen_score"] - p["rejected_score"]))  # noqa: E731
    for item in {p["item_id"] for p in full}:
        sides = {v: sorted((rank(p) for p in full if p["item_id"] == item and p["chosen_verdict"] == v))
                 for v in "AB"}
        kept = {v: sorted(rank(p) for p in balanced if p["item_id"] == item and p["chosen_verdict"] == v) for v in "AB"}
        each = min(len(sides["A"]), len(sides["B"]), 10 ** 6 if cap is None else cap // 2)
        assert len(kept["A"]) == len(kept["B"]) == each  # an item with one letter only keeps none
        assert kept["A"] == sides["A"][:each] and kept["B"] == sides["B"][:each]
    stats = refinement_stats(samples, balanced, 0.5)
    assert stats["chosen_verdicts"]["A"] == stats["chosen_verdicts"]["B"] == len(balanced) // 2
