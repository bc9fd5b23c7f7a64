"""The recipes for real models parse with their scripts' own arguments and agree with each other on
lengths; the GPU recipes carry the paper's settings rather than the demo's, the CPU one resumes."""
import glob
import os

import pytest

from tests.conftest import ROOT

RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "recipes", "*")))
SCRIPTS = {"sft": "run_sft", "refine": "run_preference_refinement", "mdpo": "run_m_dpo", "grpo": "run_grpo_judge",
           "bt": "run_bt_baseline", "eval": "run_eval"}


def _parse(stage: str, path: str, tmp_path) -> dict:
    """A recipe's settings as its script reads them (the script's own `parse`, its constants under the recipe)."""
    import importlib

    from utils.config import resolved_settings

    extra = ["--output_dir", str(tmp_path)] if stage in ("sft", "mdpo", "bt", "grpo") else []
    return resolved_settings(*importlib.import_module(SCRIPTS[stage]).parse(["--config", path, *extra]))


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_a_recipe_is_consistent_across_its_stages(recipe, tmp_path):
    stages = {s: _parse(s, os.path.join(recipe, f"{s}.yaml"), tmp_path) for s in ("sft", "refine", "mdpo", "eval")}
    budgets = {s: c["max_prompt_length"] for s, c in stages.items()}
    assert len(set(budgets.values())) == 1, budgets
    assert stages["refine"]["max_new_tokens"] == stages["eval"]["max_new_tokens"]
    room = budgets["sft"] + stages["refine"]["max_new_tokens"] + 1  # prompt + judgment + end of turn
    assert stages["sft"]["max_length"] >= room and stages["mdpo"]["max_length"] >= room
    assert stages["mdpo"]["precompute_ref_max_tokens"] >= 2 * stages["mdpo"]["max_length"]
    assert stages["refine"]["scoring_max_tokens"] >= room
    if os.path.basename(recipe) == "smollm2-135m":  # the CPU recipe: bf16 where native but for evaluation; it resumes
        bt = _parse("bt", os.path.join(recipe, "bt.yaml"), tmp_path)
        assert all(c["dtype"] == "bf16_if_native" for c in (stages["sft"], stages["refine"], stages["mdpo"], bt))
        assert stages["eval"]["dtype"] == "fp32"  # bf16 moved verdicts of the same judge (docs/benchmarks.md)
        from utils.hardware import native_bf16

        assert stages["sft"]["bf16"] == stages["mdpo"]["bf16"] == bt["bf16"] == native_bf16()  # autocast here?
        assert bt["max_length"] >= room
        grpo = _parse("grpo", os.path.join(recipe, "grpo.yaml"), tmp_path)  # the GRPO judge: judgments as long
        assert grpo["max_prompt_length"] == budgets["sft"]
        assert grpo["max_completion_length"] == stages["eval"]["max_new_tokens"]
        for c in (stages["sft"], stages["mdpo"], bt, grpo):
            assert c["save_strategy"] == "steps" and c["resume_from_checkpoint"] == "auto"
        assert stages["sft"]["model_name_or_path"] == "outputs/models/smollm2-135m-instruct"  # `make real-model`
        return
    # the paper's loss and settings, none of the demo's
    mdpo = stages["mdpo"]
    assert mdpo["loss_type"] == ["sigmoid"] and mdpo["weighting"] == "levels" and mdpo["weight_normalization"] == "none"
    assert stages["refine"]["tau"] == 10.0 and mdpo["learning_rate"] < 1e-5
    assert all(c["dtype"] == "bf16" for c in stages.values()) and budgets["sft"] >= 1024
    model = stages["sft"]["model_name_or_path"]
    assert model.startswith(("meta-llama/", "Qwen/"))

