"""Build a tiny Llama-style judge model and its tokenizer, entirely offline.

Tests and the demo load it through the ordinary `from_pretrained` path, so they exercise exactly
the code a real checkpoint takes. The byte-level BPE tokenizer is trained on text from the
synthetic task (all judge templates, both answer orders), splits digits one by one so that
addition is learnable, and carries a chat template in one of three styles:

- `tiny`: the demo's own, `<|user|>` / `<|assistant|>` lines, EOS `<|endoftext|>`, no BOS;
- `llama3`: Llama-3-Instruct's structure: the template writes `<|begin_of_text|>` (which the
  tokenizer also adds to plain text), `<|start_header_id|>role<|end_header_id|>` headers, turns end
  with `<|eot_id|>`, while `eos_token` is `<|end_of_text|>` and there is no pad token;
- `qwen2`: Qwen2.5-Instruct's ChatML: a default system turn, `<|im_start|>role` ... `<|im_end|>`,
  no BOS, EOS `<|im_end|>`, pad `<|endoftext|>`.

    python -m toy.model --output_dir outputs/tiny-judge --seed 0 [--chat_style llama3 --vocab_size 128256]
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from toy.task import FAMILIES, generate_items, reference_response
from data.templates import TEMPLATES, render_judge_prompt, slot_answers
from utils.config import check_settings, parse_args, require, run_main

SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Llama 3 Instruct's template, structure and whitespace as released.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Qwen2.5 Instruct's ChatML template, without the tool-calling branches.
QWEN2_TEMPLATE = (
    "{%- for message in messages %}{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
CHAT_STYLES = {  # special tokens, then the tokenizer's named ones and its chat template
    "tiny": (SPECIAL_TOKENS, dict(eos_token="<|endoftext|>", pad_token="<|pad|>"), CHAT_TEMPLATE),
    "llama3": (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"), LLAMA3_TEMPLATE),
    "qwen2": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
              QWEN2_TEMPLATE),
}


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


def build_tokenizer(seed: int = 0, vocab_size: int = 1024, chat_style: str = "tiny") -> PreTrainedTokenizerFast:
    special, named, template = CHAT_STYLES[chat_style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(seed), trainer=trainer)
    if "bos_token" in named:  # like Llama 3's tokenizer: plain text gets BOS from the tokenizer itself
        bos = named["bos_token"]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=None, model_max_length=1024,
        additional_special_tokens=[t for t in special if t not in named.values()], **named,
    )
    hf_tok.chat_template = template
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
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny(output_dir: str, seed: int = 0, chat_style: str = "tiny", **model_kwargs) -> int:
    """Build, save and return the parameter count of the tiny model."""
    tokenizer = build_tokenizer(seed, chat_style=chat_style)
    model = build_model(tokenizer, seed, **model_kwargs)
    tokenizer.model_max_length = model.config.max_position_embeddings
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return sum(p.numel() for p in model.parameters())


@dataclass
class TinyModelArguments:
    output_dir: str = field(default=None)
    seed: int = field(default=0)
    hidden_size: int = field(default=128)
    num_layers: int = field(default=4)
    num_heads: int = field(default=4)
    intermediate_size: int = field(default=352)
    vocab_size: int = field(default=None, metadata={"help": "Embedding rows (e.g. 128256 for Llama 3's shape)."})
    max_position_embeddings: int = field(default=1024)
    chat_style: str = field(default="tiny", metadata={"help": " | ".join(sorted(CHAT_STYLES))})


def parse(argv=None) -> tuple[TinyModelArguments]:
    return parse_args((TinyModelArguments,), argv)


def main(argv=None) -> None:
    (a,) = parse(argv)
    require(output_dir=a.output_dir)
    check_settings(a, choices={"chat_style": tuple(sorted(CHAT_STYLES))})
    n = build_tiny(a.output_dir, a.seed, a.chat_style, hidden_size=a.hidden_size, num_layers=a.num_layers,
                   num_heads=a.num_heads, intermediate_size=a.intermediate_size, vocab_size=a.vocab_size,
                   max_position_embeddings=a.max_position_embeddings)
    print(f"saved a {n / 1e6:.2f}M-parameter tiny Llama and its tokenizer to {a.output_dir}")


if __name__ == "__main__":
    run_main(main)
