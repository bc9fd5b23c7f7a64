"""Sampling judgments in batches.

`Sampler` is the small interface the rest of the pipeline talks to; `HFSampler` implements it with
`model.generate` (left padding, prompts sorted by length so each batch wastes little padding,
`num_return_sequences` for the K samples of a prompt). A vLLM or other backend only has to
implement `generate` with the same contract.
"""
from __future__ import annotations

from typing import Protocol

import torch


class Sampler(Protocol):
    def generate(self, prompts: list[str], num_samples: int, temperature: float, max_new_tokens: int,
                 seed: int) -> list[list[str]]:
        """For every prompt, `num_samples` responses (greedy when temperature == 0). The same
        arguments and seed give the same responses."""


class HFSampler:
    def __init__(self, model, tokenizer, batch_size: int = 64, top_p: float = 1.0):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size  # sequences per generate call, samples included
        self.top_p = top_p

    @torch.no_grad()
    def generate(self, prompts, num_samples, temperature, max_new_tokens, seed):
        tok, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        torch.manual_seed(seed)
        encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        per_call = max(1, self.batch_size // num_samples)
        out: list[list[str]] = [None] * len(prompts)
        device = next(model.parameters()).device
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
                num_return_sequences=num_samples, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )
            texts = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
            for row, i in enumerate(idx):
                out[i] = [t.strip() for t in texts[row * num_samples : (row + 1) * num_samples]]
        model.train(was_training)
        return out
