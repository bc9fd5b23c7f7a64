"""Stage 1 of GFRIEND: supervised fine-tuning of the judge on chains of thought.

    python run_sft.py                        # the constants below
    python run_sft.py --config R.yaml --model_name_or_path M --train_file F --output_dir O [--flag value ...]

Rows are either the judge form {question, answer_a, answer_b, chain_of_thought, verdict}, rendered
with the judge templates into prompt X and response E + "Verdict: Y", or the plain form
{question, chain_of_thought}. The loss covers response tokens only.
"""
# What `python run_sft.py` runs with no arguments: point these at your model and data. A flag, or
# a value the --config file sets, overrides each. `make real-model data` writes the defaults.
MODEL = "outputs/models/smollm2-135m-instruct"  # a folder or a hub id (meta-llama/Meta-Llama-3-8B-Instruct)
TRAIN_FILE = "outputs/data/sft.jsonl"  # judge rows, or {question, chain_of_thought}
OUTPUT_DIR = "outputs/sft"  # the SFT judge: run_preference_refinement.py's MODEL
CONFIG = "configs/recipes/smollm2-135m/sft.yaml"  # every other setting (configs/recipes/)

from dataclasses import dataclass, field

from transformers import TrainingArguments

from data.collate import PromptResponseCollator, encode_prompt_response
from data.schemas import load_sft
from data.templates import apply_chat, fit_prompt, format_response, judge_prompt, template_ids
from models.loading import ModelArguments, tokenizer_of
from models.sft_trainer import SFTTrainer
from models.training import check_training_setup, load_trainable_model, train_and_save
from utils.config import (check_default_inputs, check_prompt_budget, check_settings, parse_args, require,
                          run_main)
from utils.io import DataError
from utils.logging import get_logger
from utils.seed import derive_seed

log = get_logger("run_sft")


@dataclass
class SFTDataArguments:
    train_file: str = field(default=None, metadata={"help": "JSONL of SFT rows (judge form or plain form)."})
    templates: str = field(default="all", metadata={"help": "Judge template ids spread over rows: 'all' or 'a,b'."})
    max_length: int = field(default=512, metadata={"help": "Max tokens of prompt + response; longer rows are "
                                                                 "left out and counted, never cut."})
    max_prompt_length: int = field(default=None, metadata={
        "help": "Prompts longer than this are shortened in the middle of the answers (then the question) before "
                "templating, as in refinement and evaluation (use the same value)."})


@dataclass
class SFTConfig(TrainingArguments):
    output_dir: str = field(default=None, metadata={"help": "Where the checkpoint is saved."})
    report_to: str = field(default="none")
    logging_steps: float = field(default=10)
    save_strategy: str = field(default="no")


def sft_example(row: dict, index: int, tokenizer, templates: list[str],
                max_prompt_length: int | None = None) -> tuple[str, str]:
    """(prompt, response) text of one SFT row, the prompt fitted to `max_prompt_length`."""
    if "verdict" in row:
        # Hashed, not index % n: data sets that cycle through task families by index would
        # otherwise tie each family to one template.
        # A row written under one template (run_bootstrap_cot.py) keeps it.
        tid = row.get("template") or templates[derive_seed(0, index) % len(templates)]
        prompt = judge_prompt(tokenizer, tid, row["question"], row["answer_a"], row["answer_b"], max_prompt_length)
        return prompt, format_response(row["chain_of_thought"], row["verdict"])
    prompt, _ = fit_prompt(tokenizer, lambda f: apply_chat(tokenizer, f[0]), [row["question"]], max_prompt_length,
                           question_first=False)
    return prompt, row["chain_of_thought"]


def build_dataset(rows: list[dict], tokenizer, data_args: SFTDataArguments) -> list[dict]:
    """Encoded rows; a row still longer than max_length once its prompt is fitted is left out."""
    templates = template_ids(data_args.templates)
    examples = []
    for i, r in enumerate(rows):
        try:
            examples.append(encode_prompt_response(tokenizer, *sft_example(r, i, tokenizer, templates,
                                                                          data_args.max_prompt_length)))
        except DataError as e:
            raise DataError(f"{data_args.train_file}: record {i + 1}: {e}") from None
    kept = [ex for ex in examples if data_args.max_length is None or len(ex["input_ids"]) <= data_args.max_length]
    if not kept:
        raise DataError(f"{data_args.train_file}: every row is longer than --max_length {data_args.max_length}")
    if len(kept) < len(examples):
        log.warning("%d of %d rows are longer than --max_length %d and are left out", len(examples) - len(kept),
                    len(examples), data_args.max_length)
    return kept


def parse(argv=None) -> tuple[ModelArguments, SFTDataArguments, SFTConfig]:
    """The run's settings: flags over the --config file over the constants above."""
    return parse_args((ModelArguments, SFTDataArguments, SFTConfig), argv, defaults={
        "config": CONFIG, "model_name_or_path": MODEL, "train_file": TRAIN_FILE, "output_dir": OUTPUT_DIR})


def main(argv=None) -> None:
    model_args, data_args, args = parse(argv)
    require(model_name_or_path=model_args.model_name_or_path, train_file=data_args.train_file,
            output_dir=args.output_dir)
    check_default_inputs(model_args.model_name_or_path, data_args.train_file)
    check_settings(data_args, at_least={"max_length": 2, "max_prompt_length": 1})
    check_prompt_budget(data_args.max_prompt_length, data_args.max_length)
    check_training_setup(model_args, args)
    rows = load_sft(data_args.train_file)  # validate all input before anything is written
    tokenizer = tokenizer_of(model_args)
    dataset = build_dataset(rows, tokenizer, data_args)
    model = load_trainable_model(model_args, args, tokenizer)
    log.info("SFT on %d rows from %s", len(dataset), data_args.train_file)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      data_collator=PromptResponseCollator(tokenizer.pad_token_id))
    train_and_save(trainer, tokenizer, model_args, (model_args, data_args, args), log)


if __name__ == "__main__":
    run_main(main)
