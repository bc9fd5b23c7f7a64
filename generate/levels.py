"""Multi-level labels and within-prompt preference pairs (docs/method.md, steps 2-3).

A sampled judgment is *correct* when its verdict picks the good answer. With its perplexity score
and a threshold p it gets one of four levels, ordered SA > WA > WR > SR:

    correct   & score >  p  -> SA (Strong Accept)     correct   & score <= p -> WA (Weak Accept)
    incorrect & score <= p  -> WR (Weak Reject)       incorrect & score >  p -> SR (Strong Reject)

A confidently wrong judgment is the one most strongly rejected. Pairs join an accepted and a
rejected sample of the *same item and the same exact prompt*: DPO compares two responses to one x.
"""
from __future__ import annotations

import statistics
from collections import defaultdict

from data.schemas import LEVEL_VALUES
from utils.io import DataError

ACCEPT = ("SA", "WA")
REJECT = ("WR", "SR")


def resolve_threshold(spec: str | float, scores: list[float]) -> float:
    """A number in [0, 1] (scores are exp(-PPL / tau), in (0, 1]), 'median', or a quantile 'qX'
    (e.g. 'q0.25') of the scores."""
    if isinstance(spec, (int, float)):
        spec = str(spec)
    spec = spec.strip()
    if spec == "median":
        return statistics.median(scores) if scores else 0.5
    if spec.startswith("q"):
        try:
            q = float(spec[1:])
        except ValueError:
            q = -1.0
        if not 0.0 < q < 1.0:
            raise DataError(f"--threshold quantile must be qX with 0 < X < 1, got {spec!r}")
        if not scores:
            return 0.5
        s = sorted(scores)
        pos = q * (len(s) - 1)  # linear interpolation, as numpy's default
        lo = int(pos)
        return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)
    try:
        value = float(spec)
    except ValueError:
        raise DataError(f"--threshold must be a number, 'median' or 'qX', got {spec!r}") from None
    if not 0.0 <= value <= 1.0:
        raise DataError(f"--threshold must be in [0, 1] (scores are exp(-PPL / tau)), got {spec!r}")
    return value


def assign_level(correct: bool, score: float, threshold: float) -> str:
    if correct:
        return "SA" if score > threshold else "WA"
    return "SR" if score > threshold else "WR"


def oracle_level(correct: bool, faithful: bool) -> str:
    """Levels when an oracle knows whether the reasoning is right (toy/oracle.py): a right verdict on
    true reasoning is SA, one by luck WA; a wrong verdict after true reasoning (a slip) is WR, one
    after false reasoning SR."""
    if correct:
        return "SA" if faithful else "WA"
    return "WR" if faithful else "SR"


PAIRINGS = ("accept_reject", "all_levels")


def build_pairs(samples: list[dict], max_pairs_per_item: int | None = None, pairing: str = "accept_reject",
                balance_orders: bool = False) -> list[dict]:
    """Pairs inside each (item, prompt) group, widest level gaps first.

    `samples` need item_id, prompt_id, prompt, response, level, score (and verdict, for the balance).
    Identical responses to the same prompt are counted once. `pairing` accept_reject (the paper's)
    joins an accepted and a rejected judgment (gaps 2-4); all_levels joins any two at different
    levels, the higher one chosen (gaps 1-4: SA > WA and WR > SR too). Per item, at most
    `max_pairs_per_item` pairs are kept, ranked by level gap, then by score difference, then by
    sample order (deterministic). With `balance_orders` an item keeps as many pairs whose chosen
    judgment says A as say B (the best-ranked of each, at most half the cap each), so a judge biased
    to one slot does not get its chosen judgments, and the NLL on them, mostly in that slot; an item
    whose pairs all choose one letter keeps none.
    """
    if pairing not in PAIRINGS:
        raise DataError(f"--pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in samples:
        if s.get("level") is None:
            continue
        key = (s["item_id"], s["prompt_id"])
        if any(o["response"] == s["response"] for o in groups[key]):
            continue
        groups[key].append(s)
    by_item: dict = defaultdict(list)
    for (item_id, _), group in groups.items():
        if pairing == "accept_reject":
            chosen, rejected = [s for s in group if s["level"] in ACCEPT], [s for s in group if s["level"] in REJECT]
        else:
            chosen = rejected = group
        for c in chosen:
            for r in rejected:
                if LEVEL_VALUES[c["level"]] > LEVEL_VALUES[r["level"]]:
                    by_item[item_id].append(_pair(c, r))
    pairs = []
    for item_id, cands in by_item.items():
        ranked = sorted(enumerate(cands),
                        key=lambda t: (-t[1]["gap"], -(t[1]["chosen_score"] - t[1]["rejected_score"]), t[0]))
        if balance_orders:
            sides = [[t for t in ranked if t[1]["chosen_verdict"] == letter] for letter in ("A", "B")]
            each = min(len(sides[0]), len(sides[1]))
            if max_pairs_per_item is not None:
                each = min(each, max_pairs_per_item // 2)
            kept = sides[0][:each] + sides[1][:each]
        else:
            kept = ranked if max_pairs_per_item is None else ranked[:max_pairs_per_item]
        pairs.extend(p for _, p in sorted(kept, key=lambda t: t[0]))  # keep generation order
    return pairs


def _pair(c: dict, r: dict) -> dict:
    return {
        "item_id": c["item_id"], "prompt_id": c["prompt_id"], "prompt": c["prompt"],
        "chosen": c["response"], "rejected": r["response"], "rejected_finished": r.get("finished", True),
        "chosen_level": c["level"], "rejected_level": r["level"], "chosen_verdict": c.get("verdict"),
        "chosen_score": c["score"], "rejected_score": r["score"],
        "gap": LEVEL_VALUES[c["level"]] - LEVEL_VALUES[r["level"]],
    }


def refinement_stats(samples: list[dict], pairs: list[dict], threshold: float, score: str = "ppl") -> dict:
    """The numbers a user checks first: how samples spread over levels and what pairs came out."""
    items = {s["item_id"] for s in samples}
    items_with_pairs = {p["item_id"] for p in pairs}
    levels = {lv: sum(1 for s in samples if s.get("level") == lv) for lv in LEVEL_VALUES}
    mean_ppl = {}
    for lv in LEVEL_VALUES:
        vals = [s["ppl"] for s in samples if s.get("level") == lv]
        mean_ppl[lv] = round(sum(vals) / len(vals), 4) if vals else None
    n = len(samples)
    return {
        "items": len(items),
        "samples": n,
        "parse_failures": sum(1 for s in samples if s["verdict"] is None),
        "unfinished": sum(1 for s in samples if not s.get("finished", True)),
        "prompts_shortened": sum(1 for s in samples if s.get("prompt_shortened")),
        "without_level": sum(1 for s in samples if s.get("level") is None),
        "retokenized": sum(1 for s in samples if s.get("retokenized")),
        "sample_accuracy": round(sum(1 for s in samples if s["correct"]) / n, 4) if n else None,
        "score": score,
        "threshold": threshold,
        "levels": levels,
        "mean_ppl_per_level": mean_ppl,
        "pairs": len(pairs),
        "pairs_per_item": round(len(pairs) / len(items), 3) if items else 0.0,
        "items_without_pairs": len(items - items_with_pairs),
        "pair_gaps": {str(g): sum(1 for p in pairs if p["gap"] == g) for g in sorted({p["gap"] for p in pairs})},
        "chosen_verdicts": {v: sum(1 for p in pairs if p.get("chosen_verdict") == v) for v in ("A", "B")},
    }
