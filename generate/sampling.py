"""Sampling judgments in batches.

`Sampler` is the small interface the rest of the pipeline talks to; `HFSampler` implements it with
`model.generate` (left padding, prompts sorted by length so each batch wastes little padding,
`num_return_sequences` for the K samples of a prompt). A vLLM or other backend only has to
implement `generate` with the same contract. Prompts are encoded and generation stops exactly as
`data.tokens` says, so what is sampled is what scoring and training see.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import torch

from data.tokens import encode_prompt, stop_token_ids
from utils.io import DataError


SAMPLERS = ("hf", "vllm")


class Completion(NamedTuple):
    text: str  # without the end-of-turn token, stripped
    finished: bool  # False when generation was cut at max_new_tokens before the end of the turn
    token_ids: tuple | None = None  # the sampled ids, when the backend reports them (vLLM)
    logprobs: tuple | None = None  # their log-probs before temperature and top-p, when asked for (vLLM)


class Sampler(Protocol):
    def generate(self, prompts: list[str], num_samples: int, temperature: float, max_new_tokens: int,
                 seed: int) -> list[list[Completion]]:
        """For every prompt, `num_samples` completions (greedy when temperature == 0). The same
        arguments and seed give the same completions."""


class HFSampler:
    def __init__(self, model, tokenizer, batch_size: int = 64, top_p: float = 1.0):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size  # sequences per generate call, samples included
        self.top_p = top_p
        self.stop_ids = stop_token_ids(tokenizer)

    @torch.no_grad()
    def generate(self, prompts, num_samples, temperature, max_new_tokens, seed):
        if temperature <= 0 and num_samples > 1:  # greedy decoding gives one judgment per prompt: its copies
            return [o * num_samples for o in self.generate(prompts, 1, temperature, max_new_tokens, seed)]
        tok, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        torch.manual_seed(seed)
        encoded = [encode_prompt(tok, p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        per_call = max(1, self.batch_size // num_samples)
        out: list[list[Completion]] = [None] * len(prompts)
        device = next(model.parameters()).device
        stops = torch.tensor(self.stop_ids)
        for start in range(0, len(order), per_call):
            idx = order[start : start + per_call]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: every prompt ends where generation starts
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            sampling = temperature > 0
            gen = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=sampling, temperature=temperature if sampling else None,
                top_p=self.top_p if sampling else None, top_k=0 if sampling else None,
                num_return_sequences=num_samples, pad_token_id=tok.pad_token_id, eos_token_id=self.stop_ids,
            )[:, width:].cpu()
            finished = torch.isin(gen, stops).any(-1).tolist()
            texts = tok.batch_decode(gen, skip_special_tokens=True)
            for row, i in enumerate(idx):
                out[i] = [Completion(t.strip(), f) for t, f in
                          zip(texts[row * num_samples : (row + 1) * num_samples],
                              finished[row * num_samples : (row + 1) * num_samples])]
        model.train(was_training)
        return out


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
