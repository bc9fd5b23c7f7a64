"""Refinement's sampling and scoring with the HF sampler against vLLM, on the same judge, prompts
and settings, in one run: samples/s and generated tokens/s end to end (sampling + perplexities).

    .venv-vllm/bin/python -m benchmarks.bench_sampling --model_name_or_path outputs/demo/sft \\
        --pref_file outputs/demo/data/prefs.jsonl [--items 64 --num_samples 8 --max_new_tokens 64]
    .venv-vllm/bin/python -m benchmarks.bench_sampling --model_name_or_path outputs/models/smollm2-135m-instruct \\
        --pref_file outputs/demo/data/prefs.jsonl --items 8 --num_samples 4      # the real model (make real-model)

Variants, each in its own process: `hf` (transformers generate, perplexities from a forward pass),
`vllm+model` (vLLM samples, the HF model scores) and `vllm+sampler` (vLLM samples and its own
log-probs are the scores: no second pass, no second model). The table gives the time with and
without loading (the engine's start-up is a fixed cost of ~30 s on CPU). Needs vLLM: run it with
the .venv-vllm interpreter (`make setup-vllm`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = {"hf": ("hf", "model"), "vllm+model": ("vllm", "model"), "vllm+sampler": ("vllm", "sampler")}


def run_variant(variant: str, a) -> dict:
    import torch

    from data.schemas import load_prefs
    from data.templates import template_ids
    from generate.vllm_sampler import VLLMOptions
    from generate.backends import build_sampler
    from models.loading import ModelArguments, load_model, tokenizer_of
    from run_preference_refinement import RefinementArguments, process_chunk, prompt_groups

    sampler_name, score_with = VARIANTS[variant]
    t0 = time.perf_counter()
    model_args = ModelArguments(model_name_or_path=a.model_name_or_path, dtype=a.dtype)
    tok = tokenizer_of(model_args)
    args = RefinementArguments(num_samples=a.num_samples, temperatures="0.7,1.0", templates="all",
                               max_new_tokens=a.max_new_tokens, generation_batch_size=256, scoring_batch_size=128,
                               sampler=sampler_name, score_with=score_with)
    model = load_model(model_args, tok) if score_with == "model" or sampler_name == "hf" else None
    options = VLLMOptions(gpu_memory_utilization=0.5, max_model_len=512, enforce_eager=True)  # dtype: as HF's
    sampler = build_sampler(sampler_name, model_args, tok, model, options, args.generation_batch_size,
                            logprobs=score_with == "sampler")
    loaded = time.perf_counter()
    items = load_prefs(a.pref_file)[: a.items]
    groups = [g for item_groups in prompt_groups(items, tok, args, template_ids("all")) for g in item_groups]
    records = []
    for start in range(0, len(groups), 96):  # chunks of 16 items x 6 prompts, as the demo's refinement
        records += process_chunk(start, groups[start : start + 96], sampler, model, tok, args, [0.7, 1.0])
    done = time.perf_counter()
    generated = sum(len(tok(r["response"], add_special_tokens=False)["input_ids"]) + r["finished"] for r in records)
    if hasattr(sampler, "close"):
        sampler.close()
    return {"variant": variant, "samples": len(records), "tokens": generated, "load_s": loaded - t0,
            "work_s": done - loaded, "threads": torch.get_num_threads(),
            "mean_ppl": sum(r["ppl"] for r in records) / len(records)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--pref_file", required=True)
    p.add_argument("--items", type=int, default=64)
    p.add_argument("--num_samples", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--dtype", default="fp32", help="the precision of both backends")
    p.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.variant:
        print("RESULT " + json.dumps(run_variant(a.variant, a)))
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    results = []
    for v in VARIANTS:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_sampling", "--variant", v,
                               "--model_name_or_path", a.model_name_or_path, "--pref_file", a.pref_file,
                               "--items", str(a.items), "--num_samples", str(a.num_samples),
                               "--max_new_tokens", str(a.max_new_tokens), "--dtype", a.dtype], capture_output=True,
                              text=True, cwd=root,
                              env=env)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            sys.exit(f"{v} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[0][7:]))
    base = results[0]
    print(f"\nrefinement sampling + scoring, {a.items} items x 3 templates x 2 orders x K={a.num_samples} "
          f"(temperatures 0.7, 1.0), max_new_tokens={a.max_new_tokens}, {a.dtype}, torch threads={base['threads']}, "
          f"model {a.model_name_or_path}")
    print("| variant | samples | samples/s | tokens/s | seconds | + loading | end to end vs hf | mean ppl |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        total = r["work_s"] + r["load_s"]
        print(f"| {r['variant']} | {r['samples']} | {r['samples'] / r['work_s']:.1f} | {r['tokens'] / r['work_s']:,.0f} | "
              f"{r['work_s']:.1f} | {total:.1f} | {(base['work_s'] + base['load_s']) / total:.2f}x "
              f"({base['work_s'] / r['work_s']:.2f}x without loading) | {r['mean_ppl']:.4f} |")


if __name__ == "__main__":
    main()
