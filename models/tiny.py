"""Build a tiny Llama-style judge model and its tokenizer, entirely offline.

Tests and the demo load it through the ordinary `from_pretrained` path, so they exercise exactly
the code a real checkpoint takes. The byte-level BPE tokenizer is trained on text from the
synthetic task (all judge templates, both answer orders), splits digits one by one so that
addition is learnable, and carries a chat template.

    python -m models.tiny --output_dir models/tiny-judge --seed 0
"""
from __future__ import annotations

import argparse
import os
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from data.synthetic import FAMILIES, generate_items, reference_response
from data.templates import TEMPLATES, render_judge_prompt, slot_answers

SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tokenizer_corpus(seed: int, n_items: int = 3000) -> list[str]:
    """Judge prompts and correct responses of the synthetic task, in every template."""
    rng = random.Random(seed + 7919)
    texts = []
    for item in generate_items(n_items, rng, set(), tuple(FAMILIES)):
        slot = rng.choice("AB")
        a, b = slot_answers(item["answer_pos"], item["answer_neg"], slot)
        for tid in TEMPLATES:
            texts.append(render_judge_prompt(tid, item["question"], a, b))
        texts.append(reference_response(item, a, b, slot))
    texts.append('{"CoT": "...", "Chosen answer": "A"} [[A]] [[B]] 0123456789')
    return texts


def build_tokenizer(seed: int = 0, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(seed), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>", unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[2:], model_max_length=1024,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_model(tokenizer, seed: int = 0, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                intermediate_size: int = 352, vocab_size: int | None = None,
                max_position_embeddings: int = 1024) -> LlamaForCausalLM:
    """`vocab_size` larger than the tokenizer gives the embedding and output layers a real model's
    shape (Llama 3: 128,256 rows), which is what decides memory at long lengths; real checkpoints
    also carry more rows than their tokenizer has tokens."""
    config = LlamaConfig(
        vocab_size=max(len(tokenizer), vocab_size or 0), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True, rope_theta=10000.0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny(output_dir: str, seed: int = 0, **model_kwargs) -> int:
    """Build, save and return the parameter count of the tiny model."""
    tokenizer = build_tokenizer(seed)
    model = build_model(tokenizer, seed, **model_kwargs)
    tokenizer.model_max_length = model.config.max_position_embeddings
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return sum(p.numel() for p in model.parameters())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Build the tiny Llama-style judge model and tokenizer.")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden_size", type=int, default=128)
    p.add_argument("--num_layers", type=int, default=4)
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--intermediate_size", type=int, default=352)
    p.add_argument("--vocab_size", type=int, default=None, help="embedding rows (e.g. 128256 for Llama 3's shape)")
    p.add_argument("--max_position_embeddings", type=int, default=1024)
    a = p.parse_args(argv)
    n = build_tiny(a.output_dir, a.seed, hidden_size=a.hidden_size, num_layers=a.num_layers,
                   num_heads=a.num_heads, intermediate_size=a.intermediate_size, vocab_size=a.vocab_size,
                   max_position_embeddings=a.max_position_embeddings)
    print(f"saved a {n / 1e6:.2f}M-parameter tiny Llama and its tokenizer to {a.output_dir}")


if __name__ == "__main__":
    main()
