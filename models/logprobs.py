"""Per-sequence log-probabilities of the response tokens: the one quantity that perplexity
scoring, DPO, its reference pass and the NLL term all need, computed in one place.

At the real shape of the job (a 128k-token vocabulary, 1-2k-token prompts) the logits dominate
memory: one fp32 copy of `[batch, length, vocab]` is ~0.5 MB per token. So:

1. the model projects onto the vocabulary only the last positions that hold a response token
   (`logits_to_keep`), not the prompt;
2. `token_logps` reads log p(label) from those logits without a full log-softmax: it works on
   chunks of rows in fp32 (log-sum-exp minus the label's logit) and recomputes the softmax chunk by
   chunk in the backward pass, so no fp32 copy of the logits is ever stored, and the gradient
   of the logits is written in their own dtype.

The results equal `log_softmax(logits.float()).gather(labels)` (tested to 1e-5).
"""
from __future__ import annotations

import torch

from data.collate import IGNORE_INDEX, logits_to_keep

# Rows of fp32 logits handled at once: bounds the temporary memory to ~CHUNK_BYTES whatever the vocab.
CHUNK_BYTES = 64 * 2**20


def _chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_BYTES // (4 * vocab))


class _SelectedLogSoftmax(torch.autograd.Function):
    """log_softmax(logits)[row, target[row]] for every row of a 2-D `logits`, chunk by chunk.

    Every row is computed (rows without a target get target 0 and are masked by the caller), so no
    shape depends on the data and nothing waits for the GPU."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(out)
        step = _chunk_rows(logits.shape[-1])
        for s in range(0, logits.shape[0], step):
            x = logits[s : s + step].float()
            lse[s : s + step] = torch.logsumexp(x, dim=-1)
            out[s : s + step] = x.gather(-1, targets[s : s + step, None]).squeeze(-1) - lse[s : s + step]
        ctx.save_for_backward(logits, targets, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        step = _chunk_rows(logits.shape[-1])
        for s in range(0, logits.shape[0], step):
            g = grad_out[s : s + step, None].float()
            # d/dx [x_t - logsumexp(x)] = onehot(t) - softmax(x)
            gx = torch.exp(logits[s : s + step].float() - lse[s : s + step, None]).mul_(-g)
            gx.scatter_add_(-1, targets[s : s + step, None], g)
            grad[s : s + step] = gx
        return grad, None


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at every position of `logits` (`[..., vocab]`) whose target is not
    IGNORE_INDEX, 0 elsewhere; float32, shaped like `targets`."""
    mask = targets != IGNORE_INDEX
    flat = logits.reshape(-1, logits.shape[-1])
    picked = _SelectedLogSoftmax.apply(flat, targets.masked_fill(~mask, 0).reshape(-1))
    return picked.reshape(targets.shape) * mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(token) over labelled positions, and how many there are, per row.

    `labels` (`[batch, length]`) are aligned with the inputs, as for a causal LM's own loss.
    `logits` (`[batch, k, vocab]`) are those of the last k positions, k <= length (all of them
    when k == length); that they cover every labelled token is checked on CPU tensors (on a GPU
    the check would stall the queue; `logits_to_keep` guarantees it).
    """
    length, keep = labels.shape[1], logits.shape[1]
    start = length - keep  # the position of the first logit
    if labels.device.type == "cpu" and (labels[:, 1 : start + 1] != IGNORE_INDEX).any():
        raise ValueError(f"logits of the last {keep} positions do not cover every labelled token")
    # the logit at position t predicts the label at t + 1; the last logit has no target
    targets = torch.cat([labels[:, start + 1 :], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1)
    per_token = token_logps(logits, targets)
    return per_token.sum(-1), (targets != IGNORE_INDEX).sum(-1)


def forward_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model on a right-padded batch with logits only where responses are, then
    `sequence_logps`. `batch["logits_to_keep"]`, set by the collators, saves computing it here."""
    keep = batch.get("logits_to_keep") or logits_to_keep(batch["labels"])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                logits_to_keep=keep)
    return sequence_logps(out.logits, batch["labels"])
