"""The Bradley-Terry scalar reward model baseline on `transformers.Trainer`.

A sequence-classification head with one output scores question + answer; the loss is
-log sigmoid(r(pos) - r(neg)). Positive and negative answers run in one concatenated forward.

The reward is read at each row's last real token, found by the attention mask. `transformers`'
own pooling takes the last token that differs from the pad id instead, which skips a text's final
token whenever pad = EOS = end of turn (SmolLM2, Llama 3 Instruct with EOS as pad) and that token
ends the text.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import Trainer

from data.collate import pad
from data.tokens import encode_prompt
from models.global_batch import GlobalBatchLossMixin
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


def reward_head(model) -> torch.nn.Module:
    """The linear head that scores every position of a sequence-classification model (`score` in
    Llama, Qwen, Mistral, Gemma), through DDP/DeepSpeed and PEFT wrappers."""
    inner = model
    while hasattr(inner, "module"):
        inner = inner.module
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    head = getattr(inner, "score", None) or getattr(inner, "classifier", None)
    if head is None:
        raise ValueError(f"{type(inner).__name__} has no `score` head to read rewards from")
    return head


@contextmanager
def _captured_output(module: torch.nn.Module):
    found = {}
    handle = module.register_forward_hook(lambda _m, _i, out: found.__setitem__("out", out))
    try:
        yield found
    finally:
        handle.remove()


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """r of every row, read at its last real token (left or right padding alike). The model is
    called as a whole, so DDP and DeepSpeed see the forward; the head's per-position output is
    taken on the way."""
    with _captured_output(reward_head(model)) as found:
        model(input_ids=input_ids, attention_mask=attention_mask)
    per_position = found["out"]
    last = (torch.arange(attention_mask.shape[1], device=attention_mask.device) * attention_mask).argmax(-1)
    return per_position[torch.arange(per_position.shape[0], device=per_position.device), last.to(per_position.device),
                        0].float()


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
