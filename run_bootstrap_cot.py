"""Stage 0 of GFRIEND for a user with labelled pairs alone: the judge's SFT rows, chains of thought
written by a teacher model (by default the base model itself) from the labels.

    python run_bootstrap_cot.py      # the constants below
    python run_bootstrap_cot.py --config R.yaml --model_name_or_path M --pref_file prefs.jsonl \
        --output_dir O [--mode filter|rationalize --num_samples K ...]

`--mode filter` asks the plain judge prompts and keeps the judgments whose verdict matches the
label; `--mode rationalize` tells the teacher the better answer and keeps its reasoning under the
plain prompt, dropping judgments that cite the hint (the work itself: generate/bootstrap.py).
Writes O/sft.jsonl (run_sft.py's --train_file), O/samples.jsonl (every judgment and why it was kept
or dropped) and O/stats.json (coverage, rows per item, verdict balance, drops), stats.json last.
Items are sampled in fixed chunks, each with its own seed; a stopped run started again with the
same arguments skips finished chunks and ends with the same files.
"""
# What `python run_bootstrap_cot.py` runs with no arguments: point these at your teacher and pairs.
MODEL = "outputs/models/smollm2-135m-instruct"  # the teacher: a folder, a hub id or --gguf_file
PREF_FILE = "outputs/data/prefs.jsonl"  # labelled pairs {id, question, answer_pos, answer_neg}: `make data`
OUTPUT_DIR = "outputs/cot"  # sft.jsonl: run_sft.py's --train_file
CONFIG = "configs/recipes/smollm2-135m/cot.yaml"  # every other setting (configs/recipes/)

import os

from data.templates import template_ids
from generate.backends import build_sampler, labelled_pairs_to_sample
from generate.bootstrap import (MODES, BootstrapArguments, bootstrap_stats, prompt_groups, sample_chunk,
                                select_rows, sft_rows)
from generate.sampling import SAMPLERS, check_sampling_lengths, parse_temperatures
from generate.vllm_sampler import VLLMOptions, require_vllm
from models.loading import ModelArguments, load_model, model_context_length
from utils.config import check_settings, parse_args, run_main
from utils.io import DataError, write_json, write_jsonl
from utils.sharding import check_fingerprint, process_state, remove_shards, run_in_chunks
from utils.seed import set_seed


def parse(argv=None) -> tuple[ModelArguments, BootstrapArguments, VLLMOptions]:
    """The run's settings: flags over the --config file over the constants above."""
    return parse_args((ModelArguments, BootstrapArguments, VLLMOptions), argv, defaults={
        "config": CONFIG, "model_name_or_path": MODEL, "pref_file": PREF_FILE, "output_dir": OUTPUT_DIR})


def validate(args: BootstrapArguments, model_args: ModelArguments) -> list[float]:
    """Every setting checked before anything is loaded or written; returns the temperatures."""
    check_settings(args, at_least={"num_samples": 1, "max_new_tokens": 1, "max_prompt_length": 1,
                                   "max_rows_per_item": 1, "max_items": 1, "items_per_chunk": 1,
                                   "generation_batch_size": 1},
                   above={"top_p": 0.0}, at_most={"top_p": 1.0}, choices={"mode": MODES, "sampler": SAMPLERS})
    if args.sampler == "vllm":
        require_vllm(model_args)
    template_ids(args.templates)
    return parse_temperatures(args.temperatures)


class ChunkJudgments:
    """utils.sharding.run_in_chunks' work on one chunk of items: their judgments and fates."""

    def __init__(self, sampler, args: BootstrapArguments, temperatures: list[float]):
        self.sampler, self.args, self.temperatures = sampler, args, temperatures

    def __call__(self, chunk_index: int, chunk: list[list[dict]]) -> list[dict]:
        return sample_chunk(chunk_index, [g for groups in chunk for g in groups], self.sampler, self.args,
                            self.temperatures)


def write_outputs(args: BootstrapArguments, records: list[dict], items: list[dict], tokenizer) -> dict:
    """sft.jsonl and samples.jsonl, then stats.json last (its presence marks a finished run). With
    no row kept there is no sft.jsonl and the run fails, saying what was dropped."""
    select_rows(records, args.max_rows_per_item, args.balance_orders, args.seed)
    rows = sft_rows(records, {str(it["id"]): it for it in items}, args.mode)
    stats = bootstrap_stats(records, items, rows, tokenizer, args)
    sft_path = os.path.join(args.output_dir, "sft.jsonl")
    if os.path.exists(sft_path):
        os.remove(sft_path)
    if rows:
        write_jsonl(sft_path, rows)
    write_jsonl(os.path.join(args.output_dir, "samples.jsonl"), records)
    remove_shards(args.output_dir, "samples")
    write_json(os.path.join(args.output_dir, "stats.json"), stats)
    line = summary_line(stats)
    if not rows:
        raise DataError(f"{args.pref_file}: the teacher kept no judgment ({line}); try --mode rationalize, more "
                        "--num_samples or a stronger --model_name_or_path")
    print(line)
    return stats


def summary_line(stats: dict) -> str:
    dropped = ", ".join(f"{n} {why}" for why, n in stats["dropped"].items() if n)
    return (f"bootstrap ({stats['mode']}): {stats['rows']} SFT rows from {stats['samples']} judgments, "
            f"{stats['items_covered']} of {stats['items']} items covered, verdicts A={stats['verdicts']['A']} "
            f"B={stats['verdicts']['B']}; dropped: {dropped or 'none'}")


def main(argv=None) -> None:
    model_args, args, vllm_options = parse(argv)
    temperatures, items, tokenizer = labelled_pairs_to_sample(model_args, args, validate)
    try:
        groups = prompt_groups(items, tokenizer, args, template_ids(args.templates))
    except DataError as e:
        raise DataError(f"{args.pref_file}: {e}") from None
    check_sampling_lengths(tokenizer, [(f"{args.pref_file}: item {g['row']['id']!r}, prompt {g['prompt_id']}",
                                        g["asked"]) for item_groups in groups for g in item_groups],
                           args.max_new_tokens, model_context_length(model_args, tokenizer))
    state = process_state()
    if state.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        check_fingerprint(os.path.join(args.output_dir, "bootstrap_args.json"), args, model_args.source,
                          exclude=(*BootstrapArguments.RESUMABLE, "output_dir"))
        if os.path.exists(os.path.join(args.output_dir, "stats.json")):
            os.remove(os.path.join(args.output_dir, "stats.json"))
    state.wait_for_everyone()
    set_seed(args.seed)
    model = load_model(model_args, tokenizer).to(state.device) if args.sampler == "hf" else None
    sampler = build_sampler(args.sampler, model_args, tokenizer, model, vllm_options, args.generation_batch_size,
                            args.top_p, args.seed)
    records = run_in_chunks(state, args.output_dir, "samples", groups, args.items_per_chunk,
                            lambda item_groups: str(item_groups[0]["row"]["id"]),
                            ChunkJudgments(sampler, args, temperatures), f"bootstrap ({args.mode})",
                            item_of=lambda r: r["item_id"],
                            key_of=lambda r: (r["item_id"], r["prompt_id"], r["temperature"], r["sample"]))
    if hasattr(sampler, "close"):
        sampler.close()
    if records is not None:  # process 0: every process's judgments are in
        write_outputs(args, records, items, tokenizer)


if __name__ == "__main__":
    run_main(main)
