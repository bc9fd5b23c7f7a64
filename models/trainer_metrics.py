"""Per-step metrics averaged into the Trainer's next log line, shared by the M-DPO and BT trainers
(the Trainer itself only logs the loss)."""
from __future__ import annotations

from collections import defaultdict

import torch


class AveragedMetricsMixin:
    """Mix into a `transformers.Trainer` subclass before `Trainer`."""

    def record_metrics(self, values: dict[str, torch.Tensor]) -> None:
        prefix = "" if self.model.training else "eval_"
        store = self.__dict__.setdefault("_metrics", defaultdict(list))
        for k, v in values.items():
            store[prefix + k].append(self.accelerator.gather_for_metrics(v.detach().reshape(-1)).float().mean().item())

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Average the metrics collected since the last log into this log line (eval ones into eval logs)."""
        store = self.__dict__.get("_metrics", {})
        eval_only = any(k.startswith("eval_") for k in logs)
        for k in list(store):
            if k.startswith("eval_") == eval_only and store[k]:
                logs[k] = round(sum(store[k]) / len(store[k]), 6)
                del store[k]
        super().log(logs, *args, **kwargs)
