"""The pipeline's stages, one entry each: the scripts it runs (the same ones a user runs by hand),
the stages whose outputs it reads, the data files it reads, the commands it runs, and the line that
sums up its output.

A command is built from a run (pipeline.runner.SeedRun): its settings `r.a`, its folders
`r.paths`, its data folder `r.data(name)` and its one prompt budget `r.lengths()`. Every script a
stage names has `parse(argv)` (its settings, as it would run with them) and `main(argv)`.
"""
from __future__ import annotations

import importlib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from utils.config import resolved_settings

# (key, name in tables, stage that trains it, model type). The SFT judge is always evaluated; the
# base model (the tiny stage's output, or base_model) as a zero-shot judge with evaluate_base.
JUDGES = (("base", "Base model (zero-shot)", "tiny", "generative"),
          ("sft", "SFT judge", "sft", "generative"), ("bt", "BT-model", "bt", "scalar"),
          ("dpo", "w/o M-DPO (plain DPO)", "dpo", "generative"),
          ("rft", "RFT (NLL on refined chosen)", "rft", "generative"),
          ("label_mdpo", "w/o CoT-S (label pairs)", "label_mdpo", "generative"),
          ("grpo", "GRPO judge (verdict reward)", "grpo", "generative"),
          ("gfriend", "GFRIEND (M-DPO)", "mdpo", "generative"))
# Judges trained by M-DPO's trainer: their table names also say which loss ran, as the settings give
# it (GFRIEND's DPO term may carry an NLL term, and RFT is that term alone).
LOSS_NAMED = {"dpo": "w/o M-DPO", "rft": "RFT", "label_mdpo": "w/o CoT-S", "gfriend": "GFRIEND"}
SHARED_STAGES = ("tiny", "data", "cot", "sft")  # a label curve or sweep runs these once per seed, the rest per variant
# Refinement settings that only rebuild levels and pairs from the logged judgments (a sweep over them reuses
# the samples).
PAIR_SETTINGS = ("threshold", "max_pairs_per_item", "pairing", "balance_orders", "unfinished", "score")


@dataclass(frozen=True)
class Stage:
    scripts: tuple[str, ...]  # the modules its commands run (run_x for run_x.py, or a package's module)
    upstream: tuple[str, ...]  # the stages whose outputs it reads (eval: also every judge's stage)
    data: tuple[str, ...]  # the files of the data folder it reads (eval: its split's file)
    commands: Callable  # (run) -> [command, ...]: each [python, script or -m module, flags...]
    summary: Callable[[str], str]  # (its output folder) -> one line


def command(module: str, *flags: str) -> list[str]:
    """A stage command as a user types it: `python run_x.py ...` or `python -m package.module ...`."""
    return [sys.executable, f"{module}.py", *flags] if "." not in module else [sys.executable, "-m", module, *flags]


def module_of(cmd: list[str]) -> str:
    """The module a stage command runs (the inverse of `command`)."""
    return cmd[2] if cmd[1] == "-m" else cmd[1][: -len(".py")]


def flags_of(cmd: list[str]) -> list[str]:
    """What a stage command passes to its script: everything after the script (or -m module)."""
    return cmd[3:] if cmd[1] == "-m" else cmd[2:]


def script(module: str):
    """A stage script's module: its `main(argv)` runs the stage and its `parse(argv)` reads its settings."""
    return importlib.import_module(module)


def settings_of(cmd: list[str]) -> dict:
    """A stage command's settings as its script resolves them (flags over its --config file over its
    defaults, typed: a flag's `1e-4` equals a YAML `0.0001`), plus the script's name."""
    module = module_of(cmd)
    return {"script": module, **resolved_settings(*script(module).parse(flags_of(cmd)))}


def _tiny(r) -> list[list[str]]:
    return [command("toy.model", "--output_dir", r.paths["tiny"], "--seed", str(r.a.seed))]


def _data(r) -> list[list[str]]:
    a = r.a
    return [command("toy.task", "--output_dir", r.paths["data"], "--seed", str(a.seed), "--n_sft", str(a.n_sft),
                    "--n_prefs", str(a.n_prefs), "--n_val", str(a.n_val), "--n_test", str(a.n_test))]


def _cot(r) -> list[list[str]]:
    """The SFT rows written by the base model from the labelled pairs (sft_source: bootstrap)."""
    a, p = r.a, r.paths
    return [command("run_bootstrap_cot", "--config", a.cot_config, "--model_name_or_path", p["tiny"],
                    "--pref_file", r.data("prefs.jsonl"), "--output_dir", p["cot"], "--seed", str(a.seed),
                    *r.lengths(new_tokens=True), *shlex.split(a.cot_args))]


