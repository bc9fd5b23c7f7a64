"""The seed's quick start, literally: `python run_sft.py`, then `python run_preference_refinement.py`,
then `python run_m_dpo.py` (then `python run_eval.py`), with no arguments, chain through the constants
each script opens with and train a judge; `make real-model data` writes what the first one reads."""
import json
import os
import re

import yaml

import run_bootstrap_cot
import run_eval
import run_m_dpo
import run_preference_refinement
import run_sft
from tests.conftest import ROOT, read_jsonl

SCRIPTS = (run_sft, run_preference_refinement, run_m_dpo, run_eval)
PATHS = ("model_name_or_path", "train_file", "pref_file", "pairs_file", "output_dir")


def make_variable(name: str) -> str:
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        return re.search(rf"^{name} \?= (\S+)$", f.read(), re.M).group(1)


def test_each_script_reads_what_the_one_before_it_writes():
    assert run_sft.MODEL == make_variable("REAL_MODEL")
    data = make_variable("DATA_DIR")
    assert run_sft.TRAIN_FILE == f"{data}/sft.jsonl" and run_preference_refinement.PREF_FILE == f"{data}/prefs.jsonl"
    assert run_eval.EVAL_FILES == [f"{data}/test.jsonl"]
    assert run_preference_refinement.MODEL == run_m_dpo.MODEL == run_sft.OUTPUT_DIR
    assert run_m_dpo.PAIRS_FILE == f"{run_preference_refinement.OUTPUT_DIR}/pairs.jsonl"
    assert run_eval.MODEL == run_m_dpo.OUTPUT_DIR
    # labelled pairs alone: the base model writes the SFT rows from the same pairs
    assert run_bootstrap_cot.MODEL == run_sft.MODEL
    assert run_bootstrap_cot.PREF_FILE == run_preference_refinement.PREF_FILE
    # the default recipe is the real model's, and it leaves the paths to the constants
    for script in (*SCRIPTS, run_bootstrap_cot):
        assert script.CONFIG.startswith("configs/recipes/smollm2-135m/")
        with open(os.path.join(ROOT, script.CONFIG), encoding="utf-8") as f:
            assert not set(yaml.safe_load(f)) & set(PATHS)


def small_recipe(tmp_path, name: str, demo: str, **overrides) -> str:
    """The demo's recipe for one stage without its paths, at the smallest size that exercises it."""
    with open(os.path.join(ROOT, "configs", demo), encoding="utf-8") as f:
        settings = {k: v for k, v in yaml.safe_load(f).items() if k not in PATHS}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**settings, **overrides}))
    return str(path)


def test_the_three_scripts_chain_with_no_arguments(tmp_path, monkeypatch, sft_dir, synthetic_dir):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    work = tmp_path / "work"  # the constants' relative paths land here, as they would in a checkout
    (work / "outputs" / "data").mkdir(parents=True)
    for name in ("sft", "prefs", "test"):
        os.symlink(os.path.join(synthetic_dir, f"{name}.jsonl"), work / "outputs" / "data" / f"{name}.jsonl")
    monkeypatch.chdir(work)
    monkeypatch.setattr(run_sft, "MODEL", sft_dir)  # a tiny judge stands in for `make real-model`'s model
    monkeypatch.setattr(run_sft, "CONFIG", small_recipe(
        recipes, "sft", "sft_demo.yaml", max_steps=10, per_device_train_batch_size=8, learning_rate=1e-4,
        warmup_steps=0, logging_steps=5, disable_tqdm=True))
    monkeypatch.setattr(run_preference_refinement, "CONFIG", small_recipe(
        recipes, "refine", "refine_demo.yaml", max_items=6, num_samples=2, templates="compare", max_new_tokens=48,
        items_per_chunk=3))
    monkeypatch.setattr(run_m_dpo, "CONFIG", small_recipe(
        recipes, "mdpo", "mdpo_demo.yaml", max_steps=2, per_device_train_batch_size=2, disable_tqdm=True))
    eval_recipe = recipes / "eval.yaml"
    eval_recipe.write_text(yaml.safe_dump({"max_items": 4, "max_new_tokens": 48, "max_prompt_length": 128}))
    monkeypatch.setattr(run_eval, "CONFIG", str(eval_recipe))

    for script in SCRIPTS:
        script.main([])

    saved = yaml.safe_load((work / "outputs" / "sft" / "run_config.yaml").read_text())
    assert (saved["model_name_or_path"], saved["train_file"]) == (sft_dir, "outputs/data/sft.jsonl")
    assert saved["max_steps"] == 10  # from the recipe the constants name
    samples = read_jsonl(work / "outputs" / "refine" / "samples.jsonl")
    assert len(samples) == 6 * 2 * 2 and (work / "outputs" / "refine" / "stats.json").exists()
    saved = yaml.safe_load((work / "outputs" / "gfriend" / "run_config.yaml").read_text())
    assert (saved["model_name_or_path"], saved["pairs_file"]) == ("outputs/sft", "outputs/refine/pairs.jsonl")
    result = yaml.safe_load((work / "outputs" / "eval" / "gfriend.json").read_text())
    assert result["model"].endswith("gfriend") and result["results"]["test.jsonl"]["n"] == 4

    run_m_dpo.main(["--output_dir", "elsewhere"])  # a flag still overrides its constant
    assert yaml.safe_load((work / "elsewhere" / "run_config.yaml").read_text())["max_steps"] == 2


