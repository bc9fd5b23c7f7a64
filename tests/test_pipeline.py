import json
import os

import pytest

from tests.conftest import ROOT, read_jsonl, run_cli, run_pipeline_config

@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline


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
        assert r["n"] == 8 and 0.0 <= r["accuracy"] <= 1.0 and res["model"] == str(run / model)
    table = (run / "eval" / "table.md").read_text()
    assert all(f"| {name} |" in table
               for name in ("Base model (zero-shot)", "SFT judge", "BT-model", "GFRIEND (M-DPO + 16×NLL)"))
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

    said = _lines(run_cli("run_pipeline.py", "--config", str(cfg)).stdout)  # nothing changed
    assert all(said[s].startswith("reused") for s in every), said
    assert os.path.getmtime(weights) == before

    cfg.write_text(cfg.read_text().replace('mdpo_args: "--max_steps 3', 'mdpo_args: "--max_steps 4'))
    said = _lines(run_cli("run_pipeline.py", "--config", str(cfg)).stdout)  # one setting of one stage
    assert said["mdpo"] == "running: max_steps changed 3 → 4" and said["eval"] == "running: mdpo ran again"
    assert all(said[s].startswith("reused") for s in ("tiny", "data", "sft", "refine", "bt")), said
    assert os.path.getmtime(weights) > before

    prefs = run / "data" / "prefs.jsonl"  # an input file, edited by hand
    prefs.write_text(prefs.read_text().replace('"answer_neg": "', '"answer_neg": "Hmm. ', 1))
    said = _lines(run_cli("run_pipeline.py", "--config", str(cfg)).stdout)
    assert said["refine"] == "running: input prefs.jsonl changed" and said["bt"] == "running: input prefs.jsonl changed"
    assert said["mdpo"] == "running: refine ran again" and said["eval"].startswith("running: ")
    assert all(said[s].startswith("reused") for s in ("tiny", "data", "sft")), said

    record = run / "mdpo" / "stage.json"  # a stage killed midway: resumed as it was, or redone
    state = json.loads(record.read_text())
    record.write_text(json.dumps({**state, "status": "running"}))
    said = _lines(run_cli("run_pipeline.py", "--config", str(cfg), "--stages", "mdpo").stdout)
    assert said == {"mdpo": "resuming: it stopped before the end"}
    resumed = json.loads(record.read_text())  # its wall time counts the stopped attempt's too
    stopped = resumed["earlier_attempts"][0]["wall_s_to_last_output"]
    assert resumed["attempts"] == 2 and stopped > 0
    assert resumed["wall_s"] == pytest.approx(resumed["wall_s_last_attempt"] + stopped, abs=0.11)
    record.unlink()
    said = _lines(run_cli("run_pipeline.py", "--config", str(cfg), "--stages", "mdpo").stdout)
    assert said == {"mdpo": "running: no record of a finished run"}

    proc = run_cli("run_pipeline.py", "--config", str(cfg), "--force", "--stages", "mdpo",
                   "--isolate_stages", "true")  # the stage in a process of its own, as `python run_m_dpo.py`
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _lines(proc.stdout) == {"mdpo": "running: --force"}
    assert json.loads(record.read_text())["status"] == "done"


def test_settings_are_what_the_script_parses_compared_as_values_and_code_by_what_a_stage_imports():
    from pipeline.cache import why_changed
    from utils.provenance import source_files
    from pipeline.stages import command, settings_of

    yaml_lr = settings_of(command("run_m_dpo", "--config", "configs/mdpo_demo.yaml"))
    flag_lr = settings_of(command("run_m_dpo", "--config", "configs/mdpo_demo.yaml", "--learning_rate", "1e-4",
                                  "--loss_weights", "1", "16"))
    assert yaml_lr == flag_lr  # 1.0e-4 in the YAML, 1e-4 as a flag; [1.0, 16.0] and "1 16"
    assert yaml_lr["beta"] == 0.1 and yaml_lr["max_grad_norm"] == 1.0  # a default the config leaves alone counts
    changed = {**flag_lr, "learning_rate": 5e-5}
    assert why_changed({"settings": yaml_lr}, {"settings": changed}) == "learning_rate changed 0.0001 → 5e-05"
    sft = {os.path.relpath(f, ROOT) for f in source_files("run_sft")}
    assert {"run_sft.py", "models/sft_trainer.py", "data/templates.py", "utils/io.py"} <= sft
    assert not any(f.startswith(("pipeline/", "generate/")) or f == "run_eval.py" for f in sft)  # reports, other stages
    refine = {os.path.relpath(f, ROOT) for f in source_files("run_preference_refinement")}
    assert {"generate/refinement.py", "generate/levels.py"} <= refine


