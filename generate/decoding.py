"""Batched sampling with a KV cache, written out in one loop instead of `model.generate`, for three
savings that matter when a judge samples many judgments per prompt on a CPU (docs/benchmarks.md):

- **one prefill per prompt**: the K samples of a prompt share its KV cache (`generate` with
  `num_return_sequences` runs the prompt K times);
- **finished rows leave the batch**: a judgment that wrote its end of turn stops costing compute
  (`generate` keeps every row until the longest one ends, and judgment lengths vary by 2x and more);
- **the log-probs come free**: each sampled token's log-probability before temperature and top-p
  (what a perplexity is made of) is read off the logits the step computed anyway, so refinement can
  score its samples without a second forward pass (`--score_with sampler`), as with vLLM; and so do
  the logits of a few watched tokens at every step (the judge's verdict letters: P(A better) is read
  where the judge wrote its letter, without a second pass over prompt and judgment).

Rows are left-padded with their own positions, so a padded row samples what it would alone (up to
float rounding). The random stream is a `torch.Generator` seeded by the caller: the same prompts,
settings and seed give the same samples.
"""
from __future__ import annotations

import functools
import inspect
from typing import NamedTuple

import torch
from transformers import DynamicCache


class Sampled(NamedTuple):
    token_ids: list[int]  # the sampled ids, the stop token included when the row finished
    logprobs: list[float]  # log p of each sampled id under the model (temperature 1, no top-p)
    finished: bool  # a stop token was sampled before max_new_tokens
    watched: list[tuple[float, ...]] | None = None  # per step, the raw logits of the watched ids (watch_ids)


@functools.lru_cache(maxsize=None)
def cache_argument(model_class) -> str:
    """What `forward` calls its KV cache: transformers 5.24 renamed `past_key_values` to `cache`
    (vLLM's CPU build pins an older transformers)."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every token outside the smallest set whose probability reaches top_p (nucleus
    sampling); the most likely token always stays."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # the mass before the token already reaches p
    sorted_probs[outside] = 0.0
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row, by inverse transform: a uniform number against the cumulative
    probabilities. The same distribution as `torch.multinomial`, whose CPU kernel draws an
    exponential number per vocabulary entry (a tenth of a sampling step's time on a 49k
    vocabulary); a token of probability zero is never drawn."""
    cdf = probs.cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp(max=probs.shape[-1] - 1).squeeze(1)


@torch.no_grad()
def sample_batch(model, prompts: list[list[int]], num_samples: int, temperature: float, max_new_tokens: int,
                 stop_ids: list[int], pad_id: int, generator: torch.Generator | None = None,
                 top_p: float = 1.0, watch_ids: list[int] | None = None,
                 occupancy: list | None = None) -> list[Sampled]:
    """`num_samples` continuations of every prompt (token ids), prompt-major: the samples of
    prompts[i] are rows i*K .. i*K+K-1. Greedy when temperature == 0. With `watch_ids`, each row
    also keeps, step by step, the logits those ids had where its token was sampled. `occupancy`,
    if given, collects the number of rows at every step."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):  # left padding: every prompt ends where sampling starts
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    cache = DynamicCache(config=model.config)
    with_cache = {cache_argument(type(model)): cache, "use_cache": True}
    logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                   logits_to_keep=1, **with_cache).logits[:, -1].float()
    if num_samples > 1:  # one prefill, K rows of cache
        cache.batch_repeat_interleave(num_samples)
        logits, mask = logits.repeat_interleave(num_samples, 0), mask.repeat_interleave(num_samples, 0)
    n = logits.shape[0]
    alive = torch.arange(n, device=device)  # the output row of each batch row
    next_position = mask.sum(1)
    stops = torch.tensor(stop_ids, device=device)
    tokens: list[list[int]] = [[] for _ in range(n)]
    logps: list[list[float]] = [[] for _ in range(n)]
    watched: list[list[tuple]] | None = None if watch_ids is None else [[] for _ in range(n)]
    watch = None if watch_ids is None else torch.tensor(watch_ids, device=device)
    finished = [False] * n
    for step in range(max_new_tokens):
        if occupancy is not None:
            occupancy.append(len(alive))
        if temperature > 0:
            probs = top_p_filter(torch.softmax(logits / temperature, dim=-1), top_p)
            token = draw(probs, generator)
        else:
            token = logits.argmax(-1)
        chosen = torch.log_softmax(logits, dim=-1).gather(1, token[:, None]).squeeze(1)
        stopped = torch.isin(token, stops)
        for row, t, lp, s in zip(alive.tolist(), token.tolist(), chosen.tolist(), stopped.tolist()):
            tokens[row].append(t)
            logps[row].append(lp)
            finished[row] = s
        if watch is not None:
            for row, values in zip(alive.tolist(), logits.index_select(1, watch).tolist()):
                watched[row].append(tuple(values))
        if step == max_new_tokens - 1 or bool(stopped.all()):
            break
        if bool(stopped.any()):  # finished rows leave the batch and its cache
            keep = (~stopped).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, token, mask, next_position = alive[keep], token[keep], mask[keep], next_position[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_position[:, None],
                       **with_cache).logits[:, -1].float()
        next_position = next_position + 1
    return [Sampled(t, lp, f, None if watched is None else w)
            for t, lp, f, w in zip(tokens, logps, finished, watched or [None] * n)]
