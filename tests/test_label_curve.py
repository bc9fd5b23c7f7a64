import glob
import gzip
import json
import os

import pytest

from tests.conftest import ROOT, read_jsonl, run_cli, run_pipeline_config
from pipeline.reports import item_scores, main as study_report, paired_difference

CURVE = """
output_dir: {out}
study_table: {out}/curve.md
study_figure: {out}/curve.png
seed: 0
label_counts: "6,12"
rounds: 2
rounds_at: 12
base_model: {pipe}/tiny-base
sft_model: {pipe}/sft
stages: data,refine,mdpo,rft,grpo,eval
n_sft: 300
n_prefs: 12
n_val: 4
n_test: 12
refine_args: "--num_samples 4 --templates compare --max_new_tokens 48 --items_per_chunk 4"
mdpo_args: "--max_steps 2 --per_device_train_batch_size 4"
rft_args: "--loss_type sft --loss_weights 16.0"
grpo_args: "--templates compare --num_generations 4 --per_device_train_batch_size 8 --max_steps 2
  --max_completion_length 48"
eval_args: "--max_new_tokens 48"
"""


@pytest.fixture(scope="module")
def curve(tmp_path_factory, tiny_pipeline):
    """A label curve from the tiny pipeline's base model and SFT judge (one SFT run serves both)."""
    _, pipe, _ = tiny_pipeline
    return run_pipeline_config(tmp_path_factory, "curve", CURVE, pipe=pipe)


def test_a_label_curve_shares_the_sft_judge_and_the_judgments_across_label_counts(curve, tiny_pipeline):
    _, run, _ = curve
    sft = tiny_pipeline[1] / "sft"
    prefs = read_jsonl(run / "data" / "prefs.jsonl")
    assert [p["id"] for p in read_jsonl(run / "n6" / "data" / "prefs.jsonl")] == [p["id"] for p in prefs[:6]]
    big = read_jsonl(run / "n12" / "refine" / "samples.jsonl")
    small = read_jsonl(run / "n6" / "refine" / "samples.jsonl")
    first6 = {str(p["id"]) for p in prefs[:6]}
    drop_level = lambda rows: [{k: v for k, v in r.items() if k != "level"} for r in rows]  # noqa: E731
    assert drop_level(small) == drop_level([r for r in big if r["item_id"] in first6])
    for n in (6, 12):
        for stage in ("mdpo", "rft"):
            cfg = (run / f"n{n}" / stage / "run_config.yaml").read_text()
            assert str(sft) in cfg and str(run / f"n{n}" / "refine" / "pairs.jsonl") in cfg
        assert "- sft\n" in (run / f"n{n}" / "rft" / "run_config.yaml").read_text()
        grpo = (run / f"n{n}" / "grpo" / "run_config.yaml").read_text()  # the rival: same SFT judge, same n labels
        assert str(sft) in grpo and str(run / f"n{n}" / "data" / "prefs.jsonl") in grpo
        assert sorted(p.name for p in (run / f"n{n}" / "eval").glob("*.json")) == ["gfriend.json", "grpo.json",
                                                                                   "rft.json", "stage.json"]
    assert not (run / "sft").exists() and (run / "eval" / "sft.json").exists()  # the given SFT judge, evaluated once
    assert json.loads((run / "eval" / "sft.json").read_text())["model"] == str(sft)


def test_a_second_round_starts_from_the_first_rounds_judge_at_its_label_count(curve):
    _, run, _ = curve
    first, second = run / "n12" / "mdpo", run / "n12" / "round2"
    refine_args = json.loads((second / "refine" / "refine_args.json").read_text())
    assert refine_args["model_name_or_path"] == str(first)  # samples with round 1's judge
    cfg = (second / "mdpo" / "run_config.yaml").read_text()
    assert f"model_name_or_path: {first}" in cfg and str(second / "refine" / "pairs.jsonl") in cfg
    assert sorted(p.name for p in (second / "eval").glob("*.json")) == ["gfriend.json", "stage.json"]
    assert not (run / "n6" / "round2").exists()
    table = (run / "curve.md").read_text()
    acc = 100 * sum(item_scores(str(second / "eval" / "gfriend.json")).values()) / 12
    assert f"| GFRIEND round 2 | – | {acc:.1f} ± 0.0 |" in table


