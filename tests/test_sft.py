import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from data.collate import IGNORE_INDEX, collate_prompt_response, encode_prompt_response
from data.templates import judge_prompt, slot_answers
from generate.parsing import parse_verdict
from generate.sampling import HFSampler
from tests.conftest import ROOT, run_cli


def test_labels_mask_prompt_and_padding_exactly(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = judge_prompt(tok, "compare", "What is 2 + 3?", "5", "6")
    response = "2 + 3 = 5. Answer A matches.\nVerdict: A"
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"]
    ex = encode_prompt_response(tok, prompt, response)
    assert ex["input_ids"] == p_ids + r_ids + [tok.eos_token_id]
    assert ex["labels"] == [IGNORE_INDEX] * len(p_ids) + r_ids + [tok.eos_token_id]

    short = encode_prompt_response(tok, "<|user|>\nHi\n<|assistant|>\n", "Yes")
    batch = collate_prompt_response([ex, short], tok.pad_token_id)
    n_short = len(short["input_ids"])
    n_prompt_short = sum(1 for l in short["labels"] if l == IGNORE_INDEX)
    labels = batch["labels"][1]
    assert (labels[:n_prompt_short] == IGNORE_INDEX).all()
    assert (labels[n_prompt_short:n_short] != IGNORE_INDEX).all()
    assert (labels[n_short:] == IGNORE_INDEX).all() and len(labels) > n_short
    assert batch["attention_mask"][1].tolist() == [1] * n_short + [0] * (len(labels) - n_short)


def test_prompts_are_fitted_never_cut_and_rows_too_long_are_left_out(tiny_model_dir):
    from run_sft import SFTDataArguments, build_dataset
    from utils.io import DataError

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long_answer = "The answer is 5 because two plus three is five. " * 40
    rows = [{"question": "What is 2 + 3?", "answer_a": long_answer, "answer_b": "6", "chain_of_thought": "A is right.",
             "verdict": "A"},
            {"question": "What is 2 + 3?", "answer_a": "5", "answer_b": "6", "chain_of_thought": "A is right. " * 60,
             "verdict": "A"}]
    (ex,) = build_dataset(rows, tok, SFTDataArguments(templates="compare", max_length=160, max_prompt_length=120))
    assert len(ex["input_ids"]) <= 160 and sum(label == IGNORE_INDEX for label in ex["labels"]) <= 120
    prompt = tok.decode([i for i, label in zip(ex["input_ids"], ex["labels"]) if label == IGNORE_INDEX])
    assert prompt.startswith("<|user|>\nWhich answer") and prompt.endswith("<|assistant|>\n")  # template intact
    assert "tokens omitted" in prompt and "Answer B: 6" in prompt
    assert ex["labels"][-1] == tok.eos_token_id  # the response is whole, its end included
    with pytest.raises(DataError, match="every row is longer than --max_length 160"):  # the long CoT alone
        build_dataset(rows[1:], tok, SFTDataArguments(templates="compare", max_length=160, max_prompt_length=120))


def test_sft_halves_the_loss_and_reloads_identically(sft_dir, synthetic_dir):
    with open(os.path.join(sft_dir, "trainer_state.json")) as f:
        losses = [h["loss"] for h in json.load(f)["log_history"] if "loss" in h]
    assert losses[-1] <= 0.5 * losses[0], losses
    model = AutoModelForCausalLM.from_pretrained(sft_dir).eval()
    again = AutoModelForCausalLM.from_pretrained(sft_dir).eval()
    tok = AutoTokenizer.from_pretrained(sft_dir)
    ids = tok("<|user|>\nWhat is 12 + 30?\n<|assistant|>\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert os.path.exists(os.path.join(sft_dir, "run_config.yaml"))


def test_sft_judge_answers_in_the_verdict_format(sft_dir, synthetic_dir):
    tok = AutoTokenizer.from_pretrained(sft_dir)
    model = AutoModelForCausalLM.from_pretrained(sft_dir)
    with open(os.path.join(synthetic_dir, "test.jsonl")) as f:
        rows = [json.loads(l) for l in f][:60]
    prompts = [judge_prompt(tok, "compare", r["question"], *slot_answers(r["answer_pos"], r["answer_neg"], "AB"[i % 2]))
               for i, r in enumerate(rows)]
    outs = HFSampler(model, tok, batch_size=64).generate(prompts, 1, 0.0, 64, seed=0)
    rate = sum(parse_verdict(o[0].text) is not None for o in outs) / len(outs)
    assert rate >= 0.8, f"only {rate:.0%} of held-out judgments have a verdict"


@pytest.mark.parametrize("content,message", [
    ('{"question": "q", "chain_of_thought": "c"}\n{"question": "q", \n', r"sft\.jsonl:2: invalid JSON"),
    ('{"question": "q", "chain_of_thought": "c"}\n{"question": "q"}\n',
     r"sft\.jsonl:2: missing field 'chain_of_thought'"),
    ('{"question": "q", "answer_a": "a", "answer_b": "b", "chain_of_thought": "c", "verdict": "C"}\n',
     r"sft\.jsonl:1: field 'verdict'"),
    ("", r"sft\.jsonl: file is empty"),
])
def test_bad_sft_input_fails_cleanly(tmp_path, tiny_model_dir, content, message):
    import re

    data = tmp_path / "sft.jsonl"
    data.write_text(content)
    out = tmp_path / "out"
    proc = run_cli("run_sft.py", "--config", os.path.join(ROOT, "configs", "sft_demo.yaml"),
                   "--model_name_or_path", tiny_model_dir, "--train_file", str(data), "--output_dir", str(out))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(message, last), proc.stderr[-2000:]
    assert not (out / "config.json").exists() and not (out / "run_config.yaml").exists()


def test_plain_question_cot_rows_are_accepted(tiny_model_dir):
    from run_sft import SFTDataArguments, build_dataset

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"question": "Why is the sky blue?", "chain_of_thought": "Rayleigh scattering."}]
    (ex,) = build_dataset(rows, tok, SFTDataArguments(max_length=128))
    n_resp = len(tok("Rayleigh scattering.", add_special_tokens=False)["input_ids"]) + 1
    assert sum(l != IGNORE_INDEX for l in ex["labels"]) == n_resp


