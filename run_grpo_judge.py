"""A judge trained by online RL on the same labelled pairs as GFRIEND: TRL's GRPOTrainer with a
verdict-correctness reward (J1, Whitehouse et al., 2025), from the same SFT judge.

    python run_grpo_judge.py --config configs/grpo_demo.yaml --model_name_or_path SFT_JUDGE \
        --pref_file prefs.jsonl --output_dir ckpt/grpo [--reward position_consistent ...]

Every labelled pair is asked as GFRIEND's refinement asks it (each template, both answer orders, the
same prompt budget); the judge samples num_generations judgments per prompt and each earns 1 for a
verdict that picks the labelled better answer. `--reward position_consistent` pays a judgment only
when the same item's judgment in the other order is right too (both orders of an item share a
batch). The checkpoint loads in run_eval.py and run_judge.py like any other judge; a stopped run
resumes from its newest checkpoint (`--resume_from_checkpoint auto`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from data.schemas import load_prefs
from data.templates import ORDERS, judge_prompt_groups, template_ids
from data.tokens import adds_bos, stop_token_ids
from generate.verdict_reward import VerdictReward
from models.loading import ModelArguments, tokenizer_of
from models.training import check_training_setup, load_trainable_model, train_and_save
from utils.config import check_settings, parse_args, require, run_main
from utils.io import DataError
from utils.logging import get_logger

log = get_logger("grpo_judge")


@dataclass
class GRPOJudgeArguments:
    pref_file: str = field(default=None, metadata={"help": "Labelled pairs {id, question, answer_pos, answer_neg}."})
    templates: str = field(default="all", metadata={"help": "'all' or comma-separated template ids, as refinement."})
    orders: str = field(default="both", metadata={"help": "both | A | B: slot(s) of the good answer."})
    max_prompt_length: int = field(default=None, metadata={"help": "The one prompt budget of every stage."})
    max_items: int = field(default=None, metadata={"help": "Use only the first N labelled pairs."})
    reward: str = field(default="correct", metadata={
        "help": "correct (1 for a right verdict) | position_consistent (1 only when right in both orders)."})


def judge_dataset(items: list[dict], tokenizer, args: GRPOJudgeArguments, seed: int) -> Dataset:
    """One row per item x template x order: the prompt refinement samples from, the slot of the
    better answer and the item. Items are shuffled with the seed here, an item's prompts kept
    together, so that the position-consistent reward finds both orders in one batch."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    bos = tokenizer.bos_token if adds_bos(tokenizer) else None
    rows = []
    for i in order:
        try:
            groups = judge_prompt_groups(tokenizer, items[i], template_ids(args.templates), ORDERS[args.orders],
                                         args.max_prompt_length)
        except DataError as e:
            raise DataError(f"{args.pref_file}: {e}") from None
        for g in groups:
            prompt = g["prompt"]
            if bos and prompt.startswith(bos):  # TRL's tokenizer call adds it again
                prompt = prompt[len(bos):]
            rows.append({"prompt": prompt, "pos_slot": g["pos_slot"], "item_id": str(items[i]["id"])})
    return Dataset.from_list(rows)


def check_batches(args: GRPOJudgeArguments, config: GRPOConfig) -> None:
    """The position-consistent reward needs both orders of every item in one generation batch."""
    check_settings(args, at_least={"max_prompt_length": 1, "max_items": 1},
                   choices={"reward": ("correct", "position_consistent"), "orders": tuple(ORDERS)})
    if args.reward != "position_consistent":
        return
    if args.orders != "both":
        raise DataError("--reward position_consistent needs --orders both")
    prompts_per_batch = config.generation_batch_size // config.num_generations
    if prompts_per_batch % 2:
        raise DataError(f"--reward position_consistent needs an even number of prompts per generation batch "
                        f"(generation_batch_size / num_generations = {prompts_per_batch})")


def parse(argv=None) -> tuple[ModelArguments, GRPOJudgeArguments, GRPOConfig]:
    return parse_args((ModelArguments, GRPOJudgeArguments, GRPOConfig), argv, shared=True)


def main(argv=None) -> None:
    model_args, args, config = parse(argv)
    require(model_name_or_path=model_args.model_name_or_path, pref_file=args.pref_file, output_dir=config.output_dir)
    check_batches(args, config)
    check_training_setup(model_args, config)
    if args.reward == "position_consistent":
        config.shuffle_dataset = False  # the dataset is shuffled by item already, an item's orders side by side
    items = load_prefs(args.pref_file)[: args.max_items]
    tokenizer = tokenizer_of(model_args)
    dataset = judge_dataset(items, tokenizer, args, config.seed)
    model = load_trainable_model(model_args, config, tokenizer)
    # A judgment ends at its end of turn (TRL adds EOS).
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    log.info("GRPO judge on %d labelled pairs: %d prompts x %d judgments, reward %s", len(items), len(dataset),
             config.num_generations, args.reward)
    trainer = GRPOTrainer(model=model, reward_funcs=[VerdictReward(args.reward == "position_consistent")],
                          args=config, train_dataset=dataset, processing_class=tokenizer)
    train_and_save(trainer, tokenizer, model_args, (model_args, args, config), log)


if __name__ == "__main__":
    run_main(main)
