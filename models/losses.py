"""The M-DPO loss (docs/method.md, step 4) as pure functions, importable without a trainer.

    L = mean_i  w_i * -log sigmoid(beta * [(log pi(y+|x) - log ref(y+|x)) - (log pi(y-|x) - log ref(y-|x))])
    w_i = softplus(alpha * gap_i),  gap_i = level(chosen_i) - level(rejected_i)

With every w_i = 1 this is exactly the standard DPO sigmoid loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data.schemas import LEVEL_VALUES

WEIGHTINGS = ("levels", "scores", "none")


def pair_weights(gaps: torch.Tensor, alpha: float) -> torch.Tensor:
    """softplus(alpha * gap): grows with the preference gap, positive even for tiny gaps."""
    return F.softplus(alpha * gaps)


def level_values(levels: list[str], mode: str = "discrete", scores: list[float] | None = None) -> torch.Tensor:
    """Numeric value of each level: discrete SA=2, WA=1, WR=-1, SR=-2, or continuous +score for an
    accepted sample and -score for a rejected one."""
    if mode == "discrete":
        return torch.tensor([LEVEL_VALUES[lv] for lv in levels], dtype=torch.float32)
    if mode == "continuous":
        if scores is None or len(scores) != len(levels):
            raise ValueError("continuous level values need one score per level")
        return torch.tensor([s if LEVEL_VALUES[lv] > 0 else -s for lv, s in zip(levels, scores)], dtype=torch.float32)
    raise ValueError(f"mode must be 'discrete' or 'continuous', got {mode!r}")


def weights_for_pairs(pairs: list[dict], weighting: str, alpha: float, normalize: bool = False) -> torch.Tensor:
    """Per-pair weights from a pairs.jsonl's levels ('levels') or scores ('scores'); 'none' gives 1."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if weighting == "none":
        return torch.ones(len(pairs))
    mode = "discrete" if weighting == "levels" else "continuous"
    c_scores = [p.get("chosen_score") for p in pairs] if mode == "continuous" else None
    r_scores = [p.get("rejected_score") for p in pairs] if mode == "continuous" else None
    chosen = level_values([p["chosen_level"] for p in pairs], mode, c_scores)
    rejected = level_values([p["rejected_level"] for p in pairs], mode, r_scores)
    w = pair_weights(chosen - rejected, alpha)
    return w / w.mean() if normalize else w


def m_dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
               reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
               weights: torch.Tensor, beta: float,
               reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen_rewards, rejected_rewards); rewards are beta * (policy - reference), detached.
    `reduction="none"` gives the weighted loss of each pair (the trainer divides their sum by the
    number of pairs in the whole optimizer step)."""
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    losses = weights.to(chosen_logratios.dtype) * -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    loss = losses if reduction == "none" else losses.mean()
    return loss, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()
