"""Sampling judgments in batches.

`Sampler` is the small interface the rest of the pipeline talks to: `sample` takes requests
(a prompt, how many judgments, a temperature, a seed) and `generate` the same for a list of
prompts. `HFSampler` implements it with the loaded model: by continuous batching
(generate/continuous.py: the batch stays full while requests wait, one prefill per prompt for its K
samples, each row's random numbers from its own seed) or, for attention kinds that take no ready
mask, batch by batch (generate/decoding.py). The sampled log-probs come with each completion.
`VLLMSampler` implements the same contract. Prompts are encoded and generation stops exactly as
`data.tokens` says, so what is sampled is what scoring and training see.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch

from data.tokens import encode_prompt, encode_response, stop_token_ids
from generate.continuous import Request, sample_continuous, supported
from generate.decoding import sample_batch
from generate.perplexity import response_perplexities
from utils.io import DataError
from utils.seed import derive_seed


SAMPLERS = ("hf", "vllm")


class Completion(NamedTuple):
    text: str  # without the end-of-turn token, stripped
    finished: bool  # False when generation was cut at max_new_tokens before the end of the turn
    token_ids: tuple | None = None  # the sampled ids, when the backend reports them (vLLM)
    logprobs: tuple | None = None  # their log-probs before temperature and top-p, when asked for (vLLM)
    watched: dict | None = None  # {token id: its raw logit at each step}, for the HF sampler's watch_ids


class SampleRequest(NamedTuple):
    prompt: str
    num_samples: int
    temperature: float  # 0: greedy (one judgment, copied num_samples times)
    seed: int


def requests_for(prompts: list[str], num_samples: int, temperature: float, seed: int) -> list[SampleRequest]:
    """One request per prompt, each with a seed of its own derived from `seed` and its position."""
    return [SampleRequest(p, num_samples, temperature, derive_seed(seed, i)) for i, p in enumerate(prompts)]


def rows_to_sample(request: SampleRequest) -> int:
    """Greedy decoding gives one judgment per prompt: one row, copied afterwards (`with_copies`)."""
    return request.num_samples if request.temperature > 0 else 1


def with_copies(done: list[list], requests: list[SampleRequest]) -> list[list]:
    """Each request's completions, a greedy one copied up to its `num_samples`."""
    return [d * r.num_samples if len(d) < r.num_samples else d for d, r in zip(done, requests)]


def by_setting(requests) -> dict[tuple[float, int], list[int]]:
    """The requests' indices grouped by (temperature, num_samples), for loops that sample one
    setting at a time."""
    groups: dict[tuple[float, int], list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault((r.temperature, r.num_samples), []).append(i)
    return dict(sorted(groups.items()))


class Sampler(Protocol):
    def sample(self, requests: list[SampleRequest], max_new_tokens: int) -> list[list[Completion]]:
        """For every request, `num_samples` completions. The same requests give the same
        completions."""

    def generate(self, prompts: list[str], num_samples: int, temperature: float, max_new_tokens: int,
                 seed: int) -> list[list[Completion]]:
        """`sample` of one request per prompt (`requests_for`)."""


class HFSampler:
    """Samples with the loaded model, at most `batch_size` sequences (samples included) at a time,
    and keeps each completion's sampled ids and log-probs, so `sequence_logps` scores them without
    a second pass. `continuous=False` takes the batch-by-batch loop (prompts sorted by length,
    finished rows dropped, one random stream per batch), the path before continuous batching."""

    def __init__(self, model, tokenizer, batch_size: int = 64, top_p: float = 1.0, continuous: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size  # rows decoded together, samples included
        self.top_p = top_p
        self.continuous = continuous
        self.stop_ids = stop_token_ids(tokenizer)
        self.watch_ids: list[int] | None = None  # ids whose logits every step keeps (the judge's letters)
        self.occupancy: list[int] = []  # busy rows at each decode step (benchmarks.bench_sampling reads it)

    def generate(self, prompts, num_samples, temperature, max_new_tokens, seed):
        return self.sample(requests_for(prompts, num_samples, temperature, seed), max_new_tokens)

    def sample(self, requests: list[SampleRequest], max_new_tokens: int) -> list[list[Completion]]:
        if not requests:
            return []
        tok, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        encoded = [Request(encode_prompt(tok, r.prompt), rows_to_sample(r), max(0.0, r.temperature), r.seed)
                   for r in requests]
        if self.continuous and supported(model):
            sampled = sample_continuous(model, encoded, max_new_tokens, self.stop_ids, tok.pad_token_id,
                                        self.batch_size, self.top_p, self.watch_ids, self.occupancy)
        else:
            sampled = self._batch_by_batch(encoded, max_new_tokens)
        texts = iter(tok.batch_decode([s.token_ids for row in sampled for s in row], skip_special_tokens=True))
        done = [[Completion(next(texts).strip(), s.finished, tuple(s.token_ids), tuple(s.logprobs),
                            _by_id(self.watch_ids, s.watched)) for s in row] for row in sampled]
        model.train(was_training)
        return with_copies(done, requests)

    def _batch_by_batch(self, requests: list[Request], max_new_tokens: int):
        """Requests of one temperature and sample count at a time, sorted by length, at most
        `batch_size` rows per call; each call's random stream is seeded by its first request."""
        device = next(self.model.parameters()).device
        out = [None] * len(requests)
        for (temperature, k), same in by_setting(requests).items():
            order = sorted(same, key=lambda i: len(requests[i].prompt))
            per_call = max(1, self.batch_size // k)
            for begin in range(0, len(order), per_call):
                idx = order[begin : begin + per_call]
                generator = torch.Generator(device=device).manual_seed(requests[idx[0]].seed)
                rows = sample_batch(self.model, [requests[i].prompt for i in idx], k, temperature, max_new_tokens,
                                    self.stop_ids, self.tokenizer.pad_token_id, generator, self.top_p,
                                    self.watch_ids, self.occupancy)
                for n, i in enumerate(idx):
                    out[i] = rows[n * k : (n + 1) * k]
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
