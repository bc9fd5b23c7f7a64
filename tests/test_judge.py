"""The judge as a product: P(A better) from the judge's own verdict, the CLI that labels
unlabelled pairs, and the reward function TRL's RL trainers take."""
import json
import os

import pytest

from generate.judge import TIE, Judge, JudgeReward, _combine
from generate.sampling import Completion
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def judge(sft_dir):
    return Judge.from_pretrained(sft_dir, max_new_tokens=64, batch_size=32)


@pytest.fixture(scope="module")
def rows(synthetic_dir):
    with open(os.path.join(synthetic_dir, "test.jsonl")) as f:
        items = [json.loads(line) for line in f][:12]
    return [{"question": r["question"], "answer_a": r["answer_pos"], "answer_b": r["answer_neg"]} for r in items]


def test_p_a_is_a_probability_symmetric_under_swapping_and_agrees_with_greedy_verdicts(judge, rows):
    given = judge.compare_batch(rows)
    swapped = judge.compare_batch([{**r, "answer_a": r["answer_b"], "answer_b": r["answer_a"]} for r in rows])
    assert any(j.p_a is not None for j in given)
    for j, s in zip(given, swapped):
        assert (j.p_a is None) == (s.p_a is None)
        if j.p_a is None:
            continue
        assert 0.0 <= j.p_a <= 1.0
        assert j.p_a == pytest.approx(1.0 - s.p_a, abs=1e-5)  # both orders averaged: position bias cancels
        assert j.verdict == (None if abs(j.p_a - 0.5) < TIE else "A" if j.p_a > 0.5 else "B")
        for order in j.orders:  # greedy: the letter the judge wrote is the one it found likelier
            verdict = order["verdicts"][0]
            if verdict is not None:
                assert (order["p_a"] > 0.5) == (verdict == "A"), order
        picks = [o["verdicts"][0] for o in j.orders]
        assert j.consistent == (picks[0] is not None and picks[0] == picks[1])


@pytest.mark.parametrize("num_samples", [1, 3])
def test_letter_probabilities_from_the_sampling_loop_equal_a_forward_pass(judge, rows, num_samples, monkeypatch):
    """The HF sampler keeps the verdict letters' logits step by step: P(A better) is read where the
    judge wrote its letter, equal to the second forward pass it replaces."""
    sampled = Judge(judge.model, judge.tokenizer, max_new_tokens=64, num_samples=num_samples, temperature=1.0)
    assert sampled.sampler.watch_ids and len(sampled.sampler.watch_ids) >= 4
    passes = []
    forward = Judge._next_token_probabilities
    monkeypatch.setattr(Judge, "_next_token_probabilities",
                        lambda self, contexts, ids: passes.append(len(contexts)) or forward(self, contexts, ids))
    loop = sampled.compare_batch(rows, seed=5)
    read_in_loop = sum(o["p_a"] is not None for j in loop for o in j.orders)
    assert read_in_loop > len(rows) and sum(passes) < read_in_loop / 4  # (almost) no second pass
    sampled.sampler.watch_ids = None  # the same samples, each letter read by a forward pass
    again = sampled.compare_batch(rows, seed=5)
    assert [o["responses"] for j in loop for o in j.orders] == [o["responses"] for j in again for o in j.orders]
    for j, k in zip(loop, again):
        assert (j.p_a is None) == (k.p_a is None)
        if j.p_a is not None:
            assert j.p_a == pytest.approx(k.p_a, abs=1e-4)


