"""Records of what produced a pipeline stage's output, so a stage is reused only when nothing that
decides its output has changed.

A stage's fingerprint holds its resolved settings (its YAML config merged with its flags), the
fingerprints of the files it reads from outside the pipeline, the records of the stages it reads
from inside it (each rerun of one gives a new record, so everything downstream reruns), a hash
of the project's source code, and the library versions. The record, `stage.json` in the stage's
output directory, is written when the stage starts (status "running") and again when it finishes
("done"): a stage killed midway is resumed when its fingerprint is unchanged and redone from
scratch otherwise. `why_changed` says in one line what differs.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import subprocess
import time
from importlib import metadata

import yaml

from utils.io import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("data", "generate", "models", "utils")
LIBRARIES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "numpy")
RECORD = "stage.json"


def code_version() -> str:
    """sha256 of the project's source (every module a stage runs: run_*.py and the packages)."""
    h = hashlib.sha256()
    files = sorted(glob.glob(os.path.join(ROOT, "run_*.py")) +
                   [f for d in SOURCE_DIRS for f in glob.glob(os.path.join(ROOT, d, "**", "*.py"), recursive=True)])
    for path in files:
        h.update(os.path.relpath(path, ROOT).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()[:16]


def git_commit() -> str | None:
    """The checkout's commit, with '+changes' when the working tree differs from it (None outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def settings_of(command: list[str]) -> dict[str, str]:
    """A stage command's resolved settings: the values of its `--config` YAML, overridden by its
    flags, as strings (so a reason can print them), plus the script it runs."""
    script = command[2] if command[1] == "-m" else command[1]
    flags: dict[str, str] = {}
    key = None
    for arg in command[2 if command[1] != "-m" else 3:]:
        if arg.startswith("--"):
            key = arg[2:]
            flags[key] = ""
        elif key is not None:
            flags[key] = f"{flags[key]} {arg}".strip()
    settings = {"script": script}
    if "config" in flags:
        with open(flags["config"], encoding="utf-8") as f:
            settings.update({k: _text(v) for k, v in (yaml.safe_load(f) or {}).items()})
    settings.update({k: v for k, v in flags.items() if k != "config"})
    return settings


def _text(value) -> str:
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value)


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
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
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
        os.makedirs(self.directory, exist_ok=True)
        write_json(self.path, {"status": "running", "fingerprint": fingerprint, "command": command,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def finish(self, wall_s: float) -> dict:
        record = {**self.load(), "status": "done", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "wall_s": round(wall_s, 1), "commit": git_commit()}
        write_json(self.path, record)
        return record
