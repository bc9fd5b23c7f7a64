"""Stage 2 of GFRIEND: preference refinement (CoT sampling + perplexity scoring + multi-level pairs).

    python run_preference_refinement.py      # the constants below
    python run_preference_refinement.py --config R.yaml --model_name_or_path SFT --pref_file prefs.jsonl \
        --output_dir O [--num_samples K --temperatures 0.7,1.0 ...]

For every labelled pair and every prompt group (template x answer order) the SFT judge writes K
judgments; each is parsed, scored by its conditional perplexity, and given a level; accepted and
rejected judgments of the same prompt become DPO pairs (the work itself: generate/refinement.py).

Items are processed in fixed chunks (by position in the pref file), each with its own seed, and
samples.jsonl is appended chunk by chunk. Under `accelerate launch` the chunks are dealt to the
processes, each appends to its own samples.rankN.jsonl, and process 0 merges them into the same
files a single process writes. A run that is stopped and started again with the same
arguments skips finished chunks and ends with exactly the same files as an uninterrupted run.
pairs.jsonl and stats.json are written atomically at the end; stats.json is written last.
"""
# What `python run_preference_refinement.py` runs with no arguments: point these at your SFT judge
# and labelled pairs. A flag, or a value the --config file sets, overrides each.
MODEL = "outputs/sft"  # run_sft.py's OUTPUT_DIR
PREF_FILE = "outputs/data/prefs.jsonl"  # labelled pairs {id, question, answer_pos, answer_neg}: `make data`
OUTPUT_DIR = "outputs/refine"  # samples.jsonl, pairs.jsonl (run_m_dpo.py's PAIRS_FILE), stats.json
CONFIG = "configs/recipes/smollm2-135m/refine.yaml"  # every other setting (configs/recipes/)

import os

from data.templates import ORDERS, template_ids
from generate.backends import build_sampler, labelled_pairs_to_sample
from generate.levels import PAIRINGS, resolve_threshold
from generate.refinement import (SCORES, ChunkJudgments, RefinementArguments, finalize, item_id_of_groups,
                                 item_id_of_record, judgment_key, prompt_groups, reused_samples)
from generate.sampling import SAMPLERS, check_sampling_lengths, parse_temperatures
from generate.vllm_sampler import VLLMOptions, cpu_only, require_vllm
from models.loading import ModelArguments, load_model, model_context_length
from utils.config import check_settings, parse_args, run_main
from utils.io import DataError, write_json, write_jsonl
from utils.sharding import check_fingerprint, process_state, remove_shards, run_in_chunks
from utils.seed import set_seed


def parse(argv=None) -> tuple[ModelArguments, RefinementArguments, VLLMOptions]:
    """The run's settings: flags over the --config file over the constants above."""
    return parse_args((ModelArguments, RefinementArguments, VLLMOptions), argv, defaults={
        "config": CONFIG, "model_name_or_path": MODEL, "pref_file": PREF_FILE, "output_dir": OUTPUT_DIR})


def validate(args: RefinementArguments, model_args: ModelArguments | None = None) -> list[float]:
    """Every setting checked before anything is loaded or written; returns the temperatures."""
    check_settings(args, at_least={"num_samples": 1, "max_new_tokens": 1, "max_prompt_length": 1,
                                   "max_pairs_per_item": 1, "max_items": 1, "items_per_chunk": 1,
                                   "generation_batch_size": 1, "scoring_batch_size": 1, "scoring_max_tokens": 1},
                   above={"tau": 0.0, "top_p": 0.0}, at_most={"top_p": 1.0},
                   choices={"orders": tuple(ORDERS), "unfinished": ("reject", "drop"), "sampler": SAMPLERS,
                            "score_with": ("model", "sampler"), "score": tuple(SCORES), "pairing": PAIRINGS})
    if args.score == "verdict_prob" and args.score_with != "sampler" and args.samples_from is None:
        raise DataError("--score verdict_prob needs --score_with sampler (the verdict's log-prob is the sampler's)")
    if args.sampler == "vllm":
        require_vllm(model_args)
    template_ids(args.templates)
    resolve_threshold(args.threshold, [])
    return parse_temperatures(args.temperatures)


