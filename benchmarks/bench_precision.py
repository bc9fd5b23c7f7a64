"""What bf16 costs against fp32 on a refinement's own judgments: the same judge scores the same
samples in both precisions, and the table gives the perplexities' relative error and how many
judgments would change level (the strong/weak split at the run's median score).

    .venv/bin/python -m benchmarks.bench_precision --model_name_or_path ckpt/sft --refine_dir ckpt/refine

The refinement's own perplexities (`ppl` in samples.jsonl, from the precision it ran in) are the
third column: an fp32 run's sampler-side values should equal the fp32 forward pass to ~1e-6.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def relative_errors(reference: list[float], other: list[float]) -> list[float]:
    return sorted(abs(b - a) / a for a, b in zip(reference, other))


def same_side_of_median(a: list[float], b: list[float]) -> float:
    """Share of positions on the same side of their own list's median in both lists."""
    import statistics

    ma, mb = statistics.median(a), statistics.median(b)
    return sum((x <= ma) == (y <= mb) for x, y in zip(a, b)) / len(a)


def main(argv=None) -> None:
    import torch

    from generate.perplexity import response_perplexities
    from models.loading import ModelArguments, load_model, tokenizer_of
    from utils.io import read_jsonl

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="the judge that sampled the refinement")
    p.add_argument("--refine_dir", required=True, help="a finished refinement (its samples.jsonl)")
    p.add_argument("--batch_size", type=int, default=32)
    a = p.parse_args(argv)
    rows = [r for r in read_jsonl(os.path.join(a.refine_dir, "samples.jsonl")) if r.get("response") is not None]
    args = ModelArguments(model_name_or_path=a.model_name_or_path)
    tok = tokenizer_of(args)
    ppl = {}
    for dtype in ("fp32", "bf16"):
        model = load_model(ModelArguments(model_name_or_path=a.model_name_or_path, dtype=dtype), tok).eval()
        with torch.no_grad():
            ppl[dtype] = response_perplexities(model, tok, [r["prompt"] for r in rows], [r["response"] for r in rows],
                                               batch_size=a.batch_size, finished=[r["finished"] for r in rows])
        del model
    ppl["refinement"] = [r["ppl"] for r in rows]
    print(f"{len(rows)} judgments of {a.refine_dir}, scored by {a.model_name_or_path}; relative error against "
          f"the fp32 forward pass")
    print("| perplexities | median | 99th percentile | largest | same side of the median |\n|---|---|---|---|---|")
    for name in ("bf16", "refinement"):
        err = relative_errors(ppl["fp32"], ppl[name])
        print(f"| {name} | {err[len(err) // 2]:.2e} | {err[int(0.99 * (len(err) - 1))]:.2e} | {err[-1]:.2e} | "
              f"{same_side_of_median(ppl['fp32'], ppl[name]):.4f} |")


if __name__ == "__main__":
    main()
