"""Stage 3 of GFRIEND: multi-level weighted DPO (M-DPO) on the refined pairs.

    python run_m_dpo.py                      # the constants below
    python run_m_dpo.py --config R.yaml --model_name_or_path SFT --pairs_file pairs.jsonl --output_dir O
        [--weighting levels|scores|none --alpha 1.0 --beta 0.1 --weight_normalization none|batch|dataset ...]

The reference model is the starting checkpoint unless --ref_model_name_or_path names another.
`--weighting none` is plain DPO (the paper's "w/o M-DPO" ablation). Reference log-probs are
computed once and kept in output_dir/reference_logps.json: a resumed or repeated run with the same
pairs, tokenization and reference reuses them. The saved judge loads with `from_pretrained` as is
(LoRA adapters are merged).
"""
# What `python run_m_dpo.py` runs with no arguments: point these at your SFT judge and refined
# pairs. A flag, or a value the --config file sets, overrides each.
MODEL = "outputs/sft"  # run_sft.py's OUTPUT_DIR: the policy's start and the reference
PAIRS_FILE = "outputs/refine/pairs.jsonl"  # from run_preference_refinement.py's OUTPUT_DIR
OUTPUT_DIR = "outputs/gfriend"  # the trained judge (run_eval.py's MODEL)
CONFIG = "configs/recipes/smollm2-135m/mdpo.yaml"  # every other setting (configs/recipes/)

import gc
import os
from collections import Counter
from dataclasses import dataclass, field

from accelerate.utils.memory import clear_device_cache

from data.collate import IGNORE_INDEX
from data.schemas import load_pairs
from models.loading import ModelArguments, load_model, tokenizer_of
from models.losses import weights_for_pairs
from models.m_dpo_trainer import MDPOConfig, MDPOTrainer, PairCollator, encode_pair, pair_length
from models.reference_cache import ReferenceCache, reference_fingerprint
from models.training import check_training_setup, load_trainable_model, train_and_save
from utils.config import check_default_inputs, parse_args, require, run_main
from utils.io import DataError
from utils.logging import get_logger

log = get_logger("run_m_dpo")


@dataclass
class MDPOScriptArguments:
    pairs_file: str = field(default=None, metadata={"help": "pairs.jsonl from run_preference_refinement.py."})
    ref_model_name_or_path: str = field(default=None, metadata={"help": "Reference model; default: the start."})


def build_dataset(pairs: list[dict], tokenizer, args: MDPOConfig, path: str = "pairs") -> list[dict]:
    """Encoded pairs with their weights. A pair whose chosen equals its rejected teaches nothing
    and one longer than max_length cannot be trained without cutting it: both are left out and
    counted. A prompt over max_prompt_length means the pairs came from another budget: an error."""
    encoded, skipped = [], Counter()
    for i, p in enumerate(pairs):
        if p["chosen"] == p["rejected"] and p.get("chosen_finished", True) == p.get("rejected_finished", True):
            skipped["chosen equals rejected"] += 1
            continue
        ex = encode_pair(tokenizer, p["prompt"], p["chosen"], p["rejected"], 1.0, p.get("chosen_finished", True),
                         p.get("rejected_finished", True))
        prompt_tokens = ex["chosen_labels"].count(IGNORE_INDEX)
        if args.max_prompt_length is not None and prompt_tokens > args.max_prompt_length:
            raise DataError(f"{path}: record {i + 1}: the prompt has {prompt_tokens} tokens, more than "
                            f"--max_prompt_length {args.max_prompt_length}; use the value refinement used")
        if pair_length(ex) > args.max_length:
            skipped[f"longer than --max_length {args.max_length}"] += 1
            continue
        encoded.append((p, ex))
    for reason, n in skipped.items():
        log.warning("%s: %d of %d pairs left out: %s", path, n, len(pairs), reason)
    if not encoded:
        raise DataError(f"{path}: no pair left to train on ({', '.join(f'{n} {r}' for r, n in skipped.items())})")
    weights = weights_for_pairs([p for p, _ in encoded], args.weighting, args.alpha,
                                normalize=args.weight_normalization == "dataset")
    for (_, ex), w in zip(encoded, weights.tolist()):
        ex["weight"] = w
    return [ex for _, ex in encoded]


