"""SFT on `transformers.Trainer` with the project's response log-probs instead of the model's own
loss: the model's loss projects every position, prompt included, onto the vocabulary and upcasts
those logits to fp32, which at a 128k vocabulary and 1-2k-token judge prompts is most of the memory
of a step. The loss is the same per-token NLL over response tokens, divided by the response-token
count of the whole optimizer step, so gradient accumulation is exact."""
from __future__ import annotations

from transformers import Trainer

from data.collate import IGNORE_INDEX
from models.global_batch import GlobalBatchLossMixin
from models.logprobs import forward_logps


class SFTTrainer(GlobalBatchLossMixin, Trainer):
    def count_items(self, batch: dict) -> dict:
        return {"tokens": (batch["labels"][:, 1:] != IGNORE_INDEX).sum()}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logps, n_tokens = forward_logps(model, inputs)
        loss = self.global_mean(-logps.sum(), n_tokens.sum(), "tokens", num_items_in_batch)
        return (loss, {"logps": logps}) if return_outputs else loss