def start_output_dir(args: RefinementArguments, model_args: ModelArguments) -> None:
    """Refuse to mix samples of runs with different settings in one output_dir, and mark the run
    unfinished until its stats.json is written again. The record says whether every chunk's seed
    reaches its samples (vLLM's CPU build takes no per-request seeds)."""
    os.makedirs(args.output_dir, exist_ok=True)
    seeded = args.sampler == "hf" or not cpu_only()
    check_fingerprint(os.path.join(args.output_dir, "refine_args.json"), args, model_args.source,
                      exclude=(*RefinementArguments.RESUMABLE, "output_dir"),  # a moved run directory still resumes
                      extra={"per_chunk_seeds": seeded})
    stats_path = os.path.join(args.output_dir, "stats.json")
    if os.path.exists(stats_path):
        os.remove(stats_path)


def write_outputs(args: RefinementArguments, records: list[dict], pairs: list[dict], stats: dict) -> None:
    """samples.jsonl and pairs.jsonl, then stats.json last: its presence marks a finished run."""
    write_jsonl(os.path.join(args.output_dir, "samples.jsonl"), records)
    remove_shards(args.output_dir, "samples")  # merged into samples.jsonl
    write_jsonl(os.path.join(args.output_dir, "pairs.jsonl"), pairs)
    write_json(os.path.join(args.output_dir, "stats.json"), stats)
    print(summary_line(stats))


def summary_line(stats: dict) -> str:
    lv = stats["levels"]
    split = f"by the {stats['score']}" if stats["threshold"] is None else \
        f"at p={stats['threshold']:.4g} ({stats['score']})"
    return (f"refinement: {stats['items']} items, {stats['samples']} samples "
            f"(accuracy {stats['sample_accuracy']}, {stats['parse_failures']} unparseable, "
            f"{stats['unfinished']} unfinished, {stats['prompts_shortened']} on shortened prompts), "
            f"levels SA={lv['SA']} WA={lv['WA']} WR={lv['WR']} SR={lv['SR']} {split}, "
            f"{stats['pairs']} pairs ({stats['pairs_per_item']}/item, {stats['items_without_pairs']} items without)")


def main(argv=None) -> None:
    model_args, args, vllm_options = parse(argv)
    temperatures, items, tokenizer = labelled_pairs_to_sample(model_args, args, validate)
    groups = prompt_groups(items, tokenizer, args, template_ids(args.templates))
    check_sampling_lengths(tokenizer, [(f"{args.pref_file}: item {item['id']!r}, prompt {g['prompt_id']}", g["prompt"])
                                       for item_groups in groups for item, g in item_groups],
                           args.max_new_tokens, model_context_length(model_args, tokenizer), args.scoring_max_tokens)
    # One process, or one of several under `accelerate launch` / torchrun (gloo on CPU).
    state = process_state()
    if state.is_main_process:
        start_output_dir(args, model_args)
    state.wait_for_everyone()

    if args.samples_from is not None:  # nothing to sample: process 0 rebuilds levels and pairs
        if state.is_main_process:
            write_outputs(args, *finalize(reused_samples(args, model_args.source, groups), args, items))
        return
    set_seed(args.seed)
    model = None
    if args.sampler == "hf" or args.score_with == "model":  # vLLM with its own scores needs no second model
        model = load_model(model_args, tokenizer).to(state.device)
    sampler = build_sampler(args.sampler, model_args, tokenizer, model, vllm_options, args.generation_batch_size,
                            args.top_p, args.seed, logprobs=args.score_with == "sampler")
    records = run_in_chunks(state, args.output_dir, "samples", groups, args.items_per_chunk, item_id_of_groups,
                            ChunkJudgments(sampler, model, tokenizer, args, temperatures), "refine",
                            item_of=item_id_of_record, key_of=judgment_key)
    if hasattr(sampler, "close"):
        sampler.close()
    if records is not None:  # process 0: it merges every process's judgments and writes the outputs
        write_outputs(args, *finalize(records, args, items))


if __name__ == "__main__":
    run_main(main)
