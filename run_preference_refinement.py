"""Stage 2 of GFRIEND: preference refinement (CoT sampling + perplexity scoring + multi-level pairs).

    python run_preference_refinement.py --config configs/refine_demo.yaml [--model_name_or_path M
        --pref_file prefs.jsonl --output_dir O --num_samples K --temperatures 0.7,1.0 ...]

For every labelled pair and every prompt group (template x answer order) the SFT judge writes K
judgments; each is parsed, scored by its conditional perplexity, and given a level; accepted and
rejected judgments of the same prompt become DPO pairs.

Items are processed in fixed chunks (by position in the pref file), each with its own seed, and
samples.jsonl is appended chunk by chunk. Under `accelerate launch` the chunks are dealt to the
processes, each appends to its own samples.rankN.jsonl, and process 0 merges them into the same
files a single process writes. A run that is stopped and started again with the same
arguments skips finished chunks and ends with exactly the same files as an uninterrupted run.
pairs.jsonl and stats.json are written atomically at the end; stats.json is written last.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from data.schemas import load_prefs
from data.templates import ORDERS, judge_prompt_groups, template_ids
from data.tokens import encode_response
from generate.calibration import confidences, verdict_token_logp
from generate.levels import assign_level, build_pairs, oracle_level, refinement_stats, resolve_threshold
from generate.parsing import parse_verdict
from generate.perplexity import ppl_score, response_perplexities
from generate.backends import build_sampler
from generate.sampling import SAMPLERS, check_sampling_lengths, parse_temperatures
from generate.vllm_sampler import VLLMOptions, cpu_only, require_vllm
from models.loading import ModelArguments, load_model, model_context_length, tokenizer_of
from utils.config import check_settings, parse_args, require, run_main
from utils.fingerprint import changed_keys
from utils.io import DataError, read_jsonl, write_json, write_jsonl
from utils.logging import get_logger
from utils.seed import derive_seed, set_seed
from utils.sharding import check_fingerprint, process_state, remove_shards, run_in_chunks

log = get_logger("refine")


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
        "help": "The confidence that splits strong from weak levels and orders pairs: ppl (the paper's exp(-PPL / "
                "tau)), verdict_prob (the probability of the verdict letter where the judge wrote it; needs "
                "--score_with sampler) or agreement (the share of the item's samples that pick the same answer). "
                "A judgment the confidence cannot be had for (no verdict) gets 0. oracle (synthetic task only, the "
                "best case): strong when the reasoning is the item's true one, no threshold (toy/oracle.py)."})
    threshold: str = field(default="0.5", metadata={"help": "Score threshold p: a number, 'median' or 'qX'."})
    drop_unparseable: bool = field(default=False, metadata={"help": "Drop samples without a verdict instead of rejecting them."})
    max_pairs_per_item: int = field(default=16)
    max_items: int = field(default=None, metadata={"help": "Use only the first N items of pref_file."})
    items_per_chunk: int = field(default=16, metadata={"help": "Unit of seeding, batching and resuming."})
    generation_batch_size: int = field(default=64, metadata={"help": "Sequences per generate call."})
    scoring_batch_size: int = field(default=64, metadata={"help": "Sequences per scoring forward, at most."})
    scoring_max_tokens: int = field(default=None, metadata={
        "help": "Padded tokens per scoring forward, at most (bounds memory when lengths vary); none = no budget."})
    sampler: str = field(default="hf", metadata={"help": "hf (the loaded model, generate/decoding.py) | vllm"})
    score_with: str = field(default="sampler", metadata={
        "help": "Perplexities from the log-probs the sampler sampled with (sampler: no second pass; with vLLM no "
                "second model in memory either), or from a forward pass of the model over prompt and response "
                "(model). The two agree to ~1e-5; text that re-tokenizes to other ids than were sampled is scored "
                "again by a forward pass either way."})
    samples_from: str = field(default=None, metadata={
        "help": "A finished refinement's output_dir: take its judgments of this run's items (same judge, same "
                "sampling settings) instead of sampling again; threshold, levels and pairs are rebuilt over this "
                "run's items. A label curve's smaller label sets reuse the largest one's samples this way."})
    seed: int = field(default=0)

    # Fields that may change between a stopped run and its continuation: they act after sampling
    # (levels and pairs are rebuilt from the logged samples). Batch sizes may not: they decide
    # which rows share a random stream and a padded forward.
    RESUMABLE = ("max_items", "threshold", "drop_unparseable", "max_pairs_per_item", "unfinished", "score")


def samples_per_temperature(k: int, temperatures: list[float]) -> list[int]:
    base, extra = divmod(k, len(temperatures))
    return [base + (1 if i < extra else 0) for i in range(len(temperatures))]


def process_chunk(chunk_index: int, groups: list[tuple[dict, dict]], sampler, model, tokenizer,
                  args: RefinementArguments, temperatures: list[float]) -> list[dict]:
    """Sample, parse and score every judgment of one chunk's prompt groups; levels come later
    (they may depend on the scores of all chunks)."""
    prompts = [g["prompt"] for _, g in groups]
    records, completions = [], []
    for t_index, (temp, k) in enumerate(zip(temperatures, samples_per_temperature(args.num_samples, temperatures))):
        if k == 0:
            continue
        outs = sampler.generate(prompts, k, temp, args.max_new_tokens, seed=derive_seed(args.seed, chunk_index, t_index))
        for (item, g), samples in zip(groups, outs):
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


def check_resume(args: RefinementArguments, model_args: ModelArguments) -> None:
    """Refuse to mix samples of runs with different settings in one output_dir. The record says
    whether every chunk's seed reaches its samples (vLLM's CPU build takes no per-request seeds)."""
    seeded = args.sampler == "hf" or not cpu_only()
    check_fingerprint(os.path.join(args.output_dir, "refine_args.json"), args, model_args.source,
                      exclude=(*RefinementArguments.RESUMABLE, "output_dir"),  # a moved run directory still resumes
                      extra={"per_chunk_seeds": seeded})


def validate(args: RefinementArguments, model_args: ModelArguments | None = None) -> list[float]:
    """Every setting checked before anything is loaded or written; returns the temperatures."""
    check_settings(args, at_least={"num_samples": 1, "max_new_tokens": 1, "max_prompt_length": 1,
                                   "max_pairs_per_item": 1, "max_items": 1, "items_per_chunk": 1,
                                   "generation_batch_size": 1, "scoring_batch_size": 1, "scoring_max_tokens": 1},
                   above={"tau": 0.0, "top_p": 0.0}, at_most={"top_p": 1.0},
                   choices={"orders": tuple(ORDERS), "unfinished": ("reject", "drop"), "sampler": SAMPLERS,
                            "score_with": ("model", "sampler"), "score": tuple(SCORES)})
    if args.score == "verdict_prob" and args.score_with != "sampler" and args.samples_from is None:
        raise DataError("--score verdict_prob needs --score_with sampler (the verdict's log-prob is the sampler's)")
    if args.sampler == "vllm":
        require_vllm(model_args)
    template_ids(args.templates)
    resolve_threshold(args.threshold, [])
    return parse_temperatures(args.temperatures)


def prompt_groups(items: list[dict], tokenizer, args: RefinementArguments, templates: list[str]) -> list[list[tuple]]:
    """Every item's prompt groups, fitted to max_prompt_length, built once (chunks reuse them)."""
    try:
        return [[(item, g) for g in judge_prompt_groups(tokenizer, item, templates, ORDERS[args.orders],
                                                        args.max_prompt_length)] for item in items]
    except DataError as e:
        raise DataError(f"{args.pref_file}: {e}") from None


