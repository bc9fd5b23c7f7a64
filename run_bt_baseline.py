"""The BT-model baseline: a scalar Bradley-Terry reward model trained on the same labelled pairs.

    python run_bt_baseline.py --config configs/bt_demo.yaml [--model_name_or_path M
        --pref_file prefs.jsonl --output_dir O ...]

The saved model is an `AutoModelForSequenceClassification` with one label, which
`run_eval.py --model_type scalar` loads as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from transformers import AutoModelForSequenceClassification, TrainingArguments

from data.schemas import load_prefs
from data.templates import scalar_rm_text
from models.bt_trainer import BTCollator, BTTrainer, encode_bt
from models.loading import ModelArguments, tokenizer_of
from models.training import check_training_setup, load_trainable_model, train_and_save
from utils.config import check_settings, parse_args, require, run_main
from utils.io import DataError
from utils.logging import get_logger

log = get_logger("run_bt")


@dataclass
class BTDataArguments:
    pref_file: str = field(default=None, metadata={"help": "Labelled pairs {id, question, answer_pos, answer_neg}."})
    max_length: int = field(default=512, metadata={
        "help": "Tokens of question + answer; longer ones are shortened in their middle (the answer first), never cut "
                "at the end, where the reward is read."})


@dataclass
class BTConfig(TrainingArguments):
    output_dir: str = field(default=None)
    report_to: str = field(default="none")
    logging_steps: float = field(default=10)
    save_strategy: str = field(default="no")
    remove_unused_columns: bool = field(default=False)


def parse(argv=None) -> tuple[ModelArguments, BTDataArguments, BTConfig]:
    return parse_args((ModelArguments, BTDataArguments, BTConfig), argv, renamed={"train_file": "--pref_file"})


def main(argv=None) -> None:
    model_args, data_args, args = parse(argv)
    require(model_name_or_path=model_args.model_name_or_path, pref_file=data_args.pref_file,
            output_dir=args.output_dir)
    check_settings(data_args, at_least={"max_length": 2})
    check_training_setup(model_args, args)
    rows = load_prefs(data_args.pref_file)
    tokenizer = tokenizer_of(model_args)
    model = load_trainable_model(model_args, args, tokenizer, AutoModelForSequenceClassification, "SEQ_CLS",
                                 num_labels=1)
    dataset = []
    for i, r in enumerate(rows):
        try:
            dataset.append(encode_bt(tokenizer, *(scalar_rm_text(tokenizer, r["question"], r[k], data_args.max_length)
                                                  for k in ("answer_pos", "answer_neg"))))
        except DataError as e:
            raise DataError(f"{data_args.pref_file}: record {i + 1}: {e}") from None
    log.info("BT reward model on %d pairs", len(dataset))
    trainer = BTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                        data_collator=BTCollator(tokenizer.pad_token_id))
    train_and_save(trainer, tokenizer, model_args, (model_args, data_args, args), log)


if __name__ == "__main__":
    run_main(main)
