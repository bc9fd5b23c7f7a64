"""Convert public preference sets (docs/method.md, "Data sets") into the pipeline's preference pairs
{id, question, answer_pos, answer_neg, category, source}.

    python -m data.prepare --source skywork|ultrafeedback|pku_saferlhf|rewardbench|jsonl
        --input HUB_ID_OR_FILE [--split train --output_file prefs.jsonl --limit 3000 --seed 0
        --exclude test1.jsonl ... --pku_preference better|safer]

Message lists become a question (every turn before the last assistant reply, rendered readably)
and the two last replies. Rows that cannot be converted (ties, empty answers, missing fields) are
skipped and counted; a file that is not the named schema at all is an error. Exact duplicates are
removed, pairs whose normalized question appears in an --exclude file are dropped, and the
few-shot sample is seeded. A summary is printed and saved beside the output; with --tokenizer it
also holds token-length statistics and, with --max_prompt_length, how many judge prompts that
budget would shorten.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from data.benchmarks import BENCHMARKS
from utils.config import check_settings, parse_args, require, run_main
from utils.io import DataError, read_jsonl, write_json, write_jsonl

SCHEMAS = {  # columns a file must have to be the named source
    "skywork": ("chosen", "rejected"),
    "ultrafeedback": ("chosen", "rejected", "score_chosen", "score_rejected"),
    "pku_saferlhf": ("prompt", "response_0", "response_1", "better_response_id", "safer_response_id"),
    "rewardbench": ("prompt", "chosen", "rejected", "subset"),
    "jsonl": ("question", "answer_pos", "answer_neg"),
    # benchmarks judges are compared on (data/benchmarks.py): items with lists of answers
    "rewardbench2": ("id", "prompt", "chosen", "rejected", "subset"),
    "rmbench": ("id", "prompt", "chosen", "rejected", "domain"),
    "judgebench": ("pair_id", "question", "response_A", "response_B", "label"),
}
DEFAULT_SPLITS = {"skywork": "train", "ultrafeedback": "train_prefs", "pku_saferlhf": "train",
                  "rewardbench2": "test", "rmbench": "train", "judgebench": "gpt",
                  "rewardbench": "filtered", "jsonl": "train"}


class Skip(Exception):
    """A row that cannot be converted; the message is the reason counted in the summary."""


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Skip(f"empty {what}")
    return value.strip()


def render_turns(messages: list[dict]) -> str:
    """A single user turn is the question as is; a conversation is rendered 'Role: text' per turn."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return _text(messages[0].get("content"), "question")
    return "\n\n".join(f"{m.get('role', 'user').capitalize()}: {_text(m.get('content'), 'turn')}" for m in messages)


def split_conversation(messages) -> tuple[list[dict], str]:
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise Skip("not a message list")
    if messages[-1].get("role") != "assistant":
        raise Skip("last message is not an assistant reply")
    return messages[:-1], _text(messages[-1].get("content"), "answer")


def from_message_lists(row: dict) -> tuple[str, str, str]:
    ctx_pos, pos = split_conversation(row.get("chosen"))
    ctx_neg, neg = split_conversation(row.get("rejected"))
    if ctx_pos != ctx_neg:
        raise Skip("chosen and rejected have different contexts")
    if not ctx_pos:
        raise Skip("no question before the answer")
    return render_turns(ctx_pos), pos, neg


def convert_row(source: str, row: dict, index: int, pku_preference: str = "better") -> dict:
    """One source row -> one preference pair, or Skip."""
    if source == "skywork":
        q, pos, neg = from_message_lists(row)
        return _pair(f"skywork-{index}", q, pos, neg, row.get("source") or "skywork", "skywork")
    if source == "ultrafeedback":
        if row.get("score_chosen") is not None and row.get("score_chosen") == row.get("score_rejected"):
            raise Skip("tie")
        q, pos, neg = from_message_lists(row)
        pair_id = str(row.get("prompt_id") or f"ultrafeedback-{index}")
        return _pair(pair_id, q, pos, neg, "ultrafeedback", "ultrafeedback")
    if source == "pku_saferlhf":
        key = f"{pku_preference}_response_id"
        choice = row.get(key)
        if choice not in (0, 1):
            raise Skip(f"missing {key}")
        q = _text(row.get("prompt"), "question")
        pos, neg = _text(row.get(f"response_{choice}"), "answer"), _text(row.get(f"response_{1 - choice}"), "answer")
        return _pair(f"pku-{index}", q, pos, neg, f"pku_{pku_preference}", "pku_saferlhf")
    if source == "rewardbench":
        return _pair(str(row.get("id", f"rewardbench-{index}")), _text(row.get("prompt"), "question"),
                     _text(row.get("chosen"), "answer"), _text(row.get("rejected"), "answer"),
                     row.get("subset"), "rewardbench")
    if source == "jsonl":
        return _pair(str(row.get("id", f"custom-{index}")), _text(row.get("question"), "question"),
                     _text(row.get("answer_pos"), "answer"), _text(row.get("answer_neg"), "answer"),
                     row.get("category"), row.get("source", "custom"))
    raise ValueError(f"unknown source {source!r}")


