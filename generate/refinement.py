"""Preference refinement's work, apart from its command line (run_preference_refinement.py).

One chunk of prompt groups is sampled and scored (`ChunkJudgments`, run by utils.sharding); once
every chunk is in, each usable judgment gets its level from the chosen confidence (`finalize`) and
accepted x rejected judgments of the same prompt become pairs (generate.levels). A run may also
take another finished refinement's judgments instead of sampling (`reused_samples`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from data.templates import ORDERS, judge_prompt_groups
from data.tokens import encode_response
from generate.calibration import confidences, verdict_token_logp
from generate.levels import assign_level, build_pairs, oracle_level, refinement_stats, resolve_threshold
from generate.parsing import parse_verdict
from generate.perplexity import ppl_score, response_perplexities
from generate.sampling import SampleRequest
from utils.fingerprint import changed_keys
from utils.io import DataError, read_jsonl
from utils.seed import derive_seed

# --score: the confidence behind the levels, by its name in generate.calibration (oracle: toy/oracle.py).
SCORES = {"ppl": "score", "verdict_prob": "verdict_prob", "agreement": "agreement", "oracle": None}


@dataclass
class RefinementArguments:
    pref_file: str = field(default=None, metadata={"help": "Labelled pairs {id, question, answer_pos, answer_neg}."})
    output_dir: str = field(default=None)
    num_samples: int = field(default=8, metadata={"help": "K judgments per prompt group, split over temperatures."})
    temperatures: str = field(default="0.7,1.0", metadata={"help": "Comma-separated sampling temperatures."})
    top_p: float = field(default=1.0)
    templates: str = field(default="all", metadata={"help": "'all' or comma-separated template ids."})
    orders: str = field(default="both", metadata={"help": "both | A | B: slot(s) of the good answer."})
    max_new_tokens: int = field(default=512, metadata={"help": "The same as evaluation's."})
    max_prompt_length: int = field(default=None, metadata={
        "help": "Prompts longer than this many tokens are shortened in the middle of the answers (then the "
                "question) before templating; use the same value in SFT, M-DPO and evaluation."})
    unfinished: str = field(default="reject", metadata={
        "help": "Samples cut at max_new_tokens: 'reject' (always a rejected level) or 'drop' (no level, no pair)."})
    tau: float = field(default=10.0, metadata={"help": "The paper's score = exp(-PPL / tau)."})
    score: str = field(default="ppl", metadata={
        "help": "The confidence that splits strong from weak levels and orders pairs: ppl (the paper's "
                "exp(-PPL / tau)), verdict_prob (the probability of the verdict letter where the judge wrote it; "
                "needs --score_with sampler) or agreement (the share of the item's samples that pick the same "
                "answer). A judgment the confidence cannot be had for (no verdict) gets 0. oracle (synthetic "
                "task only, the best case): strong when the reasoning is the item's true one, no threshold "
                "(toy/oracle.py)."})
    threshold: str = field(default="0.5", metadata={"help": "Score threshold p: a number, 'median' or 'qX'."})
    max_pairs_per_item: int = field(default=16)
    pairing: str = field(default="accept_reject", metadata={
        "help": "accept_reject (the paper's): an accepted judgment chosen over a rejected one of the same prompt "
                "(level gaps 2-4); all_levels: any two judgments of a prompt at different levels (gaps 1-4)."})
    balance_orders: bool = field(default=False, metadata={
        "help": "Per item, as many pairs whose chosen judgment says A as say B (half the cap each at most)."})
    max_items: int = field(default=None, metadata={"help": "Use only the first N items of pref_file."})
    items_per_chunk: int = field(default=16, metadata={"help": "Unit of seeding, batching and resuming."})
    generation_batch_size: int = field(default=128, metadata={
        "help": "Rows decoded together, samples included; a finished row takes the next waiting judgment."})
    scoring_batch_size: int = field(default=64, metadata={"help": "Sequences per scoring forward, at most."})
    scoring_max_tokens: int = field(default=None, metadata={
        "help": "Padded tokens per scoring forward, at most (bounds memory when lengths vary); none = no budget."})
    sampler: str = field(default="hf", metadata={"help": "hf (the loaded model, generate/decoding.py) | vllm"})
    score_with: str = field(default="sampler", metadata={
        "help": "Perplexities from the log-probs the sampler sampled with (sampler: no second pass; with vLLM no "
                "second model in memory either), or from a forward pass of the model over prompt and response "
                "(model). The two agree to ~1e-5; text that re-tokenizes to other ids than were sampled is "
                "scored again by a forward pass either way."})
    samples_from: str = field(default=None, metadata={
        "help": "A finished refinement's output_dir: take its judgments of this run's items (same judge, same "
                "sampling settings) instead of sampling again; threshold, levels and pairs are rebuilt over "
                "this run's items. A label curve's smaller label sets reuse the largest one's samples this way."})
    seed: int = field(default=0)

    # Fields that may change between a stopped run and its continuation: they act after sampling
    # (levels and pairs are rebuilt from the logged samples). Batch sizes may not: they decide
    # which rows share a random stream and a padded forward.
    RESUMABLE = ("max_items", "threshold", "max_pairs_per_item", "pairing", "balance_orders", "unfinished", "score")


def samples_per_temperature(k: int, temperatures: list[float]) -> list[int]:
    base, extra = divmod(k, len(temperatures))
    return [base + (1 if i < extra else 0) for i in range(len(temperatures))]


def prompt_groups(items: list[dict], tokenizer, args: RefinementArguments, templates: list[str]) -> list[list[tuple]]:
    """Every item's prompt groups, fitted to max_prompt_length, built once (chunks reuse them)."""
    try:
        return [[(item, g) for g in judge_prompt_groups(tokenizer, item, templates, ORDERS[args.orders],
                                                        args.max_prompt_length)] for item in items]
    except DataError as e:
        raise DataError(f"{args.pref_file}: {e}") from None


