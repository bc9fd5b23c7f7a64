"""Record schemas of the pipeline's files and their validators (used with utils.io.read_jsonl)."""
from __future__ import annotations

from data.templates import TEMPLATES
from utils.io import DataError, check_fields, read_jsonl

# The four levels of a judgment in pairs.jsonl and their values (docs/method.md): SA > WA > WR > SR.
# Defined here, with the file formats, since every layer that reads pairs uses them.
LEVEL_VALUES = {"SA": 2, "WA": 1, "WR": -1, "SR": -2}

PREF_REQUIRED = {"id": (str, int), "question": str, "answer_pos": str, "answer_neg": str}
SFT_SEED_REQUIRED = {"question": str, "chain_of_thought": str}
SFT_JUDGE_FIELDS = ("question", "answer_a", "answer_b", "chain_of_thought", "verdict")
PAIR_REQUIRED = {"prompt": str, "chosen": str, "rejected": str}
UNLABELLED_REQUIRED = {"question": str, "answer_a": str, "answer_b": str}


def _non_empty(rec: dict, fields, where: str) -> None:
    for f in fields:
        if isinstance(rec.get(f), str) and not rec[f].strip():
            raise DataError(f"{where}: field '{f}' is empty")


def validate_pref(rec: dict, where: str) -> None:
    _non_empty(rec, ("question", "answer_pos", "answer_neg"), where)


def validate_sft(rec: dict, where: str) -> None:
    """Judge form if any of answer_a/answer_b/verdict is present, else the seed's form."""
    judge_form = any(k in rec for k in ("answer_a", "answer_b", "verdict"))
    fields = SFT_JUDGE_FIELDS if judge_form else tuple(SFT_SEED_REQUIRED)
    for f in fields:
        if f not in rec or rec[f] is None:
            raise DataError(f"{where}: missing field '{f}'")
        if not isinstance(rec[f], str):
            raise DataError(f"{where}: field '{f}' must be str, got {type(rec[f]).__name__}")
    _non_empty(rec, fields, where)
    if judge_form and rec["verdict"] not in ("A", "B"):
        raise DataError(f"{where}: field 'verdict' must be \"A\" or \"B\", got {rec['verdict']!r}")
    if rec.get("template") is not None and rec["template"] not in TEMPLATES:  # the prompt it was written under
        raise DataError(f"{where}: field 'template' must be one of {', '.join(TEMPLATES)}, got {rec['template']!r}")


def validate_pair(rec: dict, where: str) -> None:
    # An empty response is a legitimate (bad) judgment: it is only EOS. An empty prompt is not.
    _non_empty(rec, ("prompt",), where)
    for f in ("chosen_level", "rejected_level"):
        if f in rec and rec[f] not in LEVEL_VALUES:
            raise DataError(f"{where}: field '{f}' must be one of {', '.join(LEVEL_VALUES)}, got {rec[f]!r}")
    for f in ("gap", "chosen_score", "rejected_score", "weight"):
        if f in rec and (not isinstance(rec[f], (int, float)) or isinstance(rec[f], bool)):
            raise DataError(f"{where}: field '{f}' must be a number, got {type(rec[f]).__name__}")
    for f in ("chosen_finished", "rejected_finished"):
        if f in rec and not isinstance(rec[f], bool):
            raise DataError(f"{where}: field '{f}' must be true or false, got {rec[f]!r}")


def load_prefs(path: str) -> list[dict]:
    rows = read_jsonl(path, PREF_REQUIRED, validate_pref)
    seen = {}
    for i, r in enumerate(rows):
        key = str(r["id"])
        if key in seen:
            raise DataError(f"{path}: duplicate id {key!r} (records {seen[key] + 1} and {i + 1})")
        seen[key] = i
    return rows


def load_sft(path: str) -> list[dict]:
    return read_jsonl(path, None, validate_sft)


BENCHMARK_REQUIRED = {"id": (str, int), "question": str, "chosen": list, "rejected": list, "benchmark": str}
BENCHMARK_ANSWERS = {"rmbench": 3, "judgebench": 1}  # answers per side; rewardbench2: any


def validate_benchmark_item(rec: dict, where: str) -> None:
    from data.benchmarks import BENCHMARKS

    _non_empty(rec, ("question",), where)
    if rec["benchmark"] not in BENCHMARKS:
        raise DataError(f"{where}: field 'benchmark' must be one of {', '.join(BENCHMARKS)}, got {rec['benchmark']!r}")
    for f in ("chosen", "rejected"):
        answers = rec[f]
        if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise DataError(f"{where}: field '{f}' must be a non-empty list of non-empty answers")
        need = BENCHMARK_ANSWERS.get(rec["benchmark"])
        if need is not None and len(answers) != need:
            raise DataError(f"{where}: field '{f}' must hold {need} answer(s) for {rec['benchmark']}, "
                            f"got {len(answers)}")


def load_eval_rows(path: str) -> tuple[str | None, list[dict]]:
    """(benchmark, items) for a file from `data.prepare --source rewardbench2|rmbench|judgebench`,
    (None, pairs) for a file of labelled pairs."""
    def validate(rec: dict, where: str) -> None:
        if "benchmark" in rec:
            check_fields(rec, BENCHMARK_REQUIRED, where)
            validate_benchmark_item(rec, where)
        else:
            check_fields(rec, PREF_REQUIRED, where)
            validate_pref(rec, where)

    rows = read_jsonl(path, None, validate)
    kinds = [r.get("benchmark") for r in rows]
    odd = next((i for i, k in enumerate(kinds) if k != kinds[0]), None)
    if odd is not None:
        raise DataError(f"{path}: record {odd + 1}: a file holds one benchmark or labelled pairs, not both "
                        f"({kinds[0]!r} then {kinds[odd]!r})")
    if kinds[0] is None:
        return None, load_prefs(path)
    return kinds[0], rows


def load_unlabelled(path: str) -> list[dict]:
    """Answer pairs to judge: {question, answer_a, answer_b} and any fields of the user's own."""
    return read_jsonl(path, UNLABELLED_REQUIRED,
                      lambda rec, where: _non_empty(rec, tuple(UNLABELLED_REQUIRED), where))


def load_pairs(path: str) -> list[dict]:
    return read_jsonl(path, PAIR_REQUIRED, validate_pair)
