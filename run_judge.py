"""Label unlabelled answer pairs with a trained judge: new preference data from the judge.

    python run_judge.py --model_name_or_path CKPT --input_file rows.jsonl --output_file out.jsonl
        [--num_samples 1 --max_new_tokens 512 --max_prompt_length N --batch_size 64]

Rows are {question, answer_a, answer_b} plus any fields of your own, which are carried through.
Each output row adds `verdict` (A, B or null), `p_a` (P(answer A is better), both answer orders
averaged; see generate/judge.py), `consistent` (both orders picked the same answer), `reasoning`
(the judgment in the given order) and `orders` (per order: verdicts, p, whether each judgment
finished). Rows are judged in fixed chunks, each with its own seed; finished chunks are logged under
`<output_file>.parts/`, so a stopped run resumes, and under `accelerate launch` the chunks are dealt
to the processes. A summary (verdicts, unreadable and inconsistent judgments, mean p_a) is printed
and saved as `<output_file>.summary.json`.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field

from data.schemas import load_unlabelled
from data.templates import template_ids
from generate.judge import Judge, both_orders
from generate.backends import build_sampler
from generate.sampling import SAMPLERS, check_sampling_lengths
from generate.vllm_sampler import VLLMOptions, require_vllm
from models.loading import ModelArguments, load_model, model_context_length, tokenizer_of
from utils.config import check_settings, parse_args, require, run_main
from utils.io import DataError, write_json, write_jsonl
from utils.seed import derive_seed
from utils.sharding import resumable_work_dir, run_in_chunks


@dataclass
class JudgeArguments:
    input_file: str = field(default=None, metadata={"help": "JSONL rows {question, answer_a, answer_b, ...}."})
    output_file: str = field(default=None)
    template: str = field(default="compare", metadata={"help": "The judge template the judge was trained with."})
    chat_template: str = field(default=None, metadata={
        "help": "A file with the chat template, for a checkpoint saved without one; 'none' for a judge trained on "
                "plain prompts."})
    num_samples: int = field(default=1, metadata={"help": "1 = greedy; more = sampled, p averaged over samples."})
    temperature: float = field(default=0.7, metadata={"help": "Used when num_samples > 1."})
    max_new_tokens: int = field(default=512)
    max_prompt_length: int = field(default=None, metadata={"help": "The prompt budget the judge was trained with."})
    batch_size: int = field(default=64)
    items_per_chunk: int = field(default=64, metadata={"help": "Unit of seeding, sharding and resuming."})
    max_items: int = field(default=None)
    sampler: str = field(default="hf", metadata={"help": "hf | vllm (which also reads P(A) from the engine)"})
    seed: int = field(default=0)


def set_chat_template(tokenizer, spec: str | None, model_name_or_path: str) -> None:
    """A judge must be asked as it was trained: with its checkpoint's chat template, one given
    explicitly, or explicitly none."""
    if spec is None:
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(f"{model_name_or_path}: the checkpoint has no chat template; pass --chat_template FILE "
                            "(the one it was trained with) or --chat_template none (plain prompts)")
        return
    if spec == "none":
        tokenizer.chat_template = None
        return
    if not os.path.isfile(spec):
        raise DataError(f"--chat_template {spec}: file not found")
    with open(spec, encoding="utf-8") as f:
        tokenizer.chat_template = f.read()


def summarize(records: list[dict]) -> dict:
    n = len(records)
    verdicts = Counter(str(r["verdict"]) for r in records)
    known = [r["p_a"] for r in records if r["p_a"] is not None]
    judgments = [v for r in records for o in r["orders"] for v in o["verdicts"]]
    return {"rows": n, "verdicts": {"A": verdicts["A"], "B": verdicts["B"], "none": verdicts["None"]},
            "consistent": round(sum(r["consistent"] for r in records) / n, 4) if n else None,
            "judgments": len(judgments), "unreadable_judgments": sum(v is None for v in judgments),
            "unfinished_judgments": sum(not f for r in records for o in r["orders"] for f in o["finished"]),
            "mean_p_a": round(sum(known) / len(known), 4) if known else None}


def judge_rows(judge: Judge, rows: list[dict], seed: int) -> list[dict]:
    out = []
    for row, j in zip(rows, judge.compare_batch(rows, seed)):
        fields = {k: v for k, v in row.items() if k != "_index"}
        out.append({"index": row["_index"], **fields, "verdict": j.verdict, "p_a": j.p_a, "consistent": j.consistent,
                    "reasoning": j.reasoning,
                    "orders": [{"swapped": o["swapped"], "verdicts": o["verdicts"], "p_a": o["p_a"],
                                "finished": o["finished"]} for o in j.orders]})
    return out


def parse(argv=None) -> tuple[ModelArguments, JudgeArguments, VLLMOptions]:
    return parse_args((ModelArguments, JudgeArguments, VLLMOptions), argv)


def main(argv=None) -> None:
    model_args, args, vllm_options = parse(argv)
    require(model_name_or_path=model_args.model_name_or_path, input_file=args.input_file,
            output_file=args.output_file)
    check_settings(args, at_least={"num_samples": 1, "max_new_tokens": 1, "max_prompt_length": 1, "batch_size": 1,
                                   "items_per_chunk": 1, "max_items": 1}, above={"temperature": 0.0},
                   choices={"sampler": SAMPLERS})
    if args.sampler == "vllm":
        require_vllm(model_args)
    template_ids(args.template)
    rows = load_unlabelled(args.input_file)[: args.max_items]
    tokenizer = tokenizer_of(model_args)
    set_chat_template(tokenizer, args.chat_template, model_args.source)
    prompts = []
    for i, r in enumerate(rows):
        try:
            prompts += [(f"{args.input_file}: row {i + 1}", p)
                        for p, _ in both_orders(tokenizer, args.template, r, args.max_prompt_length)]
        except DataError as e:
            raise DataError(f"{args.input_file}: row {i + 1}: {e}") from None
    check_sampling_lengths(tokenizer, prompts, args.max_new_tokens, model_context_length(model_args, tokenizer))
    # One process, or one of several under `accelerate launch` / torchrun, each judging its chunks.
    state, work_dir = resumable_work_dir(args.output_file, args, model_args.source)
    model = None
    if args.sampler == "hf":
        model = load_model(model_args, tokenizer)
        model.to(state.device).eval()
    sampler = build_sampler(args.sampler, model_args, tokenizer, model, vllm_options, args.batch_size, seed=args.seed)
    judge = Judge(model, tokenizer, args.template, args.max_new_tokens, args.max_prompt_length, args.num_samples,
                  args.temperature, args.batch_size, sampler=sampler)
    rows = [{**r, "_index": str(i)} for i, r in enumerate(rows)]
    records = run_in_chunks(state, work_dir, "judgments", rows, args.items_per_chunk, lambda r: r["_index"],
                            lambda c, chunk: judge_rows(judge, chunk, derive_seed(args.seed, c)), "judging",
                            item_of=lambda r: r["index"])
    if hasattr(sampler, "close"):
        sampler.close()
    if records is None:  # not process 0: it writes the outputs
        return
    summary = summarize(records)
    write_jsonl(args.output_file, [{k: v for k, v in r.items() if k != "index"} for r in records])
    write_json(os.path.splitext(args.output_file)[0] + ".summary.json", summary)
    shutil.rmtree(work_dir)
    print(f"judged {summary['rows']} rows: A {summary['verdicts']['A']}, B {summary['verdicts']['B']}, "
          f"none {summary['verdicts']['none']}; consistent {summary['consistent']}; "
          f"{summary['unreadable_judgments']} of {summary['judgments']} judgments unreadable, "
          f"{summary['unfinished_judgments']} unfinished; mean p_a {summary['mean_p_a']}")


if __name__ == "__main__":
    run_main(main)
