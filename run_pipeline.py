"""The whole GFRIEND pipeline in one command:

    python run_pipeline.py --config configs/demo.yaml [--force] [--stages sft,refine,mdpo,eval]

tiny model (unless `base_model` names one) -> synthetic data -> SFT -> preference refinement ->
M-DPO -> evaluation (plus the baselines listed in `stages`). Each stage is the same script a user
runs by hand, called with the files the stage before it wrote (pipeline/stages.py).

A stage is reused only when what produced its output is unchanged (pipeline/cache.py: its settings,
the data files it reads, the records of the stages before it, the code it runs and the library
versions); otherwise it runs again, with one line saying why ("sft: learning_rate changed 0.003 →
0.001"), and so does every stage after it. A stage killed midway resumes when nothing changed.
--force redoes the listed stages.

Studies (pipeline/studies.py): `seeds` repeats the run per seed (mean ± std table); `label_counts`
trains every method on the first n labelled pairs for each n from one SFT judge and one set of
judgments per seed (a label curve, with GFRIEND's paired differences and bootstrap intervals);
`sweep` runs a grid of M-DPO and pair-building settings the same way; `rounds` repeats refinement ->
M-DPO from the last round's judge.
"""
from __future__ import annotations

from pipeline.arguments import PipelineArguments, check_combinations
from pipeline.runner import SeedRun
from pipeline.studies import run_label_curve, run_seeds, run_sweep
from utils.config import parse_args, run_main


def main(argv=None) -> None:
    (a,) = parse_args((PipelineArguments,), argv)
    check_combinations(a)
    if a.label_counts:
        run_label_curve(a)
    elif a.sweep:
        run_sweep(a)
    elif a.seeds:
        run_seeds(a)
    else:
        SeedRun(a).run()


if __name__ == "__main__":
    run_main(main)