def test_the_curve_table_reports_each_method_and_gfriends_paired_differences(curve):
    _, run, stdout = curve
    table = (run / "curve.md").read_text()
    assert "| method | n = 6 | n = 12 |" in table
    sft = 100 * sum(item_scores(str(run / "eval" / "sft.json")).values()) / 12
    gf8 = item_scores(str(run / "n12" / "eval" / "gfriend.json"))
    gf = 100 * sum(gf8.values()) / 12
    assert f"| SFT judge | {sft:.1f} ± 0.0 | {sft:.1f} ± 0.0 |" in table
    assert "| GFRIEND (M-DPO + 16×NLL) | " in table and f"{gf:.1f} ± 0.0 |\n" in table
    row = next(line for line in table.splitlines() if line.startswith("| GFRIEND − SFT judge"))
    assert row.endswith("|") and row.count("[") == 2 and f"{gf - sft:+.1f} [" in row.split("|")[-2]
    assert "| GFRIEND − RFT (16×NLL) |" in table and "| GFRIEND − GRPO judge (verdict reward) |" in table
    assert (run / "curve.png").stat().st_size > 10_000
    records = {"sft": "eval/sft.json", "n6/gfriend": "n6/eval/gfriend.json", "n12/rft": "n12/eval/rft.json",
               "n12/gfriend_r2": "n12/round2/eval/gfriend.json"}
    for name, source in records.items():  # every number's records beside the table
        assert item_scores(str(run / "records" / "seed0" / f"{name}.json.gz")) == item_scores(str(run / source))
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest["wall_s_per_seed"]) == ["0"]


def test_a_rerun_of_an_unchanged_curve_reuses_every_stage(curve):
    cfg, _, _ = curve
    stdout = run_cli("run_pipeline.py", "--config", str(cfg)).stdout
    said = [line for line in stdout.splitlines() if line.startswith("[") and "] " in line]
    assert said and all("] reused" in line for line in said), said


