"""Samples/s of preference refinement: our batched pipeline against a naive loop that does what
the authors' released code does (one `generate` per sample, one forward per perplexity), on the
same model, items and settings, in one run.

    python -m benchmarks.bench_refinement [--model_name_or_path M] [--items 8 --num_samples 8]

Without a model path a tiny model is built in a temporary directory (random weights: every
sample runs to max_new_tokens on both sides, so the comparison is like for like).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.collate import encode_prompt_response  # noqa: E402
from toy.task import build as build_data  # noqa: E402
from data.templates import judge_prompt_groups, template_ids  # noqa: E402
from generate.parsing import parse_verdict  # noqa: E402
from models.loading import ModelArguments, load_model_and_tokenizer  # noqa: E402
from generate.refinement import RefinementArguments, prompt_groups, sample_chunk  # noqa: E402
from utils.io import read_jsonl  # noqa: E402


def naive(model, tok, items, templates, k, temperature, max_new_tokens) -> int:
    """One generate per sample and one forward per perplexity, as in the released code."""
    n = 0
    for item in items:
        for g in judge_prompt_groups(tok, item, templates):
            ids = tok(g["prompt"], return_tensors="pt", add_special_tokens=False)["input_ids"]
            for _ in range(k):
                with torch.no_grad():
                    out = model.generate(ids, do_sample=True, temperature=temperature, top_k=0,
                                         max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
                response = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
                parse_verdict(response)
                ex = encode_prompt_response(tok, g["prompt"], response)
                with torch.no_grad():
                    loss = model(input_ids=torch.tensor([ex["input_ids"]]), labels=torch.tensor([ex["labels"]])).loss
                math.exp(loss.item())
                n += 1
    return n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_name_or_path", default=None)
    p.add_argument("--items", type=int, default=4)
    p.add_argument("--num_samples", type=int, default=8)
    p.add_argument("--templates", default="compare")
    p.add_argument("--max_new_tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=1.0)
    a = p.parse_args(argv)
    tmp = tempfile.mkdtemp()
    if a.model_name_or_path is None:
        from toy.model import build_tiny

        a.model_name_or_path = os.path.join(tmp, "tiny")
        build_tiny(a.model_name_or_path)
    build_data(os.path.join(tmp, "data"), n_sft=3, n_prefs=a.items, n_val=1, n_test=1)
    items = read_jsonl(os.path.join(tmp, "data", "prefs.jsonl"))
    model, tok = load_model_and_tokenizer(ModelArguments(model_name_or_path=a.model_name_or_path, dtype="fp32"))
    model.eval()
    templates = template_ids(a.templates)
    args = RefinementArguments(num_samples=a.num_samples, temperatures=str(a.temperature), templates=a.templates,
                               max_new_tokens=a.max_new_tokens, generation_batch_size=256, scoring_batch_size=128)
    from generate.sampling import HFSampler

    sampler = HFSampler(model, tok, batch_size=args.generation_batch_size)
    t0 = time.perf_counter()  # prompts are built inside the timing, as the naive loop builds them
    groups = [g for item_groups in prompt_groups(items, tok, args, templates) for g in item_groups]
    n_ours = len(sample_chunk(0, groups, sampler, model, tok, args, [a.temperature]))
    ours = n_ours / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    n_naive = naive(model, tok, items, templates, a.num_samples, a.temperature, a.max_new_tokens)
    base = n_naive / (time.perf_counter() - t0)
    print(f"\nrefinement throughput, {a.items} items x {len(templates)} templates x 2 orders x K={a.num_samples}, "
          f"max_new_tokens={a.max_new_tokens}, torch threads={torch.get_num_threads()}")
    print("| pipeline | samples | samples/s |\n|---|---|---|")
    print(f"| naive loop (one generate per sample) | {n_naive} | {base:.1f} |")
    print(f"| batched (this project) | {n_ours} | {ours:.1f} |")
    print(f"speed-up: {ours / base:.1f}x")


if __name__ == "__main__":
    main()
