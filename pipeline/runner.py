"""One run of the pipeline for one seed: its stages in order, each reused when nothing that decides
its output changed (pipeline.cache), run otherwise with one line saying why, then the results table
and any further rounds.

A stage runs in this process (its script's `main(argv)`, the same code as `python run_x.py argv`),
or with `isolate_stages` in a process of its own.
"""
from __future__ import annotations

import gc
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import replace

from pipeline.arguments import PipelineArguments
from pipeline.cache import StageRecord, decide, digest
from utils.provenance import code_version, library_versions
from pipeline.reports import read_result, results_table
from pipeline.stages import (ALL_STAGES, JUDGES, STAGES, data_of, flags_of, judge_name, module_of, script, settings_of,
                             upstream_of)
from utils.fingerprint import file_fingerprint, model_fingerprint
from utils.io import DataError


def execute(command: list[str], isolate: bool) -> None:
    """Run one stage command ([python, script or -m module, flags...]); a failure is one line."""
    if isolate:
        proc = subprocess.run(command)
        if proc.returncode != 0:
            raise DataError(f"stage failed (exit {proc.returncode}): {shlex.join(command)}")
        return
    module = module_of(command)
    try:
        script(module).main(flags_of(command))
    except DataError as e:
        raise DataError(f"{module}: {e}") from None
    except SystemExit as e:  # a CLI's own argument error (argparse), already printed
        if e.code not in (0, None):
            raise DataError(f"stage failed (exit {e.code}): {shlex.join(command)}") from None
    finally:
        gc.collect()  # the stage's models are unreachable now: give their memory back before the next


