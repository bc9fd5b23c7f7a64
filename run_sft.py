"""Stage 1 of GFRIEND: supervised fine-tuning of the judge on chains of thought.

    python run_sft.py --config configs/sft_demo.yaml [--model_name_or_path M --train_file F ...]

Rows are either the judge form {question, answer_a, answer_b, chain_of_thought, verdict}, rendered
with the judge templates into prompt X and response E + "Verdict: Y", or the plain form
{question, chain_of_thought}. The loss covers response tokens only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from data.collate import PromptResponseCollator, encode_prompt_response
from data.schemas import load_sft
from data.templates import apply_chat, format_response, judge_prompt, template_ids
from models.loading import ModelArguments, load_tokenizer
from models.sft_trainer import SFTTrainer
from models.training import check_training_setup, load_trainable_model, train_and_save
from utils.config import parse_args, require, run_main
from utils.logging import get_logger
from utils.seed import derive_seed

log = get_logger("run_sft")


@dataclass
class SFTDataArguments:
    train_file: str = field(default=None, metadata={"help": "JSONL of SFT rows (judge form or plain form)."})
    templates: str = field(default="all", metadata={"help": "Judge template ids spread over rows: 'all' or 'a,b'."})
    max_length: int = field(default=512, metadata={"help": "Max tokens of prompt + response (see data.collate)."})
    max_prompt_length: int = field(default=None, metadata={"help": "Prompts are cut from the left to this."})


@dataclass
class SFTConfig(TrainingArguments):
    output_dir: str = field(default=None, metadata={"help": "Where the checkpoint is saved."})
    report_to: str = field(default="none")
    logging_steps: float = field(default=10)
    save_strategy: str = field(default="no")


def sft_example(row: dict, index: int, tokenizer, templates: list[str]) -> tuple[str, str]:
    """(prompt, response) text of one SFT row."""
    if "verdict" in row:
        # Hashed, not index % n: data sets that cycle through task families by index would
        # otherwise tie each family to one template.
        tid = templates[derive_seed(0, index) % len(templates)]
        prompt = judge_prompt(tokenizer, tid, row["question"], row["answer_a"], row["answer_b"])
        return prompt, format_response(row["chain_of_thought"], row["verdict"])
    return apply_chat(tokenizer, row["question"]), row["chain_of_thought"]


def build_dataset(rows: list[dict], tokenizer, data_args: SFTDataArguments) -> list[dict]:
    templates = template_ids(data_args.templates)
    return [
        encode_prompt_response(tokenizer, *sft_example(r, i, tokenizer, templates), data_args.max_length,
                               data_args.max_prompt_length)
        for i, r in enumerate(rows)
    ]


def main(argv=None) -> None:
    model_args, data_args, args = parse_args((ModelArguments, SFTDataArguments, SFTConfig), argv)
    require(model_name_or_path=model_args.model_name_or_path, train_file=data_args.train_file,
            output_dir=args.output_dir)
    check_training_setup(model_args, args)
    rows = load_sft(data_args.train_file)  # validate all input before anything is written
    tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.trust_remote_code)
    dataset = build_dataset(rows, tokenizer, data_args)
    model = load_trainable_model(model_args, args, tokenizer)
    log.info("SFT on %d rows from %s", len(dataset), data_args.train_file)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      data_collator=PromptResponseCollator(tokenizer.pad_token_id))
    train_and_save(trainer, tokenizer, model_args, (model_args, data_args, args), log)


if __name__ == "__main__":
    run_main(main)
