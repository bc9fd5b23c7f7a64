"""Studies: the same pipeline over seeds, over numbers of labelled pairs (a label curve) or over a
grid of settings (a sweep), each written up as a table with a manifest beside it.

A label curve or a sweep runs the shared stages (tiny, data, SFT) once per seed and every other
stage once per variant, from the same SFT judge; the variants after the first take its judgments
instead of sampling again (refinement's --samples_from).
"""
from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field, replace

from pipeline.arguments import PipelineArguments
from pipeline.reports import (label_curve_figure, label_curve_table, read_result, study_figure, study_table,
                              sweep_table)
from pipeline.runner import SeedRun
from pipeline.stages import JUDGES, PAIR_SETTINGS, SHARED_STAGES, judge_name
from utils.io import DataError, atomic_open, dumps, open_text, write_json
from utils.provenance import manifest, run_commit


SWEPT_STAGES = ("refine", "mdpo", "rft", "bt", "grpo", "eval")  # the stages a sweep flag may name: their <stage>_args


@dataclass
class Variant:
    """One run of a label curve or sweep within a seed: its labels, extra flags and folder."""
    name: str
    n: int
    flags: dict[str, list[str]] = field(default_factory=dict)  # added to the stage's <stage>_args, per stage
    rounds: int = 1
    folder: str = None

    def __post_init__(self):
        self.folder = self.folder or self.name


def seeds_of(a: PipelineArguments) -> list[int]:
    try:
        return [int(x) for x in a.seeds.split(",")] if a.seeds else [a.seed]
    except ValueError:
        raise DataError(f"--seeds must be comma-separated integers, got {a.seeds!r}") from None


def write_report(a: PipelineArguments, table: str, default_name: str, wall: dict, commit: str | None,
                 stages: dict | None = None, records: dict | None = None) -> str:
    """The table (study_table, or output_dir/default_name) with a manifest beside it, and the
    evaluation records it was made from ({seed: {name: eval file}}) under records/seedS/; returns
    their folder."""
    out = a.study_table or os.path.join(a.output_dir, default_name)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(table + "\n")
    write_json(os.path.join(folder, "manifest.json"), manifest(wall, commit, stages))
    for seed, files in (records or {}).items():
        for name, path in files.items():
            keep_record(path, os.path.join(folder, "records", f"seed{seed}", name))
    print("\n" + table, flush=True)
    return folder


