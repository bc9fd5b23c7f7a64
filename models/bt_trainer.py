"""The Bradley-Terry scalar reward model baseline on `transformers.Trainer`.

A sequence-classification head with one output scores question + answer; the loss is
-log sigmoid(r(pos) - r(neg)). Positive and negative answers run in one concatenated forward.

The reward is read at each row's last real token (models.rewards).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer

from data.collate import pad
from data.tokens import encode_prompt
from models.global_batch import GlobalBatchLossMixin
from models.rewards import sequence_rewards
from models.trainer_metrics import AveragedMetricsMixin


class BTCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = [f["pos_input_ids"] for f in features] + [f["neg_input_ids"] for f in features]
        return {"input_ids": pad(ids, self.pad_token_id), "attention_mask": pad([[1] * len(s) for s in ids], 0)}


def encode_bt(tokenizer, pos_text: str, neg_text: str) -> dict:
    """Token ids of the two texts, encoded as every stage encodes a prompt (BOS once where the model
    expects one); never cut: `data.templates.scalar_rm_text` fits them to their budget as text."""
    return {"pos_input_ids": encode_prompt(tokenizer, pos_text), "neg_input_ids": encode_prompt(tokenizer, neg_text)}


class BTTrainer(GlobalBatchLossMixin, AveragedMetricsMixin, Trainer):
    def count_items(self, batch: dict) -> dict:
        return {"pairs": batch["input_ids"].shape[0] // 2}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rewards = sequence_rewards(model, inputs["input_ids"], inputs["attention_mask"])
        n = rewards.shape[0] // 2
        losses = -F.logsigmoid(rewards[:n] - rewards[n:])
        loss = self.global_mean(losses.sum(), n, "pairs", num_items_in_batch)
        self.record_metrics({"rewards/accuracies": (rewards[:n] > rewards[n:]).float(),
                             "rewards/margins": rewards[:n] - rewards[n:]})
        return (loss, {"rewards": rewards}) if return_outputs else loss
