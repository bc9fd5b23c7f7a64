"""bf16 on a CPU: inference in bf16 weights and training under bf16 autocast with fp32 master
weights (`--bf16 true`), and what bf16 costs in accuracy against fp32 on the same judge."""
import json
import os

import torch
from transformers import AutoModelForCausalLM

from data.templates import fit_judge_prompt
from generate.perplexity import response_perplexities
from generate.sampling import HFSampler
from models.loading import ModelArguments, load_model, tokenizer_of
from tests.conftest import ROOT

BF16_PPL_REL_ERROR = 0.02  # the largest relative error of a bf16 perplexity allowed against fp32


def test_bf16_samples_and_scores_within_the_bound_of_fp32(sft_dir, synthetic_dir):
    tok = tokenizer_of(ModelArguments(model_name_or_path=sft_dir))
    fp32 = load_model(ModelArguments(model_name_or_path=sft_dir, dtype="fp32"), tok).eval()
    bf16 = load_model(ModelArguments(model_name_or_path=sft_dir, dtype="bf16"), tok).eval()
    assert bf16.dtype == torch.bfloat16
    with open(os.path.join(synthetic_dir, "test.jsonl")) as f:
        rows = [json.loads(line) for line in f][:12]
    prompts = [fit_judge_prompt(tok, "compare", r["question"], r["answer_pos"], r["answer_neg"])[0] for r in rows]
    samples = [out[0] for out in HFSampler(fp32, tok).generate(prompts, 2, 1.0, 48, seed=0)]
    exact = response_perplexities(fp32, tok, prompts, [c.text for c in samples], finished=[c.finished for c in samples])
    rounded = response_perplexities(bf16, tok, prompts, [c.text for c in samples], finished=[c.finished for c in samples])
    errors = sorted(abs(b - a) / a for a, b in zip(exact, rounded))
    assert 0 < errors[-1] < BF16_PPL_REL_ERROR, errors  # bf16 computed something, and close
    greedy = HFSampler(bf16, tok).generate(prompts, 1, 0.0, 48, seed=0)  # the sampler runs in bf16
    assert all(out[0].finished and "Verdict" in out[0].text for out in greedy)


def test_bf16_autocast_training_keeps_fp32_master_weights(tiny_model_dir, synthetic_dir, tmp_path):
    import run_sft

    losses, weights = {}, {}
    for name, extra in (("fp32", []), ("bf16", ["--bf16", "true"])):
        out = tmp_path / name
        run_sft.main(["--config", os.path.join(ROOT, "configs", "sft_demo.yaml"), "--model_name_or_path",
                      tiny_model_dir, "--train_file", os.path.join(synthetic_dir, "sft.jsonl"), "--output_dir",
                      str(out), "--max_steps", "3", "--logging_steps", "1", "--disable_tqdm", "true", *extra])
        with open(out / "trainer_state.json") as f:
            losses[name] = [h["loss"] for h in json.load(f)["log_history"] if "loss" in h]
        model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
        assert model.dtype == torch.float32  # saved as stored: the master weights
        weights[name] = model.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(weights["fp32"], weights["bf16"])  # the bf16 run did compute in bf16
    assert torch.allclose(weights["fp32"], weights["bf16"], atol=2e-3)
    for a, b in zip(losses["fp32"], losses["bf16"]):
        assert abs(a - b) / a < 0.02, (losses)