def finalize(records: list[dict], args: RefinementArguments,
             items: list[dict] | None = None) -> tuple[list[dict], list[dict], dict]:
    """Levels for the usable samples (parseable if --drop_unparseable, finished if --unfinished drop;
    an unfinished sample is otherwise always rejected), then pairs and stats. Every sample stays in
    samples.jsonl; an unusable one has level null. `items` (the labelled rows) serve --score oracle."""
    def usable(r):
        return not ((args.drop_unparseable and r["verdict"] is None) or (args.unfinished == "drop" and not r["finished"]))

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
    pairs = build_pairs(records, args.max_pairs_per_item)
    return records, pairs, refinement_stats(records, pairs, threshold, args.score)


# --score: the confidence behind the levels, by its name in generate.calibration (oracle: toy/oracle.py).
SCORES = {"ppl": "score", "verdict_prob": "verdict_prob", "agreement": "agreement", "oracle": None}


def oracle_confidences(records: list[dict], items: list[dict], args: RefinementArguments) -> list[bool]:
    """--score oracle: whether each judgment's reasoning is its item's true one (which sets its
    strength); its `score` becomes the reasoning's similarity to it (the paper's stays in `ppl_score`)."""
    from toy.oracle import oracle_judgments

    for r in records:
        r["ppl_score"] = r.get("ppl_score", r["score"])
    try:
        judged = oracle_judgments(records, {str(it["id"]): it for it in items})
    except ValueError as e:
        raise DataError(f"{args.pref_file}: {e}") from None
    for r, (_, similarity) in zip(records, judged):
        r["score"] = similarity
    return [faithful for faithful, _ in judged]


