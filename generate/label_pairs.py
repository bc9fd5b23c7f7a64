"""The "w/o CoT-S" ablation: M-DPO pairs straight from the labels, without any sampling.

For every labelled pair, template and answer order, the chosen response is a judgment whose
verdict picks the good answer and the rejected one the same judgment with the other verdict.
The file has the pairs.jsonl format, so run_m_dpo.py trains on it unchanged.

    python -m generate.label_pairs --model_name_or_path SFT --pref_file prefs.jsonl --output pairs.jsonl
"""
from __future__ import annotations

import argparse
import sys

from data.schemas import LEVEL_VALUES, load_prefs
from data.templates import ORDERS, format_response, judge_prompt_groups, template_ids
from models.loading import load_tokenizer
from utils.io import DataError, write_jsonl

DEFAULT_REASONING = "Comparing the two answers to the question."


def label_pairs(prefs: list[dict], tokenizer, templates: list[str], slots=("A", "B"),
                reasoning: str = DEFAULT_REASONING, max_prompt_length: int | None = None) -> list[dict]:
    pairs = []
    for item in prefs:
        for g in judge_prompt_groups(tokenizer, item, templates, slots, max_prompt_length):
            good, bad = g["pos_slot"], "B" if g["pos_slot"] == "A" else "A"
            pairs.append({"item_id": str(item["id"]), "prompt_id": g["prompt_id"], "prompt": g["prompt"],
                          "chosen": format_response(reasoning, good), "rejected": format_response(reasoning, bad),
                          "chosen_level": "SA", "rejected_level": "SR", "chosen_score": 1.0, "rejected_score": 1.0,
                          "gap": LEVEL_VALUES["SA"] - LEVEL_VALUES["SR"]})
    return pairs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_name_or_path", required=True, help="for the tokenizer's chat template")
    p.add_argument("--pref_file", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--templates", default="all")
    p.add_argument("--orders", default="both", choices=sorted(ORDERS))
    p.add_argument("--reasoning", default=DEFAULT_REASONING, help="the text before the verdict line")
    p.add_argument("--max_prompt_length", type=int, default=None, help="the prompt budget refinement uses")
    a = p.parse_args(argv)
    try:
        prefs = load_prefs(a.pref_file)
        pairs = label_pairs(prefs, load_tokenizer(a.model_name_or_path), template_ids(a.templates), ORDERS[a.orders],
                            a.reasoning, a.max_prompt_length)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    write_jsonl(a.output, pairs)
    print(f"wrote {len(pairs)} label pairs from {len(prefs)} items to {a.output}")


if __name__ == "__main__":
    main()
