"""Per-step metrics averaged into the Trainer's next log line, shared by the M-DPO and BT trainers
(the Trainer itself only logs the loss).

Values are summed on the device as they come and read back once per log line: a `.item()` per
micro-step would stall the GPU queue every micro-step just for logging. Averages are over every
item (pair or token) since the last log, on every process.
"""
from __future__ import annotations

import torch


class AveragedMetricsMixin:
    """Mix into a `transformers.Trainer` subclass before `Trainer`."""

    def record_metrics(self, values: dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]) -> None:
        """`values[name]` is a tensor of per-item values, or (sum, count) for an average over items
        of another kind (e.g. tokens)."""
        prefix = "" if self.model.training else "eval_"
        store = self.__dict__.setdefault("_metric_sums", {})
        for k, v in values.items():
            if torch.is_tensor(v):
                total, count = v.detach().float().sum(), v.numel()
            else:
                total, count = v[0].detach().float(), v[1]
            if prefix + k in store:
                total, count = store[prefix + k][0] + total, store[prefix + k][1] + count
            store[prefix + k] = (total, count)  # count: a host number or a device tensor, never read here

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Average the metrics collected since the last log into this log line (eval ones into eval logs)."""
        store = self.__dict__.get("_metric_sums", {})
        eval_only = any(k.startswith("eval_") for k in logs)
        keys = sorted(k for k in store if k.startswith("eval_") == eval_only)
        if keys:
            pairs = [store.pop(k) for k in keys]
            sums = torch.stack([torch.stack([t, torch.as_tensor(c, dtype=torch.float32, device=t.device)])
                                for t, c in pairs])
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            for k, (total, count) in zip(keys, sums.tolist()):
                logs[k] = round(total / max(count, 1.0), 6)
        super().log(logs, *args, **kwargs)
