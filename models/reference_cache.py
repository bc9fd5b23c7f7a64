"""Precomputed reference log-probs kept beside a run, so a resumed or repeated M-DPO run does not
redo the reference pass (a full forward over every pair).

The file holds the log-probs and the fingerprint of what produced them: the exact token ids and
labels of every pair (so the pairs file, the tokenizer, the templates and truncation are all
covered), the reference model's files, and the settings that change the numbers (dtype,
attention implementation, autocast). Anything different and the pass runs again.
"""
from __future__ import annotations

import hashlib
import json
import os

from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from models.loading import resolve_dtype
from utils.fingerprint import changed_keys, model_fingerprint
from utils.hardware import BF16_IF_NATIVE
from utils.io import write_json
from utils.logging import get_logger

log = get_logger("reference_cache")
TOKEN_FIELDS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")


def reference_fingerprint(dataset: list[dict], ref_name_or_path: str, model_args, args) -> dict:
    h = hashlib.sha256()
    for ex in dataset:
        h.update(json.dumps([ex[k] for k in TOKEN_FIELDS]).encode())
    return {"pairs": len(dataset), "tokens_sha256": h.hexdigest(), "reference": model_fingerprint(ref_name_or_path),
            "dtype": resolved_dtype_name(model_args.dtype), "attn_implementation": model_args.attn_implementation,
            "bf16": bool(args.bf16), "fp16": bool(args.fp16)}


def resolved_dtype_name(dtype: str) -> str:
    """--dtype as the cache key: bf16_if_native is bf16 on some machines and fp32 on others."""
    return str(resolve_dtype(dtype)).replace("torch.", "") if dtype == BF16_IF_NATIVE else dtype


class ReferenceCache:
    def __init__(self, path: str, fingerprint: dict):
        self.path, self.fingerprint = path, fingerprint

    def load_into(self, dataset: list[dict]) -> bool:
        """Attach cached log-probs to the pairs if the cache matches; process 0 reads the file and
        every process gets its answer, so all take the same branch."""
        state = PartialState()
        found = [None]
        if state.is_main_process and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                stored = json.load(f)
            if stored.get("fingerprint") == self.fingerprint:
                found = [stored["logps"]]
            else:
                changed = changed_keys(stored.get("fingerprint", {}), self.fingerprint)
                log.info("reference log-probs in %s are stale (%s changed): recomputing", self.path, ", ".join(changed))
        if state.num_processes > 1:
            found = broadcast_object_list(found)
        if found[0] is None:
            return False
        for ex, (c, r) in zip(dataset, found[0]):
            ex["ref_chosen_logps"], ex["ref_rejected_logps"] = c, r
        log.info("reusing the reference log-probs of %d pairs from %s", len(dataset), self.path)
        return True

    def save(self, dataset: list[dict]) -> None:
        if PartialState().is_main_process:
            write_json(self.path, {"fingerprint": self.fingerprint,
                                   "logps": [[ex["ref_chosen_logps"], ex["ref_rejected_logps"]] for ex in dataset]})
