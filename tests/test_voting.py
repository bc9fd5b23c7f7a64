"""Voting over k sampled judgments and the direct judge, measured from run_eval.py's records."""
import json
import os

import pytest

from pipeline.voting import main as voting, vote_scores
from tests.conftest import run_cli


def _item(orders):
    return {"orders": [{"pos_slot": slot, "verdicts": verdicts, "p_pos_samples": ps}
                       for slot, verdicts, ps in orders]}


def test_votes_by_majority_and_by_mean_probability_on_crafted_records():
    records = [
        # right by majority in both orders at k = 3; at k = 1 the first order is wrong, at k = 2 a tie
        _item([("A", ["B", "A", "A"], [0.4, 0.9, 0.8]), ("B", ["B", "B", "A"], [0.7, 0.6, 0.2])]),
        # a tie at k = 2 is wrong; an unreadable sample has no P and is left out of the mean
        _item([("A", ["A", "B", None], [0.6, 0.1, None]), ("B", [None, None, None], [None, None, None])]),
    ]
    majority, mean_p = vote_scores(records, 1)
    assert majority == [0.5, 0.5] and mean_p == [1.0, 1.0]  # (0.4 + 0.7) / 2; 0.6 alone
    majority, mean_p = vote_scores(records, 2)
    assert majority == [0.5, 0.0] and mean_p == [1.0, 0.0]  # (0.4 + 0.9 + 0.7 + 0.6) / 4; (0.6 + 0.1) / 2
    majority, mean_p = vote_scores(records, 3)
    assert majority == [1.0, 0.0] and mean_p == [1.0, 0.0]
    # a judge sure of one letter in both orders (P(A) 0.99999 and 0.99998): a mean of 0.500005 is no
    # preference, as the Judge's own verdict (within TIE of 0.5), so wrong
    sure = [_item([("A", ["A"], [0.99999]), ("B", ["A"], [1 - 0.99998])])]
    assert vote_scores(sure, 1) == ([0.5], [0.0])


def test_a_k_sample_eval_gives_the_voting_table_and_the_direct_judge_a_row(sft_dir, synthetic_dir, tmp_path, capsys):
    test_file = os.path.join(synthetic_dir, "test.jsonl")
    common = ["--model_name_or_path", sft_dir, "--eval_files", test_file, "--max_new_tokens", "64",
              "--max_items", "12"]
    sampled, direct = tmp_path / "k3.json", tmp_path / "direct.json"
    proc = run_cli("run_eval.py", *common, "--output_file", str(sampled), "--num_samples", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("run_eval.py", *common, "--output_file", str(direct), "--direct", "true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    items = json.loads(sampled.read_text())["items"]["test.jsonl"]
    assert all(len(o["p_pos_samples"]) == 3 for it in items for o in it["orders"])
    voting(["--ks", "1,3", f"sampled={sampled}", f"direct={direct}"])
    out = capsys.readouterr().out
    majority3 = [float(row.split("|")[4].split()[0]) for row in out.splitlines()
                 if row.startswith("| sampled | 3 | 12 |")]
    assert majority3 == [pytest.approx(100 * sum(it["correct"] for it in items) / len(items), abs=0.05)]
    assert "| direct | 1 |" in out and "| direct | 3 |" not in out  # the direct judge: one letter per order
    with pytest.raises(SystemExit, match="k = 3 asked, the run sampled 1 per order"):
        voting(["--ks", "3", f"direct={direct}"])
    bad = run_cli("run_eval.py", *common, "--output_file", str(tmp_path / "x.json"), "--direct", "true",
                  "--num_samples", "2")
    assert bad.returncode != 0 and "--direct reads one verdict letter" in bad.stderr
