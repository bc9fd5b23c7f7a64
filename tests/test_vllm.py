"""The vLLM sampling backend on CPU (vllm-cpu, in .venv-vllm: `make test` runs these there).

An engine starts in ~30 s, so the whole module shares one per checkpoint: every test runs in this
process inside one `shared_engines()` block, the scripts through their own `main` (run_cli)."""
import json
import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
pytest.importorskip("vllm")

from tests.conftest import ROOT, assert_pairs_within_prompts, read_refinement, run_cli  # noqa: E402

ENGINE = ["--gpu_memory_utilization", "0.5", "--max_model_len", "512", "--enforce_eager", "true"]  # dtype: HF's


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, tiny_model_dir, synthetic_dir):
    """A tiny judge that ends most judgments, trained shorter than the main suite's (which needs
    faithful reasoning): these tests compare vLLM with the HF path, not the judge's quality."""
    import run_sft

    out = str(tmp_path_factory.mktemp("sft"))
    run_sft.main(["--config", os.path.join(ROOT, "configs", "sft_demo.yaml"), "--model_name_or_path", tiny_model_dir,
                  "--train_file", os.path.join(synthetic_dir, "sft.jsonl"), "--output_dir", out, "--max_steps", "100",
                  "--logging_steps", "50", "--disable_tqdm", "true"])
    return out


@pytest.fixture(scope="module", autouse=True)
def one_engine_per_checkpoint():
    from generate.vllm_sampler import shared_engines

    with shared_engines():
        yield


def options(**kw):
    from generate.vllm_sampler import VLLMOptions

    return VLLMOptions(gpu_memory_utilization=0.5, max_model_len=512, enforce_eager=True, **kw)


def hf_perplexities(checkpoint, tokenizer, samples, max_new_tokens):
    import torch
    from transformers import AutoModelForCausalLM

    from generate.perplexity import response_perplexities

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    return response_perplexities(model, tokenizer, [s["prompt"] for s in samples], [s["response"] for s in samples],
                                 max_new_tokens, finished=[s["finished"] for s in samples])


def test_sampler_scores_are_the_models_perplexities(sft_dir, synthetic_dir):
    """vLLM's sampled-token log-probs are taken before temperature and top-p, so the perplexity
    refinement computes from them is the model's own, at any temperature."""
    import math

    from data.templates import judge_prompt
    from generate.perplexity import response_perplexities
    from generate.vllm_sampler import VLLMSampler
    from models.loading import ModelArguments, load_model_and_tokenizer
    from tests.conftest import read_jsonl

    model, tok = load_model_and_tokenizer(ModelArguments(model_name_or_path=sft_dir, dtype="fp32"))
    rows = read_jsonl(os.path.join(synthetic_dir, "test.jsonl"))[:12]
    prompts = [judge_prompt(tok, "compare", r["question"], r["answer_pos"], r["answer_neg"]) for r in rows]
    sampler = VLLMSampler(sft_dir, tok, options(vllm_dtype="float32"), logprobs=True)
    for temperature in (0.7, 1.0):
        done = sampler.generate(prompts, 4, temperature, 64, seed=1)
        flat_prompts = [p for p, o in zip(prompts, done) for _ in o]
        flat = [c for o in done for c in o]
        sums, counts, _ = sampler.sequence_logps(flat_prompts, flat)
        hf = response_perplexities(model, tok, flat_prompts, [c.text for c in flat], 64,
                                   finished=[c.finished for c in flat])
        assert len(flat) == 48 and sum(c.finished for c in flat) > 24 and len({c.text for c in flat}) > 12
        for s, n, ppl in zip(sums, counts, hf):
            assert math.exp(-s / n) == pytest.approx(ppl, rel=1e-4), temperature
    sampler.close()


def _refine(model, prefs, out, *extra):
    return run_cli("run_preference_refinement.py", "--config", os.path.join(ROOT, "configs", "refine_demo.yaml"),
                      "--model_name_or_path", model, "--pref_file", prefs, "--output_dir", out, "--num_samples", "4",
                      "--templates", "compare,brief", "--max_new_tokens", "48", "--items_per_chunk", "4",
                      "--sampler", "vllm", "--score_with", "sampler", *ENGINE, *extra)


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
    from models.loading import load_tokenizer

    some = samples[:40]
    for s, ppl in zip(some, hf_perplexities(sft_dir, load_tokenizer(sft_dir), some, 64)):
        assert s["ppl"] == pytest.approx(ppl, rel=1e-4)


