"""SFT rows from labelled pairs alone: the teacher (by default the base model) writes the chains of
thought (run_bootstrap_cot.py is the command line).

Two ways, both known to work for generative judges:
- `filter` (rejection sampling, as Self-Taught Evaluators and J1's warm start): the teacher is asked
  the plain judge prompts (the project's templates, both answer orders, K samples); a judgment whose
  parsed verdict picks the labelled better answer is kept.
- `rationalize` (STaR): the prompt also says which answer is better and asks for the reasoning that
  leads there. The kept row holds the *plain* prompt, so a judgment that leans on the hint ("as
  stated", "I was told", "the label") would teach the student to cite a hint it never sees: such
  judgments are dropped (`leaks_hint`).

A kept judgment becomes a judge-form SFT row: its reasoning (the text before its verdict line) and
the labelled verdict in the canonical "Verdict: X" form, with the template it was written under.
Then: de-duplication, a cap per item that alternates the answer orders, and per category as many
rows with the better answer in slot A as in slot B (`select_rows`), so SFT cannot learn a slot.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from data.templates import apply_chat, fit_prompt, render_judge_prompt, slot_answers
from generate.parsing import verdict_position
from generate.sampling import SampleRequest
from utils.seed import derive_seed

MODES = ("filter", "rationalize")
# What the rationalizing teacher reads after the plain judge prompt ({L}: the labelled better slot).
# Short on purpose: asked for step-by-step reasoning, SmolLM2-135M mostly ran past a judgment's 96
# tokens before any verdict.
HINT = "\n\nAnswer {L} is the better one. In two or three sentences, explain why, then write 'Verdict: {L}'."
# Phrases that cite a hint or a label instead of reasoning (case-insensitive). A rationalized
# judgment with one is dropped: the student, trained on the plain prompt, would learn to invent one.
HINT_LEAKS = [
    r"\bhint(?:s|ed)?\b",
    r"\bas (?:already )?(?:stated|given|indicated|instructed|mentioned|specified|noted|told|said)\b",
    r"\b(?:i|we)(?:'ve| have| had)? (?:was |were |am |are |been )?(?:told|given|informed|instructed)\b",
    r"\byou (?:said|say|told|stated|state|mentioned|indicated|noted|specified)\b",
    r"\b(?:the|a|this|its|their) (?:label|labels|labell?ed|labelling|labeling|gold answer|ground[- ]truth)\b",
    r"\baccording to (?:the|your) (?:prompt|instructions?|user|record|reference|note)\b",
    r"\b(?:the|your) (?:prompt|instructions?|question) (?:says|said|states|stated|tells|told)\b",
    r"\b(?:is|was) (?:already )?(?:known|given|said|stated) to be (?:the )?(?:better|correct|right)\b",
]
_LEAK = re.compile("|".join(f"(?:{p})" for p in HINT_LEAKS), re.IGNORECASE)
ECHO_WORDS = 6  # a run of this many of the hint's words in a judgment is the hint echoed
# A reasoning shorter than this teaches no reasoning: SmolLM2's rationalize run (results/real_from_labels,
# commit f10b4cf) kept 13 of 104 rows under it, e.g. "B).", "Verb: x", "A: 1 5 3", "Verdict: A".
MIN_REASONING_WORDS = 5


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _echo_shingles() -> set[tuple[str, ...]]:
    words = [w for w in _words(HINT.format(L="")) if w not in ("a", "b")]
    return {tuple(words[i : i + ECHO_WORDS]) for i in range(len(words) - ECHO_WORDS + 1)}


_ECHOES = _echo_shingles()


def leaks_hint(text: str) -> bool:
    """Whether a judgment cites a hint, a label or being told (HINT_LEAKS), or echoes the hint's
    wording (ECHO_WORDS words of it in a row)."""
    if _LEAK.search(text):
        return True
    words = _words(text)
    return any(tuple(words[i : i + ECHO_WORDS]) in _ECHOES for i in range(len(words) - ECHO_WORDS + 1))


def reasoning_before_verdict(text: str) -> tuple[str | None, str]:
    """(verdict, the reasoning: the text before the line that states the last verdict), the verdict
    None when the text states none readable. Anything after the verdict line is left out, so the
    row ends in the canonical verdict line whatever form the teacher used."""
    verdict, pos = verdict_position(text)
    if verdict is None:
        return None, ""
    return verdict, text[: text.rfind("\n", 0, pos) + 1].strip()


@dataclass
class BootstrapArguments:
    pref_file: str = field(default=None, metadata={"help": "Labelled pairs {id, question, answer_pos, answer_neg}."})
    output_dir: str = field(default=None, metadata={
        "help": "sft.jsonl (run_sft.py's --train_file), samples.jsonl (every judgment and its fate), stats.json."})
    mode: str = field(default="filter", metadata={
        "help": "filter: plain judge prompts, keep the judgments whose verdict matches the label (rejection "
                "sampling). rationalize: the prompt also names the better answer and asks for the reasoning "
                "(STaR); the kept row holds the plain prompt, and a judgment citing the hint is dropped."})
    num_samples: int = field(default=4, metadata={"help": "K judgments per prompt (template x answer order)."})
    temperatures: str = field(default="0.7,1.0", metadata={"help": "Comma-separated; K is split over them."})
    top_p: float = field(default=1.0)
    templates: str = field(default="all", metadata={"help": "'all' or comma-separated template ids."})
    max_new_tokens: int = field(default=512, metadata={
        "help": "The judgment length; a judgment cut here is dropped (use evaluation's value)."})
    max_prompt_length: int = field(default=None, metadata={
        "help": "The plain prompt's budget (the one of every stage); the hint comes on top."})
    max_rows_per_item: int = field(default=4, metadata={
        "help": "SFT rows kept per labelled pair at most, the answer orders taken in turn."})
    balance_orders: bool = field(default=True, metadata={
        "help": "Per category, keep as many rows with the better answer in slot A as in slot B."})
    max_items: int = field(default=None, metadata={"help": "Use only the first N labelled pairs."})
    items_per_chunk: int = field(default=32, metadata={"help": "Unit of seeding and resuming."})
    generation_batch_size: int = field(default=128, metadata={"help": "Rows decoded together."})
    sampler: str = field(default="hf", metadata={"help": "hf (the loaded model) | vllm"})
    seed: int = field(default=0)

    # Settings that act after sampling: a stopped run may continue with other values.
    RESUMABLE = ("max_items", "max_rows_per_item", "balance_orders")


def asked_prompt(tokenizer, args: BootstrapArguments, template: str, row: dict, pos_slot: str) -> tuple[str, str]:
    """(the plain judge prompt the SFT row keeps, the prompt the teacher is asked): the same in
    filter mode; in rationalize mode the second has the hint after the judge's instructions, on the
    same fitted question and answers (its budget grows by the hint's tokens)."""
    fields = [row["question"], *slot_answers(row["answer_pos"], row["answer_neg"], pos_slot)]

    def render(hint: str):
        return lambda f: apply_chat(tokenizer, render_judge_prompt(template, *f) + hint)  # noqa: E731

    plain, _ = fit_prompt(tokenizer, render(""), fields, args.max_prompt_length)
    if args.mode == "filter":
        return plain, plain
    hint = HINT.format(L=pos_slot)
    budget = None if args.max_prompt_length is None else \
        args.max_prompt_length + len(tokenizer(hint, add_special_tokens=False)["input_ids"]) + 2
    return plain, fit_prompt(tokenizer, render(hint), fields, budget)[0]


def prompt_groups(rows: list[dict], tokenizer, args: BootstrapArguments, templates: list[str]) -> list[list[dict]]:
    """Every labelled pair's prompts: template x order of the answers, the plain and the asked one."""
    out = []
    for row in rows:
        groups = []
        for template in templates:
            for slot in ("A", "B"):
                plain, asked = asked_prompt(tokenizer, args, template, row, slot)
                groups.append({"row": row, "template": template, "pos_slot": slot, "prompt_id": f"{template}/{slot}",
                               "prompt": plain, "asked": asked})
        out.append(groups)
    return out


def judgment_fate(mode: str, pos_slot: str, text: str, finished: bool) -> tuple[str, str]:
    """(fate, reasoning) of one sampled judgment before selection: 'candidate' or why it is dropped
    (unfinished, unparseable, wrong_verdict, hint_leak, no_reasoning: under MIN_REASONING_WORDS words)."""
    if not finished:
        return "unfinished", ""
    verdict, reasoning = reasoning_before_verdict(text)
    if verdict is None:
        return "unparseable", ""
    if verdict != pos_slot:
        return "wrong_verdict", ""
    if mode == "rationalize" and leaks_hint(text):
        return "hint_leak", ""
    if len(_words(reasoning)) < MIN_REASONING_WORDS:
        return "no_reasoning", ""
    return "candidate", reasoning


def sample_chunk(chunk_index: int, groups: list[dict], sampler, args: BootstrapArguments,
                 temperatures: list[float]) -> list[dict]:
    """Every judgment of one chunk's prompts, each with its fate before selection."""
    from generate.refinement import samples_per_temperature

    requests, asked = [], []
    for t_index, (temp, k) in enumerate(zip(temperatures, samples_per_temperature(args.num_samples, temperatures))):
        for n, g in enumerate(groups if k else []):
            requests.append(SampleRequest(g["asked"], k, temp, derive_seed(args.seed, chunk_index, t_index, n)))
            asked.append((g, temp))
    records = []
    for (g, temp), completions in zip(asked, sampler.sample(requests, args.max_new_tokens)):
        row = g["row"]
        for j, c in enumerate(completions):
            fate, reasoning = judgment_fate(args.mode, g["pos_slot"], c.text, c.finished)
            records.append({"item_id": str(row["id"]), "category": row.get("category"), "prompt_id": g["prompt_id"],
                            "template": g["template"], "pos_slot": g["pos_slot"], "temperature": temp, "sample": j,
                            "response": c.text, "finished": c.finished, "fate": fate, "reasoning": reasoning})
    return records


def _dedupe_key(record: dict) -> tuple:
    return record["item_id"], record["pos_slot"], " ".join(record["reasoning"].split()).lower()


SELECTION_FATES = ("candidate", "kept", "duplicate", "over_cap", "order_balance")


def select_rows(records: list[dict], max_rows_per_item: int, balance_orders: bool, seed: int = 0) -> None:
    """Sets each candidate's fate to kept, duplicate, over_cap or order_balance, in place.

    Per item: a reasoning already kept in the same answer order is a duplicate; then at most
    `max_rows_per_item` rows, taken from the two orders in turn (templates interleaved; an item's first
    row in the order its category has fewer rows in). Then per
    category the order with more rows gives up rows until both have as many, each time from the item
    holding most rows in that order, so the items covered stay covered where they can.
    """
    for r in records:  # a finished run's records, selected again with other limits
        if r["fate"] in SELECTION_FATES:
            r["fate"] = "candidate"
    seen, per_item = set(), defaultdict(lambda: {"A": [], "B": []})
    for r in records:
        if r["fate"] != "candidate":
            continue
        key = _dedupe_key(r)
        if key in seen:
            r["fate"] = "duplicate"
            continue
        seen.add(key)
        per_item[r["item_id"]][r["pos_slot"]].append(r)
    kept = defaultdict(lambda: {"A": [], "B": []})
    taken = defaultdict(lambda: {"A": 0, "B": 0})  # rows kept so far per category and order
    for item, slots in per_item.items():
        for slot in slots.values():
            slot.sort(key=lambda r: (r["sample"], r["temperature"], r["template"]))
        category = (slots["A"] or slots["B"])[0]["category"]
        while any(slots.values()) and sum(len(v) for v in kept[item].values()) < max_rows_per_item:
            # the order the item has fewer rows in, then the one its category has fewer rows in
            slot = min((s for s in "AB" if slots[s]), key=lambda s: (len(kept[item][s]), taken[category][s]))
            kept[item][slot].append(slots[slot].pop(0))
            taken[category][slot] += 1
        for r in slots["A"] + slots["B"]:
            r["fate"] = "over_cap"
    if balance_orders:
        by_category = defaultdict(list)
        for item, slots in kept.items():
            by_category[slots["A"][0]["category"] if slots["A"] else slots["B"][0]["category"]].append(item)
        for items in by_category.values():
            counts = {s: sum(len(kept[i][s]) for i in items) for s in "AB"}
            surplus = "A" if counts["A"] > counts["B"] else "B"
            for _ in range(abs(counts["A"] - counts["B"])):
                item = max(items, key=lambda i: (len(kept[i][surplus]), len(kept[i]["A"]) + len(kept[i]["B"]),
                                                 derive_seed(seed, i)))
                kept[item][surplus].pop()["fate"] = "order_balance"
    for slots in kept.values():
        for r in slots["A"] + slots["B"]:
            r["fate"] = "kept"


def sft_rows(records: list[dict], rows: dict[str, dict], mode: str) -> list[dict]:
    """The kept judgments as judge-form SFT rows (run_sft.py), in the labelled pairs' order."""
    out = []
    for r in records:
        if r["fate"] != "kept":
            continue
        row = rows[r["item_id"]]
        a, b = slot_answers(row["answer_pos"], row["answer_neg"], r["pos_slot"])
        out.append({"question": row["question"], "answer_a": a, "answer_b": b, "chain_of_thought": r["reasoning"],
                    "verdict": r["pos_slot"], "template": r["template"], "category": r["category"],
                    "item_id": r["item_id"], "source": f"bootstrap-{mode}"})
    return out


def bootstrap_stats(records: list[dict], items: list[dict], sft: list[dict], tokenizer,
                    args: BootstrapArguments) -> dict:
    """What the run kept and why the rest was dropped; coverage = items with at least one row."""
    fates = Counter(r["fate"] for r in records)
    rows_per_item = Counter(r["item_id"] for r in sft)
    by_category = defaultdict(lambda: {"items": 0, "covered": 0, "rows": 0, "A": 0, "B": 0})
    for item in items:
        c = by_category[str(item.get("category"))]
        c["items"] += 1
        c["covered"] += rows_per_item[str(item["id"])] > 0
    for r in sft:
        c = by_category[str(r["category"])]
        c["rows"] += 1
        c[r["verdict"]] += 1
    lengths = [len(tokenizer(r["chain_of_thought"], add_special_tokens=False)["input_ids"]) for r in sft]
    covered = sum(1 for item in items if rows_per_item[str(item["id"])])
    return {
        "mode": args.mode, "items": len(items), "samples": len(records), "items_covered": covered,
        "coverage": round(covered / max(1, len(items)), 4), "rows": len(sft),
        "rows_per_item": round(len(sft) / max(1, len(items)), 3),
        "rows_per_covered_item": round(len(sft) / max(1, covered), 3),
        "verdicts": {s: sum(r["verdict"] == s for r in sft) for s in "AB"},
        "dropped": {f: fates[f] for f in ("unfinished", "unparseable", "wrong_verdict", "hint_leak", "no_reasoning",
                                          "duplicate", "over_cap", "order_balance")},
        "hint_leaks": fates["hint_leak"], "unparseable": fates["unparseable"],
        "mean_reasoning_tokens": round(sum(lengths) / len(lengths), 1) if lengths else None,
        "by_category": dict(sorted(by_category.items())),
    }

