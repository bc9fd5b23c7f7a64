"""How every stage turns prompt and response text into token ids, so that SFT, sampling, scoring,
M-DPO and evaluation all see exactly the same ids.

- **Prompts** are chat-templated text tokenized without the tokenizer's own special tokens (the
  template writes them), plus the BOS token when the model expects one and the text does not
  already start with it: Llama 3's template writes `<|begin_of_text|>` itself, Qwen2.5 has no BOS,
  a base model without a template gets the BOS its tokenizer would add. Never two.
- **Responses** end with the token that ends an assistant turn in the chat template
  (`<|eot_id|>` for Llama 3, `<|im_end|>` for Qwen2.5; the EOS token when the template has none)
  — but only when the response was finished: a sample cut at `max_new_tokens` never gets an end it
  did not produce. Generation stops at that token (or EOS).
"""
from __future__ import annotations

import functools

_SENTINEL = "\u2063GFRIEND-RESPONSE\u2063"


@functools.lru_cache(maxsize=16)
def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's own encoding starts with BOS, i.e. the model was trained with one."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return with_special[:1] == [bos] and without[:1] != [bos]


def encode_prompt(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if adds_bos(tokenizer) and ids[:1] != [tokenizer.bos_token_id]:
        ids = [tokenizer.bos_token_id] + ids
    return ids


def _is_special(tokenizer, token_id: int) -> bool:
    if token_id in tokenizer.all_special_ids:
        return True
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return token_id in added and getattr(added[token_id], "special", False)


@functools.lru_cache(maxsize=16)
def end_of_turn_id(tokenizer) -> int:
    """The first special token the chat template writes after an assistant message (EOS when the
    template writes none, or there is no template)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": "Q"},
                                              {"role": "assistant", "content": _SENTINEL}], tokenize=False)
        if _SENTINEL in text:
            suffix = text[text.rindex(_SENTINEL) + len(_SENTINEL):]
            for token_id in tokenizer(suffix, add_special_tokens=False)["input_ids"]:
                if _is_special(tokenizer, token_id):
                    return token_id
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token and its chat template no end-of-turn token")
    return tokenizer.eos_token_id


def stop_token_ids(tokenizer) -> list[int]:
    """Generation stops at the end of the turn, or at EOS."""
    eot, eos = end_of_turn_id(tokenizer), tokenizer.eos_token_id
    return [eot] if eos is None or eos == eot else [eot, eos]


def encode_response(tokenizer, text: str, finished: bool = True) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [end_of_turn_id(tokenizer)] if finished else ids