class SeedRun:
    def __init__(self, a: PipelineArguments, evaluate_sft: bool = True):
        self.a = a
        self.evaluate_sft = evaluate_sft  # a label curve evaluates its SFT judge once, not once per n
        o = a.output_dir
        self.paths = {stage: os.path.join(o, stage) for stage in ALL_STAGES}
        self.paths.update({"tiny": a.base_model or os.path.join(o, "tiny-base"),
                           "data": a.data_dir or os.path.join(o, "data"), "sft": a.sft_model or self.paths["sft"]})
        self.stages = a.stage_list()
        unknown = [s for s in self.stages if s not in ALL_STAGES]
        if unknown:
            raise DataError(f"unknown stage(s) {unknown}; known: {', '.join(ALL_STAGES)}")

    # -- what the stage commands are built from (pipeline.stages) --
    def data(self, name: str) -> str:
        return os.path.join(self.paths["data"], name)

    def samples_from(self, seed: int) -> str | None:
        return self.a.samples_from.replace("{seed}", str(seed)) if self.a.samples_from else None

    def lengths(self, new_tokens: bool = False) -> list[str]:
        """The pipeline's one prompt budget (and judgment length) as flags for a stage."""
        flags = [] if self.a.max_prompt_length is None else ["--max_prompt_length", str(self.a.max_prompt_length)]
        if new_tokens and self.a.max_new_tokens is not None:
            flags += ["--max_new_tokens", str(self.a.max_new_tokens)]
        return flags

    def judge_stages(self) -> list[str]:
        """The stages whose judges are evaluated: the SFT judge (and the base model with
        evaluate_base), and every judge trained now or before."""
        return [stage for key, _, stage, _ in JUDGES
                if (key == "sft" and self.evaluate_sft)
                or (key == "base" and self.evaluate_sft and self.a.evaluate_base)
                or (key not in ("sft", "base") and (stage in self.stages or self.done(stage)))]

    def judges(self) -> list[tuple[str, str, str, str]]:
        """(key, display name, checkpoint, model type) of every judge to evaluate."""
        stages = self.judge_stages()
        return [(key, judge_name(self.a, key), self.paths[stage], kind) for key, _, stage, kind in JUDGES
                if stage in stages]

    # -- the cache --
    def record(self, stage: str) -> StageRecord:
        return StageRecord(self.paths[stage])

    def done(self, stage: str) -> bool:
        rec = self.record(stage).load()
        return rec is not None and rec["status"] == "done"

    def external(self, stage: str) -> bool:
        """The user supplied this stage's output (base_model, data_dir, sft_model): nothing to run or record."""
        return ((stage == "tiny" and bool(self.a.base_model)) or (stage == "data" and bool(self.a.data_dir))
                or (stage == "sft" and bool(self.a.sft_model)))

    def fingerprint(self, stage: str) -> dict:
        """Everything that decides the stage's output (see pipeline/cache.py)."""
        commands = STAGES[stage].commands(self)
        settings = settings_of(commands[0]) if len(commands) == 1 else {
            key: " ".join(f"{k}={v}" for k, v in sorted(settings_of(c).items()))
            for key, c in zip([j[0] for j in self.judges()], commands)}
        inputs = {name: file_fingerprint(self.data(name)) for name in data_of(stage, self.a)}
        needs = list(upstream_of(stage, self.a))  # eval: also every stage whose judge it evaluates
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
                "code": code_version(module_of(commands[0])), "libraries": library_versions()}

    # -- running --
    def run(self) -> None:
        for stage in self.stages:
            if self.external(stage):
                continue
            fingerprint = self.fingerprint(stage)
            action, why = decide(self.record(stage).load(), fingerprint, self.a.force)
            if action == "reuse":
                print(f"[{stage}] reused ({self.paths[stage]}): {why}", flush=True)
                continue
            if action == "redo" and os.path.isdir(self.paths[stage]):
                shutil.rmtree(self.paths[stage])  # outputs of other settings must not be resumed or mixed
            print(f"[{stage}] {'resuming' if action == 'resume' else 'running'}: {why}", flush=True)
            t0 = time.time()
            commands = STAGES[stage].commands(self)
            self.record(stage).start(fingerprint, " && ".join(shlex.join(c) for c in commands))
            if stage == "eval":
                print(self.evaluate(commands), flush=True)
            else:
                for command in commands:
                    execute(command, self.a.isolate_stages)
            self.record(stage).finish(time.time() - t0)
            print(f"[{stage}] finished in {time.time() - t0:.0f}s: {STAGES[stage].summary(self.paths[stage])}",
                  flush=True)
        table = os.path.join(self.paths["eval"], "table.md")
        if os.path.exists(table):
            with open(table, encoding="utf-8") as f:
                print("\nResults\n" + f.read(), flush=True)
        self.run_rounds()

    def evaluate(self, commands: list[list[str]]) -> str:
        """Every judge's evaluation, then the run's table (eval/table.md)."""
        os.makedirs(self.paths["eval"], exist_ok=True)
        rows = []
        for (key, name, _, _), command in zip(self.judges(), commands):
            execute(command, self.a.isolate_stages)
            rows.append((name, read_result(os.path.join(self.paths["eval"], f"{key}.json"))))
        table = results_table(rows, f"{self.a.eval_split}, n={rows[0][1]['n']}")
        with open(os.path.join(self.paths["eval"], "table.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        return table

    def stage_log(self, prefix: str = "") -> dict[str, dict]:
        """This run's finished stages as their records give them: wall seconds, commit, when finished.
        A reused stage gives the run that made it, so a table's manifest covers every run behind
        it, incremental additions included."""
        records = {s: self.record(s).load() for s in self.stages if not self.external(s)}
        return {prefix + s: {k: r.get(k) for k in ("wall_s", "attempts", "commit", "finished")}
                for s, r in records.items()
                if r and r.get("status") == "done"}

    # -- rounds --
    def round_judges(self) -> list[tuple[str, str, str]]:
        """(key, display name, eval file) of the GFRIEND judge of every round after the first."""
        if self.a.rounds < 2 or "mdpo" not in self.stages:
            return []
        return [(f"gfriend_r{r}", f"GFRIEND round {r}",
                 os.path.join(self.a.output_dir, f"round{r}", "eval", "gfriend.json"))
                for r in range(2, self.a.rounds + 1)]

    def run_rounds(self) -> None:
        """Rounds 2.. (iterative self-taught evaluation): each is refinement and M-DPO on the same
        labelled pairs with the previous round's GFRIEND judge as sampler, initial policy and
        reference, then that judge's evaluation."""
        previous = self.paths["mdpo"]
        for r, _ in enumerate(self.round_judges(), start=2):
            print(f"----- round {r}: refinement and M-DPO from {previous} -----", flush=True)
            sub = SeedRun(replace(self.a, seeds=None, label_counts=None, sweep=None, rounds=1, samples_from=None,
                                  output_dir=os.path.join(self.a.output_dir, f"round{r}"), evaluate_base=False,
                                  data_dir=self.paths["data"], sft_model=previous, stages="refine,mdpo,eval"),
                          evaluate_sft=False)
            sub.run()
            previous = sub.paths["mdpo"]
