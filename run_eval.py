"""Pairwise accuracy of a judge (docs/method.md, "Evaluating a judge").

    python run_eval.py --model_name_or_path M --model_type generative|scalar --eval_files a.jsonl [b.jsonl ...]
        --output_file results.json [--num_samples 1 --batch_size 64 --max_new_tokens 256]

Generative: every pair is asked in both answer orders (greedy, or `num_samples` samples with a
majority vote; with `--direct`, no reasoning: the verdict letter's probability read at once);
accuracy counts each order half, unreadable verdicts are wrong and counted, and
`consistency` is the share of items whose two verdicts pick the same answer. Scalar: correct when
r(pos) > r(neg); ties are wrong. Results per file, per category, and RewardBench sections when
the categories are RewardBench subsets. results.json also holds every prompt, response and verdict.

Pairs are judged in fixed chunks, each with its own seed. Under `accelerate launch` the chunks are
dealt to the processes and process 0 writes results.json, the same whatever the number of
processes; finished chunks are logged under `<output_file>.parts/`, so a stopped run resumes.
"""
# What `python run_eval.py` runs with no arguments: the judge run_m_dpo.py trained, on the
# synthetic task's test pairs. A flag, or a value the --config file sets, overrides each.
MODEL = "outputs/gfriend"  # run_m_dpo.py's OUTPUT_DIR (or any judge: outputs/sft, a hub id)
EVAL_FILES = ["outputs/data/test.jsonl"]  # `make data`; or RewardBench etc. from `python -m data.prepare`
OUTPUT_FILE = "outputs/eval/gfriend.json"
CONFIG = "configs/recipes/smollm2-135m/eval.yaml"  # every other setting (configs/recipes/)

import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field


from data.benchmarks import comparisons, score_item
from data.benchmarks import summarize as benchmark_summary
from data.rewardbench import is_rewardbench, section_scores
from data.schemas import load_eval_rows
from data.templates import judge_prompt_groups, scalar_rm_text, template_ids
from generate.judge import Judge
from generate.parsing import majority_verdict
from generate.backends import build_sampler
from generate.sampling import SAMPLERS, check_sampling_lengths
from generate.vllm_sampler import VLLMOptions, require_vllm
from models.rewards import scalar_rewards
from models.loading import ModelArguments, load_model, model_context_length, tokenizer_of
from utils.config import check_default_inputs, check_settings, parse_args, require, run_main
from utils.io import DataError, write_json
from utils.logging import get_logger
from utils.seed import derive_seed
from utils.sharding import resumable_work_dir, run_in_chunks

log = get_logger("run_eval")


@dataclass
class EvalArguments:
    eval_files: list[str] = field(default=None, metadata={"help": "Preference-pair JSONL files."})
    output_file: str = field(default=None)
    model_type: str = field(default="generative", metadata={"help": "generative | scalar"})
    template: str = field(default="compare", metadata={"help": "Judge template id (generative)."})
    num_samples: int = field(default=1, metadata={"help": "1 = greedy; more = sampled with a majority vote."})
    temperature: float = field(default=0.7, metadata={"help": "Used when num_samples > 1."})
    direct: bool = field(default=False, metadata={
        "help": "No chain of thought: P(A) read at the verdict letter right after 'Verdict:', one forward pass "
                "per order, the likelier letter the verdict (generative judges, num_samples 1)."})
    batch_size: int = field(default=128, metadata={
        "help": "Rows decoded together (generative); texts per forward (scalar)."})
    max_new_tokens: int = field(default=512, metadata={"help": "The same as refinement's, so a judgment the judge "
                                                                "was trained to write is not cut here."})
    max_prompt_length: int = field(default=None, metadata={
        "help": "Prompts longer than this are shortened in the middle of the answers, as in refinement and SFT."})
    max_length: int = field(default=1024, metadata={
        "help": "Scalar RM: tokens of question + answer; longer ones are shortened in their middle, as in training."})
    sampler: str = field(default="hf", metadata={"help": "hf (transformers generate) | vllm (generative judges)"})
    max_items: int = field(default=None, metadata={"help": "Evaluate only the first N pairs of each file."})
    items_per_chunk: int = field(default=64, metadata={"help": "Unit of seeding, sharding and resuming."})
    seed: int = field(default=0)


