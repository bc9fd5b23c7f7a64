"""The end of every training script: train (resuming if asked), save a checkpoint that
`from_pretrained` loads as is, and write the resolved config last, as the mark of a finished run."""
from __future__ import annotations

import os

from models.loading import save_for_inference
from utils.config import save_resolved_config


def resolve_checkpoint(resume: str | None, output_dir: str) -> str | bool | None:
    """'auto' means the newest checkpoint in output_dir, if there is one."""
    if resume != "auto":
        return resume
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None


def train_and_save(trainer, tokenizer, model_args, configs: tuple, log=None) -> None:
    args = trainer.args
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(args.resume_from_checkpoint, args.output_dir))
    trainer.log_metrics("train", result.metrics)
    if model_args.use_peft:
        if trainer.is_world_process_zero():
            save_for_inference(trainer.model, tokenizer, args.output_dir)  # merges LoRA
    else:
        trainer.save_model(args.output_dir)
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(args.output_dir)
    if trainer.is_world_process_zero():
        trainer.save_state()
        save_resolved_config(args.output_dir, *configs)
        if log is not None:
            log.info("saved to %s", args.output_dir)