def level_confidences(records: list[dict], args: RefinementArguments) -> None:
    """Every record's `score` (what levels and pairs use) from the --score confidence; the paper's
    exp(-PPL / tau) stays in `ppl_score` (samples logged before it existed kept it in `score`)."""
    for r in records:
        r["ppl_score"] = r["score"] = r.get("ppl_score", r["score"])
    if args.score == "ppl":
        return
    values = confidences(records)[SCORES[args.score]]
    if args.score == "verdict_prob" and records and all(v is None for v in values):
        raise DataError(f"{args.output_dir}: no sample has a verdict probability (refine with --score_with sampler)")
    for r, v in zip(records, values):
        r["score"] = 0.0 if v is None else v


def reused_samples(args: RefinementArguments, model_args: ModelArguments, groups: list[list[tuple]]) -> list[dict]:
    """This run's items' judgments from the refinement in --samples_from, checked to come from the
    same judge and sampling settings and from the very prompts this run would sample from."""
    src = args.samples_from
    if not os.path.exists(os.path.join(src, "stats.json")):
        raise DataError(f"--samples_from {src}: not a finished refinement (no stats.json)")
    with open(os.path.join(src, "refine_args.json"), encoding="utf-8") as f:
        theirs = json.load(f)
    ours = {k: v for k, v in dataclasses.asdict(args).items()
            if k not in (*RefinementArguments.RESUMABLE, "output_dir", "pref_file", "samples_from")}
    ours["model_name_or_path"] = model_args.source
    changed = [k for k in changed_keys(theirs, ours) if k in ours]
    if changed:
        raise DataError(f"--samples_from {src}: sampled with other settings ({', '.join(changed)})")
    logged = read_jsonl(os.path.join(src, "samples.jsonl"))
    by_item = {}
    for r in logged:
        by_item.setdefault(r["item_id"], []).append(r)
    for item_groups in groups:
        item = item_groups[0][0]
        prompts = {g["prompt_id"]: g["prompt"] for _, g in item_groups}
        found = by_item.get(str(item["id"]), [])
        if not found or any(prompts.get(r["prompt_id"]) != r["prompt"] for r in found) or \
                {r["prompt_id"] for r in found} != set(prompts):
            raise DataError(f"--samples_from {src}: no judgments of item {item['id']!r} as {args.pref_file} states it")
    wanted = {str(item_groups[0][0]["id"]) for item_groups in groups}
    return [{k: v for k, v in r.items() if k != "level"} for r in logged if r["item_id"] in wanted]  # logged order