def test_a_default_input_not_there_yet_names_the_command_that_writes_it(tmp_path, monkeypatch):
    from tests.conftest import run_cli
    from utils.config import DEFAULT_INPUTS

    inputs = [run_sft.MODEL, run_sft.TRAIN_FILE, run_preference_refinement.MODEL, run_preference_refinement.PREF_FILE,
              run_m_dpo.MODEL, run_m_dpo.PAIRS_FILE, run_eval.MODEL, *run_eval.EVAL_FILES]
    assert set(inputs) == set(DEFAULT_INPUTS)
    monkeypatch.setattr(run_preference_refinement, "CONFIG", os.path.join(ROOT, run_preference_refinement.CONFIG))
    proc = run_cli("run_preference_refinement.py", cwd=tmp_path)  # a checkout where nothing has run yet
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: outputs/sft: not found; `python run_sft.py` writes it"
    assert not (tmp_path / "outputs").exists()
    os.makedirs(tmp_path / "outputs" / "sft")
    proc = run_cli("run_preference_refinement.py", cwd=tmp_path)
    assert proc.stderr.strip() == "error: outputs/data/prefs.jsonl: not found; `make data` writes it"
    proc = run_cli("run_preference_refinement.py", "--pref_file", "mine.jsonl", cwd=tmp_path)  # a user's own path
    assert proc.returncode == 2 and "make data" not in proc.stderr


def test_from_labelled_pairs_alone_as_the_readme_says(tmp_path, monkeypatch, sft_dir, synthetic_dir):
    """README, "From your own labelled pairs": a JSONL of pairs -> data.prepare -> the teacher writes
    the SFT rows -> SFT on them; the stages after SFT are the quick start's."""
    from data import prepare

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    mine = work / "my_pairs.jsonl"  # a user's own pairs: no ids, no categories
    mine.write_text("".join(json.dumps({k: r[k] for k in ("question", "answer_pos", "answer_neg")}) + "\n"
                            for r in read_jsonl(os.path.join(synthetic_dir, "prefs.jsonl"))[:8]))
    for script, name, demo, overrides in ((run_bootstrap_cot, "cot", "cot_demo.yaml", dict(num_samples=2)),
                                          (run_sft, "sft", "sft_demo.yaml", dict(max_steps=2, disable_tqdm=True))):
        monkeypatch.setattr(script, "MODEL", sft_dir)  # the tiny judge stands in for the base model
        monkeypatch.setattr(script, "CONFIG", small_recipe(recipes, name, demo, **overrides))
    prepare.main(["--source", "jsonl", "--input", str(mine), "--output_file", "outputs/mine/prefs.jsonl"])
    run_bootstrap_cot.main(["--pref_file", "outputs/mine/prefs.jsonl", "--output_dir", "outputs/mine/cot",
                            "--mode", "rationalize"])
    run_sft.main(["--train_file", "outputs/mine/cot/sft.jsonl", "--output_dir", "outputs/mine/sft"])
    rows = read_jsonl(work / "outputs" / "mine" / "cot" / "sft.jsonl")
    stats = json.loads((work / "outputs" / "mine" / "cot" / "stats.json").read_text())
    assert stats["items"] == 8 and stats["rows"] == len(rows) > 0 and set(stats["by_category"]) == {"None"}
    saved = yaml.safe_load((work / "outputs" / "mine" / "sft" / "run_config.yaml").read_text())
    assert saved["train_file"] == "outputs/mine/cot/sft.jsonl" and saved["max_steps"] == 2
