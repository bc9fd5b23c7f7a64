"""The whole GFRIEND pipeline in one command:

    python run_pipeline.py --config configs/demo.yaml [--force] [--stages sft,refine,mdpo,eval]

tiny model (unless `base_model` names one) -> synthetic data -> SFT -> preference refinement ->
M-DPO -> evaluation (plus the BT-model baseline if listed in `stages`). Each stage is the same
script a user runs by hand, called with the files the stage before it wrote.

A stage is reused only when what produced its output is unchanged (utils/stages.py: its settings,
its config file's values, the data files it reads, the records of the stages before it, the
project's code and the library versions); otherwise it runs again, with one line saying why
("sft: learning_rate changed 0.003 → 0.001"), and so does every stage after it. A stage killed
midway resumes when nothing changed. --force redoes the listed stages.

Studies: `seeds` repeats the run per seed (mean ± std table); `label_counts` trains every method on
the first n labelled pairs for each n from one SFT judge and one set of judgments per seed (a label
curve, with GFRIEND's paired differences and bootstrap intervals); `sweep` runs a grid of M-DPO and
pair-building settings the same way; `rounds` repeats refinement -> M-DPO from the last round's judge.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

from utils.config import parse_args, run_main
from utils.fingerprint import file_fingerprint, model_fingerprint
from utils.io import DataError, write_json
from utils.stages import (StageRecord, code_version, digest, git_commit, library_versions, settings_of,
                          why_changed)

ALL_STAGES = ("tiny", "data", "sft", "refine", "mdpo", "dpo", "rft", "label_pairs", "label_mdpo", "bt", "eval")
# The stages whose outputs each stage reads (eval: the data, and every judge it evaluates).
UPSTREAM = {"tiny": (), "data": (), "sft": ("tiny", "data"), "refine": ("sft", "data"), "mdpo": ("sft", "refine"),
            "dpo": ("sft", "refine"), "rft": ("sft", "refine"), "label_pairs": ("sft", "data"),
            "label_mdpo": ("sft", "label_pairs"), "bt": ("sft", "data"), "eval": ("data",)}
SHARED_STAGES = ("tiny", "data", "sft")  # a label curve or sweep runs these once per seed, the rest per variant
# Refinement settings that only rebuild levels and pairs from the logged judgments (a sweep over them reuses the samples).
PAIR_SETTINGS = ("threshold", "max_pairs_per_item", "unfinished", "drop_unparseable")
DATA_FILES = {"sft": ("sft.jsonl",), "refine": ("prefs.jsonl",), "label_pairs": ("prefs.jsonl",),
              "bt": ("prefs.jsonl",)}  # eval: its split's file
# (key, name in tables, stage that trains it, model type); the SFT judge is always evaluated, the
# base model (the "tiny" stage's output, or base_model) as a zero-shot judge with evaluate_base.
JUDGES = (("base", "Base model (zero-shot)", "tiny", "generative"),
          ("sft", "SFT judge", "sft", "generative"), ("bt", "BT-model", "bt", "scalar"),
          ("dpo", "w/o M-DPO (plain DPO)", "dpo", "generative"),
          ("rft", "RFT (NLL on refined chosen)", "rft", "generative"),
          ("label_mdpo", "w/o CoT-S (label pairs)", "label_mdpo", "generative"),
          ("gfriend", "GFRIEND (M-DPO)", "mdpo", "generative"))


@dataclass
class PipelineArguments:
    output_dir: str = field(default="outputs/demo")
    base_model: str = field(default=None, metadata={"help": "Start from this model instead of building the tiny one."})
    data_dir: str = field(default=None, metadata={"help": "Use this data (sft/prefs/test.jsonl) instead of synthetic."})
    sft_model: str = field(default=None, metadata={"help": "Start from this SFT judge instead of training one."})
    evaluate_base: bool = field(default=False, metadata={
        "help": "Also evaluate the base model (base_model, or the tiny one) as a zero-shot judge."})
    samples_from: str = field(default=None, metadata={
        "help": "Refinement takes its items' judgments from this finished refinement instead of sampling "
                "({seed} stands for the seed: another study's judgments of the same SFT judge)."})
    rounds: int = field(default=1, metadata={
        "help": "Refinement -> M-DPO rounds: round r >= 2 samples with round r-1's GFRIEND judge and trains from it "
                "(policy and reference) on the same labels, in output_dir/round{r}."})
    rounds_at: int = field(default=None, metadata={
        "help": "With label_counts: the one label count at which rounds >= 2 run (default: every one)."})
    sweep: str = field(default=None, metadata={
        "help": "A grid 'flag=v1,v2; flag=v1,v2' of M-DPO flags and refinement's pair-building flags "
                "(threshold, max_pairs_per_item, unfinished, drop_unparseable): per seed "
                "one run per setting from the same SFT judge and judgments, in output_dir[/seedS]/sweep/; "
                "study_table gets the table."})
    label_counts: str = field(default=None, metadata={
        "help": "Comma-separated numbers of labelled pairs n (a label curve): per seed one SFT judge, then for "
                "each n refinement and every judge on the first n of the n_prefs pairs, in output_dir[/seedS]/nN "
                "(smaller n reuse the largest n's judgments); study_table/study_figure get the curve."})
    seed: int = field(default=0)
    seeds: str = field(default=None, metadata={"help": "Comma-separated seeds: one full run per seed in "
                                                        "output_dir/seedN, then a mean +- std table."})
    study_table: str = field(default=None, metadata={"help": "Where the multi-seed table goes (markdown)."})
    study_figure: str = field(default=None, metadata={"help": "Where the multi-seed bar chart goes (PNG)."})
    stages: str = field(default="tiny,data,sft,refine,mdpo,eval")
    force: bool = field(default=False, metadata={"help": "Redo stages whose outputs already exist."})
    n_sft: int = field(default=20000)
    n_prefs: int = field(default=300)
    n_val: int = field(default=200)
    n_test: int = field(default=600)
    sft_config: str = field(default="configs/sft_demo.yaml")
    refine_config: str = field(default="configs/refine_demo.yaml")
    mdpo_config: str = field(default="configs/mdpo_demo.yaml")
    bt_config: str = field(default="configs/bt_demo.yaml")
    sft_args: str = field(default="", metadata={"help": "Extra flags for run_sft.py."})
    refine_args: str = field(default="")
    mdpo_args: str = field(default="")
    bt_args: str = field(default="")
    rft_args: str = field(default="--loss_type sft", metadata={
        "help": "Flags that make M-DPO's trainer RFT (rejection-sampling fine-tuning: the NLL of the refined "
                "chosen judgments alone), after mdpo_args; give the NLL weight M-DPO uses (--loss_weights W)."})
    eval_args: str = field(default="--batch_size 128")
    max_prompt_length: int = field(default=None, metadata={
        "help": "One prompt budget for SFT, refinement, label pairs, M-DPO and evaluation."})
    max_new_tokens: int = field(default=None, metadata={"help": "One judgment length for refinement and evaluation."})
    eval_split: str = field(default="test", metadata={"help": "test or val (choose settings on val)."})


class Pipeline:
    def __init__(self, a: PipelineArguments, evaluate_sft: bool = True):
        self.a = a
        self.evaluate_sft = evaluate_sft  # a label curve evaluates its SFT judge once, not once per n
        o = a.output_dir
        self.paths = {stage: os.path.join(o, stage) for stage in ALL_STAGES}
        self.paths.update({"tiny": a.base_model or os.path.join(o, "tiny-base"),
                           "data": a.data_dir or os.path.join(o, "data"), "sft": a.sft_model or self.paths["sft"]})
        if a.rounds < 1:
            raise DataError(f"--rounds must be at least 1, got {a.rounds}")
        self.stages = [s.strip() for s in a.stages.split(",") if s.strip()]
        unknown = [s for s in self.stages if s not in ALL_STAGES]
        if unknown:
            raise DataError(f"unknown stage(s) {unknown}; known: {', '.join(ALL_STAGES)}")

    def data(self, name: str) -> str:
        return os.path.join(self.paths["data"], name)

    def record(self, stage: str) -> StageRecord:
        return StageRecord(self.paths[stage])

    def done(self, stage: str) -> bool:
        rec = self.record(stage).load()
        return rec is not None and rec["status"] == "done"

    def external(self, stage: str) -> bool:
        """The user supplied this stage's output (base_model, data_dir): nothing to run or record."""
        return ((stage == "tiny" and bool(self.a.base_model)) or (stage == "data" and bool(self.a.data_dir))
                or (stage == "sft" and bool(self.a.sft_model)))

    def commands(self, stage: str) -> list[list[str]]:
        return self.eval_commands() if stage == "eval" else [self.command(stage)]

    def fingerprint(self, stage: str) -> dict:
        """Everything that decides the stage's output (see utils/stages.py)."""
        commands = self.commands(stage)
        settings = settings_of(commands[0]) if len(commands) == 1 else {
            key: " ".join(f"{k}={v}" for k, v in sorted(settings_of(c).items()))
            for key, c in zip([j[0] for j in self.judges()], commands)}
        files = DATA_FILES.get(stage, (f"{self.a.eval_split}.jsonl",) if stage == "eval" else ())
        inputs = {name: file_fingerprint(self.data(name)) for name in files}
        needs = list(UPSTREAM[stage])  # eval: also every stage whose judge it evaluates
        if stage == "eval":
            needs += sorted(set(self.judge_stages()) - set(needs))
        upstream = [u for u in needs if not self.external(u)]
        if "tiny" in needs and self.external("tiny"):
            inputs["base_model"] = model_fingerprint(self.a.base_model)
        if "sft" in needs and self.external("sft"):
            inputs["sft_model"] = model_fingerprint(self.a.sft_model)
        if stage == "refine" and self.a.samples_from:
            inputs["samples_from"] = file_fingerprint(os.path.join(self.samples_from(self.a.seed), "samples.jsonl"))
        records = {u: self.record(u).load() for u in upstream}
        missing = [u for u, r in records.items() if r is None or r["status"] != "done"]
        if missing:
            raise DataError(f"{stage} needs the output of {', '.join(missing)}: add it to --stages")
        return {"settings": settings, "inputs": inputs, "upstream": {u: digest(r) for u, r in records.items()},
                "code": code_version(), "libraries": library_versions()}

    def command(self, stage: str) -> list[str]:
        a, p, py = self.a, self.paths, sys.executable
        if stage == "tiny":
            return [py, "-m", "models.tiny", "--output_dir", p["tiny"], "--seed", str(a.seed)]
        if stage == "data":
            return [py, "-m", "data.synthetic", "--output_dir", p["data"], "--seed", str(a.seed), "--n_sft", str(a.n_sft),
                    "--n_prefs", str(a.n_prefs), "--n_val", str(a.n_val), "--n_test", str(a.n_test)]
        if stage == "sft":
            return [py, "run_sft.py", "--config", a.sft_config, "--model_name_or_path", p["tiny"],
                    "--train_file", self.data("sft.jsonl"), "--output_dir", p["sft"], "--seed", str(a.seed),
                    *self.lengths(), *shlex.split(a.sft_args)]
        if stage == "refine":
            reuse = ["--samples_from", self.samples_from(a.seed)] if a.samples_from else []
            return [py, "run_preference_refinement.py", "--config", a.refine_config, "--model_name_or_path", p["sft"],
                    "--pref_file", self.data("prefs.jsonl"), "--output_dir", p["refine"], "--seed", str(a.seed),
                    *self.lengths(new_tokens=True), *shlex.split(a.refine_args), *reuse]
        if stage in ("mdpo", "dpo", "rft", "label_mdpo"):  # the same trainer on refined or label pairs
            pairs = os.path.join(p["label_pairs" if stage == "label_mdpo" else "refine"], "pairs.jsonl")
            variant = {"dpo": ["--weighting", "none"], "rft": shlex.split(a.rft_args)}.get(stage, [])
            return [py, "run_m_dpo.py", "--config", a.mdpo_config, "--model_name_or_path", p["sft"],
                    "--pairs_file", pairs, "--output_dir", p[stage], "--seed", str(a.seed),
                    *self.lengths(), *shlex.split(a.mdpo_args), *variant]
        if stage == "label_pairs":
            return [py, "-m", "data.label_pairs", "--model_name_or_path", p["sft"], "--pref_file",
                    self.data("prefs.jsonl"), "--output", os.path.join(p["label_pairs"], "pairs.jsonl"), *self.lengths()]
        if stage == "bt":
            return [py, "run_bt_baseline.py", "--config", a.bt_config, "--model_name_or_path", p["sft"],
                    "--train_file", self.data("prefs.jsonl"), "--output_dir", p["bt"], "--seed", str(a.seed),
                    *shlex.split(a.bt_args)]
        raise ValueError(stage)

    def samples_from(self, seed: int) -> str | None:
        return self.a.samples_from.replace("{seed}", str(seed)) if self.a.samples_from else None

    def lengths(self, new_tokens: bool = False) -> list[str]:
        """The pipeline's one prompt budget (and judgment length) as flags for a stage."""
        flags = [] if self.a.max_prompt_length is None else ["--max_prompt_length", str(self.a.max_prompt_length)]
        if new_tokens and self.a.max_new_tokens is not None:
            flags += ["--max_new_tokens", str(self.a.max_new_tokens)]
        return flags

    def judge_stages(self) -> list[str]:
        """The stages whose judges are evaluated: the SFT judge, and every judge trained now or before."""
        return [stage for key, _, stage, _ in JUDGES
                if (key == "sft" and self.evaluate_sft) or (key == "base" and self.evaluate_sft and self.a.evaluate_base)
                or (key not in ("sft", "base") and (stage in self.stages or self.done(stage)))]

    def judges(self) -> list[tuple[str, str, str, str]]:
        """(key, display name, checkpoint, model type) of every judge to evaluate."""
        stages = self.judge_stages()
        return [(key, name, self.paths[stage], kind) for key, name, stage, kind in JUDGES if stage in stages]

    def eval_commands(self) -> list[list[str]]:
        eval_file = self.data(f"{self.a.eval_split}.jsonl")
        return [[sys.executable, "run_eval.py", "--model_name_or_path", path, "--model_type", kind,
                 "--eval_files", eval_file, "--output_file", os.path.join(self.paths["eval"], f"{key}.json"),
                 *self.lengths(new_tokens=True), *shlex.split(self.a.eval_args)]
                for key, _, path, kind in self.judges()]

    def evaluate(self) -> str:
        os.makedirs(self.paths["eval"], exist_ok=True)
        rows = []
        for (key, name, _, _), command in zip(self.judges(), self.eval_commands()):
            run(command)
            rows.append((name, read_result(os.path.join(self.paths["eval"], f"{key}.json"))))
        table = results_table(rows, f"{self.a.eval_split}, n={rows[0][1]['n']}")
        with open(os.path.join(self.paths["eval"], "table.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        return table

    def summary(self, stage: str) -> str:
        p = self.paths[stage]
        if stage in ("sft", "mdpo", "dpo", "rft", "label_mdpo", "bt"):
            with open(os.path.join(p, "trainer_state.json"), encoding="utf-8") as f:
                history = json.load(f)["log_history"]
            logs = [h for h in history if "loss" in h]
            if not logs:  # fewer steps than logging_steps: only the final summary exists
                return f"train_loss {history[-1].get('train_loss', float('nan')):.3f}"
            first, last = logs[0], logs[-1]
            extra = ""
            if "rewards/accuracies" in last:
                extra = f", rewards/accuracies {last['rewards/accuracies']:.3f}"
                if "rewards/margins" in last:
                    extra += f", margins {first['rewards/margins']:.3f} -> {last['rewards/margins']:.3f}"
            return f"loss {first['loss']:.3f} -> {last['loss']:.3f}{extra}"
        if stage == "refine":
            with open(os.path.join(p, "stats.json"), encoding="utf-8") as f:
                s = json.load(f)
            return (f"{s['samples']} samples, accuracy {s['sample_accuracy']}, levels {s['levels']}, "
                    f"{s['pairs']} pairs, {s['items_without_pairs']} items without pairs")
        return f"output in {p}"

    def decide(self, stage: str, fingerprint: dict) -> tuple[str, str]:
        """('reuse' | 'resume' | 'redo', why) for a stage about to run."""
        old = self.record(stage).load()
        if self.a.force:
            return "redo", "--force"
        if old is None:
            return "redo", "no record of a finished run"
        reason = why_changed(old["fingerprint"], fingerprint)
        if reason is not None:
            return "redo", reason
        return ("reuse", "nothing changed") if old["status"] == "done" else ("resume", "it stopped before the end")

    def run(self) -> None:
        if self.a.evaluate_base and (self.a.label_counts or self.a.sweep):
            raise DataError("--evaluate_base is for single runs and --seeds, not --label_counts or --sweep")
        if self.a.label_counts:
            return self.run_label_curve()
        if self.a.sweep:
            return self.run_sweep()
        if self.a.seeds:
            return self.run_seeds()
        for stage in self.stages:
            if self.external(stage):
                continue
            fingerprint = self.fingerprint(stage)
            action, why = self.decide(stage, fingerprint)
            if action == "reuse":
                print(f"[{stage}] reused ({self.paths[stage]}): {why}", flush=True)
                continue
            if action == "redo" and os.path.isdir(self.paths[stage]):
                shutil.rmtree(self.paths[stage])  # outputs of other settings must not be resumed or mixed
            print(f"[{stage}] {'resuming' if action == 'resume' else 'running'}: {why}", flush=True)
            t0 = time.time()
            self.record(stage).start(fingerprint, " && ".join(shlex.join(c) for c in self.commands(stage)))
            if stage == "eval":
                print(self.evaluate(), flush=True)
            else:
                run(self.command(stage))
            self.record(stage).finish(time.time() - t0)
            print(f"[{stage}] finished in {time.time() - t0:.0f}s: {self.summary(stage)}", flush=True)
        table = os.path.join(self.paths["eval"], "table.md")
        if os.path.exists(table):
            with open(table, encoding="utf-8") as f:
                print("\nResults\n" + f.read(), flush=True)
        self.run_rounds()

    def stage_times(self) -> dict[str, float]:
        """Wall seconds of this run's stages, from their records (a reused stage: the run that made it)."""
        records = {s: self.record(s).load() for s in self.stages if not self.external(s)}
        return {s: r["wall_s"] for s, r in records.items() if r and r.get("wall_s") is not None}

    def round_judges(self) -> list[tuple[str, str, str]]:
        """(key, display name, eval file) of the GFRIEND judge of every round after the first."""
        if self.a.rounds < 2 or "mdpo" not in self.stages:
            return []
        return [(f"gfriend_r{r}", f"GFRIEND round {r}", os.path.join(self.a.output_dir, f"round{r}", "eval",
                                                                    "gfriend.json")) for r in range(2, self.a.rounds + 1)]

    def run_rounds(self) -> None:
        """Rounds 2.. (iterative self-taught evaluation): each is refinement and M-DPO on the same
        labelled pairs with the previous round's GFRIEND judge as sampler, initial policy and
        reference, then that judge's evaluation."""
        previous = self.paths["mdpo"]
        for r, _ in enumerate(self.round_judges(), start=2):
            print(f"----- round {r}: refinement and M-DPO from {previous} -----", flush=True)
            sub = Pipeline(replace(self.a, seeds=None, label_counts=None, sweep=None, rounds=1, samples_from=None,
                                   output_dir=os.path.join(self.a.output_dir, f"round{r}"),
                                   data_dir=self.paths["data"], sft_model=previous, stages="refine,mdpo,eval"),
                           evaluate_sft=False)
            sub.run()
            previous = sub.paths["mdpo"]

    def run_seeds(self) -> None:
        """One full run per seed (same settings), then accuracy mean +- std per judge, the per-seed
        tables and a manifest of how they were made, beside the table."""
        seeds = [int(x) for x in self.a.seeds.split(",")]
        commit = git_commit()  # before the study rewrites its own tracked tables and figure
        per_seed, seed_tables, wall, stage_wall = [], {}, {}, {}
        for seed in seeds:
            print(f"===== seed {seed} =====", flush=True)
            t0 = time.time()
            a = PipelineArguments(**{**vars(self.a), "seeds": None, "seed": seed,
                                     "output_dir": os.path.join(self.a.output_dir, f"seed{seed}")})
            sub = Pipeline(a)
            sub.run()
            wall[seed] = round(time.time() - t0, 1)
            stage_wall[seed] = sub.stage_times()
            per_seed.append({**{name: read_result(os.path.join(sub.paths["eval"], f"{key}.json"))
                                for key, name, _, _ in sub.judges()},
                             **{name: read_result(path) for _, name, path in sub.round_judges()}})
            with open(os.path.join(sub.paths["eval"], "table.md"), encoding="utf-8") as f:
                seed_tables[seed] = f.read()
        folder = self.write_report(study_table(per_seed, seeds, self.a.eval_split), "table.md", wall, commit,
                                   stage_wall)
        for seed, text in seed_tables.items():
            with open(os.path.join(folder, f"seed{seed}.md"), "w", encoding="utf-8") as f:
                f.write(text)
        if self.a.study_figure:
            study_figure(per_seed, self.a.study_figure)

    def label_counts(self) -> list[int]:
        try:
            counts = sorted({int(x) for x in self.a.label_counts.split(",")})
        except ValueError:
            raise DataError(f"--label_counts must be comma-separated integers, got {self.a.label_counts!r}") from None
        if counts[0] < 1 or counts[-1] > self.a.n_prefs:
            raise DataError(f"--label_counts must lie in [1, n_prefs = {self.a.n_prefs}], got {self.a.label_counts!r}")
        if "eval" not in self.stages or self.a.data_dir:
            raise DataError("--label_counts needs the eval stage and the synthetic data (no data_dir)")
        if self.a.rounds_at is not None and self.a.rounds_at not in counts:
            raise DataError(f"--rounds_at {self.a.rounds_at} is not one of --label_counts {self.a.label_counts}")
        return counts

    def run_label_curve(self) -> None:
        """Per seed: the shared stages once (and the SFT judge's evaluation), then every other stage
        once per label count n on the first n labelled pairs, largest n first so that the smaller
        ones take its judgments; then the curve's table, paired differences, figure and manifest."""
        from utils.study_report import label_curve_figure, label_curve_table

        counts = self.label_counts()
        variants = [Variant(f"n{n}", n, rounds=self.a.rounds if self.a.rounds_at in (None, n) else 1)
                    for n in sorted(counts, reverse=True)]
        runs, wall, commit = self.run_variants(variants)
        for r in runs.values():
            r["per"] = {int(name[1:]): files for name, files in r["per"].items()}
        judges = [(key, name) for key, name, stage, _ in JUDGES if key == "sft" or (key != "base" and stage in self.stages)]
        judges += [(key, name) for key, name, _ in self.round_judges()]
        self.write_report(label_curve_table(runs, counts, judges, self.a.eval_split), "label_curve.md", wall, commit)
        if self.a.study_figure:
            label_curve_figure(runs, counts, judges, self.a.study_figure)

    def run_sweep(self) -> None:
        """Per seed one run per setting of the --sweep grid from the same SFT judge and judgments,
        evaluated on eval_split (choose settings on val); then one table of every setting."""
        from utils.study_report import sweep_table

        variants = self.sweep_variants()
        runs, wall, commit = self.run_variants(variants)
        judges = [(key, name) for key, name, stage, _ in JUDGES if key not in ("sft", "base") and stage in self.stages]
        self.write_report(sweep_table(runs, [v.name for v in variants], judges, self.a.eval_split), "sweep.md",
                          wall, commit)

    def run_variants(self, variants: list["Variant"]) -> tuple[dict, dict, str | None]:
        """variant_runs for every seed: (runs by seed, wall seconds by seed, the commit at the start)."""
        seeds = [int(x) for x in self.a.seeds.split(",")] if self.a.seeds else [self.a.seed]
        commit = git_commit()  # before the run rewrites its own tracked table and figure
        runs, wall = {}, {}
        for seed in seeds:
            print(f"===== seed {seed} =====", flush=True)
            t0 = time.time()
            out = os.path.join(self.a.output_dir, f"seed{seed}") if self.a.seeds else self.a.output_dir
            runs[seed] = self.variant_runs(seed, out, variants)
            wall[seed] = round(time.time() - t0, 1)
        return runs, wall, commit

    def write_report(self, table: str, default_name: str, wall: dict, commit: str | None,
                     stage_wall: dict | None = None) -> str:
        """The table (study_table, or output_dir/default_name) with a manifest beside it; returns their folder."""
        out = self.a.study_table or os.path.join(self.a.output_dir, default_name)
        folder = os.path.dirname(os.path.abspath(out))
        os.makedirs(folder, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
        write_json(os.path.join(folder, "manifest.json"), manifest(wall, commit, stage_wall))
        print("\n" + table, flush=True)
        return folder

    def variant_runs(self, seed: int, out: str, variants: list["Variant"]) -> dict:
        """The shared stages of one seed once (and the SFT judge's evaluation), then every other
        stage once per variant (a number of labels, extra flags) in out/<variant dir>, from the same
        SFT judge; the variants after the first take its judgments instead of sampling again.
        Returns {"sft": eval file, "per": {variant name: {judge key: eval file}}}."""
        shared = [s for s in self.stages if s in SHARED_STAGES]
        base = Pipeline(replace(self.a, seeds=None, label_counts=None, sweep=None, seed=seed, output_dir=out,
                                stages=",".join([*shared, "eval"])))
        base.run()
        rest = [s for s in self.stages if s not in SHARED_STAGES]
        per, first = {}, self.samples_from(seed)
        for v in variants:
            sub_out = os.path.join(out, v.folder)
            print(f"----- seed {seed}, {v.name} -----", flush=True)
            data_dir = labelled_subset(base.paths["data"], os.path.join(sub_out, "data"), v.n, self.a.eval_split)
            sub = Pipeline(replace(self.a, seeds=None, label_counts=None, sweep=None, seed=seed, output_dir=sub_out,
                                   data_dir=data_dir, sft_model=base.paths["sft"], samples_from=first,
                                   rounds=v.rounds, refine_args=shlex.join([*shlex.split(self.a.refine_args),
                                                                            *v.refine_flags]),
                                   mdpo_args=shlex.join([*shlex.split(self.a.mdpo_args), *v.mdpo_flags]),
                                   stages=",".join(rest)), evaluate_sft=False)
            sub.run()
            if "refine" in rest and first is None:
                first = sub.paths["refine"]
            per[v.name] = {**{key: os.path.join(sub.paths["eval"], f"{key}.json") for key, *_ in sub.judges()},
                           **{key: path for key, _, path in sub.round_judges()}}
        return {"sft": os.path.join(base.paths["eval"], "sft.json"), "per": per}

    def sweep_variants(self) -> list["Variant"]:
        """The grid of --sweep, 'flag=v1,v2; flag=v1,v2' (a value with spaces is several tokens:
        'loss_weights=1 4,1 16'): refinement's pair-building flags go to refinement (the judgments
        are reused), every other flag to the trainers."""
        axes = []
        for part in (p.strip() for p in self.a.sweep.split(";")):
            flag, sep, values = part.partition("=")
            if not sep or not flag.strip() or not values.strip():
                raise DataError(f"--sweep must look like 'flag=v1,v2; flag=v1,v2', got {part!r}")
            axes.append([(flag.strip(), v.strip()) for v in values.split(",")])
        if "eval" not in self.stages or self.a.data_dir or self.a.label_counts:
            raise DataError("--sweep needs the eval stage and the synthetic data (no data_dir, no label_counts)")
        variants = []
        for combo in itertools.product(*axes):
            flags = {"refine": [], "mdpo": []}
            for flag, value in combo:
                flags["refine" if flag in PAIR_SETTINGS else "mdpo"] += [f"--{flag}", *value.split()]
            name = " ".join(f"{flag}={value}" for flag, value in combo)
            variants.append(Variant(name, self.a.n_prefs, refine_flags=flags["refine"], mdpo_flags=flags["mdpo"],
                                    folder=os.path.join("sweep", re.sub(r"[^A-Za-z0-9._]+", "-", name))))
        return variants


@dataclass
class Variant:
    """One run of a label curve or sweep within a seed: its labels, extra flags and folder."""
    name: str
    n: int
    refine_flags: list[str] = field(default_factory=list)
    mdpo_flags: list[str] = field(default_factory=list)
    rounds: int = 1
    folder: str = None

    def __post_init__(self):
        self.folder = self.folder or self.name


def labelled_subset(src: str, dst: str, n: int, split: str) -> str:
    """dst holding the first n labelled pairs of src/prefs.jsonl and src's evaluation split; files
    are rewritten only when their content changes, so the stages reading them are reused."""
    with open(os.path.join(src, "prefs.jsonl"), encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    if len(lines) < n:
        raise DataError(f"{src}/prefs.jsonl: {len(lines)} labelled pairs, fewer than n = {n}")
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, f"{split}.jsonl"), encoding="utf-8") as f:
        wanted = {"prefs.jsonl": "".join(lines[:n]), f"{split}.jsonl": f.read()}
    for name, text in wanted.items():
        path = os.path.join(dst, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return dst


def manifest(wall_s: dict[int, float], commit: str | None, stage_wall_s: dict[int, dict] | None = None) -> dict:
    """How a study's numbers were made: enough to trace them and to compare two machines' runs
    (with `stage_wall_s`, each seed's stages' wall seconds as their records give them)."""
    import platform

    threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True).stdout.strip()
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {"command": shlex.join([os.path.basename(sys.executable), *sys.argv]), "commit": commit,
            "code": code_version(), "libraries": library_versions(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": int(threads) if threads.isdigit() else None,
            "wall_s_per_seed": {str(k): v for k, v in wall_s.items()}, "wall_s": round(sum(wall_s.values()), 1),
            **({"wall_s_per_stage": {str(k): v for k, v in stage_wall_s.items()}} if stage_wall_s else {}),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def read_result(path: str) -> dict:
    """The summary of the one eval file in a run_eval.py results.json."""
    with open(path, encoding="utf-8") as f:
        return next(iter(json.load(f)["results"].values()))


def results_table(rows: list[tuple[str, dict]], label: str) -> str:
    cats = sorted({c for _, r in rows for c in r["categories"]})
    lines = [f"| judge | all ({label}) | " + " | ".join(cats) + " |", "|---" * (len(cats) + 2) + "|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['accuracy']:.3f} | " +
                     " | ".join(f"{r['categories'][c]['accuracy']:.3f}" for c in cats) + " |")
    return "\n".join(lines)


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return m, sd


def study_table(per_seed: list[dict], seeds: list[int], split: str) -> str:
    names = list(per_seed[0])
    cats = sorted({c for res in per_seed for r in res.values() for c in r["categories"]})
    n = per_seed[0][names[0]]["n"]
    lines = [f"Accuracy (%) on {n} held-out {split} pairs, both answer orders; mean ± std over seeds "
             f"{', '.join(map(str, seeds))}.", "",
             "| method | all | " + " | ".join(cats) + " |", "|---" * (len(cats) + 2) + "|"]
    for name in names:
        cells = []
        for getter in [lambda r: r["accuracy"]] + [lambda r, c=c: r["categories"][c]["accuracy"] for c in cats]:
            m, sd = _mean_std([100 * getter(res[name]) for res in per_seed])
            cells.append(f"{m:.1f} ± {sd:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def study_figure(per_seed: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_seed[0])
    stats = [_mean_std([100 * res[n]["accuracy"] for res in per_seed]) for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(names)), [m for m, _ in stats], yerr=[sd for _, sd in stats], capsize=4,
           color=["#999999", "#bbbbbb", "#88aadd", "#aaccee", "#dd6644"][: len(names)])
    ax.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.set_ylabel("pairwise accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Synthetic judging task, mean ± std over {len(per_seed)} seeds")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise DataError(f"stage failed (exit {proc.returncode}): {shlex.join(cmd)}")


def main(argv=None) -> None:
    (a,) = parse_args((PipelineArguments,), argv)
    Pipeline(a).run()


if __name__ == "__main__":
    run_main(main)