def keep_record(src: str, dst: str) -> None:
    """A run_eval.py results file gzip'd at dst (.json.gz), its prompts left out (the data rebuilds them):
    per item and order every verdict, its rightness and P(A better), so anyone recomputes a study's
    numbers, intervals over seeds included (`python -m pipeline.reports diff`), from committed files."""
    with open_text(src) as f:
        result = json.load(f)
    for items in result.get("items", {}).values():
        for item in items:
            for order in item.get("orders", []):
                order.pop("prompt", None)
    with atomic_open(dst, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as z:
        z.write(dumps(result).encode("utf-8"))  # no name, mtime 0: the same records, the same bytes


def run_seeds(a: PipelineArguments) -> None:
    """One full run per seed (same settings), then accuracy mean +- std per judge, the per-seed
    tables and a manifest of how they were made, beside the table."""
    seeds = seeds_of(a)
    commit = run_commit()  # before the study rewrites its own tracked tables and figure
    per_seed, seed_tables, wall, stages, records = [], {}, {}, {}, {}
    for seed in seeds:
        print(f"===== seed {seed} =====", flush=True)
        t0 = time.time()
        run = SeedRun(replace(a, seeds=None, seed=seed, output_dir=os.path.join(a.output_dir, f"seed{seed}")))
        run.run()
        wall[seed] = round(time.time() - t0, 1)
        stages[seed] = run.stage_log()
        if not os.path.exists(os.path.join(run.paths["eval"], "table.md")):
            continue  # trained, not evaluated (--stages without eval): no table to make
        judges = [(key, name, os.path.join(run.paths["eval"], f"{key}.json")) for key, name, *_ in run.judges()]
        judges += run.round_judges()
        per_seed.append({name: read_result(path) for _, name, path in judges})
        records[seed] = {f"{key}.json.gz": path for key, _, path in judges}
        with open(os.path.join(run.paths["eval"], "table.md"), encoding="utf-8") as f:
            seed_tables[seed] = f.read()
    if len(seed_tables) < len(seeds):
        print(f"No study table: seeds {', '.join(str(s) for s in seeds if s not in seed_tables)} have no evaluation "
              "(add eval to --stages)", flush=True)
        return
    folder = write_report(a, study_table(per_seed, seeds, a.eval_split), "table.md", wall, commit, stages, records)
    for seed, text in seed_tables.items():
        with open(os.path.join(folder, f"seed{seed}.md"), "w", encoding="utf-8") as f:
            f.write(text)
    if a.study_figure:
        study_figure(per_seed, a.study_figure)


def label_counts(a: PipelineArguments) -> list[int]:
    try:
        counts = sorted({int(x) for x in a.label_counts.split(",")})
    except ValueError:
        raise DataError(f"--label_counts must be comma-separated integers, got {a.label_counts!r}") from None
    if counts[0] < 1 or counts[-1] > a.n_prefs:
        raise DataError(f"--label_counts must lie in [1, n_prefs = {a.n_prefs}], got {a.label_counts!r}")
    if "eval" not in a.stages:
        raise DataError("--label_counts needs the eval stage")
    if a.rounds_at is not None and a.rounds_at not in counts:
        raise DataError(f"--rounds_at {a.rounds_at} is not one of --label_counts {a.label_counts}")
    return counts


def run_label_curve(a: PipelineArguments) -> None:
    """Per seed: the shared stages once (and the SFT judge's evaluation), then every other stage
    once per label count n on the first n labelled pairs, largest n first so that the smaller
    ones take its judgments; then the curve's table, paired differences, figure and manifest."""
    counts = label_counts(a)
    variants = [Variant(f"n{n}", n, rounds=a.rounds if a.rounds_at in (None, n) else 1)
                for n in sorted(counts, reverse=True)]
    runs, wall, commit = run_variants(a, variants)
    for r in runs.values():
        r["per"] = {int(name[1:]): files for name, files in r["per"].items()}
    stages = a.stage_list()
    judges = [(key, judge_name(a, key)) for key, _, stage, _ in JUDGES
              if key == "sft" or (key != "base" and stage in stages)]
    judges += [(key, name) for key, name, _ in SeedRun(a).round_judges()]
    write_report(a, label_curve_table(runs, counts, judges, a.eval_split), "label_curve.md", wall, commit,
                 {seed: r["stages"] for seed, r in runs.items()}, {seed: r["records"] for seed, r in runs.items()})
    if a.study_figure:
        label_curve_figure(runs, counts, judges, a.study_figure)


def run_sweep(a: PipelineArguments) -> None:
    """Per seed one run per setting of the --sweep grid from the same SFT judge and judgments,
    evaluated on eval_split (choose settings on val); then one table of every setting."""
    variants = sweep_variants(a)
    runs, wall, commit = run_variants(a, variants)
    stages = a.stage_list()
    judges = {v.name: [(key, judge_name(with_flags(a, v), key)) for key, _, stage, _ in JUDGES  # the loss that ran
                       if key not in ("sft", "base") and stage in stages] for v in variants}
    write_report(a, sweep_table(runs, judges, a.eval_split), "sweep.md", wall, commit,
                 {seed: r["stages"] for seed, r in runs.items()}, {seed: r["records"] for seed, r in runs.items()})


def run_variants(a: PipelineArguments, variants: list[Variant]) -> tuple[dict, dict, str | None]:
    """variant_runs for every seed: (runs by seed, wall seconds by seed, the commit at the start)."""
    commit = run_commit()  # before the run rewrites its own tracked table and figure
    runs, wall = {}, {}
    for seed in seeds_of(a):
        print(f"===== seed {seed} =====", flush=True)
        t0 = time.time()
        out = os.path.join(a.output_dir, f"seed{seed}") if a.seeds else a.output_dir
        runs[seed] = variant_runs(a, seed, out, variants)
        wall[seed] = round(time.time() - t0, 1)
    return runs, wall, commit


def variant_runs(a: PipelineArguments, seed: int, out: str, variants: list[Variant]) -> dict:
    """The shared stages of one seed once (and the SFT judge's evaluation), then every other
    stage once per variant (a number of labels, extra flags) in out/<variant dir>, from the same
    SFT judge; the variants after the first take its judgments instead of sampling again.
    Returns {"sft": eval file, "per": {variant name: {judge key: eval file}}, "stages": their records,
    "records": {name under records/seedS/: eval file}}."""
    stages = a.stage_list()
    shared = [s for s in stages if s in SHARED_STAGES]
    base = SeedRun(replace(a, seeds=None, label_counts=None, sweep=None, seed=seed, output_dir=out,
                           stages=",".join([*shared, "eval"])))
    base.run()
    rest = [s for s in stages if s not in SHARED_STAGES]
    per, first, log = {}, base.samples_from(seed), base.stage_log()
    for v in variants:
        sub_out = os.path.join(out, v.folder)
        print(f"----- seed {seed}, {v.name} -----", flush=True)
        data_dir = labelled_subset(base.paths["data"], os.path.join(sub_out, "data"), v.n, a.eval_split)
        sub = SeedRun(replace(with_flags(a, v), seeds=None, label_counts=None, sweep=None, seed=seed,
                              output_dir=sub_out, data_dir=data_dir, sft_model=base.paths["sft"], samples_from=first,
                              rounds=v.rounds, stages=",".join(rest)), evaluate_sft=False)
        sub.run()
        if "refine" in rest and first is None:
            first = sub.paths["refine"]
        per[v.name] = {**{key: os.path.join(sub.paths["eval"], f"{key}.json") for key, *_ in sub.judges()},
                       **{key: path for key, _, path in sub.round_judges()}}
        log.update(sub.stage_log(prefix=f"{v.folder}/"))
    sft = os.path.join(base.paths["eval"], "sft.json")
    files = {"sft.json.gz": sft, **{os.path.join(v.folder, f"{key}.json.gz"): path
                                    for v in variants for key, path in per[v.name].items()}}
    return {"sft": sft, "per": per, "stages": log, "records": files}


def with_flags(a: PipelineArguments, v: Variant) -> PipelineArguments:
    """The settings `a` with a variant's flags added to each stage's <stage>_args."""
    return replace(a, **{f"{stage}_args": shlex.join([*shlex.split(getattr(a, f"{stage}_args")), *flags])
                         for stage, flags in v.flags.items()})


def sweep_variants(a: PipelineArguments) -> list[Variant]:
    """The grid of --sweep, 'flag=v1,v2; flag=v1,v2' (a value with spaces is several tokens:
    'loss_weights=1 4,1 16'): refinement's pair-building flags go to refinement (the judgments
    are reused), a flag named stage.flag to that stage alone (bt.learning_rate: the BT model's, so
    each baseline is tuned on its own grid), every other flag to M-DPO's trainer (M-DPO, plain DPO, RFT)."""
    axes = []
    for part in (p.strip() for p in a.sweep.split(";")):
        flag, sep, values = part.partition("=")
        if not sep or not flag.strip() or not values.strip():
            raise DataError(f"--sweep must look like 'flag=v1,v2; flag=v1,v2', got {part!r}")
        axes.append([(flag.strip(), v.strip()) for v in values.split(",")])
    if "eval" not in a.stages:
        raise DataError("--sweep needs the eval stage")
    variants = []
    for combo in itertools.product(*axes):
        flags = {}
        for flag, value in combo:
            stage, flag = sweep_target(flag)
            flags.setdefault(stage, []).extend([f"--{flag}", *value.split()])
        name = " ".join(f"{flag}={value}" for flag, value in combo)
        variants.append(Variant(name, a.n_prefs, flags=flags,
                                folder=os.path.join("sweep", re.sub(r"[^A-Za-z0-9._]+", "-", name))))
    return variants


def sweep_target(flag: str) -> tuple[str, str]:
    """(stage whose <stage>_args take it, flag) for one --sweep flag."""
    stage, dot, name = flag.partition(".")
    if not dot:
        return ("refine" if flag in PAIR_SETTINGS else "mdpo"), flag
    if stage not in SWEPT_STAGES or not name:
        raise DataError(f"--sweep flag {flag!r}: a stage-scoped flag is stage.flag with stage one of "
                        f"{', '.join(SWEPT_STAGES)}")
    return stage, name


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
