"""The reward for training a judge by online RL on labelled pairs (run_grpo_judge.py), as in J1
(Whitehouse et al., 2025): a sampled judgment earns 1 when its verdict picks the labelled better
answer, else 0 (no verdict earns 0).

The position-consistent variant pays a judgment only when the judgment of the same item asked in the
other answer order, sampled in the same batch, is right too: the k-th sample of an item in one order
is paired with its k-th sample in the other. A judgment whose partner is not in the batch keeps its
own reward (the trainer is set up so that this does not happen on one process).
"""
from __future__ import annotations

from collections import defaultdict

from generate.parsing import parse_verdict


def _text(completion) -> str:
    """A completion as TRL passes it: text, or a conversation whose last message is the judgment."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


class VerdictReward:
    """`reward_funcs=[VerdictReward()]` for TRL's GRPOTrainer; reads the dataset's `pos_slot` (the
    slot that holds the better answer) and, position-consistent, `item_id`."""

    def __init__(self, position_consistent: bool = False):
        self.position_consistent = position_consistent
        self.__name__ = "verdict_consistent" if position_consistent else "verdict_correct"  # TRL logs this name

    def __call__(self, prompts, completions, pos_slot, item_id=None, **columns) -> list[float]:
        right = [float(parse_verdict(_text(c)) == slot) for c, slot in zip(completions, pos_slot)]
        if not self.position_consistent:
            return right
        if item_id is None:
            raise KeyError("the position-consistent reward needs an 'item_id' column")
        rows = defaultdict(list)  # (item, slot of the better answer) -> batch indices, in batch order
        for i, key in enumerate(zip(item_id, pos_slot)):
            rows[key].append(i)
        rewards = []
        for i, (item, slot) in enumerate(zip(item_id, pos_slot)):
            k = rows[(item, slot)].index(i)
            other = rows.get((item, "B" if slot == "A" else "A"), [])
            rewards.append(right[i] * right[other[k]] if k < len(other) else right[i])
        return rewards
