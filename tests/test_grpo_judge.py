"""The GRPO judge (run_grpo_judge.py): its reward, its batches, and a tiny run that trains and whose
checkpoint evaluates like any other judge."""
import json
import os

import pytest

from tests.conftest import ROOT, run_cli

A_RIGHT, B_RIGHT, NONE = "so answer A is better. Verdict: [[A]]", "Verdict: [[B]]", "I cannot tell."


def test_the_verdict_reward_pays_a_right_verdict():
    from generate.verdict_reward import VerdictReward

    reward = VerdictReward()
    assert reward(["p"] * 4, [A_RIGHT, B_RIGHT, NONE, [{"role": "assistant", "content": B_RIGHT}]],
                  pos_slot=["A", "A", "A", "B"]) == [1.0, 0.0, 0.0, 1.0]
    assert reward.__name__ == "verdict_correct"


def test_the_position_consistent_reward_pays_only_when_both_orders_are_right():
    from generate.verdict_reward import VerdictReward

    reward = VerdictReward(position_consistent=True)
    # item x: order A's two samples are right; order B's first is right, its second wrong
    # item y: order A only (its partner is not in the batch): its own correctness
    completions = [A_RIGHT, A_RIGHT, B_RIGHT, A_RIGHT, A_RIGHT]
    slots, items = ["A", "A", "B", "B", "A"], ["x", "x", "x", "x", "y"]
    assert reward(["p"] * 5, completions, pos_slot=slots, item_id=items) == [1.0, 0.0, 1.0, 0.0, 1.0]
    with pytest.raises(KeyError, match="item_id"):
        reward(["p"], [A_RIGHT], pos_slot=["A"])


def _args(sft_dir, synthetic_dir, out, *extra):
    return ["--config", os.path.join(ROOT, "configs", "grpo_demo.yaml"), "--model_name_or_path", sft_dir,
            "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"), "--output_dir", str(out),
            "--max_items", "4", "--templates", "compare", "--num_generations", "4",
            "--per_device_train_batch_size", "8", "--max_completion_length", "40", "--max_steps", "2",
            "--logging_steps", "1", "--disable_tqdm", "true", *extra]


def test_the_dataset_asks_each_pair_as_refinement_does_with_an_items_orders_side_by_side(sft_dir, synthetic_dir):
    from transformers import AutoTokenizer

    from data.schemas import load_prefs
    from data.templates import judge_prompt_groups
    from run_grpo_judge import GRPOJudgeArguments, judge_dataset

    tok = AutoTokenizer.from_pretrained(sft_dir)
    items = load_prefs(os.path.join(synthetic_dir, "prefs.jsonl"))[:5]
    args = GRPOJudgeArguments(templates="compare,brief", max_prompt_length=128)
    rows = judge_dataset(items, tok, args, seed=3).to_list()
    assert len(rows) == 5 * 2 * 2 and {r["item_id"] for r in rows} == {str(i["id"]) for i in items}
    assert [r["item_id"] for r in rows][::4] != [str(i["id"]) for i in items]  # shuffled by item
    for k in range(0, len(rows), 4):  # an item's four prompts together, both orders of each template adjacent
        assert len({r["item_id"] for r in rows[k:k + 4]}) == 1
        assert [r["pos_slot"] for r in rows[k:k + 4]] == list("ABAB")
    item = next(i for i in items if str(i["id"]) == rows[0]["item_id"])
    expected = [g["prompt"] for g in judge_prompt_groups(tok, item, ["compare", "brief"], ("A", "B"), 128)]
    assert [r["prompt"] for r in rows[:4]] == expected  # the very prompts refinement samples from


@pytest.mark.parametrize("flags,message", [
    (["--reward", "bleu"], "--reward must be one of correct, position_consistent"),
    (["--reward", "position_consistent", "--per_device_train_batch_size", "4"],
     "needs an even number of prompts per generation batch"),
    (["--reward", "position_consistent", "--orders", "A"], "needs --orders both"),
])
def test_bad_settings_are_refused_before_loading(sft_dir, synthetic_dir, tmp_path, flags, message):
    proc = run_cli("run_grpo_judge.py", *_args(sft_dir, synthetic_dir, tmp_path / "out", *flags))
    assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "out").exists()


def test_a_tiny_grpo_run_trains_and_its_judge_evaluates(sft_dir, synthetic_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "grpo"
    proc = run_cli("run_grpo_judge.py", *_args(sft_dir, synthetic_dir, out, "--reward", "position_consistent",
                                               "--learning_rate", "1e-3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = json.loads((out / "trainer_state.json").read_text())["log_history"]
    rewards = [h["rewards/verdict_consistent/mean"] for h in logs if "rewards/verdict_consistent/mean" in h]
    assert len(rewards) == 2 and all(0.0 <= r <= 1.0 for r in rewards)
    before, after = load_file(os.path.join(sft_dir, "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    ev = tmp_path / "eval.json"
    proc = run_cli("run_eval.py", "--model_name_or_path", str(out), "--model_type", "generative", "--eval_files",
                   os.path.join(synthetic_dir, "test.jsonl"), "--output_file", str(ev), "--max_items", "4",
                   "--max_new_tokens", "40")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(ev.read_text())["results"]["test.jsonl"]
    assert result["n"] == 4 and 0.0 <= result["accuracy"] <= 1.0