def test_a_sweep_runs_every_setting_from_the_same_sft_judge_and_judgments(curve):
    cfg, run, _ = curve
    proc = run_cli("run_pipeline.py", "--config", str(cfg), "--label_counts", "", "--rounds", "1",
                   "--stages", "data,refine,mdpo,rft,eval",  # the GRPO judge does not read refinement's levels
                   "--sweep", "threshold=median,q0.3; rft.max_steps=1", "--study_table", str(run / "sweep.md"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = [line for line in proc.stdout.splitlines() if line.startswith(("[tiny]", "[data]", "[sft]"))]
    assert said and all("] reused" in line for line in said), said  # the label curve's SFT judge
    median, q03 = run / "sweep" / "threshold-median-rft.max_steps-1", run / "sweep" / "threshold-q0.3-rft.max_steps-1"
    a, b = read_jsonl(median / "refine" / "samples.jsonl"), read_jsonl(q03 / "refine" / "samples.jsonl")
    assert [r["response"] for r in a] == [r["response"] for r in b]  # judged once, levels rebuilt
    stats = json.loads((q03 / "refine" / "stats.json").read_text())
    scores = sorted(r["score"] for r in b)
    assert scores[int(0.3 * len(scores)) - 1] <= stats["threshold"] <= scores[int(0.3 * len(scores)) + 1]
    assert str(q03 / "refine" / "pairs.jsonl") in (q03 / "mdpo" / "run_config.yaml").read_text()
    # a stage-scoped flag reaches that stage alone, after the flags every trainer shares
    assert "max_steps: 1\n" in (q03 / "rft" / "run_config.yaml").read_text()
    assert "max_steps: 2\n" in (q03 / "mdpo" / "run_config.yaml").read_text()
    table = (run / "sweep.md").read_text()
    gf = 100 * sum(item_scores(str(q03 / "eval" / "gfriend.json")).values()) / 12
    assert f"| threshold=q0.3 rft.max_steps=1 | GFRIEND (M-DPO + 16×NLL) | {gf:.1f} | {gf:.1f} ± 0.0 |" in table
    assert "| (none) | SFT judge |" in table and "| threshold=median rft.max_steps=1 | RFT (16×NLL) |" in table
    # the table's records beside it, prompts left out, give the same per-item scores
    record = run / "records" / "seed0" / q03.relative_to(run) / "gfriend.json.gz"
    assert item_scores(str(record)) == item_scores(str(q03 / "eval" / "gfriend.json"))
    with gzip.open(record, "rt") as f:
        orders = [o for item in next(iter(json.load(f)["items"].values())) for o in item["orders"]]
    assert orders and all("prompt" not in o and o["verdicts"] for o in orders)


def test_a_sweep_grid_sends_pair_settings_to_refinement_and_the_rest_to_the_trainers():
    from pipeline.arguments import PipelineArguments
    from pipeline.stages import judge_name
    from pipeline.studies import sweep_variants, with_flags
    from utils.io import DataError

    variants = sweep_variants(PipelineArguments(stages="sft,refine,mdpo,eval",
                                                sweep="threshold=median,q0.3; alpha=1, 2"))
    assert [v.name for v in variants] == ["threshold=median alpha=1", "threshold=median alpha=2",
                                          "threshold=q0.3 alpha=1", "threshold=q0.3 alpha=2"]
    assert variants[2].flags == {"refine": ["--threshold", "q0.3"], "mdpo": ["--alpha", "1"]}
    assert variants[3].folder == os.path.join("sweep", "threshold-q0.3-alpha-2")
    nll = sweep_variants(PipelineArguments(stages="mdpo,eval", sweep="loss_weights=1.0 4.0,0.0 16.0"))
    assert nll[1].flags == {"mdpo": ["--loss_weights", "0.0", "16.0"]}
    assert nll[1].folder.endswith("loss_weights-0.0-16.0")
    scores = sweep_variants(PipelineArguments(stages="refine,mdpo,eval", sweep="score=ppl,verdict_prob,agreement"))
    assert [v.flags for v in scores] == [{"refine": ["--score", s]} for s in ("ppl", "verdict_prob", "agreement")]
    # a baseline's own grid: bt.flag goes to the BT model alone, rft.flag to RFT after M-DPO's flags
    tuned = sweep_variants(PipelineArguments(stages="bt,eval",
                                             sweep="bt.learning_rate=3e-4,1e-3; rft.num_train_epochs=2"))
    assert tuned[1].flags == {"bt": ["--learning_rate", "1e-3"], "rft": ["--num_train_epochs", "2"]}
    assert tuned[1].name == "bt.learning_rate=1e-3 rft.num_train_epochs=2"
    # each setting's judges are named by the loss that setting ran, a term of weight 0 left out
    named = PipelineArguments(stages="refine,mdpo,rft,eval", sweep="loss_weights=1.0 0.0,0.5 4.0; weighting=none")
    assert [judge_name(with_flags(named, v), "gfriend") for v in sweep_variants(named)] == [
        "GFRIEND (plain DPO)", "GFRIEND (0.5×plain DPO + 4×NLL)"]
    with pytest.raises(DataError, match="stage-scoped flag is stage.flag"):
        sweep_variants(PipelineArguments(stages="eval", sweep="sft.learning_rate=1e-4"))
    with pytest.raises(DataError, match="--sweep must look like"):
        sweep_variants(PipelineArguments(stages="eval", sweep="alpha"))


def test_judgments_of_another_study_are_found_per_seed():
    from pipeline.arguments import PipelineArguments
    from pipeline.runner import SeedRun
    from pipeline.stages import STAGES

    p = SeedRun(PipelineArguments(stages="refine", seed=3, samples_from="runs/seed{seed}/n600/refine"))
    command, calibration = STAGES["refine"].commands(p)  # refinement, then its calibration report
    assert command[command.index("--samples_from") + 1] == "runs/seed3/n600/refine"
    assert "generate.calibration" in calibration
    assert p.samples_from(0) == "runs/seed0/n600/refine"
    assert SeedRun(PipelineArguments(stages="refine")).samples_from(3) is None


def test_paired_differences_resample_items_within_each_seed():
    same = [{"a": 1.0, "b": 0.0}, {"a": 0.5, "b": 1.0, "c": 0.0}]
    assert paired_difference(same, same) == (0.0, 0.0, 0.0)
    right = [{str(i): 1.0 for i in range(50)}]
    wrong = [{str(i): 0.0 for i in range(50)}]
    assert paired_difference(right, wrong) == (100.0, 100.0, 100.0)
    half = [{str(i): float(i % 2) for i in range(400)}]
    d, lo, hi = paired_difference(half, [{str(i): 0.0 for i in range(400)}], n_boot=4000)
    assert d == 50.0 and 44.0 < lo < 47.5 and 52.5 < hi < 56.0  # about 50 +- 1.96 * 2.5
    with pytest.raises(Exception, match="different items"):
        paired_difference(right, [{"x": 1.0}])


def test_paired_differences_resample_seeds_too():
    """Two seeds whose differences are 100 and 0 points: resampling items alone would say 50 [50, 50];
    a draw may take either seed twice, so the interval spans both seeds' own differences."""
    from pipeline.reports import seed_differences

    a = [{str(i): 1.0 for i in range(50)}, {str(i): 0.0 for i in range(50)}]
    b = [{str(i): 0.0 for i in range(50)}, {str(i): 0.0 for i in range(50)}]
    assert seed_differences(a, b) == [100.0, 0.0]
    assert paired_difference(a, b) == (50.0, 0.0, 100.0)
    noisy = [{str(i): float(i % 2) for i in range(400)}] * 3  # three seeds that agree: the items' spread remains
    d, lo, hi = paired_difference(noisy, [{str(i): 0.0 for i in range(400)}] * 3, n_boot=4000)
    assert d == 50.0 and 45.0 < lo < 49.0 and 51.0 < hi < 55.0  # about 50 +- 1.96 * 2.5 / sqrt(3)
    assert paired_difference(a[:1], b[:1]) == (100.0, 100.0, 100.0)


def test_the_diff_table_shows_each_seeds_difference(tmp_path):
    from pipeline.reports import diff_table

    for judge, per_seed in {"x": ([1.0] * 4, [1.0, 1.0, 0.0, 0.0]), "y": ([0.0] * 4, [0.0] * 4)}.items():
        for s, scores in enumerate(per_seed):
            rows = [{"id": str(i), "correct": c} for i, c in enumerate(scores)]
            (tmp_path / f"{judge}{s}.json").write_text(json.dumps({"items": {"t.jsonl": rows}}))
    table = diff_table([("X", str(tmp_path / "x{seed}.json")), ("Y", str(tmp_path / "y{seed}.json"))], [0, 1])
    assert "| X − Y | +75.0 [" in table and table.rstrip().endswith("| +100.0, +50.0 |")


def test_the_orders_table_shows_a_judge_that_says_one_slot_whatever_it_reads(tmp_path, capsys):
    """A judge saying A on every instruction item scores 50% there: right in one order only. The
    table shows it, for an evaluation file, a refinement's samples and the pairs' chosen judgments."""
    from pipeline.reports import main as report

    def order(pos, verdict):
        return {"pos_slot": pos, "verdict": verdict}

    items = [{"id": "i0", "category": "instruction", "orders": [order("A", "A"), order("B", "A")]},
             {"id": "i1", "category": "instruction", "orders": [order("A", "A"), order("B", "A")]},
             {"id": "s0", "category": "safety", "orders": [order("A", "A"), order("B", None)]}]
    (tmp_path / "eval.json").write_text(json.dumps({"items": {"test.jsonl": items}}))
    refine = tmp_path / "refine"
    refine.mkdir()
    samples = [{"item_id": "i0", "category": "instruction", "pos_slot": p, "verdict": v, "level": lv} for p, v, lv in
               [("A", "A", "SA"), ("A", "B", "WR"), ("B", "B", "SA"), ("B", "B", "WA")]]
    (refine / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    pair = {"item_id": "i0", "chosen_verdict": "B", "chosen_level": "WA"}
    (refine / "pairs.jsonl").write_text(json.dumps(pair) + "\n")
    report(["orders", f"J={tmp_path}/eval.json", f"S={refine}/samples.jsonl", f"P={refine}/pairs.jsonl"])
    table = capsys.readouterr().out
    assert "| J | all | 6 | 100.0% | 0.0% | 83.3% | 16.7% | – | – |" in table
    assert "|  | instruction | 4 | 100.0% | 0.0% | 100.0% | 0.0% | – | – |" in table
    assert "|  | safety | 2 | 100.0% | 0.0% | 50.0% | 50.0% | – | – |" in table
    assert "| S | all | 4 | 50.0% | 100.0% | 25.0% | 0.0% | 100.0% | 50.0% |" in table
    assert "| P | all | 1 | – | 100.0% | 0.0% | 0.0% | – | 0.0% |" in table


@pytest.mark.parametrize("name", ["demo.yaml", *sorted(os.path.relpath(p, os.path.join(ROOT, "configs")) for p in
                                                 glob.glob(os.path.join(ROOT, "configs", "studies", "*.yaml")))])
def test_the_pipeline_configs_parse_and_plan(name, monkeypatch):
    import re
    import shlex
    from dataclasses import replace

    import run_bt_baseline
    import run_m_dpo
    import run_preference_refinement
    from pipeline.arguments import PipelineArguments, check_combinations
    from pipeline.runner import SeedRun
    from pipeline.stages import STAGES, module_of, settings_of
    from pipeline.studies import label_counts, sweep_variants
    from utils.config import parse_args

    monkeypatch.chdir(ROOT)
    (a,) = parse_args((PipelineArguments,), ["--config", os.path.join("configs", name)])
    check_combinations(a)
    run = SeedRun(a)
    for stage in run.stages:  # every stage runs only the scripts its table entry names, with settings they parse
        for command in STAGES[stage].commands(run):
            assert module_of(command) in STAGES[stage].scripts
            assert settings_of(command)["script"] == module_of(command)
    if a.label_counts:
        assert max(label_counts(a)) <= a.n_prefs
    if a.sweep:
        assert len(sweep_variants(a)) == {"studies/toy_mdpo_parts.yaml": 12, "studies/toy_weights_grid.yaml": 8}[name]
    # a study runs for hours before its M-DPO stage would reject a misspelt sweep flag: the config's sweep
    # and every `--sweep "..."` its comments show build variants the trainer and refinement accept
    with open(os.path.join("configs", name), encoding="utf-8") as f:
        shown = re.findall(r'--sweep "([^"]+)"', f.read())
    for sweep in filter(None, [a.sweep, *shown]):
        for v in sweep_variants(replace(a, sweep=sweep, stages="refine,mdpo,eval", evaluate_base=False)):
            run_m_dpo.parse(["--config", a.mdpo_config, "--output_dir", "unused", *v.flags.get("mdpo", [])])
            if "refine" in v.flags:
                run_preference_refinement.parse(["--config", a.refine_config, *v.flags["refine"]])
            if "bt" in v.flags:
                run_bt_baseline.parse(["--config", a.bt_config, *v.flags["bt"]])
            if "rft" in v.flags:
                run_m_dpo.parse(["--config", a.mdpo_config, "--output_dir", "unused", *v.flags.get("mdpo", []),
                                 *shlex.split(a.rft_args), *v.flags["rft"]])
    if name == "studies/real_model.yaml":  # the real-model study: the CPU recipe, the base model as a zero-shot judge
        assert a.evaluate_base and [k for k, *_ in run.judges()][:2] == ["base", "sft"]
        assert all("smollm2-135m" in c for c in (a.sft_config, a.refine_config, a.mdpo_config, a.bt_config))


def _eval_file(path, correct):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"t{i}", "correct": c} for i, c in enumerate(correct)]
    text = json.dumps({"items": {"test.jsonl": rows}, "results": {"test.jsonl": {"n": len(rows)}}})
    if path.suffix == ".gz":  # the records committed under results/
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def test_the_diff_command_pairs_judges_of_different_runs_item_by_item(tmp_path, capsys):
    for seed in (0, 1):
        _eval_file(tmp_path / f"s{seed}" / "a.json.gz", [1.0] * 30 + [0.0] * 10)
        _eval_file(tmp_path / f"s{seed}" / "b.json", [1.0] * 20 + [0.0] * 20)
    study_report(["diff", "--seeds", "0,1", f"A={tmp_path}/s{{seed}}/a.json.gz", f"B={tmp_path}/s{{seed}}/b.json"])
    out = capsys.readouterr().out
    assert "| A | 75.0 ± 0.0 |" in out and "| B | 50.0 ± 0.0 |" in out
    d, lo, hi = (float(x) for x in out.split("| A − B | ")[1].split(" |")[0].replace("[", "").replace("]", "")
                 .replace(",", "").split())
    assert d == 25.0 and 10.0 < lo < 25.0 < hi < 40.0
    _eval_file(tmp_path / "s0" / "c.json", [1.0] * 39)  # another item set: refused, not averaged
    with pytest.raises(SystemExit, match="different items"):
        study_report(["diff", "--seeds", "0", f"A={tmp_path}/s0/a.json.gz", f"C={tmp_path}/s0/c.json"])


def test_the_table_command_averages_seeds_run_one_at_a_time_per_category(tmp_path, capsys):
    for seed, (acc, cat) in enumerate([(0.5, 0.4), (0.7, 0.8)]):
        path = tmp_path / f"seed{seed}" / "records" / "gfriend.json.gz"
        path.parent.mkdir(parents=True)
        result = {"n": 10, "accuracy": acc, "categories": {"safety": {"accuracy": cat}}}
        with gzip.open(path, "wt") as f:
            f.write(json.dumps({"items": {"test.jsonl": []}, "results": {"test.jsonl": result}}))
    study_report(["table", "--seeds", "0,1", "--split", "val",
                  f"GFRIEND={tmp_path}/seed{{seed}}/records/gfriend.json.gz"])
    out = capsys.readouterr().out
    assert "| GFRIEND | 60.0 ± 14.1 | 60.0 ± 28.3 |" in out and "held-out val pairs" in out and "seeds 0, 1." in out


def test_the_training_command_reports_level_gaps_and_log_prob_drift(tmp_path, capsys):
    run = tmp_path / "n600"
    (run / "refine").mkdir(parents=True)
    (run / "refine" / "pairs.jsonl").write_text("".join(json.dumps({"gap": g, "chosen_verdict": v}) + "\n"
                                                        for g, v in zip([2, 4, 4, 3, 4], "AABAB")))
    (run / "rft").mkdir()
    logs = [{"loss": 1.0, "logps/chosen": -3.0, "logps/rejected": -10.0, "rewards/margins": 0.0,
             "rewards/accuracies": 0.5}, {"train_loss": 0.9},
            {"loss": 0.5, "logps/chosen": -2.5, "logps/rejected": -9.0, "rewards/margins": 0.1,
             "rewards/accuracies": 0.75, "weights/mean": 1.25}]
    logs[1], logs[2] = logs[2], logs[1]
    (run / "rft" / "trainer_state.json").write_text(json.dumps({"log_history": logs}))
    study_report(["training", str(run)])
    row = capsys.readouterr().out.splitlines()[2]
    assert row == (f"| {run} | 5 | 2: 1, 3: 1, 4: 3 | 60.0% | rft | -3.00 → -2.50 | -10.00 → -9.00 | 0.000 → 0.100 | "
                   "0.75 | 1.25 |")
