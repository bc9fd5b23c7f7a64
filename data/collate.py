"""Turning (prompt, response) text into training tensors.

The prompt and the response are tokenized separately and joined, and EOS is appended to the
response; tokenizing the joined string instead could merge tokens across the boundary and blur
which tokens belong to the response. Prompt and padding positions carry the label -100, so every
loss and log-probability in the project covers response tokens only.
"""
from __future__ import annotations

import torch

IGNORE_INDEX = -100


def encode_prompt_response(tokenizer, prompt: str, response: str, max_length: int | None = None,
                           max_prompt_length: int | None = None) -> dict[str, list[int]]:
    """Token ids and labels of prompt + response + EOS.

    Truncation policy: the prompt loses tokens from its *start* (its end holds the answers and the
    generation header), first down to `max_prompt_length`, then as far as needed for the response
    to fit; the response loses tokens from its *end* only when even an empty prompt leaves too
    little room.
    """
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if max_prompt_length is not None and len(p) > max_prompt_length:
        p = p[len(p) - max_prompt_length:]
    if max_length is not None and len(p) + len(r) > max_length:
        keep_prompt = max(max_length - len(r), min(len(p), max_length // 2))
        p = p[len(p) - keep_prompt:] if keep_prompt > 0 else []
        r = r[: max_length - len(p)]
    return {"input_ids": p + r, "labels": [IGNORE_INDEX] * len(p) + r}


def pad(seqs: list[list[int]], value: int, side: str = "right") -> torch.Tensor:
    width = max(len(s) for s in seqs)
    rows = [(s + [value] * (width - len(s))) if side == "right" else ([value] * (width - len(s)) + s) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def collate_prompt_response(features: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: positions of real tokens are the same as unpadded, so results match."""
    ids = [f["input_ids"] for f in features]
    return {
        "input_ids": pad(ids, pad_token_id),
        "attention_mask": pad([[1] * len(s) for s in ids], 0),
        "labels": pad([f["labels"] for f in features], IGNORE_INDEX),
    }


class PromptResponseCollator:
    """Picklable collator for `Trainer` (dataloader workers need to pickle it)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features):
        return collate_prompt_response(features, self.pad_token_id)
