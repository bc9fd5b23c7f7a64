"""One SFT step and one M-DPO step (forward, backward, AdamW) of a model in fp32 and under bf16
autocast with fp32 master weights (`--bf16 true`), in tokens/s and achieved GFLOP/s, next to this
processor's matrix-multiply peak in both precisions, measured in the same run.

    .venv/bin/python -m benchmarks.bench_training --model_name_or_path outputs/models/smollm2-135m-instruct
    .venv/bin/python -m benchmarks.bench_training --model_name_or_path outputs/demo/sft --precisions fp32,bf16

The steps are the trainers' compute without the Trainer around it: SFT is the NLL of the response
half of each row, with logits only from the first response position on (models.sft_trainer); M-DPO
runs chosen and rejected rows in one forward (`models.logprobs`), and its loss against fixed
reference log-probs (the trainer precomputes them, so they cost no step time).
Achieved GFLOP/s counts 6 x (transformer weights x tokens + vocabulary projection x the positions
it is computed at) per step (forward and backward; `step_flop`).
bf16 is measured only where the processor has bf16 instructions unless --precisions names it: where
it is emulated (no AMX, no AVX-512 BF16) a real model's step takes many minutes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_batch(vocab: int, rows: int, length: int, seed: int = 0) -> dict:
    """`rows` rows of `length` random ids, the second half of each a response (labelled)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, vocab, (rows, length), generator=g)
    labels = ids.clone()
    labels[:, : length // 2] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def time_steps(model, step, steps: int) -> float:
    """Seconds per optimizer step after one warm-up step."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def one():
        optimizer.zero_grad(set_to_none=True)
        step().backward()
        optimizer.step()

    one()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - start) / steps


def measure(model, kind: str, precision: str, rows: int, length: int, steps: int) -> dict:
    import torch

    from models.logprobs import forward_logps
    from models.losses import m_dpo_loss

    vocab = model.config.vocab_size
    if kind == "sft":  # as models.sft_trainer: the NLL of the response tokens, logits only where they are
        batch = make_batch(vocab, rows, length)

        def loss():
            logps, n_tokens = forward_logps(model, batch)
            return -logps.sum() / n_tokens.sum()
    else:  # chosen and rejected rows in one forward, as the M-DPO trainer concatenates them
        batch = make_batch(vocab, 2 * rows, length)
        reference = torch.zeros(2 * rows)

        def loss():
            logps, _ = forward_logps(model, batch)
            return m_dpo_loss(logps[:rows], logps[rows:], reference[:rows], reference[rows:], torch.ones(rows),
                              beta=0.1)[0]

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return loss()

    model.train()
    seconds = time_steps(model, step, steps)
    tokens = batch["input_ids"].numel()
    return {"step": kind, "precision": precision, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "gflops": step_flop(model, batch) / seconds / 1e9}


def step_flop(model, batch: dict) -> float:
    """6 x (the weights every token goes through x tokens + the vocabulary projection x the
    positions it is computed at): forward and backward. The input embedding is a lookup, and the
    logits are computed from the first response position on (data.collate.logits_to_keep)."""
    from data.collate import logits_to_keep

    head = model.get_output_embeddings().weight
    embedding = model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters() if p is not head and p is not embedding)
    rows, length = batch["input_ids"].shape
    return 6.0 * (body * rows * length + head.numel() * rows * logits_to_keep(batch["labels"]))


def main(argv=None) -> None:
    import torch

    from benchmarks.bench_hardware import matmul_gflops
    from models.loading import ModelArguments, load_model, tokenizer_of
    from utils.hardware import NATIVE_BF16_FLAGS, cpu_flags

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--rows", type=int, default=4, help="rows per SFT step; an M-DPO step has as many pairs")
    p.add_argument("--length", type=int, default=192, help="tokens per row (prompt half, response half)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--precisions", default=None, help="fp32,bf16 (default: bf16 only where the CPU has bf16 "
                                                      "instructions)")
    a = p.parse_args(argv)
    name, flags = cpu_flags()
    precisions = (a.precisions or ("fp32,bf16" if set(NATIVE_BF16_FLAGS) & set(flags) else "fp32")).split(",")
    peaks = {pr: matmul_gflops({"fp32": torch.float32, "bf16": torch.bfloat16}[pr]) for pr in ("fp32", "bf16")}
    args = ModelArguments(model_name_or_path=a.model_name_or_path, dtype="fp32")  # fp32 master weights
    model = load_model(args, tokenizer_of(args))
    results = [measure(model, kind, pr, a.rows, a.length, a.steps) for kind in ("sft", "mdpo") for pr in precisions]
    params = sum(p.numel() for p in model.parameters())
    print(f"\n{a.model_name_or_path} ({params / 1e6:.1f}M parameters); {a.rows} rows (M-DPO: pairs) x {a.length} "
          f"tokens; torch threads={torch.get_num_threads()}")
    print(f"{name}; bf16 instructions: {', '.join(flags) or 'none'}; matmul peak (this run): "
          f"fp32 {peaks['fp32']:,.1f}, bf16 {peaks['bf16']:,.1f} GFLOP/s")
    print("| step | precision | tokens/step | s/step | tokens/s | GFLOP/s | % of its peak | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        fp32 = next(x for x in results if x["step"] == r["step"] and x["precision"] == "fp32")
        print(f"| {r['step']} | {r['precision']} | {r['tokens']} | {r['seconds']:.2f} | {r['tokens_per_s']:,.0f} | "
              f"{r['gflops']:,.1f} | {100 * r['gflops'] / peaks[r['precision']]:.0f}% | "
              f"{fp32['seconds'] / r['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
