"""Record schemas of the pipeline's files and their validators (used with utils.io.read_jsonl)."""
from __future__ import annotations

from generate.levels import LEVEL_VALUES
from utils.io import DataError, read_jsonl

PREF_REQUIRED = {"id": (str, int), "question": str, "answer_pos": str, "answer_neg": str}
SFT_SEED_REQUIRED = {"question": str, "chain_of_thought": str}
SFT_JUDGE_FIELDS = ("question", "answer_a", "answer_b", "chain_of_thought", "verdict")
PAIR_REQUIRED = {"prompt": str, "chosen": str, "rejected": str}


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


def load_pairs(path: str) -> list[dict]:
    return read_jsonl(path, PAIR_REQUIRED, validate_pair)