def test_a_direct_judge_reads_the_verdict_letter_with_no_reasoning(judge, rows, monkeypatch):
    """--direct: nothing is sampled; P(A) is the next-token probability of the letter after
    'Verdict:' under the prompt, and the likelier letter is each order's verdict."""
    import torch

    from data.tokens import encode_prompt

    direct = Judge(judge.model, judge.tokenizer, max_new_tokens=64, direct=True)
    monkeypatch.setattr(direct.sampler, "generate", lambda *a, **k: pytest.fail("a direct judge samples nothing"))
    judged = direct.compare_batch(rows[:4])
    tok = judge.tokenizer
    with_a, with_b = (tok(f"Verdict: {x}", add_special_tokens=False)["input_ids"] for x in "AB")
    split = next(i for i, (x, y) in enumerate(zip(with_a, with_b)) if x != y)
    for j in judged:
        for order in j.orders:
            ids = torch.tensor([encode_prompt(tok, order["prompt"]) + with_a[:split]])
            with torch.no_grad():
                logits = judge.model(input_ids=ids).logits[0, -1]
            p_letter_a = torch.softmax(logits[[with_a[split], with_b[split]]], -1)[0].item()
            (p_as_given,) = order["p_as"]
            assert p_as_given == pytest.approx(1 - p_letter_a if order["swapped"] else p_letter_a, abs=1e-4)
            assert order["written"] == ["A" if p_letter_a >= 0.5 else "B"]
            assert order["responses"] == [f"Verdict: {order['written'][0]}"]
        assert j.p_a == pytest.approx(sum(o["p_as"][0] for o in j.orders) / 2)


def test_a_judge_that_picks_by_position_gives_no_verdict():
    # confident in each order, for the answer in slot A both times: p_a averages to 0.5
    orders = [{"p_a": 0.9999991, "verdicts": ["A"], "responses": ["... Verdict: A"]},
              {"p_a": 0.0000012, "verdicts": ["B"], "responses": ["... Verdict: A"]}]
    j = _combine(orders)
    assert (j.verdict, j.consistent) == (None, False) and j.p_a == pytest.approx(0.50000015)
    orders[1]["p_a"] = 0.4
    assert _combine(orders).verdict == "A"


class Scripted:
    """A sampler that answers every prompt with the next of its scripted judgments."""

    def __init__(self, texts):
        self.texts = list(texts)

    def generate(self, prompts, num_samples, temperature, max_new_tokens, seed):
        return [[Completion(self.texts.pop(0), True) for _ in range(num_samples)] for _ in prompts]


def test_no_verdict_position_gives_no_probability_not_a_guess(judge):
    row = {"question": "Which is larger, 473 or 438?", "answer_a": "473", "answer_b": "438"}
    malformed = Judge(judge.model, judge.tokenizer, sampler=Scripted(["473 vs 438: 4 = 4, 7 > 3.", "Both look fine."]))
    j = malformed.compare_batch([row])[0]
    assert (j.verdict, j.p_a, j.consistent) == (None, None, False)
    assert [o["p_a"] for o in j.orders] == [None, None]
    one = Judge(judge.model, judge.tokenizer, sampler=Scripted(["473 vs 438: 4 = 4, 7 > 3.\nVerdict: A", "Unsure."]))
    j = one.compare_batch([row])[0]
    assert j.orders[1]["p_a"] is None and j.p_a == j.orders[0]["p_a"] is not None and not j.consistent


def test_reward_function_scores_completions_against_the_reference(judge, rows):
    reward = JudgeReward(judge)
    prompts = [r["question"] for r in rows[:4]]
    completions = [r["answer_a"] for r in rows[:4]]
    references = [r["answer_b"] for r in rows[:4]]
    values = reward(prompts=prompts, completions=completions, reference=references, completion_ids=None)
    expected = [0.5 if j.p_a is None else j.p_a for j in judge.compare_batch(
        [{"question": p, "answer_a": c, "answer_b": r} for p, c, r in zip(prompts, completions, references)])]
    assert values == pytest.approx(expected, abs=1e-6) and all(0 <= v <= 1 for v in values)
    centered = JudgeReward(judge, centered=True)(prompts=prompts, completions=completions, reference=references)
    assert centered == pytest.approx([2 * v - 1 for v in values], abs=1e-6)
    conversational = reward(prompts=[[{"role": "user", "content": p}] for p in prompts],
                            completions=[[{"role": "assistant", "content": c}] for c in completions],
                            reference=references)
    assert conversational == pytest.approx(values, abs=1e-6)
    with pytest.raises(KeyError, match="'reference' column"):
        reward(prompts=prompts, completions=completions)


