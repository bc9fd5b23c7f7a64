"""The scripts under `accelerate launch` with two CPU processes (gloo), as on a GPU node.

accelerate's own `--cpu` flag starts a single process unless MPI is installed, so the tests use
`--multi_gpu`, which starts one process per rank through torch.distributed; with no GPU visible the
scripts then join one gloo group on the CPU.
"""
import json
import os

import pytest
from transformers import AutoModelForCausalLM

from tests.conftest import ROOT, floats_close, run_cli, run_script
from tests.test_m_dpo import make_pairs


def launch(script, *args, port):
    proc = run_script("-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu", "--num_processes", "2",
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                      "--main_process_port", str(port), script, *args, env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _log_history(out):
    with open(os.path.join(out, "trainer_state.json")) as f:
        return json.load(f)["log_history"]


def test_sft_trains_as_one_group_of_two(tiny_model_dir, synthetic_dir, tmp_path):
    out = str(tmp_path / "sft")
    train = os.path.join(synthetic_dir, "sft.jsonl")
    launch("run_sft.py", "--config", os.path.join(ROOT, "configs", "sft_demo.yaml"), "--model_name_or_path",
           tiny_model_dir, "--train_file", train, "--output_dir", out, "--max_steps", "3",
           "--per_device_train_batch_size", "4", "--logging_steps", "1", "--disable_tqdm", "true", port=29541)
    with open(train) as f:
        rows = sum(1 for _ in f)
    # 3 steps of 2 processes x 4 rows: twice the data of one process, logged once.
    assert _log_history(out)[-1]["epoch"] == pytest.approx(3 * 2 * 4 / rows)
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size > 0


def test_m_dpo_reference_pass_is_shared_between_processes(tiny_model_dir, tmp_path):
    """Each process scores half the pairs and the halves are gathered: at the first step the policy
    is the reference, so every pair's reward must be 0 if each got its own reference log-probs."""
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(16)))
    out = str(tmp_path / "mdpo")
    launch("run_m_dpo.py", "--config", os.path.join(ROOT, "configs", "mdpo_demo.yaml"), "--model_name_or_path",
           tiny_model_dir, "--pairs_file", str(pairs_file), "--output_dir", out, "--max_steps", "2",
           "--per_device_train_batch_size", "4", "--precompute_ref_batch_size", "3", "--logging_steps", "1",
           "--disable_tqdm", "true", port=29542)
    first = _log_history(out)[0]
    assert abs(first["rewards/chosen"]) < 1e-5 and abs(first["rewards/rejected"]) < 1e-5
    assert abs(first["rewards/margins"]) < 1e-5


def test_eval_with_two_processes_equals_one(sft_dir, synthetic_dir, tmp_path):
    common = ["--model_name_or_path", sft_dir, "--eval_files", os.path.join(synthetic_dir, "test.jsonl"),
              "--max_new_tokens", "48", "--items_per_chunk", "8", "--num_samples", "3", "--max_items", "24"]
    one, two = str(tmp_path / "one.json"), str(tmp_path / "two.json")
    proc = run_cli("run_eval.py", *common, "--output_file", one)  # 3 chunks: 2 on rank 0, 1 on rank 1
    assert proc.returncode == 0, proc.stderr[-3000:]
    launch("run_eval.py", *common, "--output_file", two, port=29543)
    with open(one) as f1, open(two) as f2:
        a, b = json.load(f1), json.load(f2)
    # the same judgments; P(A better), read off the decode steps' logits, to 1e-6 (1 thread against 2)
    assert floats_close(a["results"], b["results"]) and floats_close(a["items"], b["items"])
    assert not os.path.exists(two + ".parts")
