"""RewardBench 2, RM-Bench and JudgeBench: conversion from their real schemas and their scoring
rules for a pairwise generative judge (data/benchmarks.py)."""
import json
import os

import pytest

from data.benchmarks import comparisons, score_item, summarize
from data.prepare import main as prepare_main
from tests.conftest import run_cli

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def _prepare(source, tmp_path):
    out = tmp_path / f"{source}.jsonl"
    prepare_main(["--source", source, "--input", os.path.join(FIX, f"{source}.jsonl"), "--output_file", str(out)])
    return [json.loads(line) for line in out.read_text().splitlines()], json.loads(
        (tmp_path / f"{source}.summary.json").read_text())


def test_the_three_benchmarks_convert_from_their_real_schemas(tmp_path):
    rb2, s = _prepare("rewardbench2", tmp_path)
    assert s["kept"] == 7 and s["comparisons"] == 3 * 6 + 4 and set(s["per_category"]) == {
        "Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"}
    assert rb2[0]["chosen"] == ["The capital of Australia is Canberra."] and len(rb2[0]["rejected"]) == 3
    rmb, s = _prepare("rmbench", tmp_path)
    assert s["kept"] == 5 and all(len(i["chosen"]) == len(i["rejected"]) == 3 for i in rmb)
    jb, s = _prepare("judgebench", tmp_path)
    assert s["kept"] == 3 and s["skipped_by_reason"] == {"label 'A=B' is not A>B or B>A": 1}
    assert jb[1]["chosen"] == ["3 7 9"] and jb[1]["rejected"] == ["3 9 7"]  # label B>A
    assert {i["benchmark"] for i in rb2 + rmb + jb} == {"rewardbench2", "rmbench", "judgebench"}


def test_a_file_in_the_wrong_schema_names_it(tmp_path):
    bad = tmp_path / "rb2.jsonl"
    bad.write_text(json.dumps({"id": 1, "prompt": "q", "chosen": ["a"], "rejected": ["b"]}) + "\n")
    proc = run_cli("data.prepare", "--source", "rewardbench2", "--input", str(bad), "--output_file",
                   str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}: not the 'rewardbench2' schema (row 1 lacks subset)"
    assert not (tmp_path / "o.jsonl").exists()
    broken = tmp_path / "items.jsonl"  # a converted file edited by hand: run_eval names the record
    broken.write_text(json.dumps({"id": "x", "question": "q", "chosen": ["a", "b"], "rejected": ["c", "d", "e"],
                                  "benchmark": "rmbench"}) + "\n")
    from data.schemas import load_eval_rows
    from utils.io import DataError

    with pytest.raises(DataError, match=r"items.jsonl:1: field 'chosen' must hold 3 answer\(s\) for rmbench, got 2"):
        load_eval_rows(str(broken))


def _record(right_orders: list[int]) -> dict:
    """A judged comparison whose orders were right (1), wrong (-1) or unreadable (0)."""
    orders = [{"verdict": None if h == 0 else "A", "correct": h == 1} for h in right_orders]
    return {"orders": orders, "correct": sum(o["correct"] for o in orders) / 2}


def test_rewardbench2_needs_the_chosen_answer_to_win_every_comparison_in_both_orders():
    item = {"chosen": ["c"], "rejected": ["r1", "r2", "r3"]}
    assert comparisons(item) == [(0, 0), (0, 1), (0, 2)]
    win = {(0, j): _record([1, 1]) for j in range(3)}
    assert score_item("rewardbench2", item, win) == {"correct": 1.0}
    assert score_item("rewardbench2", item, {**win, (0, 2): _record([1, -1])}) == {"correct": 0.0}
    assert score_item("rewardbench2", item, {**win, (0, 1): _record([1, 0])}) == {"correct": 0.0}
    scored = [{"category": "Math", "correct": 1.0}, {"category": "Math", "correct": 0.0},
              {"category": "Safety", "correct": 1.0}, {"category": "Ties", "correct": 0.0}]
    s = summarize("rewardbench2", scored)
    assert s["overall"] == pytest.approx((0.5 + 1.0) / 2) == s["accuracy"]  # mean of subsets, Ties apart
    assert s["overall_with_ties"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_rmbench_matrix_hard_is_the_upper_triangle():
    item = {"chosen": ["c0", "c1", "c2"], "rejected": ["r0", "r1", "r2"]}
    # right only when the chosen is at least as styled as the rejected (i >= j): a style-biased judge
    records = {(i, j): _record([1, 1] if i >= j else [-1, -1]) for i, j in comparisons(item)}
    matrix = score_item("rmbench", item, records)["matrix"]
    assert matrix == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    s = summarize("rmbench", [{"category": "safety-refuse", "matrix": matrix},
                              {"category": "math", "matrix": [[0.5] * 3] * 3}])
    assert set(s["categories"]) == {"safety", "math"}  # the safety domains are one
    assert s["categories"]["safety"]["hard"] == 0.0 and s["categories"]["safety"]["easy"] == 1.0
    assert s["categories"]["safety"]["normal"] == 1.0 and s["categories"]["safety"]["avg"] == pytest.approx(6 / 9)
    assert s["hard"] == pytest.approx(0.25) and s["avg"] == pytest.approx((6 / 9 + 0.5) / 2)


def test_judgebench_sums_plus_and_minus_one_over_both_orders():
    item = {"chosen": ["c"], "rejected": ["r"]}
    score = lambda hits: score_item("judgebench", item, {(0, 0): _record(hits)})["correct"]  # noqa: E731
    assert (score([1, 1]), score([1, 0]), score([1, -1]), score([0, 0]), score([-1, 0])) == (1.0, 1.0, 0.0, 0.0, 0.0)
    s = summarize("judgebench", [{"category": "livecodebench", "correct": 1.0},
                                 {"category": "mmlu-pro-math", "correct": 0.0}])
    assert s["accuracy"] == 0.5 and s["categories"]["livecodebench"]["accuracy"] == 1.0


def test_run_eval_scores_the_benchmarks_by_their_rules(sft_dir, tmp_path):
    files = []
    for source in ("rewardbench2", "rmbench", "judgebench"):
        _prepare(source, tmp_path)
        files.append(str(tmp_path / f"{source}.jsonl"))
    out = tmp_path / "results.json"
    proc = run_cli("run_eval.py", "--model_name_or_path", sft_dir, "--eval_files", *files, "--output_file", str(out),
                      "--max_new_tokens", "64", "--max_prompt_length", "200")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    rb2, rmb, jb = (res["results"][f"{s}.jsonl"] for s in ("rewardbench2", "rmbench", "judgebench"))
    assert rb2["comparisons"] == 22 and rmb["comparisons"] == 45 and jb["comparisons"] == 3
    # the item scores recounted from the judged comparisons
    records = res["items"]["judgebench.jsonl"]
    hits = [sum(0 if o["verdict"] is None else (1 if o["correct"] else -1) for o in r["orders"]) for r in records]
    assert jb["accuracy"] == pytest.approx(sum(h > 0 for h in hits) / 3)
    by_item = {}
    for r in res["items"]["rewardbench2.jsonl"]:
        by_item.setdefault(r["item"], []).append(all(o["correct"] for o in r["orders"]))
    math = [all(by_item[k]) for k in (2, 3)]  # the fixture's two Math items
    assert rb2["categories"]["Math"]["accuracy"] == pytest.approx(sum(math) / 2)
    assert 0.0 <= rmb["hard"] <= 1.0 and set(rmb["categories"]) == {"chat", "code", "math", "safety"}
    assert "RewardBench 2 overall, without Ties" in proc.stdout and "RM-Bench avg" in proc.stdout