def test_trained_judges_are_named_by_the_loss_their_settings_give(tmp_path):
    from pipeline.arguments import PipelineArguments
    from pipeline.stages import judge_name

    plain = tmp_path / "plain.yaml"
    plain.write_text("weighting: levels\nbeta: 0.1\n")
    a = PipelineArguments(mdpo_config="configs/mdpo_demo.yaml", rft_args="--loss_type sft --loss_weights 16")
    assert judge_name(a, "gfriend") == "GFRIEND (M-DPO + 16×NLL)" and judge_name(a, "rft") == "RFT (16×NLL)"
    assert judge_name(a, "dpo") == "w/o M-DPO (plain DPO + 16×NLL)" and judge_name(a, "sft") == "SFT judge"
    b = PipelineArguments(mdpo_config=str(plain), mdpo_args="--loss_type sigmoid sft --loss_weights 0.5 2",
                          rft_args="--loss_type sft")
    assert judge_name(b, "gfriend") == "GFRIEND (0.5×M-DPO + 2×NLL)"  # flags over the config
    assert judge_name(PipelineArguments(mdpo_config=str(plain)), "label_mdpo") == "w/o CoT-S (M-DPO on label pairs)"


def test_settings_that_cannot_be_combined_are_refused_in_one_line():
    from pipeline.arguments import PipelineArguments, check_combinations
    from utils.io import DataError

    for kwargs, message in ((dict(label_counts="4,8", sweep="alpha=1,2"), "cannot be combined"),
                            (dict(seeds="0,1", evaluate_base=True, sweep="alpha=1"), "--evaluate_base is for"),
                            (dict(rounds=2, rounds_at=8), "--rounds_at needs --label_counts"),
                            (dict(rounds=0), "at least 1"),
                            (dict(sft_source="teacher"), "--sft_source must be program or bootstrap"),
                            (dict(sft_source="bootstrap", label_counts="4,8"), "one study per n"),
                            (dict(data_dir=ROOT), "no sft.jsonl .* use --sft_source bootstrap")):
        with pytest.raises(DataError, match=message):
            check_combinations(PipelineArguments(**kwargs))


def test_seeds_trained_without_evaluation_finish_without_a_study_table(tmp_path_factory):
    """A study run in two sittings (train now, evaluate later) must not fail at the table it cannot make."""
    _, run, stdout = run_pipeline_config(tmp_path_factory, "no_eval", """
output_dir: {out}
seeds: "0,1"
stages: data
n_sft: 6
n_prefs: 4
n_val: 2
n_test: 4
study_table: {out}/table.md
""")
    assert "No study table: seeds 0, 1 have no evaluation" in stdout
    assert (run / "seed1" / "data" / "prefs.jsonl").exists() and not (run / "table.md").exists()


def test_a_seed_study_keeps_the_records_of_every_number_beside_its_table(tmp_path_factory, tiny_pipeline):
    """The table's evaluation records go beside it, so its numbers (and intervals over seeds) are
    recomputed from committed files: `pipeline.reports diff` reads them as it reads the run's own."""
    from pipeline.reports import item_scores, main as report

    _, pipe, _ = tiny_pipeline
    _, run, stdout = run_pipeline_config(tmp_path_factory, "seed_records", """
output_dir: {out}
seeds: "0,1"
base_model: {pipe}/tiny-base
sft_model: {pipe}/sft
evaluate_base: true
stages: data,eval
n_sft: 6
n_prefs: 4
n_val: 2
n_test: 4
eval_args: "--max_new_tokens 16"
study_table: {out}/table.md
""", pipe=pipe)
    for seed in (0, 1):
        for key in ("base", "sft"):
            record = run / "records" / f"seed{seed}" / f"{key}.json.gz"
            assert item_scores(str(record)) == item_scores(str(run / f"seed{seed}" / "eval" / f"{key}.json"))
    assert (run / "seed1.md").read_text() == (run / "seed1" / "eval" / "table.md").read_text()
    report(["diff", "--seeds", "0,1", f"SFT={run}/records/seed{{seed}}/sft.json.gz",
            f"base={run}/records/seed{{seed}}/base.json.gz"])