def test_evaluation_with_vllm_matches_the_hf_sampler(sft_dir, synthetic_dir, tmp_path):
    common = ["--model_name_or_path", sft_dir, "--eval_files", os.path.join(synthetic_dir, "test.jsonl"),
              "--max_new_tokens", "64", "--max_items", "60", "--dtype", "fp32"]
    hf, vl = str(tmp_path / "hf.json"), str(tmp_path / "vllm.json")
    proc = run_cli("run_eval.py", *common, "--output_file", hf)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("run_eval.py", *common, "--output_file", vl, "--sampler", "vllm", *ENGINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(hf) as f1, open(vl) as f2:
        a, b = json.load(f1)["results"]["test.jsonl"], json.load(f2)["results"]["test.jsonl"]
    # greedy decoding with the same fp32 weights: the same judgments but for float-level near-ties
    assert abs(a["accuracy"] - b["accuracy"]) <= 0.05, (a["accuracy"], b["accuracy"])


def test_the_engine_settings_reach_the_engine(monkeypatch, tiny_model_dir):
    """Every VLLMOptions field reaches vLLM's LLM (recorded by a stand-in: no engine starts), and
    samplers with other settings get an engine of their own."""
    import vllm

    from generate import vllm_sampler
    from models.loading import load_tokenizer

    started = []
    monkeypatch.setattr(vllm, "LLM", lambda **kwargs: started.append(kwargs) or object())
    monkeypatch.setattr(vllm_sampler, "_shared", {})  # a block of its own, apart from the module's engines
    tok = load_tokenizer(tiny_model_dir)
    vllm_sampler.VLLMSampler(tiny_model_dir, tok, options(max_num_seqs=16, vllm_dtype="float32"))
    vllm_sampler.VLLMSampler(tiny_model_dir, tok, options(max_num_seqs=16, vllm_dtype="float32"))  # shared
    vllm_sampler.VLLMSampler(tiny_model_dir, tok, options(vllm_dtype="float32"))
    first, second = started
    assert first["max_num_seqs"] == 16 and "max_num_seqs" not in second
    assert first["max_model_len"] == 512 and first["enforce_eager"] is True and first["dtype"] == "float32"
    assert first["gpu_memory_utilization"] == 0.5


def test_a_max_model_len_that_does_not_fit_is_vllms_reason_in_one_line(sft_dir, synthetic_dir, tmp_path):
    proc = run_cli("run_eval.py", "--model_name_or_path", sft_dir, "--eval_files",
                      os.path.join(synthetic_dir, "test.jsonl"), "--output_file", str(tmp_path / "r.json"),
                      "--max_items", "2", "--sampler", "vllm", "--gpu_memory_utilization", "0.5",
                      "--max_model_len", "100000", "--enforce_eager", "true")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: vLLM could not start {sft_dir}: ") and "\n" not in last
    assert not (tmp_path / "r.json").exists()


def test_a_vllm_judge_reads_the_same_probability_from_the_engine(sft_dir, synthetic_dir):
    from data.templates import judge_prompt
    from generate.judge import Judge
    from tests.conftest import read_jsonl

    rows = [{"question": r["question"], "answer_a": r["answer_pos"], "answer_b": r["answer_neg"]}
            for r in read_jsonl(os.path.join(synthetic_dir, "test.jsonl"))[:12]]
    out = {}
    vllm = {"sampler": "vllm", "vllm_options": options(vllm_dtype="float32")}
    for name, kw in (("hf", {"dtype": "fp32"}), ("vllm", vllm)):
        judge = Judge.from_pretrained(sft_dir, max_new_tokens=64, **kw)
        out[name] = [(j.p_a, j.orders[0]["responses"][0], j.orders[1]["responses"][0])
                     for j in judge.compare_batch(rows)]
    from generate.vllm_sampler import VLLMSampler

    again = VLLMSampler(sft_dir, judge.tokenizer, options(vllm_dtype="float32"))
    assert again.llm is judge.sampler.llm  # one engine for the checkpoint in the block, not a second start
    (copies,) = again.generate([judge_prompt(judge.tokenizer, "compare", "Is 2 > 1?", "Yes.", "No.")], 3, 0.0, 16, 0)
    assert len(copies) == 3 and len({c.text for c in copies}) == 1  # greedy: K copies of the one judgment
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
    """No --vllm_dtype: the engine computes in the precision of --dtype (fp32 here; the recipe's
    bf16_if_native is bf16 on AMX machines), not in vLLM's 'auto' (bf16 on CPU), so its perplexities
    are the HF fp32 ones to 1e-4."""
    out = str(tmp_path / "refine")
    proc = run_cli("run_preference_refinement.py", "--config",
                   os.path.join(ROOT, "configs", "recipes", "smollm2-135m", "refine.yaml"),
                   "--model_name_or_path", real_checkpoint, "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"),
                   "--output_dir", out, "--max_items", "2", "--num_samples", "2", "--temperatures", "1.0",
                   "--templates", "compare", "--max_new_tokens", "24", "--items_per_chunk", "2",
                   "--sampler", "vllm", "--score_with", "sampler", "--gpu_memory_utilization", "0.5",
                   "--max_model_len", "512", "--enforce_eager", "true", "--dtype", "fp32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples, pairs, stats = read_refinement(out)
    assert len(samples) == 2 * 2 * 2
    assert_pairs_within_prompts(samples, pairs)
    from models.loading import load_tokenizer

    for s, ppl in zip(samples, hf_perplexities(real_checkpoint, load_tokenizer(real_checkpoint), samples, 8)):
        assert s["ppl"] == pytest.approx(ppl, rel=1e-4)

