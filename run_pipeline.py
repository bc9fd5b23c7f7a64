"""The whole GFRIEND pipeline in one command:

    python run_pipeline.py --config configs/demo.yaml [--force] [--stages sft,refine,mdpo,eval]

tiny model (unless `base_model` names one) -> synthetic data -> SFT -> preference refinement ->
M-DPO -> evaluation (plus the BT-model baseline if listed in `stages`). Each stage is the same
script a user runs by hand, called with the files the stage before it wrote. A stage whose output
is complete is skipped unless --force; once a stage runs, every stage after it runs too.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

from utils.config import parse_args, run_main
from utils.io import DataError

ALL_STAGES = ("tiny", "data", "sft", "refine", "mdpo", "dpo", "label_pairs", "label_mdpo", "bt", "eval")
# (key, name in tables, stage that trains it, model type); the SFT judge is always evaluated.
JUDGES = (("sft", "SFT judge", "sft", "generative"), ("bt", "BT-model", "bt", "scalar"),
          ("dpo", "w/o M-DPO (plain DPO)", "dpo", "generative"),
          ("label_mdpo", "w/o CoT-S (label pairs)", "label_mdpo", "generative"),
          ("gfriend", "GFRIEND (M-DPO)", "mdpo", "generative"))


@dataclass
class PipelineArguments:
    output_dir: str = field(default="outputs/demo")
    base_model: str = field(default=None, metadata={"help": "Start from this model instead of building the tiny one."})
    data_dir: str = field(default=None, metadata={"help": "Use this data (sft/prefs/test.jsonl) instead of synthetic."})
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
    eval_args: str = field(default="--batch_size 128")
    max_prompt_length: int = field(default=None, metadata={
        "help": "One prompt budget for SFT, refinement, label pairs, M-DPO and evaluation."})
    max_new_tokens: int = field(default=None, metadata={"help": "One judgment length for refinement and evaluation."})
    eval_split: str = field(default="test", metadata={"help": "test or val (choose settings on val)."})


class Pipeline:
    def __init__(self, a: PipelineArguments):
        self.a = a
        o = a.output_dir
        self.paths = {
            "tiny": a.base_model or os.path.join(o, "tiny-base"),
            "data": a.data_dir or os.path.join(o, "data"),
            "sft": os.path.join(o, "sft"), "refine": os.path.join(o, "refine"),
            "mdpo": os.path.join(o, "mdpo"), "bt": os.path.join(o, "bt"), "eval": os.path.join(o, "eval"),
            "dpo": os.path.join(o, "dpo"), "label_pairs": os.path.join(o, "label_pairs"),
            "label_mdpo": os.path.join(o, "label_mdpo"),
        }
        self.stages = [s.strip() for s in a.stages.split(",") if s.strip()]
        unknown = [s for s in self.stages if s not in ALL_STAGES]
        if unknown:
            raise DataError(f"unknown stage(s) {unknown}; known: {', '.join(ALL_STAGES)}")

    def data(self, name: str) -> str:
        return os.path.join(self.paths["data"], name)

    def done(self, stage: str) -> bool:
        p = self.paths[stage]
        marker = {"tiny": "config.json", "data": "test.jsonl", "refine": "stats.json", "label_pairs": "pairs.jsonl",
                  "eval": "table.md"}.get(stage, "run_config.yaml")
        return os.path.exists(os.path.join(p, marker))

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
            return [py, "run_preference_refinement.py", "--config", a.refine_config, "--model_name_or_path", p["sft"],
                    "--pref_file", self.data("prefs.jsonl"), "--output_dir", p["refine"], "--seed", str(a.seed),
                    *self.lengths(new_tokens=True), *shlex.split(a.refine_args)]
        if stage in ("mdpo", "dpo", "label_mdpo"):  # the same trainer on refined or label pairs
            pairs = os.path.join(p["label_pairs" if stage == "label_mdpo" else "refine"], "pairs.jsonl")
            weighting = ["--weighting", "none"] if stage == "dpo" else []
            return [py, "run_m_dpo.py", "--config", a.mdpo_config, "--model_name_or_path", p["sft"],
                    "--pairs_file", pairs, "--output_dir", p[stage], "--seed", str(a.seed),
                    *self.lengths(), *shlex.split(a.mdpo_args), *weighting]
        if stage == "label_pairs":
            return [py, "-m", "data.label_pairs", "--model_name_or_path", p["sft"], "--pref_file",
                    self.data("prefs.jsonl"), "--output", os.path.join(p["label_pairs"], "pairs.jsonl"), *self.lengths()]
        if stage == "bt":
            return [py, "run_bt_baseline.py", "--config", a.bt_config, "--model_name_or_path", p["sft"],
                    "--train_file", self.data("prefs.jsonl"), "--output_dir", p["bt"], "--seed", str(a.seed),
                    *shlex.split(a.bt_args)]
        raise ValueError(stage)

    def lengths(self, new_tokens: bool = False) -> list[str]:
        """The pipeline's one prompt budget (and judgment length) as flags for a stage."""
        flags = [] if self.a.max_prompt_length is None else ["--max_prompt_length", str(self.a.max_prompt_length)]
        if new_tokens and self.a.max_new_tokens is not None:
            flags += ["--max_new_tokens", str(self.a.max_new_tokens)]
        return flags

    def judges(self) -> list[tuple[str, str, str, str]]:
        """(key, display name, checkpoint, model type) of every judge to evaluate."""
        return [(key, name, self.paths[stage], kind) for key, name, stage, kind in JUDGES
                if key == "sft" or stage in self.stages or self.done(stage)]

    def evaluate(self) -> str:
        os.makedirs(self.paths["eval"], exist_ok=True)
        eval_file = self.data(f"{self.a.eval_split}.jsonl")
        rows = []
        for key, name, path, kind in self.judges():
            out = os.path.join(self.paths["eval"], f"{key}.json")
            run([sys.executable, "run_eval.py", "--model_name_or_path", path, "--model_type", kind,
                 "--eval_files", eval_file, "--output_file", out, *self.lengths(new_tokens=True),
                 *shlex.split(self.a.eval_args)])
            rows.append((name, read_result(out)))
        table = results_table(rows, f"{self.a.eval_split}, n={rows[0][1]['n']}")
        with open(os.path.join(self.paths["eval"], "table.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        return table

    def summary(self, stage: str) -> str:
        p = self.paths[stage]
        if stage in ("sft", "mdpo", "dpo", "label_mdpo", "bt"):
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

    def run(self) -> None:
        if self.a.seeds:
            return self.run_seeds()
        forced = self.a.force
        for stage in self.stages:
            if (stage == "tiny" and self.a.base_model) or (stage == "data" and self.a.data_dir):
                continue  # the user supplied this stage's output
            if not forced and self.done(stage):
                print(f"[{stage}] done already, skipped ({self.paths[stage]})", flush=True)
                continue
            forced = True  # everything after a stage that ran must run again
            t0 = time.time()
            print(f"[{stage}] running", flush=True)
            if stage == "eval":
                print(self.evaluate(), flush=True)
            else:
                run(self.command(stage))
            print(f"[{stage}] finished in {time.time() - t0:.0f}s: {self.summary(stage)}", flush=True)
        table = os.path.join(self.paths["eval"], "table.md")
        if os.path.exists(table):
            with open(table, encoding="utf-8") as f:
                print("\nResults\n" + f.read(), flush=True)

    def run_seeds(self) -> None:
        """One full run per seed (same settings), then accuracy mean +- std per judge."""
        seeds = [int(x) for x in self.a.seeds.split(",")]
        per_seed = []
        for seed in seeds:
            print(f"===== seed {seed} =====", flush=True)
            a = PipelineArguments(**{**vars(self.a), "seeds": None, "seed": seed,
                                     "output_dir": os.path.join(self.a.output_dir, f"seed{seed}")})
            sub = Pipeline(a)
            sub.run()
            per_seed.append({name: read_result(os.path.join(sub.paths["eval"], f"{key}.json"))
                             for key, name, _, _ in sub.judges()})
        table = study_table(per_seed, seeds, self.a.eval_split)
        out = self.a.study_table or os.path.join(self.a.output_dir, "table.md")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
        if self.a.study_figure:
            study_figure(per_seed, self.a.study_figure)
        print("\n" + table, flush=True)


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