def sft_train_file(r) -> str:
    """What the SFT judge learns from: the program's chains of thought (the synthetic task's sft.jsonl)
    or the ones the cot stage wrote."""
    return os.path.join(r.paths["cot"], "sft.jsonl") if r.a.sft_source == "bootstrap" else r.data("sft.jsonl")


def _sft(r) -> list[list[str]]:
    a, p = r.a, r.paths
    return [command("run_sft", "--config", a.sft_config, "--model_name_or_path", p["tiny"],
                    "--train_file", sft_train_file(r), "--output_dir", p["sft"], "--seed", str(a.seed),
                    *r.lengths(), *shlex.split(a.sft_args))]


def _refine(r) -> list[list[str]]:
    a, p = r.a, r.paths
    reuse = ["--samples_from", r.samples_from(a.seed)] if a.samples_from else []
    return [command("run_preference_refinement", "--config", a.refine_config, "--model_name_or_path", p["sft"],
                    "--pref_file", r.data("prefs.jsonl"), "--output_dir", p["refine"], "--seed", str(a.seed),
                    *r.lengths(new_tokens=True), *shlex.split(a.refine_args), *reuse),
            command("generate.calibration", "--refine_dir", p["refine"])]  # do the levels carry signal?


def trainer_flags(a, stage: str) -> list[str]:
    """The flags that set a trainer stage's loss: its config, mdpo_args and the stage's own variant."""
    variant = {"dpo": ["--weighting", "none"], "rft": shlex.split(a.rft_args)}.get(stage, [])
    return ["--config", a.mdpo_config, *shlex.split(a.mdpo_args), *variant]


def _trainer(stage: str) -> Callable:
    """M-DPO's trainer on refined pairs (mdpo; dpo: no level weights; rft: the NLL term alone) or on
    label pairs (label_mdpo, the "w/o CoT-S" ablation)."""
    def commands(r) -> list[list[str]]:
        a, p = r.a, r.paths
        pairs = os.path.join(p["label_pairs" if stage == "label_mdpo" else "refine"], "pairs.jsonl")
        flags = trainer_flags(a, stage)
        return [command("run_m_dpo", *flags[:2], "--model_name_or_path", p["sft"],
                        "--pairs_file", pairs, "--output_dir", p[stage], "--seed", str(a.seed),
                        *r.lengths(), *flags[2:])]
    return commands


@lru_cache(maxsize=64)
def loss_name(flags: tuple[str, ...]) -> str:
    """What a trainer run's loss is, from its settings as run_m_dpo.py reads them:
    "M-DPO + 16×NLL", "plain DPO + 16×NLL", "16×NLL", "M-DPO" (NLL weight 0)."""
    cfg = script("run_m_dpo").parse(list(flags))[-1]
    terms, parts = cfg.loss_term_weights, []
    for term, name in (("sigmoid", "M-DPO" if cfg.weighting != "none" else "plain DPO"), ("sft", "NLL")):
        if terms.get(term, 0):  # a term of weight 0 did not run
            parts.append(name if terms[term] == 1 else f"{terms[term]:g}×{name}")
    return " + ".join(parts)


def judge_name(a, key: str) -> str:
    """A judge's table name under settings `a` (for a trainer's judge, with the loss that ran)."""
    if key not in LOSS_NAMED:
        return next(name for k, name, _, _ in JUDGES if k == key)
    on = " on label pairs" if key == "label_mdpo" else ""
    return f"{LOSS_NAMED[key]} ({loss_name(tuple(trainer_flags(a, {'gfriend': 'mdpo'}.get(key, key))))}{on})"


def _label_pairs(r) -> list[list[str]]:
    p = r.paths
    return [command("generate.label_pairs", "--model_name_or_path", p["sft"], "--pref_file",
                    r.data("prefs.jsonl"), "--output_file", os.path.join(p["label_pairs"], "pairs.jsonl"),
                    *r.lengths())]


def _bt(r) -> list[list[str]]:
    a, p = r.a, r.paths
    return [command("run_bt_baseline", "--config", a.bt_config, "--model_name_or_path", p["sft"],
                    "--pref_file", r.data("prefs.jsonl"), "--output_dir", p["bt"], "--seed", str(a.seed),
                    *shlex.split(a.bt_args))]


def _grpo(r) -> list[list[str]]:
    """The online-RL rival: GRPO from the same SFT judge on the same labelled pairs, judgments as long
    as refinement's."""
    a, p = r.a, r.paths
    length = [] if a.max_new_tokens is None else ["--max_completion_length", str(a.max_new_tokens)]
    return [command("run_grpo_judge", "--config", a.grpo_config, "--model_name_or_path", p["sft"],
                    "--pref_file", r.data("prefs.jsonl"), "--output_dir", p["grpo"], "--seed", str(a.seed),
                    *r.lengths(), *length, *shlex.split(a.grpo_args))]


