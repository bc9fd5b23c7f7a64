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
    rounded = response_perplexities(bf16, tok, prompts, [c.text for c in samples],
                                    finished=[c.finished for c in samples])
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


def test_bf16_if_native_is_bf16_only_where_the_hardware_computes_it(monkeypatch, tmp_path):
    """--dtype bf16_if_native: bf16 weights for inference and bf16 autocast over fp32 master weights
    for training where bf16 is native, fp32 everywhere else; a --bf16 flag or config value still wins."""
    from transformers import TrainingArguments

    import utils.hardware
    from models import loading
    from models.training import training_dtype
    from utils.config import parse_args

    info = tmp_path / "cpuinfo"
    for flags, native in (("fpu avx2 avx512f", False), ("fpu avx512f amx_tile amx_bf16", True),
                          ("fpu avx512f avx512_bf16", True)):
        info.write_text(f"model name\t: Test CPU\nflags\t\t: {flags}\n")
        assert any(f in utils.hardware.NATIVE_BF16_FLAGS for f in utils.hardware.cpu_flags(str(info))[1]) == native
    config = tmp_path / "train.yaml"
    config.write_text("dtype: bf16_if_native\nlearning_rate: 1.0e-4\n")
    for native in (False, True):
        monkeypatch.setattr(utils.hardware, "native_bf16", lambda native=native: native)
        monkeypatch.setattr(loading, "native_bf16", lambda native=native: native)
        assert loading.resolve_dtype("bf16_if_native") == (torch.bfloat16 if native else torch.float32)
        base = ["--output_dir", str(tmp_path / "out"), "--model_name_or_path", "m"]
        model_args, args = parse_args([loading.ModelArguments, TrainingArguments], ["--config", str(config), *base])
        assert args.bf16 is native  # autocast where native
        assert training_dtype(model_args, args) == torch.float32  # fp32 master weights either way
        _, args = parse_args([loading.ModelArguments, TrainingArguments],
                             ["--config", str(config), *base, "--bf16", "false"])
        assert args.bf16 is False  # the flag decides
        _, args = parse_args([loading.ModelArguments, TrainingArguments], [*base, "--dtype", "fp32"])
        assert args.bf16 is False  # any other dtype leaves autocast to --bf16
        from generate.vllm_sampler import engine_dtype

        assert engine_dtype(None, "bf16_if_native", "m") == ("bfloat16" if native else "float32")  # vLLM follows
    config.write_text("dtype: bf16_if_native\nbf16: false\n")
    _, args = parse_args([loading.ModelArguments, TrainingArguments], ["--config", str(config), *base])
    assert args.bf16 is False  # the config value decides


def test_bench_precision_measures_bf16_against_fp32_on_a_refinements_judgments(tiny_pipeline, capsys):
    from benchmarks.bench_precision import main, same_side_of_median

    assert same_side_of_median([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert same_side_of_median([1, 2, 3, 4], [4, 3, 2, 1]) == 0.0
    _, run, _ = tiny_pipeline
    main(["--model_name_or_path", os.path.join(run, "sft"), "--refine_dir", os.path.join(run, "refine")])
    rows = {line.split("|")[1].strip(): [float(x) for x in line.split("|")[2:6]]
            for line in capsys.readouterr().out.splitlines()
            if line.startswith("| bf16") or line.startswith("| refinement")}
    assert rows["refinement"][2] < 1e-4  # the fp32 refinement's own perplexities are the fp32 forward pass's
    assert 0 < rows["bf16"][0] < BF16_PPL_REL_ERROR and rows["bf16"][3] > 0.9  # bf16 differs, a little