def sample_chunk(chunk_index: int, groups: list[tuple[dict, dict]], sampler, model, tokenizer,
                 args: RefinementArguments, temperatures: list[float]) -> list[dict]:
    """Sample, parse and score every judgment of one chunk's prompt groups; levels come later
    (they may depend on the scores of all chunks)."""
    requests, asked = [], []  # every temperature's requests in one call: the sampler keeps its batch full
    for t_index, (temp, k) in enumerate(zip(temperatures, samples_per_temperature(args.num_samples, temperatures))):
        if k == 0:
            continue
        for n, (item, g) in enumerate(groups):
            requests.append(SampleRequest(g["prompt"], k, temp, derive_seed(args.seed, chunk_index, t_index, n)))
            asked.append((item, g, temp))
    records, completions = [], []
    for (item, g, temp), samples in zip(asked, sampler.sample(requests, args.max_new_tokens)):
        for j, completion in enumerate(samples):
            completions.append(completion)
            verdict = parse_verdict(completion.text)
            records.append({
                "item_id": str(item["id"]), "category": item.get("category"), "prompt_id": g["prompt_id"],
                "template": g["template"], "pos_slot": g["pos_slot"], "temperature": temp, "sample": j,
                "prompt": g["prompt"], "prompt_shortened": g["shortened"], "response": completion.text,
                "finished": completion.finished, "verdict": verdict, "correct": verdict == g["pos_slot"],
            })
    if args.score_with == "sampler":  # the log-probs the engine sampled with; re-tokenized texts scored again
        sums, counts, retokenized = sampler.sequence_logps([r["prompt"] for r in records], completions)
        ppls = [math.exp(-lp / max(1, n)) for lp, n in zip(sums, counts)]
        for r, again, n, c in zip(records, retokenized, counts, completions):
            r["retokenized"], r["tokens"] = again, n
            r["verdict_logp"] = verdict_token_logp(tokenizer, c)  # a confidence of its own (generate.calibration)
    else:
        ppls = response_perplexities(model, tokenizer, [r["prompt"] for r in records],
                                     [r["response"] for r in records], args.scoring_batch_size,
                                     max_tokens=args.scoring_max_tokens, finished=[r["finished"] for r in records])
        for r in records:
            r["tokens"] = len(encode_response(tokenizer, r["response"], r["finished"]))
    for r, ppl in zip(records, ppls):
        r["ppl"] = ppl
        r["ppl_score"] = r["score"] = ppl_score(ppl, args.tau)
        r["level"] = None
    return records


class ChunkJudgments:
    """utils.sharding.run_in_chunks' work on one chunk of items (each a list of its prompt groups):
    its scored judgments."""

    def __init__(self, sampler, model, tokenizer, args: RefinementArguments, temperatures: list[float]):
        self.sampler, self.model, self.tokenizer = sampler, model, tokenizer
        self.args, self.temperatures = args, temperatures

    def __call__(self, chunk_index: int, chunk: list[list[tuple]]) -> list[dict]:
        groups = [group for item_groups in chunk for group in item_groups]
        return sample_chunk(chunk_index, groups, self.sampler, self.model, self.tokenizer, self.args,
                            self.temperatures)


def item_id_of_groups(item_groups: list[tuple]) -> str:
    """The id of the item whose prompt groups these are (a chunk's unit)."""
    return str(item_groups[0][0]["id"])


