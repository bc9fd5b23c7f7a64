"""Turning (prompt, response) text into training tensors.

The prompt and the response are tokenized separately and joined (`data.tokens`: BOS once where
the model expects one, the end-of-turn token after a finished response); tokenizing the joined
string instead could merge tokens across the boundary and blur which tokens belong to the
response. Prompt and padding positions carry the label -100, so every loss and log-probability in
the project covers response tokens only. Nothing is cut here: prompts are fitted to their budget
as text, before templating (`data.templates.fit_judge_prompt`), and a row that is still too long
for `max_length` is left out by the stage that builds the batches, and counted.
"""
from __future__ import annotations

import torch

from data.tokens import encode_prompt, encode_response

IGNORE_INDEX = -100


def encode_prompt_response(tokenizer, prompt: str, response: str, finished: bool = True) -> dict[str, list[int]]:
    """Token ids and labels of prompt + response (+ the end-of-turn token if `finished`)."""
    p = encode_prompt(tokenizer, prompt)
    r = encode_response(tokenizer, response, finished)
    return {"input_ids": p + r, "labels": [IGNORE_INDEX] * len(p) + r}


def pad(seqs: list[list[int]], value: int, side: str = "right") -> torch.Tensor:
    width = max(len(s) for s in seqs)
    rows = [(s + [value] * (width - len(s))) if side == "right" else ([value] * (width - len(s)) + s) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def collate_prompt_response(features: list[dict], pad_token_id: int) -> dict:
    """Right-padded batch: positions of real tokens are the same as unpadded, so results match.
    Besides the tensors, `logits_to_keep` tells the model how many last positions need logits."""
    ids = [f["input_ids"] for f in features]
    labels = pad([f["labels"] for f in features], IGNORE_INDEX)
    return {
        "input_ids": pad(ids, pad_token_id),
        "attention_mask": pad([[1] * len(s) for s in ids], 0),
        "labels": labels,
        "logits_to_keep": logits_to_keep(labels),
    }


def logits_to_keep(labels: torch.Tensor) -> int:
    """How many last positions of a right-padded batch need logits: from the one before the earliest
    labelled token to the end (the logit at t predicts the label at t + 1; a label at position 0
    has no logit before it, as in a causal LM's own loss). Computed here, on the CPU, so that the
    training step never waits for the GPU to find it."""
    labelled = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    return labels.shape[1] - int(labelled[0, 0]) if len(labelled) else 1


class PromptResponseCollator:
    """Picklable collator for `Trainer` (dataloader workers need to pickle it)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features):
        return collate_prompt_response(features, self.pad_token_id)


def budget_batches(lengths: list[int], max_rows: int | None = None, max_tokens: int | None = None,
                   rows_per_item: int = 1) -> list[list[int]]:
    """Item indices in batches, shortest items first, for forward passes without gradients.

    A batch holds at most `max_rows` items and at most `max_tokens` padded tokens (rows x the
    longest row; an item is `rows_per_item` rows, e.g. 2 for a chosen/rejected pair), so one long
    item cannot blow the memory a batch size was chosen for. Sorting by length keeps padding small.
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"a batch needs at least one row, got max_rows={max_rows}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # lengths only grow along `order`, so lengths[i] is the batch's longest
        if max_tokens is not None and rows_per_item * lengths[i] > max_tokens:
            raise ValueError(f"a token budget of {max_tokens} is smaller than one item "
                             f"({rows_per_item} x {lengths[i]} tokens)")
        full = (max_rows is not None and len(current) == max_rows) or (
            max_tokens is not None and rows_per_item * (len(current) + 1) * lengths[i] > max_tokens)
        if current and full:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