def main(argv=None) -> None:
    model_args, args, vllm_options = parse_args((ModelArguments, RefinementArguments, VLLMOptions), argv)
    require(model_name_or_path=model_args.model_name_or_path, pref_file=args.pref_file, output_dir=args.output_dir)
    temperatures = validate(args, model_args)
    templates = template_ids(args.templates)
    items = load_prefs(args.pref_file)
    if args.max_items is not None:
        items = items[: args.max_items]
    tokenizer = tokenizer_of(model_args)
    groups = prompt_groups(items, tokenizer, args, templates)
    check_sampling_lengths(tokenizer, [(f"{args.pref_file}: item {item['id']!r}, prompt {g['prompt_id']}", g["prompt"])
                                       for item_groups in groups for item, g in item_groups],
                           args.max_new_tokens, model_context_length(model_args, tokenizer), args.scoring_max_tokens)
    # One process, or one of several under `accelerate launch` / torchrun (gloo on CPU).
    state = process_state()
    if state.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        check_resume(args, model_args)
        stats_path = os.path.join(args.output_dir, "stats.json")
        if os.path.exists(stats_path):
            os.remove(stats_path)  # this run's stats will replace it; until then the run is unfinished
    state.wait_for_everyone()

    if args.samples_from is not None:  # nothing to sample: process 0 rebuilds levels and pairs
        if not state.is_main_process:
            return
        records, pairs, stats = finalize(reused_samples(args, model_args, groups), args, items)
        write_outputs(args, records, pairs, stats)
        return
    set_seed(args.seed)
    model = None
    if args.sampler == "hf" or args.score_with == "model":  # vLLM with its own scores needs no second model
        model = load_model(model_args, tokenizer)
        model.to(state.device)
    sampler = build_sampler(args.sampler, model_args, tokenizer, model, vllm_options, args.generation_batch_size,
                            args.top_p, args.seed, logprobs=args.score_with == "sampler")
    records = run_in_chunks(state, args.output_dir, "samples", groups, args.items_per_chunk,
                            lambda item_groups: str(item_groups[0][0]["id"]),
                            lambda c, chunk: process_chunk(c, [ig for item_groups in chunk for ig in item_groups], sampler,
                                                           model, tokenizer, args, temperatures), "refine",
                            item_of=lambda r: r["item_id"],
                            key_of=lambda r: (r["item_id"], r["prompt_id"], r["temperature"], r["sample"]))
    if hasattr(sampler, "close"):
        sampler.close()
    if records is None:  # not process 0: it merges and writes the outputs
        return
    records, pairs, stats = finalize(records, args, items)
    write_outputs(args, records, pairs, stats)


def write_outputs(args: RefinementArguments, records: list[dict], pairs: list[dict], stats: dict) -> None:
    """samples.jsonl and pairs.jsonl, then stats.json last: its presence marks a finished run."""
    write_jsonl(os.path.join(args.output_dir, "samples.jsonl"), records)
    remove_shards(args.output_dir, "samples")  # merged into samples.jsonl
    write_jsonl(os.path.join(args.output_dir, "pairs.jsonl"), pairs)
    write_json(os.path.join(args.output_dir, "stats.json"), stats)
    print(summary_line(stats))


def split_by(stats: dict) -> str:
    """What split strong from weak levels, for the summary line."""
    if stats["threshold"] is None:
        return f"by the {stats['score']}"
    return f"at p={stats['threshold']:.4g} ({stats['score']})"


def summary_line(stats: dict) -> str:
    lv = stats["levels"]
    return (f"refinement: {stats['items']} items, {stats['samples']} samples "
            f"(accuracy {stats['sample_accuracy']}, {stats['parse_failures']} unparseable, "
            f"{stats['unfinished']} unfinished, {stats['prompts_shortened']} on shortened prompts), "
            f"levels SA={lv['SA']} WA={lv['WA']} WR={lv['WR']} SR={lv['SR']} {split_by(stats)}, "
            f"{stats['pairs']} pairs ({stats['pairs_per_item']}/item, {stats['items_without_pairs']} items without)")


if __name__ == "__main__":
    run_main(main)
