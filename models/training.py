"""What every training script shares: the checks that refuse a setup which cannot work (before any
model is loaded), the precision policy, and the end of a run (train, save a checkpoint that
`from_pretrained` loads as is, write the resolved config last as the mark of a finished run).

Precision policy. Full fine-tuning without DeepSpeed keeps fp32 master weights: `--dtype auto`
loads the trainable weights in fp32 and `--bf16 true` runs the compute under bf16 autocast, and the
checkpoint is saved in the dtype it was stored in. `--dtype bf16_if_native` is the same with
`--bf16` on by default where the hardware computes bf16 natively (a GPU, or a CPU with AMX or
AVX-512 BF16), off elsewhere. bf16 weights updated in place lose every update
smaller than about 2^-8 of a weight (at the recipe's learning rates, most of them); asking for them
explicitly (`--dtype bf16`) is allowed, with a warning when the learning rate is below that
resolution. DeepSpeed keeps fp32 master weights itself, and LoRA trains fp32 adapters on a frozen
base, so both load the dtype asked for.
"""
from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM

from models.loading import ModelArguments, checkpoint_dtype, load_model, resolve_dtype, save_for_inference
from utils.config import save_resolved_config
from utils.hardware import BF16_IF_NATIVE
from utils.io import DataError
from utils.logging import get_logger
from utils.seed import set_seed

log = get_logger("training")
# Half the spacing between neighbouring values, relative to the value (significand bits + 1).
ROUNDING = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def deepspeed_zero_stage(args) -> int | None:
    """The ZeRO stage of a DeepSpeed run (from `--deepspeed` or an accelerate config), else None."""
    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is None:
        return None
    stage = getattr(plugin, "zero_stage", None)
    if stage in (None, "auto"):
        stage = (getattr(plugin, "deepspeed_config", None) or {}).get("zero_optimization", {}).get("stage")
    return int(stage) if stage not in (None, "auto") else None


def check_training_setup(model_args: ModelArguments, args, live_reference: bool = False) -> None:
    """Refuse, in one line naming the setting, a configuration that cannot work."""
    resolve_dtype(model_args.dtype)
    if deepspeed_zero_stage(args) == 3:
        if model_args.use_peft:
            raise DataError("--use_peft is not supported under DeepSpeed ZeRO-3: merging the adapters needs whole "
                            "base weights; use ZeRO-2 or DDP (LoRA keeps only the adapters' optimizer state)")
        if live_reference:
            raise DataError("--precompute_ref_log_probs false is not supported under DeepSpeed ZeRO-3: a live "
                            "reference model's weights would stay partitioned; keep precompute_ref_log_probs true")


def keeps_fp32_master_weights(model_args: ModelArguments, args) -> bool:
    """Full fine-tuning without DeepSpeed: the only case where the project, not DeepSpeed or PEFT,
    decides the dtype of the weights the optimizer updates."""
    return not model_args.use_peft and deepspeed_zero_stage(args) is None


def master_weights_in_fp32(model_args: ModelArguments, args) -> bool:
    """The project keeps fp32 master weights and saves the checkpoint as its input was stored:
    full fine-tuning without DeepSpeed, asked with --dtype auto or bf16_if_native (whose bf16 is the
    compute's, under autocast; utils.config turns --bf16 on where it is native)."""
    return model_args.dtype in ("auto", BF16_IF_NATIVE) and keeps_fp32_master_weights(model_args, args)


def training_dtype(model_args: ModelArguments, args):
    if master_weights_in_fp32(model_args, args):
        return torch.float32
    return resolve_dtype(model_args.dtype)


def warn_if_updates_round_away(model, model_args: ModelArguments, args) -> str | None:
    """Warn (and return the message) when half-precision weights are trained in place with a
    learning rate below their resolution at this model's typical weight size."""
    if not keeps_fp32_master_weights(model_args, args):
        return None
    weights = [p for p in model.parameters() if p.requires_grad and p.dim() == 2 and p.dtype in ROUNDING]
    if not weights:
        return None
    largest = max(weights, key=lambda p: p.numel())
    sample = largest.detach().flatten()[:: max(1, largest.numel() // 1_000_000)].float().abs()
    step = sample.median().item() * ROUNDING[largest.dtype]
    if args.learning_rate >= step:
        return None
    msg = (f"{str(largest.dtype).replace('torch.', '')} weights are trained in place: a step moves a weight by about "
           f"the learning rate ({args.learning_rate:g}), but a weight of this model's median size rounds away any "
           f"change under ~{step:.2g}, so most updates are lost. Use --dtype auto (fp32 master weights; --bf16 true "
           f"keeps the compute in bf16) or DeepSpeed.")
    log.warning(msg)
    return msg


def load_trainable_model(model_args: ModelArguments, args, tokenizer, model_class=AutoModelForCausalLM,
                         peft_task_type: str = "CAUSAL_LM", **model_kwargs):
    """Seed, load with the precision policy, and prepare for gradient checkpointing."""
    set_seed(args.seed)  # before loading: new heads and LoRA weights are initialised randomly
    model = load_model(model_args, tokenizer, model_class, peft_task_type, dtype=training_dtype(model_args, args),
                       **model_kwargs)
    warn_if_updates_round_away(model, model_args, args)
    if args.gradient_checkpointing:
        model.config.use_cache = False
    return model


def resolve_checkpoint(resume: str | None, output_dir: str) -> str | bool | None:
    """'auto' means the newest checkpoint in output_dir, if there is one."""
    if resume != "auto":
        return resume
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None


def train_and_save(trainer, tokenizer, model_args: ModelArguments, configs: tuple, log=None) -> None:
    args = trainer.args
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(args.resume_from_checkpoint, args.output_dir))
    trainer.log_metrics("train", result.metrics)
    if model_args.use_peft:
        if trainer.is_world_process_zero():
            save_for_inference(trainer.model, tokenizer, args.output_dir)  # merges LoRA
    else:
        if master_weights_in_fp32(model_args, args):
            stored = checkpoint_dtype(model_args.model_name_or_path, model_args.trust_remote_code,
                                      model_args.gguf_file)
            if stored is not None and stored != trainer.model.dtype:
                trainer.model.to(stored)  # fp32 master weights were for training; save as the input was stored
        trainer.save_model(args.output_dir)
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(args.output_dir)
    if trainer.is_world_process_zero():
        trainer.save_state()
        save_resolved_config(args.output_dir, *configs)
        if log is not None:
            log.info("saved to %s", args.output_dir)
