"""The "w/o CoT-S" ablation: M-DPO pairs straight from the labels, without any sampling.

For every labelled pair, template and answer order, the chosen response is a judgment whose
verdict picks the good answer and the rejected one the same judgment with the other verdict.
The file has the pairs.jsonl format, so run_m_dpo.py trains on it unchanged.

    python -m generate.label_pairs --model_name_or_path SFT --pref_file prefs.jsonl --output_file pairs.jsonl
"""
from __future__ import annotations

from dataclasses import dataclass, field

from data.schemas import LEVEL_VALUES, load_prefs
from data.templates import ORDERS, format_response, judge_prompt_groups, template_ids
from models.loading import load_tokenizer
from utils.config import check_settings, parse_args, require, run_main
from utils.io import write_jsonl

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


@dataclass
class LabelPairsArguments:
    model_name_or_path: str = field(default=None, metadata={"help": "For the tokenizer's chat template."})
    pref_file: str = field(default=None, metadata={"help": "Labelled pairs {id, question, answer_pos, answer_neg}."})
    output_file: str = field(default=None, metadata={"help": "The pairs, in pairs.jsonl's format."})
    templates: str = field(default="all")
    orders: str = field(default="both", metadata={"help": "both | A | B: slot(s) of the good answer."})
    reasoning: str = field(default=DEFAULT_REASONING, metadata={"help": "The text before the verdict line."})
    max_prompt_length: int = field(default=None, metadata={"help": "The prompt budget refinement uses."})


def parse(argv=None) -> tuple[LabelPairsArguments]:
    return parse_args((LabelPairsArguments,), argv, renamed={"output": "--output_file"})


def main(argv=None) -> None:
    (a,) = parse(argv)
    require(model_name_or_path=a.model_name_or_path, pref_file=a.pref_file, output_file=a.output_file)
    check_settings(a, choices={"orders": tuple(ORDERS)})
    prefs = load_prefs(a.pref_file)
    pairs = label_pairs(prefs, load_tokenizer(a.model_name_or_path), template_ids(a.templates), ORDERS[a.orders],
                        a.reasoning, a.max_prompt_length)
    write_jsonl(a.output_file, pairs)
    print(f"wrote {len(pairs)} label pairs from {len(prefs)} items to {a.output_file}")


if __name__ == "__main__":
    run_main(main)