def _pair(pid, question, pos, neg, category, source) -> dict:
    if pos == neg:
        raise Skip("identical answers")
    return {"id": pid, "question": question, "answer_pos": pos, "answer_neg": neg, "category": category,
            "source": source}


def _answers(value, what: str, count: int | None = None) -> list[str]:
    if not isinstance(value, list) or not value:
        raise Skip(f"{what} is not a list of answers")
    answers = [_text(v, what[:-1] if what.endswith("s") else what) for v in value]
    if count is not None and len(answers) != count:
        raise Skip(f"{len(answers)} {what}, not {count}")
    return answers


def convert_benchmark_row(source: str, row: dict, index: int) -> dict:
    """One benchmark row -> one item {id, question, chosen, rejected, benchmark, category}, or Skip."""
    if source == "judgebench":
        a, b = _text(row.get("response_A"), "answer"), _text(row.get("response_B"), "answer")
        label = row.get("label")
        if label not in ("A>B", "B>A"):
            raise Skip(f"label {label!r} is not A>B or B>A")
        chosen, rejected = ([a], [b]) if label == "A>B" else ([b], [a])
        return {"id": str(row.get("pair_id", f"judgebench-{index}")),
                "question": _text(row.get("question"), "question"),
                "chosen": chosen, "rejected": rejected, "benchmark": source, "category": row.get("source")}
    count = 3 if source == "rmbench" else None  # RM-Bench: one answer per style
    return {"id": str(row.get("id", f"{source}-{index}")), "question": _text(row.get("prompt"), "question"),
            "chosen": _answers(row.get("chosen"), "chosen answers", count),
            "rejected": _answers(row.get("rejected"), "rejected answers", count), "benchmark": source,
            "category": row.get("subset" if source == "rewardbench2" else "domain")}


def prepare_benchmark(source: str, rows: list[dict]) -> tuple[list[dict], dict]:
    """A benchmark is evaluated whole: rows are converted, unconvertible ones skipped and counted."""
    skipped, items = Counter(), []
    for i, row in enumerate(rows):
        try:
            items.append(convert_benchmark_row(source, row, i))
        except Skip as s:
            skipped[str(s)] += 1
    summary = {"source": source, "rows_read": len(rows), "skipped": sum(skipped.values()),
               "skipped_by_reason": dict(sorted(skipped.items())), "kept": len(items),
               "comparisons": sum(len(it["chosen"]) * len(it["rejected"]) for it in items),
               "per_category": dict(sorted(Counter(str(it["category"]) for it in items).items()))}
    return items, summary


def normalize_question(q: str) -> str:
    return re.sub(r"\s+", " ", q).strip().lower()


def load_rows(source: str, input_path: str, split: str | None) -> list[dict]:
    """Local .jsonl/.json/.parquet file, or a hub id through `datasets.load_dataset`."""
    if os.path.exists(input_path):
        if input_path.endswith(".jsonl"):
            rows = read_jsonl(input_path)
        elif input_path.endswith(".json"):
            with open(input_path, encoding="utf-8") as f:
                try:
                    rows = json.load(f)
                except json.JSONDecodeError as e:
                    raise DataError(f"{input_path}:{e.lineno}: invalid JSON ({e.msg})") from None
                except UnicodeDecodeError:
                    raise DataError(f"{input_path}: not UTF-8; re-encode the file as UTF-8") from None
            if isinstance(rows, dict):
                rows = rows.get(split or "train", rows.get("data"))
            if not isinstance(rows, list):
                raise DataError(f"{input_path}: expected a JSON list of records")
        elif input_path.endswith(".parquet"):
            import pyarrow.parquet as pq

            rows = pq.read_table(input_path).to_pylist()
        else:
            raise DataError(f"{input_path}: unsupported file type (use .jsonl, .json or .parquet)")
    else:
        from datasets import load_dataset

        rows = list(load_dataset(input_path, split=split or DEFAULT_SPLITS[source]))
    if not rows:
        raise DataError(f"{input_path}: no rows")
    missing = [c for c in SCHEMAS[source] if c not in rows[0]]
    if missing:
        raise DataError(f"{input_path}: not the '{source}' schema (row 1 lacks {', '.join(missing)})")
    return rows


def read_exclusions(paths: list[str]) -> set[str]:
    out = set()
    for p in paths:
        for r in read_jsonl(p):
            q = r.get("question") if "question" in r else r.get("prompt")
            if isinstance(q, str):
                out.add(normalize_question(q))
    return out