def check_pairs(pairs: list[dict], path: str, weighting: str) -> None:
    needed = {"levels": ("chosen_level", "rejected_level"),
              "scores": ("chosen_level", "rejected_level", "chosen_score", "rejected_score")}.get(weighting, ())
    for i, p in enumerate(pairs):
        for f in needed:
            if f not in p:
                raise DataError(f"{path}: record {i + 1}: missing field '{f}' (needed by --weighting {weighting})")


def check_reference_budget(dataset: list[dict], args: MDPOConfig) -> None:
    if args.precompute_ref_max_tokens is None or not args.precompute_ref_log_probs:
        return
    longest = max(range(len(dataset)), key=lambda i: pair_length(dataset[i]))
    if 2 * pair_length(dataset[longest]) > args.precompute_ref_max_tokens:
        raise DataError(f"--precompute_ref_max_tokens {args.precompute_ref_max_tokens} is smaller than one pair "
                        f"(pair {longest + 1}: 2 x {pair_length(dataset[longest])} tokens); raise it to at least "
                        f"2 x max_length = {2 * args.max_length}")


# Flags that are gone, and what replaces them.
RENAMED = {"rpo_alpha": "--loss_type sigmoid sft --loss_weights 1 W (W: the NLL term's weight)",
           "dpo_weight": "the first of --loss_weights"}


def parse(argv=None) -> tuple[ModelArguments, MDPOScriptArguments, MDPOConfig]:
    """The run's settings: flags over the --config file over the constants above."""
    return parse_args((ModelArguments, MDPOScriptArguments, MDPOConfig), argv, renamed=RENAMED, defaults={
        "config": CONFIG, "model_name_or_path": MODEL, "pairs_file": PAIRS_FILE, "output_dir": OUTPUT_DIR})


def main(argv=None) -> None:
    model_args, script_args, args = parse(argv)
    require(model_name_or_path=model_args.model_name_or_path, pairs_file=script_args.pairs_file,
            output_dir=args.output_dir)
    check_default_inputs(model_args.model_name_or_path, script_args.pairs_file)
    live_reference = not args.precompute_ref_log_probs
    check_training_setup(model_args, args, live_reference=live_reference)
    pairs = load_pairs(script_args.pairs_file)
    check_pairs(pairs, script_args.pairs_file, args.weighting)
    tokenizer = tokenizer_of(model_args)
    dataset = build_dataset(pairs, tokenizer, args, script_args.pairs_file)
    check_reference_budget(dataset, args)  # everything checked before any model is loaded

    # The reference is the starting model (a GGUF file included) unless another is named.
    own_reference = not script_args.ref_model_name_or_path
    ref_args = ModelArguments(**{**vars(model_args), "use_peft": False,
                                 "model_name_or_path": (script_args.ref_model_name_or_path
                                                        or model_args.model_name_or_path),
                                 "gguf_file": model_args.gguf_file if own_reference else None})
    cache, cached = None, False
    if args.precompute_ref_log_probs:
        cache = ReferenceCache(os.path.join(args.output_dir, "reference_logps.json"),
                               reference_fingerprint(dataset, ref_args.source, model_args, args))
        cached = cache.load_into(dataset)
    model = load_trainable_model(model_args, args, tokenizer)
    # A separate reference is loaded only when it is needed: for a pass not cached yet, or kept live
    # (without LoRA, whose base model is the reference). It is not held here, so the trainer can
    # release it after the pass.
    separate_reference = (not own_reference and not cached) or (live_reference and not model_args.use_peft)
    log.info("M-DPO on %d pairs (weighting=%s, alpha=%s, beta=%s)", len(dataset), args.weighting, args.alpha, args.beta)
    trainer = MDPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          data_collator=PairCollator(tokenizer.pad_token_id),
                          ref_model=(load_model(ref_args, tokenizer).requires_grad_(False) if separate_reference
                                     else None))
    if separate_reference:
        gc.collect()  # a reference used only for the pass is unreachable now: give its memory back
        clear_device_cache()
    if cache is not None and not cached:
        cache.save(dataset)
    train_and_save(trainer, tokenizer, model_args, (model_args, script_args, args), log)


if __name__ == "__main__":
    run_main(main)
