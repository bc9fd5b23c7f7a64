"""The Bradley-Terry scalar reward model baseline on `transformers.Trainer`.

A sequence-classification head with one output scores question + answer; the loss is
-log sigmoid(r(pos) - r(neg)). Positive and negative answers run in one concatenated forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer

from data.collate import pad
from models.global_batch import GlobalBatchLossMixin
from models.trainer_metrics import AveragedMetricsMixin


class BTCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = [f["pos_input_ids"] for f in features] + [f["neg_input_ids"] for f in features]
        return {"input_ids": pad(ids, self.pad_token_id), "attention_mask": pad([[1] * len(s) for s in ids], 0)}


def encode_bt(tokenizer, pos_text: str, neg_text: str, max_length: int) -> dict:
    enc = lambda t: tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]  # noqa: E731
    return {"pos_input_ids": enc(pos_text), "neg_input_ids": enc(neg_text)}


class BTTrainer(GlobalBatchLossMixin, AveragedMetricsMixin, Trainer):
    def count_items(self, batch: dict) -> dict:
        return {"pairs": batch["input_ids"].shape[0] // 2}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rewards = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, 0].float()
        n = rewards.shape[0] // 2
        losses = -F.logsigmoid(rewards[:n] - rewards[n:])
        loss = self.global_mean(losses.sum(), n, "pairs", num_items_in_batch)
        self.record_metrics({"rewards/accuracies": (rewards[:n] > rewards[n:]).float(),
                             "rewards/margins": rewards[:n] - rewards[n:]})
        return (loss, {"rewards": rewards}) if return_outputs else loss