@pytest.mark.parametrize("precision", [[], ["--bf16", "true"]], ids=["fp32", "bf16-autocast"])
def test_a_stopped_sft_run_resumes_from_its_newest_checkpoint_to_the_same_weights(tiny_model_dir, synthetic_dir,
                                                                                   tmp_path, monkeypatch, precision):
    """What a run longer than one sitting relies on (the CPU recipe's save_steps + resume auto):
    stopped after step 4 of 6 and started again with the same command, it continues from its step-3
    checkpoint and ends with the weights of an uninterrupted run, in fp32 and under bf16 autocast."""
    import run_sft
    from models.sft_trainer import SFTTrainer

    def command(out):
        return ["--config", os.path.join(ROOT, "configs", "sft_demo.yaml"), "--model_name_or_path", tiny_model_dir,
                "--train_file", os.path.join(synthetic_dir, "sft.jsonl"), "--output_dir", str(out), "--max_steps", "6",
                "--save_strategy", "steps", "--save_steps", "3", "--resume_from_checkpoint", "auto",
                "--logging_steps", "1", "--disable_tqdm", "true", *precision]

    run_sft.main(command(tmp_path / "whole"))
    real_step, steps = SFTTrainer.training_step, []

    def counted(self, *a, **kw):  # stops in step 5 of the first attempt
        if self.state.global_step == 4 and len(steps) == 4:
            raise KeyboardInterrupt
        steps.append(self.state.global_step)
        return real_step(self, *a, **kw)

    monkeypatch.setattr(SFTTrainer, "training_step", counted)
    with pytest.raises(KeyboardInterrupt):
        run_sft.main(command(tmp_path / "stopped"))
    assert sorted(os.listdir(tmp_path / "stopped")) == ["checkpoint-3"]  # nothing that looks finished
    run_sft.main(command(tmp_path / "stopped"))
    assert steps == [0, 1, 2, 3] + [3, 4, 5]  # the second attempt ran steps 4-6 only
    with open(tmp_path / "stopped" / "trainer_state.json") as f:
        assert [h["step"] for h in json.load(f)["log_history"] if "loss" in h] == [1, 2, 3, 4, 5, 6]
    whole = AutoModelForCausalLM.from_pretrained(tmp_path / "whole").state_dict()
    stopped = AutoModelForCausalLM.from_pretrained(tmp_path / "stopped").state_dict()
    for name, w in whole.items():
        assert torch.allclose(w, stopped[name], atol=1e-6), name
