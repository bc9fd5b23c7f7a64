"""Best-of-N with each judge as the chooser: what a judge is worth when it picks among a policy's own
answers, against a random pick (the floor above pass@1) and the oracle (pass@N).

    python run_best_of_n.py --policy outputs/models/smollm2-135m-instruct --questions test.jsonl \
        --judges sft=outputs/sft,gfriend=outputs/gfriend --scalar_judges bt=outputs/bt \
        --output_dir outputs/bon [--num_candidates 8 --max_questions 200]

The policy answers every question a program can check (toy/checker.py: arithmetic, sorting)
N times; each generative judge picks by a knockout of pairwise judgments in both orders, each
scalar judge by its score (the work and its rules: generate/best_of_n.py). Writes
candidates.jsonl (every answer and whether it is right), picks_<judge>.jsonl, results.json and
table.md (the accuracy of the picked answer per chooser and n = 2, 4, ..., N, with intervals) and
manifest.json (command, commit, libraries, machine, this sitting's wall time), table.md last.
Questions go in fixed chunks, each with its own seed: a stopped run started again skips finished
chunks, and a judge added later is the only one run.
"""
import gc
import os
import sys
import time

from data.templates import apply_chat, scalar_rm_text
from generate.best_of_n import (BestOfNArguments, fates_of, knockout, named_paths, results_table, score_picks,
                                sizes)
from generate.judge import Judge
from generate.sampling import HFSampler
from models.loading import ModelArguments, load_model, tokenizer_of
from models.rewards import scalar_rewards
from toy.checker import checkable
from utils.config import check_settings, parse_args, require, run_main
from utils.io import DataError, read_jsonl, write_json, write_jsonl
from utils.provenance import manifest, run_commit
from utils.seed import derive_seed, set_seed
from utils.sharding import check_fingerprint, process_state, run_in_chunks


def parse(argv=None) -> BestOfNArguments:
    (args,) = parse_args((BestOfNArguments,), argv)
    return args


def checked_questions(args: BestOfNArguments) -> list[dict]:
    rows = read_jsonl(args.questions, {"id": (str, int), "question": str})
    rows = [{"id": str(r["id"]), "question": r["question"], "category": r.get("category")}
            for r in rows if checkable(r["question"])][: args.max_questions]
    if not rows:
        raise DataError(f"{args.questions}: no question a program can check (arithmetic or sorting)")
    return rows


def check_judge_name(output_dir: str, name: str, path: str) -> None:
    """A judge's picks are kept under its name: the same name later must name the same checkpoint."""
    record = os.path.join(output_dir, f"picks_{name}.judge.json")
    if os.path.exists(record):
        with open(record, encoding="utf-8") as f:
            if f.read().strip() != repr(path):
                raise DataError(f"{record}: the judge named {name!r} was another checkpoint; use another name")
    else:
        with open(record, "w", encoding="utf-8") as f:
            f.write(repr(path))


def once(build):
    """`build()` run at the first call and kept: a model loads only when a chunk is left to do."""
    kept = []
    return lambda: kept[0] if kept else kept.append(build()) or kept[0]


def answer(state, args: BestOfNArguments, questions: list[dict]) -> list[dict]:
    """Every question's N answers and their fates, chunk by chunk."""
    model_args = ModelArguments(model_name_or_path=args.policy, dtype=args.dtype)
    tokenizer = tokenizer_of(model_args)
    sampler = once(lambda: HFSampler(load_model(model_args, tokenizer).to(state.device), tokenizer,
                                     batch_size=args.batch_size))

    def chunk(index: int, rows: list[dict]) -> list[dict]:
        outs = sampler().generate([apply_chat(tokenizer, r["question"]) for r in rows], args.num_candidates,
                                  args.temperature, args.max_new_tokens, seed=derive_seed(args.seed, index))
        return [{**r, "candidates": [c.text for c in cs], "finished": [c.finished for c in cs],
                 "fates": fates_of(r["question"], [c.text for c in cs])} for r, cs in zip(rows, outs)]

    return run_in_chunks(state, args.output_dir, "candidates", questions, args.items_per_chunk,
                         lambda r: r["id"], chunk, "policy answers", item_of=lambda r: r["id"])


