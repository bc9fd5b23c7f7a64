"""Conditional perplexity of a response given its own prompt (docs/method.md, step 2).

PPL = exp(mean NLL over the response tokens, the end-of-turn token included when the response was
finished), with the response tokenized exactly as training will tokenize it (data.collate).
Batches are right-padded and sorted by length, so a padded row gives the same numbers as the row
alone. Nothing is truncated: prompts were fitted to their budget before sampling.
"""
from __future__ import annotations

import math

import torch

from data.collate import budget_batches, collate_prompt_response, encode_prompt_response
from models.logprobs import forward_logps


@torch.no_grad()
def response_perplexities(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int | None = 64,
                          max_tokens: int | None = None, finished: list[bool] | None = None) -> list[float]:
    """One perplexity per (prompt, response): over the response tokens and, for a finished
    response, the end-of-turn token (`finished` defaults to all). Batches hold at most `batch_size`
    rows and `max_tokens` padded tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    finished = [True] * len(prompts) if finished is None else finished
    feats = [encode_prompt_response(tokenizer, p, r, f) for p, r, f in zip(prompts, responses, finished)]
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
