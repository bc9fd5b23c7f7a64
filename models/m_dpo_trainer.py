"""M-DPO on `transformers.Trainer`: accelerate/DeepSpeed, gradient accumulation, checkpointing,
resume and logging come from the Trainer; this file adds the pair batches and the weighted loss.

Chosen and rejected run in one concatenated forward. Reference log-probs are by default computed
once before training, in batches bounded by a token budget, and stored with each pair, so no
reference model sits in memory while training (a separate reference model is released after the
pass); `precompute_ref_log_probs=False` keeps a live frozen reference instead (or, with LoRA, the
policy with its adapters switched off). Every loss term is a sum divided by its count over the
whole optimizer step (`GlobalBatchLossMixin`), so gradient accumulation is exact.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object
from transformers import Trainer, TrainingArguments
from transformers.integrations import is_deepspeed_zero3_enabled

from data.collate import IGNORE_INDEX, budget_batches, collate_prompt_response, encode_prompt_response
from models.global_batch import GlobalBatchLossMixin
from models.logprobs import forward_logps
from models.losses import m_dpo_loss
from models.trainer_metrics import AveragedMetricsMixin
from utils.config import check_prompt_budget, check_settings
from utils.io import DataError


LOSS_TYPES = ("sigmoid", "sft")
WEIGHT_NORMALIZATIONS = ("none", "batch", "dataset")


@dataclass
class MDPOConfig(TrainingArguments):
    """TrainingArguments plus the M-DPO knobs, named as in TRL 1.x's DPOConfig where the concept is shared."""

    output_dir: str = field(default=None)
    beta: float = field(default=0.1, metadata={"help": "DPO temperature beta."})
    weighting: str = field(default="levels", metadata={"help": "levels | scores | none (plain DPO)."})
    alpha: float = field(default=1.0, metadata={"help": "Weights are softplus(alpha * gap)."})
    weight_normalization: str = field(default="none", metadata={
        "help": "none: the DPO term is mean(w * loss), w = softplus(alpha * gap) as is; dataset: w divided by its "
                "mean over the pairs file (the same ratios, scale 1); batch: sum(w * loss) / sum(w) over each "
                "optimizer step's pairs (across accumulation and processes), a weighted mean."})
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"], metadata={
        "help": "Loss terms, as TRL 1.x: 'sigmoid' is the (level-weighted) DPO loss, 'sft' the per-token NLL of the "
                "chosen responses; several are summed with loss_weights."})
    loss_weights: list[float] | None = field(default=None, metadata={"help": "One weight per loss_type (default 1)."})
    max_length: int = field(default=512, metadata={"help": "Tokens of prompt + response; longer pairs are left out "
                                                           "and counted, never cut."})
    max_prompt_length: int = field(default=None, metadata={
        "help": "The budget refinement fitted the prompts to: a longer prompt in the pairs file is an error."})
    precompute_ref_log_probs: bool = field(default=True)
    precompute_ref_batch_size: int = field(default=None, metadata={
        "help": "Pairs per batch of the reference pass (default: per_device_train_batch_size)."})
    precompute_ref_max_tokens: int = field(default=None, metadata={
        "help": "Padded tokens per batch of the reference pass (chosen + rejected rows); none = no budget."})
    report_to: str = field(default="none")
    logging_steps: float = field(default=10)
    save_strategy: str = field(default="no")
    remove_unused_columns: bool = field(default=False)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        unknown = [t for t in self.loss_type if t not in LOSS_TYPES]
        if unknown or not self.loss_type or len(set(self.loss_type)) < len(self.loss_type):
            raise DataError(f"--loss_type must be distinct values among {', '.join(LOSS_TYPES)}, got {self.loss_type}")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise DataError(f"--loss_weights needs one weight per loss_type {self.loss_type}, got {self.loss_weights}")
        check_settings(self, above={"beta": 0.0},
                       at_least={"alpha": 0.0, "max_length": 2, "max_prompt_length": 1,
                                 "precompute_ref_batch_size": 1, "precompute_ref_max_tokens": 2},
                       choices={"weighting": ("levels", "scores", "none"),
                                "weight_normalization": WEIGHT_NORMALIZATIONS})
        check_prompt_budget(self.max_prompt_length, self.max_length)

    @property
    def loss_term_weights(self) -> dict[str, float]:
        return dict(zip(self.loss_type, self.loss_weights or [1.0] * len(self.loss_type)))


def encode_pair(tokenizer, prompt: str, chosen: str, rejected: str, weight: float, chosen_finished: bool = True,
                rejected_finished: bool = True) -> dict:
    """Both rows of a pair; a response cut at max_new_tokens gets no end-of-turn token."""
    c = encode_prompt_response(tokenizer, prompt, chosen, chosen_finished)
    r = encode_prompt_response(tokenizer, prompt, rejected, rejected_finished)
    return {"chosen_input_ids": c["input_ids"], "chosen_labels": c["labels"],
            "rejected_input_ids": r["input_ids"], "rejected_labels": r["labels"], "weight": float(weight)}


def pair_length(example: dict) -> int:
    """Padded width of a pair's two rows."""
    return max(len(example["chosen_input_ids"]), len(example["rejected_input_ids"]))