def test_study_table_mean_and_std_by_hand():
    from pipeline.reports import study_table

    def res(acc, a, s):
        return {"n": 10, "accuracy": acc, "categories": {"arithmetic": {"accuracy": a}, "safety": {"accuracy": s}}}

    per_seed = [{"SFT judge": res(0.5, 0.4, 0.6), "GFRIEND (M-DPO)": res(0.7, 0.6, 0.8)},
                {"SFT judge": res(0.6, 0.5, 0.7), "GFRIEND (M-DPO)": res(0.9, 0.8, 1.0)}]
    table = study_table(per_seed, [0, 1], "test")
    # mean of 50 and 60 is 55, sample std is 7.07
    assert "| SFT judge | 55.0 ± 7.1 | 45.0 ± 7.1 | 65.0 ± 7.1 |" in table
    assert "| GFRIEND (M-DPO) | 80.0 ± 14.1 | 70.0 ± 14.1 | 90.0 ± 14.1 |" in table
    assert "seeds 0, 1" in table


def test_the_commit_is_marked_changed_by_code_not_by_the_studies_own_tables(tmp_path, monkeypatch):
    import subprocess

    import utils.provenance as provenance

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "ROOT", str(tmp_path))
    clean = provenance.git_commit()
    assert len(clean) == 40
    (tmp_path / "results" / "table.md").write_text("a study rewrote its table\n")
    assert provenance.git_commit() == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_commit() == clean + "+changes"


def test_a_study_manifest_says_how_its_numbers_were_made():
    import torch

    from utils.provenance import git_commit, manifest

    stages = {0: {"sft": {"wall_s": 10.0, "commit": "a"}, "n50/eval": {"wall_s": 2.5, "commit": "b"}},
              1: {"sft": {"wall_s": 28.0, "commit": "a"}}}
    m = manifest({0: 12.5, 1: 30.0}, git_commit(), stages)
    assert m["wall_s"] == 42.5 and m["wall_s_per_seed"] == {"0": 12.5, "1": 30.0}
    assert m["stages"]["0"]["n50/eval"]["commit"] == "b" and m["stages_wall_s"] == 40.5
    assert m["libraries"]["torch"] == torch.__version__ and m["torch_threads"] == torch.get_num_threads()
    assert m["cpu"] and m["code"] and len(m["commit"].split("+")[0]) == 40


COT_PIPELINE = """
output_dir: {out}
base_model: {teacher}
seed: 0
stages: data,cot,sft
sft_source: bootstrap
n_sft: 10
n_prefs: 12
n_val: 4
n_test: 8
cot_args: "--num_samples 2 --templates compare --items_per_chunk 6"
sft_args: "--max_steps 2 --logging_steps 1"
"""


def test_sft_learns_from_the_rows_the_cot_stage_wrote(sft_dir, tmp_path_factory):
    """sft_source bootstrap: the base model (here the tiny SFT judge) writes the rows, SFT trains on
    them; a change of the cot stage's mode runs cot and SFT again."""
    from tests.conftest import run_pipeline_config

    cfg, run, stdout = run_pipeline_config(tmp_path_factory, "cot", COT_PIPELINE, teacher=sft_dir)
    stats = json.loads((run / "cot" / "stats.json").read_text())
    assert stats["items"] == 12 and stats["rows"] == len(read_jsonl(run / "cot" / "sft.jsonl")) > 0
    assert f"train_file: {run / 'cot' / 'sft.jsonl'}" in (run / "sft" / "run_config.yaml").read_text()
    assert "[cot] finished in" in stdout and "SFT rows (filter)" in stdout
    cfg.write_text(cfg.read_text().replace('cot_args: "', 'cot_args: "--mode rationalize '))
    said = _lines(run_cli("run_pipeline.py", "--config", str(cfg)).stdout)
    assert said["data"].startswith("reused") and said["cot"] == "running: mode changed filter → rationalize"
    assert said["sft"] == "running: cot ran again"
    assert json.loads((run / "cot" / "stats.json").read_text())["mode"] == "rationalize"


def test_a_sweep_sends_every_setting_refinement_rebuilds_pairs_with_to_refinement():
    """The pipeline's list of pair settings (a sweep over them reuses the judgments) is refinement's
    own list of settings that act after sampling, less the item count."""
    from generate.refinement import RefinementArguments
    from pipeline.stages import PAIR_SETTINGS

    assert set(PAIR_SETTINGS) == set(RefinementArguments.RESUMABLE) - {"max_items"}
