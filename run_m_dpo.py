"""Stage 3 of GFRIEND: multi-level weighted DPO (M-DPO) on the refined pairs.

    python run_m_dpo.py --config configs/mdpo_demo.yaml [--model_name_or_path SFT_CKPT
        --pairs_file pairs.jsonl --output_dir O --weighting levels|scores|none --alpha 1.0
        --beta 0.1 --normalize_weights ...]

The reference model is the starting checkpoint unless --ref_model_name_or_path names another.
`--weighting none` is plain DPO (the paper's "w/o M-DPO" ablation). The saved judge loads with
`from_pretrained` as is (LoRA adapters are merged).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from data.schemas import load_pairs
from models.loading import ModelArguments, load_model_and_tokenizer
from models.training import train_and_save
from models.losses import weights_for_pairs
from models.m_dpo_trainer import MDPOConfig, MDPOTrainer, PairCollator, encode_pair
from utils.config import parse_args, require, run_main
from utils.io import DataError
from utils.logging import get_logger
from utils.seed import set_seed

log = get_logger("run_m_dpo")


@dataclass
class MDPOScriptArguments:
    pairs_file: str = field(default=None, metadata={"help": "pairs.jsonl from run_preference_refinement.py."})
    ref_model_name_or_path: str = field(default=None, metadata={"help": "Reference model; default: the start."})


def build_dataset(pairs: list[dict], tokenizer, args: MDPOConfig) -> list[dict]:
    weights = weights_for_pairs(pairs, args.weighting, args.alpha, args.normalize_weights)
    return [encode_pair(tokenizer, p["prompt"], p["chosen"], p["rejected"], w, args.max_length, args.max_prompt_length)
            for p, w in zip(pairs, weights.tolist())]


def check_pairs(pairs: list[dict], path: str, weighting: str) -> None:
    needed = {"levels": ("chosen_level", "rejected_level"),
              "scores": ("chosen_level", "rejected_level", "chosen_score", "rejected_score")}.get(weighting, ())
    for i, p in enumerate(pairs):
        for f in needed:
            if f not in p:
                raise DataError(f"{path}: record {i + 1}: missing field '{f}' (needed by --weighting {weighting})")


def main(argv=None) -> None:
    model_args, script_args, args = parse_args((ModelArguments, MDPOScriptArguments, MDPOConfig), argv)
    require(model_name_or_path=model_args.model_name_or_path, pairs_file=script_args.pairs_file,
            output_dir=args.output_dir)
    if args.weighting not in ("levels", "scores", "none"):
        raise DataError(f"--weighting must be levels, scores or none, got {args.weighting!r}")
    pairs = load_pairs(script_args.pairs_file)
    check_pairs(pairs, script_args.pairs_file, args.weighting)
    set_seed(args.seed)  # before loading: new heads and LoRA weights are initialised randomly
    model, tokenizer = load_model_and_tokenizer(model_args)
    if args.gradient_checkpointing:
        model.config.use_cache = False
    ref_model = None
    if script_args.ref_model_name_or_path or (not args.precompute_ref_log_probs and not model_args.use_peft):
        ref_args = ModelArguments(**{**vars(model_args), "use_peft": False,
                                     "model_name_or_path": script_args.ref_model_name_or_path or model_args.model_name_or_path})
        ref_model, _ = load_model_and_tokenizer(ref_args)
        ref_model.requires_grad_(False)
    dataset = build_dataset(pairs, tokenizer, args)
    log.info("M-DPO on %d pairs (weighting=%s, alpha=%s, beta=%s)", len(dataset), args.weighting, args.alpha, args.beta)
    trainer = MDPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          data_collator=PairCollator(tokenizer.pad_token_id), ref_model=ref_model)
    train_and_save(trainer, tokenizer, model_args, (model_args, script_args, args), log)


if __name__ == "__main__":
    run_main(main)