def judge_generative(rows, judge: Judge, seed: int) -> list[dict]:
    """Every pair judged by the judge users get (generate.judge.Judge), the good answer given as A:
    its first order asks with the good answer in slot A, the swapped one in slot B. `correct` counts
    each order's verdict half (the paper's accuracy); `judge_correct` is the Judge's own verdict,
    from P(A better) with both orders averaged."""
    judgments = judge.compare_batch([{"question": r["question"], "answer_a": r["answer_pos"],
                                      "answer_b": r["answer_neg"]} for r in rows], seed)
    records = []
    for r, j in zip(rows, judgments):
        orders = []
        for o in j.orders:
            pos_slot = "B" if o["swapped"] else "A"
            verdict = majority_verdict(o["written"])
            orders.append({"pos_slot": pos_slot, "prompt": o["prompt"], "prompt_shortened": o["prompt_shortened"],
                           "responses": o["responses"], "finished": o["finished"], "verdicts": o["written"],
                           "verdict": verdict, "correct": verdict == pos_slot, "p_pos": o["p_a"],
                           "p_pos_samples": o["p_as"]})
        picks = [None if o["verdict"] is None else o["verdict"] == o["pos_slot"] for o in orders]
        records.append({"index": r["_index"], "id": r["id"], "category": r.get("category"),
                        **{k: r[k] for k in ("item", "pair") if k in r}, "orders": orders,
                        "correct": sum(o["correct"] for o in orders) / 2,
                        "p_pos": j.p_a, "judge_correct": j.verdict == "A",
                        "consistent": picks[0] is not None and picks[0] == picks[1],
                        "parse_failures": sum(o["verdict"] is None for o in orders),
                        "unfinished": sum(not f for o in orders for f in o["finished"]),
                        "prompts_shortened": sum(o["prompt_shortened"] for o in orders)})
    return records


def judge_scalar(rows, model, tokenizer, args: EvalArguments) -> list[dict]:
    """Each row's (good, bad) texts as main fitted them to --max_length (`_rm_texts`), scored."""
    texts = [t for r in rows for t in r["_rm_texts"]]
    rewards = scalar_rewards(model, tokenizer, texts, args.batch_size)
    return [{"index": r["_index"], "id": r["id"], "category": r.get("category"), "reward_pos": rewards[2 * k],
             "reward_neg": rewards[2 * k + 1], "correct": float(rewards[2 * k] > rewards[2 * k + 1])}
            for k, r in enumerate(rows)]


def comparison_rows(items: list[dict]) -> list[dict]:
    """A benchmark's items as the labelled pairs they are judged on: every (chosen, rejected)."""
    return [{"id": f"{item['id']}#{i}-{j}", "question": item["question"], "answer_pos": item["chosen"][i],
             "answer_neg": item["rejected"][j], "category": item.get("category"), "item": k, "pair": [i, j]}
            for k, item in enumerate(items) for i, j in comparisons(item)]


def score_benchmark(benchmark: str, items: list[dict], records: list[dict]) -> dict:
    """The benchmark's own rule over its items (data/benchmarks.py), plus the judging statistics."""
    by_item = defaultdict(dict)
    for r in records:
        by_item[r["item"]][tuple(r["pair"])] = r
    scored = [{"category": item.get("category"), **score_item(benchmark, item, by_item[k])}
              for k, item in enumerate(items)]
    summary = benchmark_summary(benchmark, scored)
    summary["comparisons"] = len(records)
    summary["parse_failure_rate"] = sum(r["parse_failures"] for r in records) / (2 * len(records))
    summary["consistency"] = sum(r["consistent"] for r in records) / len(records)
    return summary


