"""Evaluation's cost per judgment, the way run_eval.py and run_judge.py judge: greedy judgments of
test pairs in both answer orders, then P(A better) at each verdict letter. Two variants on the same
judge and rows, in one run:

- `forward pass` (the baseline): the letters' probabilities from a second forward pass over prompt
  and judgment up to the letter (what a sampler that keeps no logits must do);
- `from the loop`: the letters' logits the HF sampling loop kept at every step (watch_ids).

    .venv/bin/python -m benchmarks.bench_judge --model_name_or_path outputs/real_smoke/seed0/sft \\
        --eval_file outputs/real_smoke/seed0/data/test.jsonl --items 32 --max_new_tokens 96

Both variants write the same judgments; the table gives judgments/s, their ratio, and the largest
difference between the two variants' P(A better).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--eval_file", required=True)
    p.add_argument("--items", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=96)
    p.add_argument("--max_prompt_length", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=64)
    a = p.parse_args(argv)

    import torch

    from data.schemas import load_prefs
    from generate.judge import Judge

    torch.set_num_threads(os.cpu_count() or 1)
    rows = [{"question": r["question"], "answer_a": r["answer_pos"], "answer_b": r["answer_neg"]}
            for r in load_prefs(a.eval_file)[: a.items]]
    judge = Judge.from_pretrained(a.model_name_or_path, dtype="fp32", device="cpu", max_new_tokens=a.max_new_tokens,
                                  max_prompt_length=a.max_prompt_length, batch_size=a.batch_size)
    watch = judge.sampler.watch_ids
    judge.compare_batch(rows[:2])  # warm-up: first-call allocations belong to neither variant
    results = {}
    for name, ids in (("forward pass", None), ("from the loop", watch)):
        judge.sampler.watch_ids = ids
        t0 = time.perf_counter()
        out = judge.compare_batch(rows)
        results[name] = (time.perf_counter() - t0, out)
    (t_base, base), (_, loop) = results["forward pass"], results["from the loop"]
    same = [o["responses"] for j in base for o in j.orders] == [o["responses"] for j in loop for o in j.orders]
    diffs = [abs(x.p_a - y.p_a) for x, y in zip(base, loop) if x.p_a is not None and y.p_a is not None]
    n = 2 * len(rows)
    print(f"{len(rows)} pairs x 2 orders, greedy, <= {a.max_new_tokens} new tokens, {torch.get_num_threads()} threads; "
          f"same judgments: {same}; largest |P(A) difference| {max(diffs, default=0.0):.2e}\n")
    print("| variant | seconds | judgments/s | vs forward pass |\n|---|---|---|---|")
    for name, (t, _) in results.items():
        print(f"| {name} | {t:.1f} | {n / t:.2f} | {t_base / t:.2f}x |")


if __name__ == "__main__":
    main()
