"""Refinement's sampling and scoring, every backend on the same judge, prompts and settings, in one
run: samples/s, generated tokens/s and achieved GFLOP/s end to end (sampling + perplexities),
next to this processor's fp32 matrix-multiply peak measured in the same run.

    .venv/bin/python -m benchmarks.bench_sampling --model_name_or_path outputs/real_smoke/seed0/sft \\
        --pref_file outputs/real_smoke/seed0/data/prefs.jsonl --items 8 --num_samples 4
    .venv-vllm/bin/python -m benchmarks.bench_sampling ...       # adds the vLLM variants (make setup-vllm)

Variants, each in its own process:
- `generate` (the baseline): transformers `model.generate`, K samples through
  `num_return_sequences` (each sample runs its prompt again, every row runs until the longest ends),
  perplexities from a second forward pass: the plain transformers way;
- `hf-batches+sampler`: the HF sampler batch by batch (generate/decoding.py: one prefill per
  prompt, finished rows leave the batch and nothing takes their place), perplexities from the
  log-probs the judgments were sampled with;
- `hf+sampler`: the HF sampler by continuous batching (generate/continuous.py: a freed row takes
  the next waiting request, a preallocated KV cache), scored the same way; `hf+model` the same
  samples with perplexities from a second forward pass (`--score_with model`);
- `vllm+model`, `vllm+sampler`: vLLM samples (only where vLLM is installed); the table gives the
  time with and without loading (the engine's start-up is a fixed cost on CPU: ~90 s with its
  compiled graphs, ~30 s eager).

Occupancy is the mean share of the batch's rows (`--batch_size`, samples included) busy at a decode
step, for the HF variants.

`--vllm_settings` runs the vLLM variants once per setting of a grid 'NAME=v1,v2; NAME=v1,v2':
upper-case names are the engine's environment (VLLM_CPU_OMP_THREADS_BIND, VLLM_CPU_KVCACHE_SPACE
in GiB, ...), lower-case ones its options (enforce_eager, max_num_seqs, ...: generate.vllm_sampler.
VLLMOptions). Unset, the engine runs as the scripts run it (compiled graphs, not eager) with a
2 GiB KV cache.

Achieved GFLOP/s counts the work every variant must do, 2 x parameters x (prompt tokens once per
prompt and temperature + generated tokens), over the time taken: recomputed prompts and padding are
the variant's waste, not its work.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
import typing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = {"generate": ("generate", "model"), "hf-batches+sampler": ("hf-batches", "sampler"),
            "hf+sampler": ("hf", "sampler"), "hf+model": ("hf", "model"), "vllm+model": ("vllm", "model"),
            "vllm+sampler": ("vllm", "sampler")}


class GenerateSampler:
    """The baseline: transformers `generate` with `num_return_sequences` (the plain transformers way),
    prompts sorted by length and left-padded."""

    def __init__(self, model, tokenizer, batch_size: int):
        from data.tokens import stop_token_ids

        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.stop_ids = stop_token_ids(tokenizer)

    def sample(self, requests, max_new_tokens):
        """Requests of one temperature and sample count at a time, seeded by the first of them."""
        from generate.sampling import by_setting

        out = [None] * len(requests)
        for (temperature, k), idx in by_setting(requests).items():
            prompts = [requests[i].prompt for i in idx]
            done = self.generate(prompts, k, temperature, max_new_tokens, requests[idx[0]].seed)
            for i, d in zip(idx, done):
                out[i] = d
        return out

    def generate(self, prompts, num_samples, temperature, max_new_tokens, seed):
        import torch

        from data.collate import pad
        from data.tokens import encode_prompt
        from generate.sampling import Completion

        tok = self.tokenizer
        torch.manual_seed(seed)
        encoded = [encode_prompt(tok, p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        per_call, out = max(1, self.batch_size // num_samples), [None] * len(prompts)
        for start in range(0, len(order), per_call):
            idx = order[start : start + per_call]
            ids = pad([encoded[i][::-1] for i in idx], tok.pad_token_id).flip(1)  # left padding
            mask = pad([[1] * len(encoded[i]) for i in idx], 0).flip(1)
            with torch.no_grad():
                gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=True, temperature=temperature, top_k=0,
                                          num_return_sequences=num_samples, pad_token_id=tok.pad_token_id,
                                          eos_token_id=self.stop_ids)[:, ids.shape[1]:]
            finished = torch.isin(gen, torch.tensor(self.stop_ids)).any(-1).tolist()
            texts = tok.batch_decode(gen, skip_special_tokens=True)
            for row, i in enumerate(idx):
                out[i] = [Completion(texts[j].strip(), finished[j]) for j in range(row * num_samples,
                                                                                    (row + 1) * num_samples)]
        return out


def run_variant(variant: str, a) -> dict:
    import torch

    from data.schemas import load_prefs
    from data.templates import template_ids
    from data.tokens import encode_prompt
    from generate.backends import build_sampler
    from models.loading import ModelArguments, load_model, tokenizer_of
    from generate.refinement import RefinementArguments, prompt_groups, sample_chunk
    from generate.sampling import HFSampler

    sampler_name, score_with = VARIANTS[variant]
    t0 = time.perf_counter()
    model_args = ModelArguments(model_name_or_path=a.model_name_or_path, dtype=a.dtype)
    tok = tokenizer_of(model_args)
    args = RefinementArguments(num_samples=a.num_samples, temperatures="0.7,1.0", templates="all",
                               max_new_tokens=a.max_new_tokens, generation_batch_size=a.batch_size,
                               scoring_batch_size=128, sampler="vllm" if sampler_name == "vllm" else "hf",
                               score_with=score_with)
    model = load_model(model_args, tok).eval() if score_with == "model" or sampler_name != "vllm" else None
    if sampler_name == "generate":
        sampler = GenerateSampler(model, tok, args.generation_batch_size)
    elif sampler_name == "hf-batches":
        sampler = HFSampler(model, tok, args.generation_batch_size, continuous=False)
    else:
        options = vllm_options(json.loads(a.vllm_options))  # dtype: as HF's
        sampler = build_sampler(sampler_name, model_args, tok, model, options, args.generation_batch_size,
                                logprobs=score_with == "sampler")
    loaded = time.perf_counter()
    items = load_prefs(a.pref_file)[: a.items]
    groups = [g for item_groups in prompt_groups(items, tok, args, template_ids("all")) for g in item_groups]
    records = []
    per_chunk = 6 * a.items_per_chunk  # 3 templates x 2 orders per item
    for start in range(0, len(groups), per_chunk):
        records += sample_chunk(start, groups[start : start + per_chunk], sampler, model, tok, args, [0.7, 1.0])
    done = time.perf_counter()
    generated = sum(len(tok(r["response"], add_special_tokens=False)["input_ids"]) + r["finished"] for r in records)
    prompt_tokens = 2 * sum(len(encode_prompt(tok, g["prompt"])) for _, g in groups)  # once per temperature
    if hasattr(sampler, "close"):
        sampler.close()
    return {"variant": variant, "samples": len(records), "tokens": generated, "load_s": loaded - t0,
            "flop": None if model is None else
            2 * sum(p.numel() for p in model.parameters()) * (generated + prompt_tokens),
            "work_s": done - loaded, "threads": torch.get_num_threads(),
            "occupancy": (sum(sampler.occupancy) / len(sampler.occupancy) / a.batch_size
                          if getattr(sampler, "occupancy", None) else None),
            "mean_ppl": sum(r["ppl"] for r in records) / len(records)}


ENGINE_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "2", "gpu_memory_utilization": "0.5", "max_model_len": "512",
                   "enforce_eager": "false"}


def settings_grid(text: str | None) -> list[dict]:
    """'NAME=v1,v2; NAME=v1,v2' -> every combination, each {name: value} over ENGINE_DEFAULTS."""
    axes = []
    for part in (p.strip() for p in (text or "").split(";") if p.strip()):
        name, sep, values = part.partition("=")
        if not sep or not name.strip() or not values.strip():
            sys.exit(f"--vllm_settings must look like 'NAME=v1,v2; NAME=v1,v2', got {part!r}")
        axes.append([(name.strip(), v.strip()) for v in values.split(",")])
    return [{**ENGINE_DEFAULTS, **dict(combo)} for combo in itertools.product(*axes)]


def vllm_options(settings: dict):
    """VLLMOptions from the lower-case settings, each value read as its field's type."""
    from generate.vllm_sampler import VLLMOptions

    # get_type_hints, not Field.type: HfArgumentParser swaps the annotation strings for classes in place.
    types = typing.get_type_hints(VLLMOptions)
    read = {bool: lambda v: v.lower() in ("1", "true", "yes"), int: int, float: float, str: str}
    unknown = [k for k in settings if k.islower() and k not in types]
    if unknown:
        sys.exit(f"--vllm_settings: {unknown[0]!r} is not a VLLMOptions field ({', '.join(types)})")
    return VLLMOptions(**{k: read[types[k]](v) for k, v in settings.items() if k.islower()})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--pref_file", required=True)
    p.add_argument("--items", type=int, default=64)
    p.add_argument("--num_samples", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=64, help="rows decoded together, samples included")
    p.add_argument("--items_per_chunk", type=int, default=16, help="refinement's chunk: one sampler call")
    p.add_argument("--dtype", default="fp32", help="the precision of both backends")
    p.add_argument("--variants", help="comma-separated subset of " + ", ".join(VARIANTS) + " (default: all)")
    p.add_argument("--vllm_settings", help="vLLM variants once per setting of 'NAME=v1,v2; NAME=v1,v2' (see above)")
    p.add_argument("--vllm_options", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.variant:
        print("RESULT " + json.dumps(run_variant(a.variant, a)))
        return
    import importlib.util

    import torch

    from benchmarks.bench_hardware import matmul_gflops
    from utils.hardware import cpu_flags

    peak = matmul_gflops({"bf16": torch.bfloat16}.get(a.dtype, torch.float32))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    wanted = a.variants.split(",") if a.variants else list(VARIANTS)
    if not set(wanted) <= set(VARIANTS):
        sys.exit(f"--variants: choose from {', '.join(VARIANTS)}, got {a.variants!r}")
    runs = []
    for v in [v for v in wanted if importlib.util.find_spec("vllm") or not v.startswith("vllm")]:
        runs += [(v, s) for s in settings_grid(a.vllm_settings)] if v.startswith("vllm") else [(v, {})]
    results = []
    for v, settings in runs:
        env = {**os.environ, **{k: val for k, val in settings.items() if k.isupper()}}
        options = {k: val for k, val in settings.items() if k.islower()}
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_sampling", "--variant", v,
                               "--model_name_or_path", a.model_name_or_path, "--pref_file", a.pref_file,
                               "--items", str(a.items), "--num_samples", str(a.num_samples),
                               "--max_new_tokens", str(a.max_new_tokens), "--dtype", a.dtype,
                               "--batch_size", str(a.batch_size), "--items_per_chunk", str(a.items_per_chunk),
                               "--vllm_options", json.dumps(options)], capture_output=True, text=True, cwd=root,
                              env=env)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            sys.exit(f"{v} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        changed = {k: val for k, val in settings.items() if ENGINE_DEFAULTS.get(k) != val}
        results.append({**json.loads(line[0][7:]), "settings": " ".join(f"{k}={val}" for k, val in changed.items())})
    base = results[0]
    flop = next((r["flop"] for r in results if r["flop"]), None)  # the vLLM-only variants load no HF model
    print(f"\nrefinement sampling + scoring, {a.items} items x 3 templates x 2 orders x K={a.num_samples} "
          f"(temperatures 0.7, 1.0), max_new_tokens={a.max_new_tokens}, batch {a.batch_size} rows, chunks of "
          f"{a.items_per_chunk} items, {a.dtype}, torch threads={base['threads']}, model {a.model_name_or_path}")
    name, flags = cpu_flags()
    print(f"{name}; bf16 instructions: {', '.join(flags) or 'none'}; {a.dtype} matmul peak {peak:,.1f} GFLOP/s "
          "(benchmarks.bench_hardware, this run)")
    print("| variant | vLLM settings | samples | samples/s | tokens/s | GFLOP/s (% of peak) | occupancy | seconds "
          "| + loading | end to end vs the first | mean ppl |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        total = r["work_s"] + r["load_s"]
        rate = f"{flop / r['work_s'] / 1e9:,.1f} ({100 * flop / r['work_s'] / 1e9 / peak:.0f}%)" if flop else "-"
        busy = "-" if r.get("occupancy") is None else f"{100 * r['occupancy']:.0f}%"
        print(f"| {r['variant']} | {r['settings'] or '-'} | {r['samples']} | {r['samples'] / r['work_s']:.1f} | "
              f"{r['tokens'] / r['work_s']:,.0f} | {rate} | {busy} | {r['work_s']:.1f} | {total:.1f} | "
              f"{(base['work_s'] + base['load_s']) / total:.2f}x "
              f"({base['work_s'] / r['work_s']:.2f}x without loading) | "
              f"{r['mean_ppl']:.4f} |")


if __name__ == "__main__":
    main()
