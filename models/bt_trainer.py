"""The Bradley-Terry scalar reward model baseline (design.md §3) on `transformers.Trainer`.

A sequence-classification head with one output scores question + answer; the loss is
-log sigmoid(r(pos) - r(neg)). Positive and negative answers run in one concatenated forward.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from transformers import Trainer

from data.collate import pad


class BTCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = [f["pos_input_ids"] for f in features] + [f["neg_input_ids"] for f in features]
        return {"input_ids": pad(ids, self.pad_token_id), "attention_mask": pad([[1] * len(s) for s in ids], 0)}


def encode_bt(tokenizer, pos_text: str, neg_text: str, max_length: int) -> dict:
    enc = lambda t: tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]  # noqa: E731
    return {"pos_input_ids": enc(pos_text), "neg_input_ids": enc(neg_text)}


def bt_loss(rewards_pos: torch.Tensor, rewards_neg: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(rewards_pos - rewards_neg).mean()


class BTTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._metrics = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rewards = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, 0].float()
        n = rewards.shape[0] // 2
        loss = bt_loss(rewards[:n], rewards[n:])
        acc = self.accelerator.gather_for_metrics((rewards[:n] > rewards[n:]).float().detach())
        margin = self.accelerator.gather_for_metrics((rewards[:n] - rewards[n:]).detach())
        self._metrics["rewards/accuracies"].append(acc.mean().item())
        self._metrics["rewards/margins"].append(margin.mean().item())
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def log(self, logs, *args, **kwargs):
        for k, v in list(self._metrics.items()):
            if v and not any(key.startswith("eval_") for key in logs):
                logs[k] = round(sum(v) / len(v), 6)
                self._metrics[k] = []
        super().log(logs, *args, **kwargs)
