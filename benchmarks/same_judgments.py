"""Whether two `run_eval.py` results files hold the same judgments: the check that a faster sampler
changed nothing (greedy judgments must be identical; P(A better) equal up to float rounding).

    python -m benchmarks.same_judgments before.json after.json
"""
from __future__ import annotations

import argparse
import json

KEYS = ("responses", "finished", "verdicts", "verdict", "correct")


def compare(before: dict, after: dict) -> dict:
    """Per eval file: orders judged, orders whose judgments and verdicts are identical, and the
    largest difference in P(A better) where both have one."""
    out = {}
    for name, items in before["items"].items():
        pairs = [(a, b) for x, y in zip(items, after["items"][name]) for a, b in zip(x["orders"], y["orders"])]
        gaps = [abs(a["p_pos"] - b["p_pos"]) for a, b in pairs if a["p_pos"] is not None and b["p_pos"] is not None]
        out[name] = {"orders": len(pairs), "identical": sum(all(a[k] == b[k] for k in KEYS) for a, b in pairs),
                     "max_p_diff": max(gaps, default=0.0)}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    a = p.parse_args(argv)
    with open(a.before, encoding="utf-8") as f, open(a.after, encoding="utf-8") as g:
        result = compare(json.load(f), json.load(g))
    for name, r in result.items():
        print(f"{name}: {r['identical']} of {r['orders']} judged orders identical; "
              f"max |P(A better) difference| {r['max_p_diff']:.1e}")
    if any(r["identical"] != r["orders"] for r in result.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
