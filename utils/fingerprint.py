"""Fingerprints of files, directories and models: what decides whether a stored result may be reused.

Small files are hashed by content. Model weights are too large to hash on every run (16 GB for an
8B model), so for them the name, size and modification time stand in, as `make` does: a retrained
or copied checkpoint gets a new fingerprint and anything computed from it is recomputed.
"""
from __future__ import annotations

import hashlib
import os

CONTENT_LIMIT = 64 * 2**20  # files up to this size are hashed by content
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def changed_keys(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two records (present in one only included), sorted:
    what every reuse decision names when it refuses or recomputes."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def file_fingerprint(path: str) -> str:
    size = os.path.getsize(path)
    if size > CONTENT_LIMIT or path.endswith(WEIGHT_SUFFIXES):
        return f"size={size},mtime_ns={os.stat(path).st_mtime_ns}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return "sha256=" + h.hexdigest()


def model_fingerprint(name_or_path: str) -> dict:
    """A local checkpoint: its config and the fingerprints of its weight files; a local weights file
    (GGUF): its fingerprint. A hub id stands for itself."""
    if os.path.isfile(name_or_path):
        return {os.path.basename(name_or_path): file_fingerprint(name_or_path)}
    if not os.path.isdir(name_or_path):
        return {"id": name_or_path}
    files = sorted(f for f in os.listdir(name_or_path)
                   if f == "config.json" or (f.endswith(WEIGHT_SUFFIXES) and not f.startswith(".")))
    return {f: file_fingerprint(os.path.join(name_or_path, f)) for f in files}
