"""Sampling judgments in batches.

`Sampler` is the small interface the rest of the pipeline talks to; `HFSampler` implements it with
the loaded model (generate/decoding.py: one prefill per prompt for its K samples, finished rows
leave the batch, the sampled log-probs come with each completion). A vLLM or other backend only has
to implement `generate` with the same contract. Prompts are encoded and generation stops exactly as
`data.tokens` says, so what is sampled is what scoring and training see.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch

from data.tokens import encode_prompt, encode_response, stop_token_ids
from generate.decoding import sample_batch
from generate.perplexity import response_perplexities
from utils.io import DataError


SAMPLERS = ("hf", "vllm")


class Completion(NamedTuple):
    text: str  # without the end-of-turn token, stripped
    finished: bool  # False when generation was cut at max_new_tokens before the end of the turn
    token_ids: tuple | None = None  # the sampled ids, when the backend reports them (vLLM)
    logprobs: tuple | None = None  # their log-probs before temperature and top-p, when asked for (vLLM)
    watched: dict | None = None  # {token id: its raw logit at each step}, for the HF sampler's watch_ids


class Sampler(Protocol):
    def generate(self, prompts: list[str], num_samples: int, temperature: float, max_new_tokens: int,
                 seed: int) -> list[list[Completion]]:
        """For every prompt, `num_samples` completions (greedy when temperature == 0). The same
        arguments and seed give the same completions."""


class HFSampler:
    """Samples with the loaded model through `generate.decoding.sample_batch`: prompts sorted by
    length so each call wastes little padding, at most `batch_size` sequences (samples included)
    per call, one prefill per prompt, finished rows dropped. Completions carry the sampled ids and
    their log-probs, so `sequence_logps` scores them without a second pass."""

    def __init__(self, model, tokenizer, batch_size: int = 64, top_p: float = 1.0):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size  # sequences per call, samples included
        self.top_p = top_p
        self.stop_ids = stop_token_ids(tokenizer)
        self.watch_ids: list[int] | None = None  # ids whose logits every step keeps (the judge's letters)

    def generate(self, prompts, num_samples, temperature, max_new_tokens, seed):
        if temperature <= 0 and num_samples > 1:  # greedy decoding gives one judgment per prompt: its copies
            return [o * num_samples for o in self.generate(prompts, 1, temperature, max_new_tokens, seed)]
        tok, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        encoded = [encode_prompt(tok, p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        per_call = max(1, self.batch_size // num_samples)
        out: list[list[Completion]] = [None] * len(prompts)
        for start in range(0, len(order), per_call):
            idx = order[start : start + per_call]
            rows = sample_batch(model, [encoded[i] for i in idx], num_samples, temperature, max_new_tokens,
                                self.stop_ids, tok.pad_token_id, generator, self.top_p, self.watch_ids)
            texts = tok.batch_decode([r.token_ids for r in rows], skip_special_tokens=True)
            for n, i in enumerate(idx):
                out[i] = [Completion(texts[j].strip(), rows[j].finished, tuple(rows[j].token_ids),
                                     tuple(rows[j].logprobs), _by_id(self.watch_ids, rows[j].watched))
                          for j in range(n * num_samples, (n + 1) * num_samples)]
        model.train(was_training)
        return out

    def sequence_logps(self, prompts: list[str], completions: list[Completion]) -> tuple[list[float], list[int],
                                                                                          list[bool]]:
        """As VLLMSampler.sequence_logps: the sampled log-probs where the text re-tokenizes to the
        sampled ids, a forward pass of the model over the ids training will see elsewhere."""
        sums, counts, again = sampled_logps(self.tokenizer, completions)
        redo = [i for i, a in enumerate(again) if a]
        if redo:
            ppls = response_perplexities(self.model, self.tokenizer, [prompts[i] for i in redo],
                                         [completions[i].text for i in redo], self.batch_size,
                                         finished=[completions[i].finished for i in redo])
            for i, ppl in zip(redo, ppls):
                sums[i] = -math.log(ppl) * max(1, counts[i])
        return sums, counts, again


def _by_id(ids: list[int] | None, steps: list[tuple] | None) -> dict | None:
    """Per-step logits of watched ids as {id: (logit at step 0, step 1, ...)}."""
    if ids is None or steps is None:
        return None
    return {token: tuple(step[k] for step in steps) for k, token in enumerate(ids)}


def sampled_logps(tokenizer, completions: list[Completion]) -> tuple[list[float | None], list[int], list[bool]]:
    """(sum of sampled log p or None, token count, None-ness) of each completion over the ids
    training will see (the re-tokenized text, the end of turn included when it finished): a sum
    only where those ids are the ids that were sampled; the others must be scored again."""
    sums, counts, again = [], [], []
    for c in completions:
        ids = encode_response(tokenizer, c.text, c.finished)
        counts.append(len(ids))
        same = c.logprobs is not None and c.token_ids is not None and list(c.token_ids) == ids
        sums.append(float(sum(c.logprobs)) if same else None)
        again.append(not same)
    return sums, counts, again


def parse_temperatures(spec: str) -> list[float]:
    """'0.7,1.0' -> [0.7, 1.0]; 0 means greedy."""
    try:
        temperatures = [float(t) for t in str(spec).split(",") if t.strip()]
    except ValueError:
        raise DataError(f"--temperatures must be comma-separated numbers, got {spec!r}") from None
    if not temperatures or any(t < 0 for t in temperatures):
        raise DataError(f"--temperatures must be one or more numbers >= 0, got {spec!r}")
    return temperatures


def check_sampling_lengths(tokenizer, prompts: list[tuple[str, str]], max_new_tokens: int, context: int | None,
                           max_tokens: int | None = None) -> None:
    """The longest prompt plus max_new_tokens (and the end-of-turn token) must fit the model's
    context, and the scoring token budget if there is one; `prompts` are (where, text)."""
    if not prompts:
        return
    lengths = [len(encode_prompt(tokenizer, text)) for _, text in prompts]
    k = max(range(len(prompts)), key=lengths.__getitem__)
    need = lengths[k] + max_new_tokens + 1
    if context is not None and need > context:
        room = context - max_new_tokens - 1
        fix = f"set --max_prompt_length {room} or lower" if room > 0 else "lower --max_new_tokens"
        raise DataError(f"{prompts[k][0]}: {lengths[k]} prompt tokens + --max_new_tokens {max_new_tokens} exceed the "
                        f"model's context of {context} tokens; {fix}")
    if max_tokens is not None and need > max_tokens:
        raise DataError(f"--scoring_max_tokens {max_tokens} is smaller than the longest judgment to score ({need} "
                        f"tokens: {prompts[k][0]}, {lengths[k]} prompt tokens + max_new_tokens + end of turn)")
