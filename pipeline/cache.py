"""The pipeline's cache: the record of what produced a stage's output, its fingerprint, and the
decision to reuse, resume or redo it, so a stage is reused only when nothing that decides its
output has changed.

A stage's fingerprint holds its resolved settings (what its script parses from its flags, its YAML
config and its defaults, as typed values: 1e-4 and 0.0001 are one setting), the fingerprints of the
files it reads from outside the pipeline, the records of the stages it reads from inside it (each
rerun of one gives a new record, so everything downstream reruns), a hash of the source the stage
runs (its script and every project module that imports, so a report or another stage's code can
change without a rerun), and the library versions. The record, `stage.json` in the stage's output
directory, is written when the stage starts (status "running") and again when it finishes ("done"):
a stage killed midway is resumed when its fingerprint is unchanged and redone from scratch
otherwise. `why_changed` says in one line what differs.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

from utils.fingerprint import changed_keys
from utils.io import write_json
from utils.provenance import run_commit

RECORD = "stage.json"


def digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def why_changed(old: dict, new: dict) -> str | None:
    """One line naming the first difference between two fingerprints, or None when they match."""
    for part in ("settings", "inputs", "upstream", "code", "libraries"):
        a, b = old.get(part), new.get(part)
        if a == b:
            continue
        if part == "code":
            return "the project's code changed"
        a, b = a or {}, b or {}
        changed = changed_keys(a, b)
        if part == "upstream":
            return f"{', '.join(changed)} ran again"
        if part == "inputs":
            return f"input {', '.join(changed)} changed"
        key = changed[0]  # a setting or a library version
        if key not in a:
            return f"{key} added ({b[key]})"
        if key not in b:
            return f"{key} removed (was {a[key]})"
        return f"{key} changed {a[key]} → {b[key]}"
    return None


class StageRecord:
    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, RECORD)

    def load(self) -> dict | None:
        if not os.path.exists(self.path):
            return None
        with open(self.path, encoding="utf-8") as f:
            return json.load(f)

    def start(self, fingerprint: dict, command: str) -> None:
        """Mark the stage running. Over a stopped attempt (a resume), keep what that attempt spent, so
        a stage run across sittings reports its whole wall time."""
        os.makedirs(self.directory, exist_ok=True)
        old = self.load()
        earlier = []
        if old is not None and old.get("status") == "running":
            earlier = [*old.get("earlier_attempts", []), self._stopped_attempt(old)]
        write_json(self.path, {"status": "running", "fingerprint": fingerprint, "command": command,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "earlier_attempts": earlier})

    def _stopped_attempt(self, record: dict) -> dict:
        """A stopped attempt's span: from its start to the newest file it wrote (a killed process
        writes no end time; its last chunk or checkpoint is the last work it kept)."""
        newest = max((os.path.getmtime(os.path.join(d, f)) for d, _, files in os.walk(self.directory)
                      for f in files if os.path.join(d, f) != self.path), default=None)
        started = time.mktime(time.strptime(record["started"], "%Y-%m-%dT%H:%M:%S"))
        kept = 0.0 if newest is None else max(0.0, newest - started)
        return {"started": record["started"], "wall_s_to_last_output": round(kept, 1)}

    def finish(self, wall_s: float) -> dict:
        """Mark the stage done; wall_s counts this attempt and every stopped one before it."""
        old = self.load()
        earlier = sum(e["wall_s_to_last_output"] for e in old.get("earlier_attempts", []))
        record = {**old, "status": "done", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "wall_s": round(wall_s + earlier, 1), "wall_s_last_attempt": round(wall_s, 1),
                  "attempts": 1 + len(old.get("earlier_attempts", [])), "commit": run_commit()}
        write_json(self.path, record)
        return record


def decide(old: dict | None, fingerprint: dict, force: bool = False) -> tuple[str, str]:
    """('reuse' | 'resume' | 'redo', why) for a stage about to run, given its last record."""
    if force:
        return "redo", "--force"
    if old is None:
        return "redo", "no record of a finished run"
    reason = why_changed(old["fingerprint"], fingerprint)
    if reason is not None:
        return "redo", reason
    return ("reuse", "nothing changed") if old["status"] == "done" else ("resume", "it stopped before the end")
