"""Seeding helpers. `derive_seed` gives every unit of work (a batch of items) its own seed, so a
result never depends on where a run was stopped or how work was split across processes."""
from __future__ import annotations

import hashlib

from transformers import set_seed  # seeds python, numpy and torch together

__all__ = ["set_seed", "derive_seed"]


def derive_seed(seed: int, *parts) -> int:
    key = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
