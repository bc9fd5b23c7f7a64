"""The pipeline's settings (one YAML under configs/ plus flags, as every script) and the combinations
of them that cannot work, refused in one line before anything runs."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from utils.io import DataError


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
                "(threshold, max_pairs_per_item, unfinished, drop_unparseable, score): per seed "
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
    isolate_stages: bool = field(default=False, metadata={
        "help": "Run every stage in a process of its own (as `python run_x.py ...`) instead of in this one: "
                "each stage then starts with all of the machine's memory, at the cost of the imports (~6 s)."})
    sft_source: str = field(default="program", metadata={
        "help": "Where the SFT judge's chains of thought come from: program (the synthetic task's sft.jsonl, "
                "written by a program that knows the answer) or bootstrap (the cot stage: the base model writes "
                "them from the labelled pairs, run_bootstrap_cot.py; add cot to --stages)."})
    n_sft: int = field(default=20000)
    n_prefs: int = field(default=300)
    n_val: int = field(default=200)
    n_test: int = field(default=600)
    cot_config: str = field(default="configs/cot_demo.yaml")
    sft_config: str = field(default="configs/sft_demo.yaml")
    refine_config: str = field(default="configs/refine_demo.yaml")
    mdpo_config: str = field(default="configs/mdpo_demo.yaml")
    bt_config: str = field(default="configs/bt_demo.yaml")
    grpo_config: str = field(default="configs/grpo_demo.yaml")
    eval_config: str = field(default="configs/eval_demo.yaml")
    cot_args: str = field(default="", metadata={"help": "Extra flags for run_bootstrap_cot.py (--mode ...)."})
    sft_args: str = field(default="", metadata={"help": "Extra flags for run_sft.py."})
    refine_args: str = field(default="")
    mdpo_args: str = field(default="")
    bt_args: str = field(default="")
    grpo_args: str = field(default="", metadata={"help": "Extra flags for run_grpo_judge.py."})
    rft_args: str = field(default="--loss_type sft", metadata={
        "help": "Flags that make M-DPO's trainer RFT (rejection-sampling fine-tuning: the NLL of the refined "
                "chosen judgments alone), after mdpo_args; give the NLL weight M-DPO uses (--loss_weights W)."})
    eval_args: str = field(default="", metadata={"help": "Extra flags for run_eval.py."})
    max_prompt_length: int = field(default=None, metadata={
        "help": "One prompt budget for SFT, refinement, label pairs, M-DPO and evaluation."})
    max_new_tokens: int = field(default=None, metadata={"help": "One judgment length for refinement and evaluation."})
    eval_split: str = field(default="test", metadata={"help": "test or val (choose settings on val)."})

    def stage_list(self) -> list[str]:
        """--stages as names, in order."""
        return [s.strip() for s in self.stages.split(",") if s.strip()]


def check_combinations(a: PipelineArguments) -> None:
    """One line for the first combination of settings that cannot work as asked."""
    if a.rounds < 1:
        raise DataError(f"--rounds must be at least 1, got {a.rounds}")
    if a.label_counts and a.sweep:
        raise DataError("--label_counts and --sweep cannot be combined: run the sweep at one label count (n_prefs)")
    if a.evaluate_base and (a.label_counts or a.sweep):
        raise DataError("--evaluate_base is for single runs and --seeds, not --label_counts or --sweep")
    if a.rounds_at is not None and a.rounds > 1 and not a.label_counts:
        raise DataError("--rounds_at needs --label_counts (it names one of them)")
    if (a.label_counts or a.sweep) and a.data_dir:
        raise DataError("--label_counts and --sweep need the synthetic data (no data_dir)")
    if a.sft_source not in ("program", "bootstrap"):
        raise DataError(f"--sft_source must be program or bootstrap, got {a.sft_source!r}")
    if a.sft_source == "bootstrap" and a.label_counts:
        raise DataError("--sft_source bootstrap writes SFT rows from all n_prefs labelled pairs, so a label curve's "
                        "smaller n would learn from more labels than n: run one study per n instead")
    if a.sft_source == "program" and a.data_dir and "sft" in a.stage_list():
        if not os.path.exists(os.path.join(a.data_dir, "sft.jsonl")):
            raise DataError(f"{a.data_dir}: no sft.jsonl (program-written chains of thought exist only for the "
                            "synthetic task): use --sft_source bootstrap and add cot to --stages")
    if a.eval_split not in ("test", "val"):
        raise DataError(f"--eval_split must be test or val, got {a.eval_split!r}")
