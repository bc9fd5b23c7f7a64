import json
import os

import pytest

from tests.conftest import read_jsonl, run_pipeline_config, run_script

SMALL = """
output_dir: {out}
seed: 0
stages: tiny,data,sft,refine,mdpo,bt,eval
evaluate_base: true
n_sft: 300
n_prefs: 12
n_val: 4
n_test: 16
sft_args: "--max_steps 40 --logging_steps 10"
refine_args: "--num_samples 2 --templates compare --max_new_tokens 48 --items_per_chunk 4"
mdpo_args: "--max_steps 3 --per_device_train_batch_size 4"
bt_args: "--max_steps 3 --per_device_train_batch_size 4"
eval_args: "--max_new_tokens 48"
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return run_pipeline_config(tmp_path_factory, "pipe", SMALL)


def test_every_stage_hands_its_files_to_the_next(pipeline):
    _, run, stdout = pipeline
    assert (run / "tiny-base" / "config.json").exists()
    prefs = read_jsonl(run / "data" / "prefs.jsonl")
    assert len(prefs) == 12 and all({"id", "question", "answer_pos", "answer_neg"} <= set(p) for p in prefs)
    assert "train_file" in (run / "sft" / "run_config.yaml").read_text()
    samples = read_jsonl(run / "refine" / "samples.jsonl")
    assert {s["item_id"] for s in samples} == {str(p["id"]) for p in prefs}  # refinement read data's prefs
    stats = json.loads((run / "refine" / "stats.json").read_text())
    pairs = read_jsonl(run / "refine" / "pairs.jsonl")
    assert stats["samples"] == len(samples) == 12 * 2 * 2 and stats["pairs"] == len(pairs)
    mdpo_cfg = (run / "mdpo" / "run_config.yaml").read_text()
    assert str(run / "refine" / "pairs.jsonl") in mdpo_cfg and str(run / "sft") in mdpo_cfg
    assert (run / "bt" / "config.json").exists()
    for name, model in (("base", "tiny-base"), ("sft", "sft"), ("bt", "bt"), ("gfriend", "mdpo")):
        res = json.loads((run / "eval" / f"{name}.json").read_text())
        r = res["results"]["test.jsonl"]
        assert r["n"] == 16 and 0.0 <= r["accuracy"] <= 1.0 and res["model"] == str(run / model)
    table = (run / "eval" / "table.md").read_text()
    assert all(f"| {name} |" in table for name in ("Base model (zero-shot)", "SFT judge", "BT-model", "GFRIEND (M-DPO)"))
    for stage in ("sft", "refine", "mdpo", "bt", "eval"):
        assert f"[{stage}] finished in" in stdout


def _lines(stdout: str) -> dict[str, str]:
    """What the pipeline said about each stage: 'reused ...', 'running: why', 'resuming: why'."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("[") and "] " in line and not line.split("] ", 1)[1].startswith("finished"):
            stage, rest = line[1:].split("] ", 1)
            out[stage] = rest
    return out


def test_a_stage_reruns_exactly_when_what_produced_it_changed(pipeline):
    cfg, run, _ = pipeline
    weights = run / "mdpo" / "model.safetensors"
    before = os.path.getmtime(weights)
    every = ("tiny", "data", "sft", "refine", "mdpo", "bt", "eval")

    said = _lines(run_script("run_pipeline.py", "--config", str(cfg)).stdout)  # nothing changed
    assert all(said[s].startswith("reused") for s in every), said
    assert os.path.getmtime(weights) == before

    cfg.write_text(cfg.read_text().replace('mdpo_args: "--max_steps 3', 'mdpo_args: "--max_steps 4'))
    said = _lines(run_script("run_pipeline.py", "--config", str(cfg)).stdout)  # one setting of one stage
    assert said["mdpo"] == "running: max_steps changed 3 → 4" and said["eval"] == "running: mdpo ran again"
    assert all(said[s].startswith("reused") for s in ("tiny", "data", "sft", "refine", "bt")), said
    assert os.path.getmtime(weights) > before

    prefs = run / "data" / "prefs.jsonl"  # an input file, edited by hand
    prefs.write_text(prefs.read_text().replace('"answer_neg": "', '"answer_neg": "Hmm. ', 1))
    said = _lines(run_script("run_pipeline.py", "--config", str(cfg)).stdout)
    assert said["refine"] == "running: input prefs.jsonl changed" and said["bt"] == "running: input prefs.jsonl changed"
    assert said["mdpo"] == "running: refine ran again" and said["eval"].startswith("running: ")
    assert all(said[s].startswith("reused") for s in ("tiny", "data", "sft")), said

    record = run / "mdpo" / "stage.json"  # a stage killed midway: resumed as it was, or redone
    state = json.loads(record.read_text())
    record.write_text(json.dumps({**state, "status": "running"}))
    said = _lines(run_script("run_pipeline.py", "--config", str(cfg)).stdout)
    assert said["mdpo"] == "resuming: it stopped before the end" and said["eval"] == "running: mdpo ran again"
    record.unlink()
    said = _lines(run_script("run_pipeline.py", "--config", str(cfg), "--stages", "mdpo").stdout)
    assert said == {"mdpo": "running: no record of a finished run"}

    proc = run_script("run_pipeline.py", "--config", str(cfg), "--force", "--stages", "mdpo,eval")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _lines(proc.stdout) == {"mdpo": "running: --force", "eval": "running: --force"}
    assert json.loads(record.read_text())["status"] == "done"


def test_study_table_mean_and_std_by_hand():
    from run_pipeline import study_table

    def res(acc, a, s):
        return {"n": 10, "accuracy": acc, "categories": {"arithmetic": {"accuracy": a}, "safety": {"accuracy": s}}}

    per_seed = [{"SFT judge": res(0.5, 0.4, 0.6), "GFRIEND (M-DPO)": res(0.7, 0.6, 0.8)},
                {"SFT judge": res(0.6, 0.5, 0.7), "GFRIEND (M-DPO)": res(0.9, 0.8, 1.0)}]
    table = study_table(per_seed, [0, 1], "test")
    # mean of 50 and 60 is 55, sample std is 7.07
    assert "| SFT judge | 55.0 ± 7.1 | 45.0 ± 7.1 | 65.0 ± 7.1 |" in table
    assert "| GFRIEND (M-DPO) | 80.0 ± 14.1 | 70.0 ± 14.1 | 90.0 ± 14.1 |" in table
    assert "seeds 0, 1" in table


def test_a_study_manifest_says_how_its_numbers_were_made():
    import torch

    from run_pipeline import manifest
    from utils.stages import git_commit

    m = manifest({0: 12.5, 1: 30.0}, git_commit(), {0: {"sft": 10.0, "eval": 2.5}, 1: {"sft": 28.0, "eval": 2.0}})
    assert m["wall_s"] == 42.5 and m["wall_s_per_seed"] == {"0": 12.5, "1": 30.0}
    assert m["wall_s_per_stage"]["1"] == {"sft": 28.0, "eval": 2.0}
    assert m["libraries"]["torch"] == torch.__version__ and m["torch_threads"] == torch.get_num_threads()
    assert m["cpu"] and m["code"] and len(m["commit"].split("+")[0]) == 40
