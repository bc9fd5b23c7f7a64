"""The reward a scalar reward model (a sequence-classification model with one output) gives a
sequence, read at the row's last real token, found by the attention mask. `transformers`' own
pooling takes the last token that differs from the pad id instead, which skips a text's final token
whenever pad = EOS = end of turn (SmolLM2, Llama 3 Instruct with EOS as pad) and that token ends the
text. Apart from the trainer (models.bt_trainer), so evaluation does not import `Trainer`.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from data.collate import budget_batches, pad
from data.tokens import encode_prompt


def reward_head(model) -> torch.nn.Module:
    """The linear head that scores every position of a sequence-classification model (`score` in
    Llama, Qwen, Mistral, Gemma), through DDP/DeepSpeed and PEFT wrappers."""
    inner = model
    while hasattr(inner, "module"):
        inner = inner.module
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    head = getattr(inner, "score", None) or getattr(inner, "classifier", None)
    if head is None:
        raise ValueError(f"{type(inner).__name__} has no `score` head to read rewards from")
    return head


@contextmanager
def _captured_output(module: torch.nn.Module):
    found = {}
    handle = module.register_forward_hook(lambda _m, _i, out: found.__setitem__("out", out))
    try:
        yield found
    finally:
        handle.remove()


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """r of every row, read at its last real token (left or right padding alike). The model is
    called as a whole, so DDP and DeepSpeed see the forward; the head's per-position output is
    taken on the way."""
    with _captured_output(reward_head(model)) as found:
        model(input_ids=input_ids, attention_mask=attention_mask)
    per_position = found["out"]
    last = (torch.arange(attention_mask.shape[1], device=attention_mask.device) * attention_mask).argmax(-1)
    return per_position[torch.arange(per_position.shape[0], device=per_position.device), last.to(per_position.device),
                        0].float()


@torch.no_grad()
def scalar_rewards(model, tokenizer, texts: list[str], batch_size: int) -> list[float]:
    """r of each text (fitted to its budget before), encoded as training encodes it, in batches of
    similar lengths."""
    model.eval()
    device = next(model.parameters()).device
    ids = [encode_prompt(tokenizer, t) for t in texts]
    rewards = [0.0] * len(texts)
    for idx in budget_batches([len(x) for x in ids], batch_size):
        rows = [ids[i] for i in idx]
        batch = sequence_rewards(model, pad(rows, tokenizer.pad_token_id).to(device),
                                 pad([[1] * len(x) for x in rows], 0).to(device))
        for i, r in zip(idx, batch.tolist()):
            rewards[i] = r
    return rewards