def prepare(source: str, rows: list[dict], limit: int | None = None, seed: int = 0, exclude: set[str] = frozenset(),
            pku_preference: str = "better") -> tuple[list[dict], dict]:
    skipped, pairs, seen = Counter(), [], set()
    duplicates = overlap = 0
    for i, row in enumerate(rows):
        try:
            pair = convert_row(source, row, i, pku_preference)
        except Skip as s:
            skipped[str(s)] += 1
            continue
        key = (pair["question"], pair["answer_pos"], pair["answer_neg"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        if normalize_question(pair["question"]) in exclude:
            overlap += 1
            continue
        pairs.append(pair)
    eligible = len(pairs)
    if limit is not None and len(pairs) > limit:
        keep = sorted(random.Random(seed).sample(range(len(pairs)), limit))
        pairs = [pairs[i] for i in keep]
    ids = Counter(p["id"] for p in pairs)
    for p in pairs:  # ids must be unique downstream
        if ids[p["id"]] > 1:
            digest = hashlib.sha1((p["question"] + "\0" + p["answer_pos"]).encode()).hexdigest()[:8]
            p["id"] = f"{p['id']}-{digest}"
    summary = {"source": source, "rows_read": len(rows), "skipped": sum(skipped.values()),
               "skipped_by_reason": dict(sorted(skipped.items())), "duplicates": duplicates,
               "excluded_overlap": overlap, "eligible": eligible, "kept": len(pairs),
               "per_category": dict(sorted(Counter(str(p["category"]) for p in pairs).items()))}
    return pairs, summary


def _percentiles(values: list[int]) -> dict:
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"mean": round(sum(s) / len(s), 1), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": s[-1]}


def length_report(pairs: list[dict], tokenizer, template: str = "compare",
                  max_prompt_length: int | None = None) -> dict:
    """Token lengths of the questions, answers and whole judge prompts (the chat template
    included, good answer in slot A), and how many prompts `max_prompt_length` would shorten."""
    from data.templates import judge_prompt
    from data.tokens import encode_prompt

    count = lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
    prompts = [len(encode_prompt(tokenizer, judge_prompt(tokenizer, template, p["question"], p["answer_pos"],
                                                         p["answer_neg"]))) for p in pairs]
    report = {"template": template, "question": _percentiles(count([p["question"] for p in pairs])),
              "answer_pos": _percentiles(count([p["answer_pos"] for p in pairs])),
              "answer_neg": _percentiles(count([p["answer_neg"] for p in pairs])), "prompt": _percentiles(prompts)}
    if max_prompt_length is not None:
        report["max_prompt_length"] = max_prompt_length
        report["prompts_shortened"] = sum(n > max_prompt_length for n in prompts)
    return report


@dataclass
class PrepareArguments:
    source: str = field(default=None, metadata={"help": " | ".join(sorted(SCHEMAS))})
    input: str = field(default=None, metadata={"help": "A hub id or a local .jsonl/.json/.parquet file."})
    split: str = field(default=None)
    output_file: str = field(default="prefs.jsonl", metadata={"help": "The pairs; a .summary.json goes beside it."})
    limit: int = field(default=None, metadata={"help": "Seeded few-shot sample size, e.g. 3000."})
    seed: int = field(default=0)
    exclude: list[str] = field(default_factory=list, metadata={
        "help": "Test files whose questions must not appear.", "nargs": "*"})
    pku_preference: str = field(default="better", metadata={"help": "better | safer: PKU-SafeRLHF's positive."})
    tokenizer: str = field(default=None, metadata={
        "help": "Report token lengths with this tokenizer (a model folder or hub id)."})
    max_prompt_length: int = field(default=None, metadata={
        "help": "With --tokenizer: count the prompts this budget would shorten."})
    template: str = field(default="compare", metadata={"help": "With --tokenizer: the judge template to measure."})


def parse(argv=None) -> tuple[PrepareArguments]:
    return parse_args((PrepareArguments,), argv, renamed={"output": "--output_file"})


def main(argv=None) -> None:
    (a,) = parse(argv)
    require(source=a.source, input=a.input)
    check_settings(a, choices={"source": tuple(sorted(SCHEMAS)), "pku_preference": ("better", "safer")})
    if a.max_prompt_length is not None and not a.tokenizer:
        raise DataError("--max_prompt_length needs --tokenizer")
    rows = load_rows(a.source, a.input, a.split)
    if a.source in BENCHMARKS:
        if a.limit is not None or a.exclude:
            raise DataError(f"--source {a.source} is a benchmark, evaluated whole: --limit and --exclude do not apply")
        pairs, summary = prepare_benchmark(a.source, rows)
    else:
        pairs, summary = prepare(a.source, rows, a.limit, a.seed, read_exclusions(a.exclude), a.pku_preference)
    if a.tokenizer and pairs and a.source not in BENCHMARKS:
        from transformers import AutoTokenizer

        from data.templates import template_ids

        template_ids(a.template)
        summary["token_lengths"] = length_report(pairs, AutoTokenizer.from_pretrained(a.tokenizer), a.template,
                                                 a.max_prompt_length)
    write_jsonl(a.output_file, pairs)
    write_json(os.path.splitext(a.output_file)[0] + ".summary.json", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    run_main(main)
