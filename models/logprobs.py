"""Per-sequence log-probabilities of the response tokens: the one quantity that perplexity
scoring, DPO and its reference pass all need, computed in one place."""
from __future__ import annotations

import torch

from data.collate import IGNORE_INDEX


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(token) over labelled positions, and how many there are, per row.

    `labels` are aligned with the inputs (as for a causal LM's own loss): the logit at position t
    predicts label t+1.
    """
    logits = logits[:, :-1, :]
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0)
    # log_softmax in float32: bf16 log-probs are too coarse for perplexities and DPO margins.
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    token_logps = token_logps * mask
    return token_logps.sum(-1), mask.sum(-1)


def forward_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return sequence_logps(out.logits, batch["labels"])