def test_grpo_trains_two_steps_with_the_judge_as_its_reward(judge, tiny_model_dir, rows, tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = []
    reward = JudgeReward(judge)

    def recorded(prompts, completions, **columns):
        values = reward(prompts, completions, **columns)
        seen.append(values)
        return values

    recorded.__name__ = "gfriend_judge"
    data = Dataset.from_list([{"prompt": r["question"], "reference": r["answer_b"]} for r in rows[:4]])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                          max_completion_length=8, max_steps=2, learning_rate=1e-5, logging_steps=1, report_to="none",
                          use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True)
    trainer = trl.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), reward_funcs=[recorded],
                              args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    logged = [h["rewards/gfriend_judge/mean"] for h in trainer.state.log_history if "rewards/gfriend_judge/mean" in h]
    assert len(seen) == 2 and len(logged) == 2
    assert logged == pytest.approx([sum(v) / len(v) for v in seen], abs=1e-5)


def test_run_judge_labels_unlabelled_rows_and_resumes(sft_dir, rows, tmp_path, monkeypatch):
    import run_judge

    inp = tmp_path / "rows.jsonl"
    inp.write_text("".join(json.dumps({**r, "source": f"s{i}"}) + "\n" for i, r in enumerate(rows)))
    args = ["--model_name_or_path", sft_dir, "--input_file", str(inp), "--max_new_tokens", "64",
            "--items_per_chunk", "4"]
    full, stopped = tmp_path / "full.jsonl", tmp_path / "stopped.jsonl"
    run_judge.main([*args, "--output_file", str(full)])
    out = [json.loads(line) for line in full.read_text().splitlines()]
    assert [o["source"] for o in out] == [f"s{i}" for i in range(len(rows))]  # extra fields carried, in order
    for o, r in zip(out, rows):
        assert o["question"] == r["question"] and o["answer_a"] == r["answer_a"]
        assert o["verdict"] in ("A", "B", None) and (o["p_a"] is None or 0 <= o["p_a"] <= 1)
        assert isinstance(o["consistent"], bool) and isinstance(o["reasoning"], str) and len(o["orders"]) == 2
    summary = json.loads((tmp_path / "full.summary.json").read_text())
    assert summary["rows"] == len(rows) and sum(summary["verdicts"].values()) == len(rows)
    assert summary["verdicts"]["A"] == sum(o["verdict"] == "A" for o in out)

    real, calls = run_judge.judge_rows, []

    def stops_at_the_second_chunk(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(run_judge, "judge_rows", stops_at_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_judge.main([*args, "--output_file", str(stopped)])
    assert not stopped.exists()
    monkeypatch.setattr(run_judge, "judge_rows", real)
    run_judge.main([*args, "--output_file", str(stopped)])
    assert stopped.read_text() == full.read_text()


@pytest.mark.parametrize("content,flags,message", [
    ('{"question": "q", "answer_a": "a"}\n', [], r"rows\.jsonl:1: missing field 'answer_b'"),
    ('{"question": "q", "answer_a": "a", "answer_b": ""}\n', [], r"rows\.jsonl:1: field 'answer_b' is empty"),
    ('{"question": "q", "answer_a": "a", "answer_b": "b"}\n', ["--num_samples", "0"],
     "--num_samples must be at least 1"),
])
def test_run_judge_bad_input(sft_dir, tmp_path, content, flags, message):
    import re

    inp = tmp_path / "rows.jsonl"
    inp.write_text(content)
    out = tmp_path / "out.jsonl"
    proc = run_cli("run_judge.py", "--model_name_or_path", sft_dir, "--input_file", str(inp), "--output_file",
                   str(out), *flags)
    assert proc.returncode == 2 and re.search(message, proc.stderr.strip().splitlines()[-1]), proc.stderr[-2000:]
    assert not out.exists()


def test_a_checkpoint_without_a_chat_template_needs_one_named(sft_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    ckpt = tmp_path / "judge"
    shutil.copytree(sft_dir, ckpt)
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    tok.chat_template = None
    for name in os.listdir(ckpt):
        if name.startswith("chat_template"):
            os.remove(ckpt / name)
    tok.save_pretrained(str(ckpt))
    inp = tmp_path / "rows.jsonl"
    inp.write_text('{"question": "q", "answer_a": "a", "answer_b": "b"}\n')
    proc = run_cli("run_judge.py", "--model_name_or_path", str(ckpt), "--input_file", str(inp), "--output_file",
                   str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {ckpt}: the checkpoint has no chat template; pass "
                                                    "--chat_template FILE (the one it was trained with) or "
                                                    "--chat_template none (plain prompts)")
