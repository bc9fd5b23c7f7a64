"""Conditional perplexity of a response given its own prompt (design.md §1 step 2).

PPL = exp(mean NLL over the response tokens, EOS included), with the response tokenized exactly
as training will tokenize it (data.collate). Batches are right-padded and sorted by length, so a
padded row gives the same numbers as the row alone.
"""
from __future__ import annotations

import math

import torch

from data.collate import budget_batches, collate_prompt_response, encode_prompt_response
from models.logprobs import forward_logps


@torch.no_grad()
def response_perplexities(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int | None = 64,
                          max_length: int | None = None, max_tokens: int | None = None) -> list[float]:
    """One perplexity per (prompt, response). Batches hold at most `batch_size` rows and
    `max_tokens` padded tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = [encode_prompt_response(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    ppl = [math.nan] * len(feats)
    for idx in budget_batches([len(f["input_ids"]) for f in feats], batch_size, max_tokens):
        batch = collate_prompt_response([feats[i] for i in idx], tokenizer.pad_token_id)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        logp, n = forward_logps(model, batch)
        for i, lp, count in zip(idx, logp.tolist(), n.tolist()):
            ppl[i] = math.exp(-lp / max(1, count))
    model.train(was_training)
    return ppl


def ppl_score(ppl: float, tau: float) -> float:
    """The paper's confidence score: near 1 for a fluent, confident response."""
    return math.exp(-ppl / tau)
