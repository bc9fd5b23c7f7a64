"""The training path at the shape of a real run, on CPU: Llama 3's 128,256-row vocabulary and
~1,500-token sequences (a random model with a small hidden size: the vocabulary is what decides
memory), through scoring, the reference pass and an M-DPO step."""
import gc
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from data.collate import encode_prompt_response
from generate.perplexity import response_perplexities
from tests.conftest import ROOT, run_cli
from tests.test_training_exact import full_log_softmax_logps

VOCAB = 128_256
SENTENCE = "Answer {i} compares 473 with 438 and sorts 7 3 9 from small to large, then checks each step. "


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory):
    from toy.model import build_tiny

    path = str(tmp_path_factory.mktemp("wide"))
    build_tiny(path, seed=0, vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
               max_position_embeddings=2048)
    return path


def text_of(tok, n_tokens: int, i: int) -> str:
    text = ""
    while len(tok(text, add_special_tokens=False)["input_ids"]) < n_tokens:
        text += SENTENCE.format(i=i)
    return text


def long_pairs(tok, n: int) -> list[dict]:
    """Judge prompts of ~1,100 tokens with judgments of ~300-400 tokens."""
    pairs = []
    for i in range(n):
        prompt = tok.apply_chat_template([{"role": "user", "content": text_of(tok, 1100 + 40 * i, i)}],
                                         tokenize=False, add_generation_prompt=True)
        pairs.append({"item_id": str(i), "prompt_id": "compare/A", "prompt": prompt,
                      "chosen": text_of(tok, 360 + 30 * i, i) + "\nVerdict: A",
                      "rejected": text_of(tok, 400 - 20 * i, i + 1) + "\nVerdict: B",
                      "chosen_level": "SA", "rejected_level": "WR", "chosen_score": 0.9, "rejected_score": 0.4})
    return pairs


def test_model_has_the_real_vocabulary(wide_model_dir):
    model = AutoModelForCausalLM.from_pretrained(wide_model_dir)
    assert model.config.vocab_size == VOCAB and model.lm_head.weight.shape[0] == VOCAB


def test_scoring_projects_only_response_positions_and_equals_full_logits(wide_model_dir):
    tok = AutoTokenizer.from_pretrained(wide_model_dir)
    model = AutoModelForCausalLM.from_pretrained(wide_model_dir).eval()
    pairs = long_pairs(tok, 3)
    prompts, responses = [p["prompt"] for p in pairs], [p["chosen"] for p in pairs]
    feats = [encode_prompt_response(tok, p, r) for p, r in zip(prompts, responses)]
    lengths = [len(f["input_ids"]) for f in feats]
    prompt_lengths = [sum(1 for label in f["labels"] if label == -100) for f in feats]
    assert min(lengths) >= 1400 and max(lengths) <= 1700

    widths = []
    hook = model.lm_head.register_forward_hook(lambda mod, inp, out: widths.append(out.shape[1]))
    got = response_perplexities(model, tok, prompts, responses, batch_size=3)
    hook.remove()
    # one batch; the vocabulary projection covers the responses, not the ~1,100-token prompts
    assert widths == [max(lengths) - min(prompt_lengths) + 1]

    import math

    for f, ppl in zip(feats, got):
        ids = torch.tensor([f["input_ids"]])
        with torch.no_grad():
            logp, n = full_log_softmax_logps(model(input_ids=ids).logits, torch.tensor([f["labels"]]))
        assert ppl == pytest.approx(math.exp(-logp.item() / n.item()), rel=1e-5)


