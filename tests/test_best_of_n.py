"""Best-of-N: the knockout, the choosers' scores, and run_best_of_n.py end to end at the smallest size."""
import json
import os

import numpy as np
import pytest

from generate.best_of_n import chooser_scores, knockout, named_paths, sizes
from tests.conftest import run_cli
from toy.checker import check_answer


def test_a_knockout_of_n_gives_every_smaller_brackets_winner_in_n_minus_one_matches():
    records = [{"id": "q", "question": "Which is larger, 1 or 2?",
                "candidates": ["a", "bbbb", "cc", "ddd", "eeeeee", "f", "gg", "hhhhh"]}]
    calls = []

    def longer_first(rows):  # prefers the longer answer; no preference between equal lengths
        calls.append(len(rows))
        return [None if len(r["answer_a"]) == len(r["answer_b"]) else float(len(r["answer_a"]) > len(r["answer_b"]))
                for r in rows]

    (out,) = knockout(records, longer_first)
    assert out["picks"] == {"2": 1, "4": 1, "8": 4}  # "bbbb"; "bbbb" over "ddd"; "eeeeee" overall
    assert len(out["matches"]) == 7 and calls == [4, 2, 1]  # one call per round over all questions
    tie = knockout([{"id": "t", "question": "q", "candidates": ["x", "y"]}], lambda rows: [0.5])
    assert tie[0]["picks"] == {"2": 0}  # exactly 0.5 sends the first one on


def test_choosers_are_scored_against_the_random_pick_and_the_oracle():
    candidates = [{"id": "a", "fates": ["wrong", "right", "wrong", "unreadable"]},
                  {"id": "b", "fates": ["wrong", "wrong", "wrong", "right"]}]
    picks = {"judge": [{"id": "a", "picks": {"2": 1, "4": 1}}, {"id": "b", "picks": {"2": 0, "4": 2}}]}
    scores = chooser_scores(candidates, picks)
    assert scores["judge"] == {2: [1.0, 0.0], 4: [1.0, 0.0]}
    assert scores["random pick"] == {2: [0.5, 0.0], 4: [0.25, 0.25]}
    assert scores["oracle (pass@n)"] == {2: [1.0, 0.0], 4: [1.0, 1.0]}
    assert scores["pass@1 (the policy)"][4] == [0.25, 0.25]


def test_settings_are_checked():
    assert sizes(8) == [2, 4, 8]
    with pytest.raises(ValueError, match="power of two"):
        sizes(6)
    assert named_paths("sft=out/sft, gfriend=out/g", "judges") == {"sft": "out/sft", "gfriend": "out/g"}
    with pytest.raises(ValueError, match="name=path"):
        named_paths("out/sft", "judges")


def test_run_best_of_n_end_to_end_resumes_and_adds_a_judge(sft_dir, tiny_model_dir, synthetic_dir, tmp_path):
    out = tmp_path / "bon"
    common = ["--policy", sft_dir, "--questions", os.path.join(synthetic_dir, "test.jsonl"), "--output_dir", str(out),
              "--num_candidates", "4", "--max_questions", "6", "--items_per_chunk", "3", "--max_new_tokens", "24",
              "--judge_max_new_tokens", "48", "--judge_max_prompt_length", "200"]
    proc = run_cli("run_best_of_n.py", *common, "--judges", f"sft={sft_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    candidates = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(candidates) == 6 and all(len(c["candidates"]) == 4 for c in candidates)
    assert all(c["fates"] == [check_answer(c["question"], a) for a in c["candidates"]] for c in candidates)
    picks = [json.loads(line) for line in (out / "picks_sft.jsonl").read_text().splitlines()]
    for p in picks:
        assert len(p["matches"]) == 3 and p["picks"]["4"] == p["matches"][-1]["winner"]
        assert p["picks"]["2"] == p["matches"][0]["winner"]
    table = (out / "table.md").read_text()
    assert "| sft |" in table and "| oracle (pass@n) |" in table and "n = 4" in table

    # stopped inside the judge's second chunk, started again with a scalar judge added: the policy's
    # answers and the first judge's finished chunk are reused, the same picks come out
    lines = (out / "picks_sft.jsonl").read_text().splitlines()
    (out / "picks_sft.jsonl").write_text("\n".join(lines[:4]) + "\n")
    (out / "table.md").unlink()
    proc = run_cli("run_best_of_n.py", *common, "--judges", f"sft={sft_dir}", "--scalar_judges", f"bt={tiny_model_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()] == candidates
    assert [json.loads(line) for line in (out / "picks_sft.jsonl").read_text().splitlines()] == picks
    for p in (json.loads(line) for line in (out / "picks_bt.jsonl").read_text().splitlines()):
        assert all(p["picks"][str(n)] == int(np.argmax(p["scores"][:n])) for n in (2, 4))
    results = json.loads((out / "results.json").read_text())
    oracle = results["accuracy"]["oracle (pass@n)"]["4"][0]
    assert all(results["accuracy"][c]["4"][0] <= oracle for c in ("sft", "bt", "random pick"))
    made = json.loads((out / "manifest.json").read_text())
    assert "run_best_of_n.py" in made["command"] and "--scalar_judges" in made["command"] and made["wall_s"] > 0

    bad = run_cli("run_best_of_n.py", *common, "--judges", f"sft={tiny_model_dir}")
    assert bad.returncode != 0 and "the judge named 'sft' was another checkpoint" in bad.stderr
    bad = run_cli("run_best_of_n.py", *common, "--num_candidates", "6")
    assert bad.returncode != 0 and "--num_candidates must be a power of two" in bad.stderr
