"""Losses normalised by the whole optimizer step's batch, so gradient accumulation is exact.

The Trainer hands `compute_loss` one micro-batch at a time. A loss that is a mean over its own
micro-batch, summed over k accumulated micro-batches, is k times too large (the Trainer skips its
own division by k whenever a batch carries `labels`), and even divided by k a mean of means is not
the mean once micro-batches differ in size (the last one of an epoch; token counts always do).
Here `get_batch_samples`, which the Trainer calls with all the micro-batches of one optimizer step,
counts what each loss term averages over (pairs, tokens) across those micro-batches and across
processes; `compute_loss` divides its sums by these counts and the Trainer takes the loss as is.
GA = k with batch b then gives the same update and the same logged loss as GA = 1 with batch k*b.
"""
from __future__ import annotations

import itertools

import torch


class GlobalBatchLossMixin:
    """Mix into a `transformers.Trainer` subclass before `Trainer`; define `count_items(batch)`."""

    loss_is_scaled_for_ga = True  # transformers >= 5.19 reads this; older ones read the two lines in __init__

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = True  # (older transformers) the loss is already scaled

    def count_items(self, batch: dict) -> dict[str, int | torch.Tensor]:
        """What each loss term of this micro-batch averages over: host numbers where they are known
        on the host, device tensors otherwise."""
        raise NotImplementedError

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples = list(itertools.islice(epoch_iterator, num_batches))
        if not batch_samples:
            return batch_samples, None
        counts = [self.count_items(b) for b in batch_samples]
        keys = sorted(counts[0])
        # Host numbers and device tensors are summed apart and meet on the device: copying a
        # number to the GPU would wait for the queue.
        totals = torch.stack([
            torch.full((), float(sum(c[k] for c in counts if not torch.is_tensor(c[k]))), device=device)
            + sum(c[k].to(device, torch.float32) for c in counts if torch.is_tensor(c[k]))
            for k in keys])
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        return batch_samples, dict(zip(keys, totals))

    def global_mean(self, local_sum: torch.Tensor, local_count, key: str, num_items_in_batch) -> torch.Tensor:
        """`local_sum` over the count of `key` in the whole step. DDP and DeepSpeed average gradients
        over processes, hence the factor. Outside training (evaluation, direct calls) the batch
        stands alone."""
        if isinstance(num_items_in_batch, dict):
            return local_sum * self.accelerator.num_processes / num_items_in_batch[key].clamp(min=1)
        return local_sum / torch.as_tensor(local_count, dtype=local_sum.dtype, device=local_sum.device).clamp(min=1)