def item_id_of_record(record: dict) -> str:
    return record["item_id"]


def judgment_key(record: dict) -> tuple:
    """What tells two logged judgments apart (a judgment logged twice by a restart counts once)."""
    return record["item_id"], record["prompt_id"], record["temperature"], record["sample"]


def finalize(records: list[dict], args: RefinementArguments,
             items: list[dict] | None = None) -> tuple[list[dict], list[dict], dict]:
    """Levels for the usable samples (all, but with --unfinished drop the finished ones only; an
    unfinished sample is otherwise always rejected), then pairs and stats. Every sample stays in
    samples.jsonl; an unusable one has level null. `items` (the labelled rows) serve --score oracle."""
    def usable(r):
        return r["finished"] or args.unfinished != "drop"

    accepted = [r["correct"] and r["finished"] for r in records]  # an unfinished judgment is never accepted
    if args.score == "oracle":
        threshold = None
        levels = [oracle_level(a, f) for a, f in zip(accepted, oracle_confidences(records, items, args))]
    else:
        level_confidences(records, args)
        threshold = resolve_threshold(args.threshold, [r["score"] for r in records if usable(r)])
        levels = [assign_level(a, r["score"], threshold) for a, r in zip(accepted, records)]
    for r, level in zip(records, levels):
        r["level"] = level if usable(r) else None
    pairs = build_pairs(records, args.max_pairs_per_item, args.pairing, args.balance_orders)
    return records, pairs, refinement_stats(records, pairs, threshold, args.score)


def oracle_confidences(records: list[dict], items: list[dict], args: RefinementArguments) -> list[bool]:
    """--score oracle: whether each judgment's reasoning is its item's true one (which sets its
    strength); its `score` becomes the reasoning's similarity to it (the paper's stays in `ppl_score`)."""
    from toy.oracle import oracle_judgments

    try:
        judged = oracle_judgments(records, {str(it["id"]): it for it in items})
    except ValueError as e:
        raise DataError(f"{args.pref_file}: {e}") from None
    for r, (_, similarity) in zip(records, judged):
        r["score"] = similarity
    return [faithful for faithful, _ in judged]


def level_confidences(records: list[dict], args: RefinementArguments) -> None:
    """Every record's `score` (what levels and pairs use) from the --score confidence; the paper's
    exp(-PPL / tau) stays in `ppl_score`, so a rebuild with another --score starts from it."""
    for r in records:
        r["score"] = r["ppl_score"]
    if args.score == "ppl":
        return
    values = confidences(records)[SCORES[args.score]]
    if args.score == "verdict_prob" and records and all(v is None for v in values):
        raise DataError(f"{args.output_dir}: no sample has a verdict probability (refine with --score_with sampler)")
    for r, v in zip(records, values):
        r["score"] = 0.0 if v is None else v


def reused_samples(args: RefinementArguments, model_source: str, groups: list[list[tuple]]) -> list[dict]:
    """This run's items' judgments from the refinement in --samples_from, checked to come from the
    same judge and sampling settings and from the very prompts this run would sample from."""
    src = args.samples_from
    if not os.path.exists(os.path.join(src, "stats.json")):
        raise DataError(f"--samples_from {src}: not a finished refinement (no stats.json)")
    with open(os.path.join(src, "refine_args.json"), encoding="utf-8") as f:
        theirs = json.load(f)
    ours = {k: v for k, v in dataclasses.asdict(args).items()
            if k not in (*RefinementArguments.RESUMABLE, "output_dir", "pref_file", "samples_from")}
    ours["model_name_or_path"] = model_source
    changed = [k for k in changed_keys(theirs, ours) if k in ours]
    if changed:
        raise DataError(f"--samples_from {src}: sampled with other settings ({', '.join(changed)})")
    logged = read_jsonl(os.path.join(src, "samples.jsonl"))
    by_item = {}
    for r in logged:
        by_item.setdefault(r["item_id"], []).append(r)
    for item_groups in groups:
        item_id = item_id_of_groups(item_groups)
        prompts = {g["prompt_id"]: g["prompt"] for _, g in item_groups}
        found = by_item.get(item_id, [])
        if not found or {r["prompt_id"] for r in found} != set(prompts) or \
                any(prompts[r["prompt_id"]] != r["prompt"] for r in found):
            raise DataError(f"--samples_from {src}: no judgments of item {item_id!r} as {args.pref_file} states it")
    wanted = {item_id_of_groups(item_groups) for item_groups in groups}
    return [{k: v for k, v in r.items() if k != "level"} for r in logged if r["item_id"] in wanted]  # logged order
