"""Conditional perplexity of a response given its own prompt (design.md §1 step 2).

PPL = exp(mean NLL over the response tokens, EOS included), with the response tokenized exactly
as training will tokenize it (data.collate). Batches are right-padded and sorted by length, so a
padded row gives the same numbers as the row alone.
"""
from __future__ import annotations

import math

import torch

from data.collate import collate_prompt_response, encode_prompt_response
from models.logprobs import forward_logps


@torch.no_grad()
def response_perplexities(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 64,
                          max_length: int | None = None) -> list[float]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = [encode_prompt_response(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]))
    ppl = [math.nan] * len(feats)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate_prompt_response([feats[i] for i in idx], tokenizer.pad_token_id).items()}
        logp, n = forward_logps(model, batch)
        for row, i in enumerate(idx):
            ppl[i] = math.exp(-logp[row].item() / max(1, n[row].item()))
    model.train(was_training)
    return ppl


def ppl_score(ppl: float, tau: float) -> float:
    """The paper's confidence score: near 1 for a fluent, confident response."""
    return math.exp(-ppl / tau)
