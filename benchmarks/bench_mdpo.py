"""Training throughput and peak memory of our M-DPO trainer (weighting none = plain DPO) against
TRL's DPOTrainer on the same tiny model, pairs, batch size and beta, in one run.

    python -m benchmarks.bench_mdpo [--pairs 256 --batch_size 16 --steps 16]

Each variant runs in its own process so that peak memory (max RSS on CPU, max allocated on
CUDA) belongs to it alone. Time counts the whole `train()` call, including our reference pass.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = ("trl", "ours_live_ref", "ours_precomputed_ref")


def make_pairs(n: int, tokenizer) -> list[dict]:
    from toy.task import build, reference_response  # noqa: F401
    from data.templates import format_response, judge_prompt_groups
    from utils.io import read_jsonl

    tmp = tempfile.mkdtemp()
    build(tmp, n_sft=3, n_prefs=n, n_val=1, n_test=1)
    pairs = []
    for item in read_jsonl(os.path.join(tmp, "prefs.jsonl")):
        g = judge_prompt_groups(tokenizer, item, ["compare"], ("A",))[0]
        pairs.append({"prompt": g["prompt"], "chosen": format_response(f"{item['answer_pos']} is right.", "A"),
                      "rejected": format_response(f"{item['answer_neg']} is right.", "B"),
                      "chosen_level": "SA", "rejected_level": "SR"})
    return pairs


def run_variant(variant: str, model_dir: str, n_pairs: int, batch_size: int, steps: int, beta: float) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    pairs = make_pairs(n_pairs, tok)
    out = tempfile.mkdtemp()
    common = dict(output_dir=out, per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=1e-5,
                  report_to="none", save_strategy="no", logging_steps=steps, disable_tqdm=True, seed=0,
                  use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
    if variant == "trl":
        import copy

        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(beta=beta, max_length=512, bf16=False, precompute_ref_log_probs=False, **common)
        trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, processing_class=tok,
                             train_dataset=Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")}
                                                              for p in pairs]))
    else:
        import copy

        from models.m_dpo_trainer import MDPOConfig, MDPOTrainer, PairCollator, encode_pair

        precompute = variant == "ours_precomputed_ref"
        args = MDPOConfig(beta=beta, weighting="none", max_length=512, precompute_ref_log_probs=precompute,
                          precompute_ref_batch_size=64, **common)
        data = [encode_pair(tok, p["prompt"], p["chosen"], p["rejected"], 1.0) for p in pairs]
        t_start = time.perf_counter()
        trainer = MDPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                              data_collator=PairCollator(tok.pad_token_id),
                              ref_model=None if precompute else copy.deepcopy(model))
        ref_time = time.perf_counter() - t_start
    t0 = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - t0 + (0.0 if variant == "trl" else ref_time)
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "samples_per_s": steps * batch_size / elapsed, "seconds": elapsed, "peak_mb": peak_mb}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--model_name_or_path", default=None)
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.variant:
        result = run_variant(a.variant, a.model_name_or_path, a.pairs, a.batch_size, a.steps, a.beta)
        print("RESULT " + json.dumps(result))
        return
    if a.model_name_or_path is None:
        from toy.model import build_tiny

        a.model_name_or_path = os.path.join(tempfile.mkdtemp(), "tiny")
        build_tiny(a.model_name_or_path)
    results = []
    for v in VARIANTS:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_mdpo", "--variant", v, "--model_name_or_path",
                               a.model_name_or_path, "--pairs", str(a.pairs), "--batch_size", str(a.batch_size),
                               "--steps", str(a.steps), "--beta", str(a.beta)], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            sys.exit(f"variant {v} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[0][7:]))
    base = results[0]
    print(f"\nDPO training, {a.steps} steps x batch {a.batch_size}, beta={a.beta}")
    print("| trainer | samples/s | seconds | peak MB | speed vs TRL |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['samples_per_s']:.1f} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
              f"{r['samples_per_s'] / base['samples_per_s']:.2f}x |")


if __name__ == "__main__":
    main()