def summarize(records: list[dict], generative: bool) -> dict:
    def acc(recs):
        return sum(r["correct"] for r in recs) / len(recs)

    by_cat = defaultdict(list)
    for r in records:
        by_cat[r["category"] if r["category"] is not None else "all"].append(r)
    summary = {"n": len(records), "accuracy": acc(records),
               "categories": {c: {"n": len(v), "accuracy": acc(v)} for c, v in sorted(by_cat.items())}}
    if generative:
        summary["judge_accuracy"] = sum(r["judge_correct"] for r in records) / len(records)
        summary["consistency"] = sum(r["consistent"] for r in records) / len(records)
        summary["parse_failure_rate"] = sum(r["parse_failures"] for r in records) / (2 * len(records))
        judgments = sum(len(o["finished"]) for r in records for o in r["orders"])
        summary["unfinished_rate"] = sum(r["unfinished"] for r in records) / judgments
        summary["prompts_shortened"] = sum(r["prompts_shortened"] for r in records)
    if is_rewardbench(by_cat):
        summary["sections"] = section_scores({c: v["accuracy"] for c, v in summary["categories"].items()})
    return summary


def markdown_table(results: dict) -> str:
    lines = ["| file | category | n | accuracy |", "|---|---|---|---|"]
    for name, res in results.items():
        if "benchmark" in res:
            lines += benchmark_lines(name, res)
            continue
        extra = ""
        if "consistency" in res:
            extra = (f" (judge's verdict {res['judge_accuracy']:.3f}, consistency {res['consistency']:.3f}, "
                     f"parse failures {res['parse_failure_rate']:.3f}, unfinished {res['unfinished_rate']:.3f})")
        lines.append(f"| {name} | **all**{extra} | {res['n']} | **{res['accuracy']:.3f}** |")
        for cat, c in res["categories"].items():
            lines.append(f"| {name} | {cat} | {c['n']} | {c['accuracy']:.3f} |")
        for sec, score in res.get("sections", {}).items():
            lines.append(f"| {name} | RewardBench {sec} | | {score:.3f} |")
    return "\n".join(lines)


def benchmark_lines(name: str, res: dict) -> list[str]:
    b = res["benchmark"]
    if b == "rmbench":
        lines = [f"| {name} | **RM-Bench avg** (hard {res['hard']:.3f}, normal {res['normal']:.3f}, easy "
                 f"{res['easy']:.3f}) | {res['n']} | **{res['avg']:.3f}** |"]
        return lines + [f"| {name} | {c} (hard {d['hard']:.3f}, normal {d['normal']:.3f}, easy {d['easy']:.3f}) | "
                        f"{d['n']} | {d['avg']:.3f} |" for c, d in res["categories"].items()]
    label = {"rewardbench2": "RewardBench 2 overall, without Ties", "judgebench": "JudgeBench"}[b]
    lines = [f"| {name} | **{label}** | {res['n']} | **{res['accuracy']:.3f}** |"]
    if b == "rewardbench2":
        lines.append(f"| {name} | overall with Ties (pairwise Ties rule) | {res['n']} | "
                     f"{res['overall_with_ties']:.3f} |")
    return lines + [f"| {name} | {c} | {v['n']} | {v['accuracy']:.3f} |" for c, v in res["categories"].items()]


def parse(argv=None) -> tuple[ModelArguments, EvalArguments, VLLMOptions]:
    """The run's settings: flags over the --config file over the constants above."""
    return parse_args((ModelArguments, EvalArguments, VLLMOptions), argv, defaults={
        "config": CONFIG, "model_name_or_path": MODEL, "eval_files": EVAL_FILES, "output_file": OUTPUT_FILE})


