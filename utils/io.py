"""JSONL reading and atomic writing.

Every record that enters the pipeline passes through `read_jsonl`, so a malformed file fails at
once with the file, the line number and the field at fault, instead of deep inside training.
Outputs are written to a temporary file and renamed, so a crash never leaves a file that looks
complete.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator


class DataError(ValueError):
    """Bad input data; its message is a single line naming file, line and field."""


def check_fields(rec: dict, required: dict[str, type | tuple], where: str) -> None:
    for field, typ in required.items():
        if field not in rec or rec[field] is None:
            raise DataError(f"{where}: missing field '{field}'")
        if not isinstance(rec[field], typ):
            raise DataError(
                f"{where}: field '{field}' must be {_type_name(typ)}, got {type(rec[field]).__name__}"
            )


def _type_name(typ) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def open_text(path: str):
    """A text file for reading, decompressed when its name ends in .gz: committed records under
    results/ are gzip'd where they are large, and every reader takes both."""
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def read_jsonl(
    path: str,
    required: dict[str, type | tuple] | None = None,
    validate: Callable[[dict, str], None] | None = None,
    allow_empty: bool = False,
) -> list[dict]:
    """Read a JSONL file; every non-blank line must be a JSON object with the `required` fields.

    `validate(record, where)` may add checks of its own and raise DataError with `where`, which
    reads like "prefs.jsonl:12".
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    records = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                "re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            if required:
                check_fields(rec, required, where)
            if validate:
                validate(rec, where)
            records.append(rec)
    if not records and not allow_empty:
        raise DataError(f"{path}: file is empty (no records)")
    return records


@contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def dumps(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False)


def write_jsonl(path: str, records: Iterable[dict]) -> int:
    """Write records atomically; returns how many were written."""
    n = 0
    with atomic_open(path) as f:
        for rec in records:
            f.write(dumps(rec) + "\n")
            n += 1
    return n


def write_json(path: str, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def append_jsonl(path: str, records: Iterable[dict]) -> None:
    """Append records in one write, so a kill leaves at most one torn trailing line."""
    text = "".join(dumps(r) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl_tolerant(path: str) -> list[dict]:
    """Read an append-only log written by `append_jsonl`, dropping a torn last line."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a kill during the last append
                break
            raise DataError(f"{path}:{i + 1}: invalid JSON in an append-only log") from None
    return out