class PairCollator:
    """Stacks chosen rows then rejected rows into one right-padded batch of 2B sequences."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        ids = [f["chosen_input_ids"] for f in features] + [f["rejected_input_ids"] for f in features]
        labels = [f["chosen_labels"] for f in features] + [f["rejected_labels"] for f in features]
        batch = collate_prompt_response([{"input_ids": i, "labels": l} for i, l in zip(ids, labels)], self.pad_token_id)
        batch["weights"] = torch.tensor([f["weight"] for f in features], dtype=torch.float32)
        if "ref_chosen_logps" in features[0]:
            batch["ref_chosen_logps"] = torch.tensor([f["ref_chosen_logps"] for f in features])
            batch["ref_rejected_logps"] = torch.tensor([f["ref_rejected_logps"] for f in features])
        return batch


def gathered_weights(model):
    """ZeRO-3 partitions every weight across processes and only its engine gathers them; a plain
    forward outside the engine (the reference pass) needs them whole for its duration."""
    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)


def has_reference_logps(dataset: list[dict]) -> bool:
    return len(dataset) > 0 and all("ref_chosen_logps" in ex for ex in dataset)


class MDPOTrainer(GlobalBatchLossMixin, AveragedMetricsMixin, Trainer):
    def __init__(self, *args, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ref_model = None
        is_peft = hasattr(self.model, "disable_adapter")
        if self.args.precompute_ref_log_probs:
            if not has_reference_logps(self.train_dataset):
                self.precompute_reference(ref_model if ref_model is not None else self.model)
            del ref_model  # the pass was its only use: the trainer keeps no reference to it
        elif ref_model is None and not is_peft:
            raise ValueError("a live reference needs ref_model (or a LoRA policy, whose base model is the reference)")
        elif ref_model is not None:
            if is_deepspeed_zero3_enabled():
                raise ValueError("a live reference model is not supported under ZeRO-3 (its weights would stay "
                                 "partitioned); keep precompute_ref_log_probs=true")
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    @torch.no_grad()
    def precompute_reference(self, ref_model) -> None:
        """Reference log-probs of every pair, stored on the pairs: computed once, before training.
        Each process scores its own share (pairs rank, rank + world, ...) in batches bounded by
        `precompute_ref_batch_size` pairs and `precompute_ref_max_tokens` padded tokens, and the
        shares are gathered, so every process ends with all of them."""
        was_training = ref_model.training
        ref_model.eval()
        device = self.args.device
        if next(ref_model.parameters()).device != device:
            ref_model.to(device)
        mine = list(range(self.accelerator.process_index, len(self.train_dataset), self.accelerator.num_processes))
        batches = budget_batches([pair_length(self.train_dataset[i]) for i in mine],
                                 self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size,
                                 self.args.precompute_ref_max_tokens, rows_per_item=2)
        indexed = []
        with gathered_weights(ref_model):
            for batch_positions in batches:
                rows = [mine[k] for k in batch_positions]
                batch = self.data_collator([self.train_dataset[i] for i in rows])
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                with self.autocast_context():
                    logps, _ = forward_logps(ref_model, batch)
                n = len(rows)
                indexed += zip(rows, zip(logps[:n].tolist(), logps[n:].tolist()))
        ref_model.train(was_training)
        if self.accelerator.num_processes > 1:
            indexed = gather_object(indexed)
        for i, (c, r) in indexed:
            ex = self.train_dataset[i]
            ex["ref_chosen_logps"], ex["ref_rejected_logps"] = c, r

    def autocast_context(self):
        if self.args.bf16:
            return torch.autocast(device_type=self.args.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def reference_logps(self, model, batch) -> torch.Tensor:
        if "ref_chosen_logps" in batch:
            return torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
        with torch.no_grad():
            if self.ref_model is not None:
                return forward_logps(self.ref_model, batch)[0]
            with self.accelerator.unwrap_model(model).disable_adapter():
                return forward_logps(model, batch)[0]

    def count_items(self, batch: dict) -> dict:
        n = batch["weights"].shape[0]
        return {"pairs": n, "chosen_tokens": (batch["labels"][:n, 1:] != IGNORE_INDEX).sum(),
                "weight_sum": batch["weights"].sum()}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        n = inputs["weights"].shape[0]
        logps, n_tokens = forward_logps(model, inputs)
        ref = self.reference_logps(model, inputs).to(logps.dtype)
        losses, chosen_rewards, rejected_rewards = m_dpo_loss(
            logps[:n], logps[n:], ref[:n], ref[n:], inputs["weights"], self.args.beta, reduction="none"
        )
        terms = self.args.loss_term_weights
        if self.args.weight_normalization == "batch":  # a weighted mean over the step's pairs
            dpo = self.global_mean(losses.sum(), inputs["weights"].sum(), "weight_sum", num_items_in_batch)
        else:
            dpo = self.global_mean(losses.sum(), n, "pairs", num_items_in_batch)
        loss = terms.get("sigmoid", 0.0) * dpo
        if "sft" in terms:
            nll_sum, chosen_tokens = -logps[:n].sum(), n_tokens[:n].sum()
            self.record_metrics({"nll_loss": (nll_sum, chosen_tokens)})
            loss = loss + terms["sft"] * self.global_mean(nll_sum, chosen_tokens, "chosen_tokens", num_items_in_batch)
        self.record_metrics({
            "rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "rewards/margins": chosen_rewards - rejected_rewards,
            "logps/chosen": logps[:n], "logps/rejected": logps[n:], "weights/mean": inputs["weights"],
        })
        if return_outputs:
            return loss, {"chosen_rewards": chosen_rewards, "rejected_rewards": rejected_rewards}
        return loss