def judge_picks(state, args: BestOfNArguments, candidates: list[dict], name: str, path: str,
                scalar: bool) -> list[dict]:
    if scalar:
        from transformers import AutoModelForSequenceClassification

        model_args = ModelArguments(model_name_or_path=path, dtype=args.dtype)
        tokenizer = tokenizer_of(model_args)
        model = once(lambda: load_model(model_args, tokenizer, AutoModelForSequenceClassification, "SEQ_CLS",
                                        num_labels=1).to(state.device))
        texts = lambda rows: [scalar_rm_text(tokenizer, r["question"], r["answer"], args.scalar_max_length)  # noqa: E731
                              for r in rows]
        work = lambda index, rows: score_picks(  # noqa: E731
            rows, lambda flat: scalar_rewards(model(), tokenizer, texts(flat), args.batch_size))
    else:
        judge = once(lambda: Judge.from_pretrained(path, dtype=args.dtype, template=args.template,
                                                   max_new_tokens=args.judge_max_new_tokens,
                                                   max_prompt_length=args.judge_max_prompt_length,
                                                   batch_size=args.batch_size))
        work = lambda index, rows: knockout(  # noqa: E731
            rows, lambda pairs: [j.p_a for j in judge().compare_batch(pairs, seed=derive_seed(args.seed, index))])
    records = run_in_chunks(state, args.output_dir, f"picks_{name}", candidates, args.items_per_chunk,
                            lambda r: r["id"], work, f"{name} picks", item_of=lambda r: r["id"])
    gc.collect()
    return records


def main(argv=None) -> None:
    args = parse(argv)
    started, commit = time.time(), run_commit()
    require(questions=args.questions, output_dir=args.output_dir, policy=args.policy)
    check_settings(args, at_least={"num_candidates": 2, "max_new_tokens": 1, "max_questions": 1,
                                   "judge_max_new_tokens": 1, "judge_max_prompt_length": 1, "scalar_max_length": 2,
                                   "batch_size": 1, "items_per_chunk": 1}, above={"temperature": 0.0})
    sizes(args.num_candidates)
    judges = {**{n: (p, False) for n, p in named_paths(args.judges, "judges").items()},
              **{n: (p, True) for n, p in named_paths(args.scalar_judges, "scalar_judges").items()}}
    if len(judges) < len(named_paths(args.judges, "judges")) + len(named_paths(args.scalar_judges, "scalar_judges")):
        raise DataError("--judges and --scalar_judges must use different names")
    questions = checked_questions(args)
    state = process_state()
    if state.num_processes > 1:
        raise DataError("run_best_of_n.py runs in one process")
    os.makedirs(args.output_dir, exist_ok=True)
    check_fingerprint(os.path.join(args.output_dir, "best_of_n_args.json"), args, args.policy,
                      exclude=BestOfNArguments.RESUMABLE)
    table_path = os.path.join(args.output_dir, "table.md")
    if os.path.exists(table_path):  # its presence marks a finished run
        os.remove(table_path)
    for name, (path, _) in judges.items():
        check_judge_name(args.output_dir, name, path)
    set_seed(args.seed)
    candidates = answer(state, args, questions)
    gc.collect()  # the policy goes before a judge loads
    picks = {name: judge_picks(state, args, candidates, name, path, scalar) for name, (path, scalar) in judges.items()}
    write_jsonl(os.path.join(args.output_dir, "candidates.jsonl"), candidates)  # the chunk logs, in order, once
    for name, records in picks.items():
        write_jsonl(os.path.join(args.output_dir, f"picks_{name}.jsonl"), records)
    table, summary = results_table(candidates, picks)
    write_json(os.path.join(args.output_dir, "results.json"),
               {"policy": args.policy, "judges": {n: p for n, (p, _) in judges.items()}, "accuracy": summary})
    write_json(os.path.join(args.output_dir, "manifest.json"),
               manifest({args.seed: round(time.time() - started, 1)}, commit,
                        argv=["run_best_of_n.py", *(sys.argv[1:] if argv is None else argv)]))
    with open(table_path, "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    run_main(main)