def _eval(r) -> list[list[str]]:
    """One run_eval.py per judge, into eval/<judge key>.json."""
    eval_file = r.data(f"{r.a.eval_split}.jsonl")
    return [command("run_eval", "--config", r.a.eval_config, "--model_name_or_path", path, "--model_type", kind,
                    "--eval_files", eval_file,
                    "--output_file", os.path.join(r.paths["eval"], f"{key}.json"), *r.lengths(new_tokens=True),
                    *shlex.split(r.a.eval_args)) for key, _, path, kind in r.judges()]


def output_in(path: str) -> str:
    return f"output in {path}"


def training_summary(path: str) -> str:
    """First and last logged loss (and the reward accuracy and margins of a DPO-style trainer)."""
    with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
        history = json.load(f)["log_history"]
    logs = [h for h in history if "loss" in h]
    if not logs:  # fewer steps than logging_steps: only the final summary exists
        return f"train_loss {history[-1].get('train_loss', float('nan')):.3f}"
    first, last = logs[0], logs[-1]
    extra = f", reward {first['reward']:.3f} -> {last['reward']:.3f}" if "reward" in last else ""
    if "rewards/accuracies" in last:
        extra += f", rewards/accuracies {last['rewards/accuracies']:.3f}"
        if "rewards/margins" in last:
            extra += f", margins {first['rewards/margins']:.3f} -> {last['rewards/margins']:.3f}"
    return f"loss {first['loss']:.3f} -> {last['loss']:.3f}{extra}"


def bootstrap_summary(path: str) -> str:
    with open(os.path.join(path, "stats.json"), encoding="utf-8") as f:
        s = json.load(f)
    return (f"{s['rows']} SFT rows ({s['mode']}) from {s['samples']} judgments, {s['items_covered']} of "
            f"{s['items']} items covered, verdicts {s['verdicts']}, {s['hint_leaks']} hint leaks dropped")


def refinement_summary(path: str) -> str:
    with open(os.path.join(path, "stats.json"), encoding="utf-8") as f:
        s = json.load(f)
    summary = (f"{s['samples']} samples, accuracy {s['sample_accuracy']}, levels {s['levels']}, "
               f"{s['pairs']} pairs, {s['items_without_pairs']} items without pairs")
    calibration = os.path.join(path, "calibration.json")
    if os.path.exists(calibration):
        with open(calibration, encoding="utf-8") as f:
            score = json.load(f)["confidences"].get("score", {})
        if score.get("auroc_within_prompt") is not None:
            summary += f", score AUROC within prompt {score['auroc_within_prompt']:.3f}"
    return summary


STAGES = {
    "tiny": Stage(("toy.model",), (), (), _tiny, output_in),
    "data": Stage(("toy.task",), (), (), _data, output_in),
    "cot": Stage(("run_bootstrap_cot",), ("tiny", "data"), ("prefs.jsonl",), _cot, bootstrap_summary),
    "sft": Stage(("run_sft",), ("tiny", "data"), ("sft.jsonl",), _sft, training_summary),
    "refine": Stage(("run_preference_refinement", "generate.calibration"), ("sft", "data"), ("prefs.jsonl",),
                    _refine, refinement_summary),
    "mdpo": Stage(("run_m_dpo",), ("sft", "refine"), (), _trainer("mdpo"), training_summary),
    "dpo": Stage(("run_m_dpo",), ("sft", "refine"), (), _trainer("dpo"), training_summary),
    "rft": Stage(("run_m_dpo",), ("sft", "refine"), (), _trainer("rft"), training_summary),
    "label_pairs": Stage(("generate.label_pairs",), ("sft", "data"), ("prefs.jsonl",), _label_pairs, output_in),
    "label_mdpo": Stage(("run_m_dpo",), ("sft", "label_pairs"), (), _trainer("label_mdpo"), training_summary),
    "bt": Stage(("run_bt_baseline",), ("sft", "data"), ("prefs.jsonl",), _bt, training_summary),
    "grpo": Stage(("run_grpo_judge",), ("sft", "data"), ("prefs.jsonl",), _grpo, training_summary),
    "eval": Stage(("run_eval",), ("data",), (), _eval, output_in),
}
ALL_STAGES = tuple(STAGES)


def upstream_of(stage: str, a) -> tuple[str, ...]:
    """The stages whose outputs `stage` reads under settings `a`: SFT from self-written chains of
    thought reads the cot stage's rows instead of the data folder's."""
    if stage == "sft" and a.sft_source == "bootstrap":
        return (*STAGES[stage].upstream, "cot")
    return STAGES[stage].upstream


def data_of(stage: str, a) -> tuple[str, ...]:
    """The data folder's files `stage` reads under settings `a` (eval: its split's file)."""
    if stage == "sft" and a.sft_source == "bootstrap":
        return ()
    return STAGES[stage].data or ((f"{a.eval_split}.jsonl",) if stage == "eval" else ())
