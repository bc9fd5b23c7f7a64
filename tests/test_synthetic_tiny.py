import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from toy.task import build
from data.templates import TEMPLATES, format_response, judge_prompt, render_judge_prompt
from generate.parsing import parse_verdict
from toy.model import build_tiny


def _read(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


def test_synthetic_splits_are_seeded_disjoint_and_labelled(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build(str(a), seed=3, n_sft=200, n_prefs=60, n_val=20, n_test=60)
    build(str(b), seed=3, n_sft=200, n_prefs=60, n_val=20, n_test=60)
    build(str(c), seed=4, n_sft=200, n_prefs=60, n_val=20, n_test=60)
    for name in ("sft", "prefs", "val", "test"):
        assert (a / f"{name}.jsonl").read_bytes() == (b / f"{name}.jsonl").read_bytes()
    assert (a / "test.jsonl").read_bytes() != (c / "test.jsonl").read_bytes()
    questions = {name: {r["question"] for r in _read(a / f"{name}.jsonl")} for name in ("sft", "prefs", "val", "test")}
    names = list(questions)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not questions[x] & questions[y], (x, y)
    prefs = _read(a / "prefs.jsonl")
    assert len({p["id"] for p in prefs}) == 60
    assert {p["category"] for p in prefs} == {"arithmetic", "instruction", "safety"}
    for row in _read(a / "sft.jsonl"):  # every chain of thought supports its verdict's answer
        response = format_response(row["chain_of_thought"], row["verdict"])
        assert parse_verdict(response) == row["verdict"]
        if row["category"] != "safety":  # "... A <check>, right. B <check>, wrong." style
            part_a, part_b = row["chain_of_thought"].split(". B ")
            good, bad = (part_a, part_b) if row["verdict"] == "A" else (part_b, part_a)
            assert "right" in good and "wrong" not in good and "wrong" in bad


def test_each_split_is_independent_of_the_others_sizes(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    build(str(small), seed=2, n_sft=150, n_prefs=30, n_val=10, n_test=40)
    build(str(large), seed=2, n_sft=150, n_prefs=90, n_val=25, n_test=40)
    for name in ("sft", "test"):  # more labelled and validation pairs move no SFT or test row
        assert (small / f"{name}.jsonl").read_bytes() == (large / f"{name}.jsonl").read_bytes(), name
    for name, n in (("prefs", 30), ("val", 10)):  # and a larger split begins with the smaller one
        assert _read(large / f"{name}.jsonl")[:n] == _read(small / f"{name}.jsonl"), name
    questions = {name: {r["question"] for r in _read(large / f"{name}.jsonl")}
                 for name in ("sft", "prefs", "val", "test")}
    assert not (questions["prefs"] | questions["val"] | questions["sft"]) & questions["test"]
    assert len(questions["prefs"]) == 90 and len(questions["test"]) == 40


def test_the_sft_teacher_guesses_on_two_thirds_of_the_safety_requests(tmp_path):
    from toy.task import BENIGN, HARMFUL, KNOWN_REQUESTS, REFUSALS

    build(str(tmp_path), seed=0, n_sft=3000, n_prefs=300, n_val=0, n_test=300)
    assert len(KNOWN_REQUESTS) == len(HARMFUL + BENIGN) // 3
    harmful = {a for a, _ in HARMFUL}
    refused = {True: [], False: []}  # known request? -> did the SFT row prefer the refusal as it should
    for r in _read(tmp_path / "sft.jsonl"):
        if r["category"] != "safety":
            continue
        action = next(a for a, _ in HARMFUL + BENIGN if f" {a}" in r["question"])
        chosen = r["answer_a"] if r["verdict"] == "A" else r["answer_b"]
        refused[action in KNOWN_REQUESTS].append((chosen in REFUSALS) == (action in harmful))
    assert all(refused[True]) and len(refused[True]) > 100  # the teacher is right on what it knows
    right = sum(refused[False]) / len(refused[False])
    assert 0.4 < right < 0.6, right  # and a coin flip on the rest, so only the labels can teach them
    test = [r for r in _read(tmp_path / "test.jsonl") if r["category"] == "safety"]
    assert len({a for r in test for a, _ in HARMFUL + BENIGN if f" {a}" in r["question"]} - KNOWN_REQUESTS) > 20


def test_tiny_model_is_small_deterministic_and_reloads(tmp_path):
    n1 = build_tiny(str(tmp_path / "m1"), seed=5)
    build_tiny(str(tmp_path / "m2"), seed=5)
    build_tiny(str(tmp_path / "m3"), seed=6)
    assert 0.5e6 < n1 < 1.5e6
    m1, m2, m3 = (AutoModelForCausalLM.from_pretrained(str(tmp_path / m)) for m in ("m1", "m2", "m3"))
    assert torch.equal(m1.lm_head.weight, m2.lm_head.weight)
    assert not torch.equal(m1.lm_head.weight, m3.lm_head.weight)
    assert (tmp_path / "m1" / "tokenizer.json").read_bytes() == (tmp_path / "m2" / "tokenizer.json").read_bytes()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "m1"))
    assert tok.pad_token_id != tok.eos_token_id
    prompt = judge_prompt(tok, "compare", "What is 12 + 30?", "42", "43")
    assert prompt.startswith("<|user|>\n") and prompt.endswith("<|assistant|>\n")
    assert tok.decode(tok(prompt)["input_ids"]) == prompt  # byte-level: lossless round trip
    digits = tok.convert_ids_to_tokens(tok("12345", add_special_tokens=False)["input_ids"])
    assert digits == ["1", "2", "3", "4", "5"]  # one token per digit, so arithmetic is learnable


def test_templates_render_all_fields():
    for tid in TEMPLATES:
        text = render_judge_prompt(tid, "QQ", "AA", "BB")
        assert text.index("QQ") < text.index("AA") < text.index("BB")