def main(argv=None) -> None:
    model_args, args, vllm_options = parse(argv)
    require(model_name_or_path=model_args.model_name_or_path, eval_files=args.eval_files,
            output_file=args.output_file)
    check_default_inputs(model_args.model_name_or_path, *args.eval_files)
    check_settings(args, at_least={"num_samples": 1, "batch_size": 1, "max_new_tokens": 1, "max_prompt_length": 1,
                                   "max_length": 2, "max_items": 1, "items_per_chunk": 1},
                   above={"temperature": 0.0}, choices={"model_type": ("generative", "scalar"), "sampler": SAMPLERS})
    if args.direct and (args.model_type == "scalar" or args.num_samples > 1):
        raise DataError("--direct reads one verdict letter of a generative judge: --num_samples 1")
    if args.sampler == "vllm":
        if args.model_type == "scalar":
            raise DataError("--sampler vllm is for generative judges")
        require_vllm(model_args)
    tids = template_ids(args.template)
    if len(tids) != 1:
        raise DataError(f"--template takes one template id, got {args.template!r}")
    tid = tids[0]
    files = {path: load_eval_rows(path) for path in args.eval_files}  # validate all first
    if args.model_type == "scalar" and any(b for b, _ in files.values()):
        raise DataError("--model_type scalar: the benchmarks' rules are for generative judges (both answer orders)")
    data = {path: (benchmark, rows[: args.max_items], comparison_rows(rows[: args.max_items]) if benchmark else
                   rows[: args.max_items]) for path, (benchmark, rows) in files.items()}
    tokenizer = tokenizer_of(model_args)
    if args.model_type == "generative":  # every prompt fits the model with its judgment, before any model loads
        prompts = []
        for path, (_, _, rows) in data.items():
            try:
                prompts += [(f"{path}: item {r['id']!r}, better answer in slot {g['pos_slot']}", g["prompt"])
                            for r in rows
                            for g in judge_prompt_groups(tokenizer, r, [tid], max_prompt_length=args.max_prompt_length)]
            except DataError as e:
                raise DataError(f"{path}: {e}") from None
        check_sampling_lengths(tokenizer, prompts, args.max_new_tokens, model_context_length(model_args, tokenizer))
    else:  # every text fitted to max_length once, before the model loads (judge_scalar reads them)
        for path, (_, _, rows) in data.items():
            for r in rows:
                try:
                    r["_rm_texts"] = [scalar_rm_text(tokenizer, r["question"], r[k], args.max_length)
                                      for k in ("answer_pos", "answer_neg")]
                except DataError as e:
                    raise DataError(f"{path}: item {r['id']!r}: {e}") from None
    # One process, or one of several under `accelerate launch` / torchrun, each judging its chunks.
    state, work_dir = resumable_work_dir(args.output_file, args, model_args.source)
    if args.model_type == "scalar":
        from transformers import AutoModelForSequenceClassification

        model = load_model(model_args, tokenizer, AutoModelForSequenceClassification, "SEQ_CLS", num_labels=1)
        model.to(state.device)
        judge_chunk = lambda rows, seed: judge_scalar(rows, model, tokenizer, args)  # noqa: E731
    else:
        model = None
        if args.sampler == "hf":
            model = load_model(model_args, tokenizer)
            model.to(state.device)
        sampler = build_sampler(args.sampler, model_args, tokenizer, model, vllm_options, args.batch_size,
                                seed=args.seed)
        judge = Judge(model, tokenizer, tid, args.max_new_tokens, args.max_prompt_length, args.num_samples,
                      args.temperature, args.batch_size, sampler=sampler, direct=args.direct)
        judge_chunk = lambda rows, seed: judge_generative(rows, judge, seed)  # noqa: E731
    results, items = {}, {}
    for path, (benchmark, benchmark_items, rows) in data.items():
        name = os.path.basename(path)
        rows = [{**r, "_index": str(i)} for i, r in enumerate(rows)]
        records = run_in_chunks(state, work_dir, os.path.splitext(name)[0], rows, args.items_per_chunk,
                                lambda r: r["_index"], lambda c, chunk: judge_chunk(chunk, derive_seed(args.seed, c)),
                                f"judging {name}", item_of=lambda r: r["index"])
        if records is not None:
            results[name] = (score_benchmark(benchmark, benchmark_items, records) if benchmark
                             else summarize(records, args.model_type == "generative"))
            items[name] = records
    if args.model_type == "generative" and hasattr(sampler, "close"):
        sampler.close()
    if not state.is_main_process:
        return
    write_json(args.output_file, {"model": model_args.source, "model_type": args.model_type,
                                  "results": results, "items": items})
    shutil.rmtree(work_dir)
    print(markdown_table(results))


if __name__ == "__main__":
    run_main(main)