def write_pairs(path, pairs: list[dict]):
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def _mdpo(model_dir, pairs_file, out, *extra, in_process=False):
    args = ["--config", os.path.join(ROOT, "configs", "mdpo_demo.yaml"), "--model_name_or_path", model_dir,
            "--pairs_file", str(pairs_file), "--output_dir", str(out), "--max_steps", "1", "--max_length", "2048",
            "--max_prompt_length", "1536",
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2", "--logging_steps", "1",
            "--precompute_ref_batch_size", "4", "--precompute_ref_max_tokens", "7000", "--warmup_steps", "0",
            "--disable_tqdm", "true", *extra]
    if in_process:
        import run_m_dpo

        return run_m_dpo.main(args)
    proc = run_cli("run_m_dpo.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_reference_pass_and_an_m_dpo_step_at_real_shape(wide_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(wide_model_dir)
    pairs = long_pairs(tok, 4)
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "judge"
    first = _mdpo(wide_model_dir, pairs_file, out)
    assert "reusing" not in first.stderr
    with open(out / "trainer_state.json") as f:
        log = [h for h in json.load(f)["log_history"] if "loss" in h][0]
    # the policy starts as the reference: rewards 0, so the reference pass saw the same model
    assert abs(log["rewards/margins"]) < 1e-4 and abs(log["rewards/chosen"]) < 1e-4
    assert not torch.equal(AutoModelForCausalLM.from_pretrained(str(out)).lm_head.weight,
                           AutoModelForCausalLM.from_pretrained(wide_model_dir).lm_head.weight)

    with open(out / "reference_logps.json") as f:
        cache = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(wide_model_dir)
    for p, (chosen_logp, _) in zip(pairs, cache["logps"]):
        f_ = encode_prompt_response(tok, p["prompt"], p["chosen"], 2048)
        with torch.no_grad():
            expected = full_log_softmax_logps(model(input_ids=torch.tensor([f_["input_ids"]])).logits,
                                              torch.tensor([f_["labels"]]))[0].item()
        assert chosen_logp == pytest.approx(expected, abs=1e-3)



def test_a_separate_reference_is_gone_before_training(wide_model_dir, tmp_path, monkeypatch):
    from models.m_dpo_trainer import MDPOTrainer

    tok = AutoTokenizer.from_pretrained(wide_model_dir)
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", long_pairs(tok, 2))
    alive = []

    def count_models(*args, **kwargs):
        gc.collect()
        alive.append(sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects()))

    monkeypatch.setattr(MDPOTrainer, "train", count_models)
    monkeypatch.setattr("run_m_dpo.train_and_save", lambda trainer, *a, **kw: trainer.train())
    count_models()  # models other tests may still hold
    _mdpo(wide_model_dir, pairs_file, tmp_path / "o", "--ref_model_name_or_path", wide_model_dir, in_process=True)
    assert alive[1] == alive[0] + 1  # the policy, and no reference


def test_token_budgets_smaller_than_one_sequence_stop_before_loading(wide_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(wide_model_dir)
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", long_pairs(tok, 2))
    out = tmp_path / "o"
    proc = run_cli("run_m_dpo.py", "--config", os.path.join(ROOT, "configs", "mdpo_demo.yaml"),
                      "--model_name_or_path", wide_model_dir, "--pairs_file", str(pairs_file), "--output_dir", str(out),
                      "--max_length", "2048", "--max_prompt_length", "1536", "--precompute_ref_max_tokens", "2000")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --precompute_ref_max_tokens 2000 is smaller than one pair (pair "), last
    assert not out.exists()

    prefs = tmp_path / "prefs.jsonl"
    row = {"id": 1, "question": text_of(tok, 900, 0), "answer_pos": "a", "answer_neg": "b"}
    prefs.write_text(json.dumps(row) + "\n")
    proc = run_cli("run_preference_refinement.py", "--model_name_or_path", wide_model_dir, "--pref_file", str(prefs),
                      "--output_dir", str(out), "--scoring_max_tokens", "1000", "--max_new_tokens", "256",
                      "--max_prompt_length", "2048")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --scoring_max_tokens 1000 is smaller than the longest judgment to score ("), last
    assert f"{prefs}: item 1, prompt " in last and not out.exists()
