"""generate.calibration: AUROC of each confidence for right against wrong judgments, pooled and
within a prompt, on constructed samples whose answers are known, and on a refinement run."""
import json
import os

import pytest

from generate.calibration import auroc, calibration, confidences, main, verdict_token_logp, within_prompt_auroc
from generate.sampling import Completion


def _record(item, prompt, correct, score, verdict=None, **extra):
    verdict = verdict or ("A" if correct else "B")
    return {"item_id": item, "prompt_id": prompt, "pos_slot": "A", "verdict": verdict, "correct": verdict == "A",
            "score": score, "ppl": 1.0, **extra}


def test_auroc_counts_ordered_pairs_and_half_ties():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    assert auroc([2, 1], [1, 0]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert auroc([], [1.0]) is None


def test_within_a_prompt_only_pairs_of_the_same_prompt_count():
    # right beats wrong inside each prompt, but prompt 2's scores are all lower
    records = [_record("i1", "p1", True, 0.9), _record("i1", "p1", False, 0.8),
               _record("i2", "p2", True, 0.3), _record("i2", "p2", False, 0.2),
               _record("i3", "p3", True, 0.5)]  # no wrong judgment: no pair
    report = calibration(records)["confidences"]["score"]
    assert report["auroc"] == pytest.approx(4 / 6)  # pooled: 0.3 and 0.5 lose to prompt 1's wrong 0.8
    assert within_prompt_auroc(records, [r["score"] for r in records]) == (1.0, 2)
    assert report["auroc_within_prompt"] == 1.0 and report["within_prompt_pairs"] == 2


def test_agreement_is_the_share_of_the_items_samples_with_the_same_pick():
    records = [_record("i", "p", True, 0.5) for _ in range(3)] + [_record("i", "p", False, 0.5),
                                                                 _record("i", "p", False, 0.5, verdict=None)]
    records[-1]["verdict"] = None
    assert confidences(records)["agreement"] == [0.6, 0.6, 0.6, 0.2, 0.0]
    c = calibration(records)["confidences"]
    assert c["agreement"]["auroc"] == 1.0 and "verdict_prob" not in c  # no record has a verdict log-prob


def test_total_log_prob_and_verdict_prob_come_from_the_records():
    records = [_record("i", "p", True, 0.5, tokens=4, ppl=2.0, verdict_logp=-0.1),
               _record("i", "p", False, 0.5, tokens=2, ppl=2.0)]
    c = confidences(records)
    assert c["total_logp"] == pytest.approx([-4 * 0.6931472, -2 * 0.6931472])
    assert c["verdict_prob"][0] == pytest.approx(0.904837) and c["verdict_prob"][1] is None


def test_the_verdict_token_is_found_in_the_sampled_ids(tiny_model_dir):
    from data.tokens import encode_response
    from models.loading import ModelArguments, tokenizer_of

    tok = tokenizer_of(ModelArguments(model_name_or_path=tiny_model_dir))
    text = "473 has more hundreds.\nVerdict: A"
    ids = encode_response(tok, text, True)
    logps = [-float(i) for i in range(len(ids))]
    got = verdict_token_logp(tok, Completion(text, True, tuple(ids), tuple(logps)))
    assert "A" in tok.convert_ids_to_tokens(ids[int(-got)])  # the token at that index holds the letter
    assert verdict_token_logp(tok, Completion(text, True, tuple(ids[:-2]) + (5, 6), tuple(logps))) is None
    assert verdict_token_logp(tok, Completion("no verdict here", True, tuple(ids), tuple(logps))) is None


def test_the_report_runs_on_a_refinement(sft_dir, synthetic_dir, tmp_path):
    import run_preference_refinement as refine
    from tests.test_refinement import _args

    out = str(tmp_path / "refine")
    refine.main(_args(sft_dir, os.path.join(synthetic_dir, "prefs.jsonl"), out, "--max_items", "8"))
    report = main(["--refine_dir", out])
    with open(os.path.join(out, "samples.jsonl")) as f:
        samples = [json.loads(line) for line in f]
    assert report["samples"] == len(samples) and report["right"] == sum(s["correct"] for s in samples)
    c = report["confidences"]
    assert set(c) == {"score", "total_logp", "verdict_prob", "agreement"}  # sampler scores: every confidence
    for v in c.values():
        lo, hi = v["intervals"]["auroc"]
        assert 0.0 <= lo <= v["auroc"] <= hi <= 1.0 and lo < hi  # items resampled: an interval, not a point
    assert os.path.getsize(os.path.join(out, "calibration.png")) > 0
    assert "| score |" in open(os.path.join(out, "calibration.md")).read()
    # The synthetic task's pairs (found through the refinement's settings): the among-right column too.
    assert report["right_true_reasoning"] is not None and "AUROC among right" in open(
        os.path.join(out, "calibration.md")).read()
    other = tmp_path / "other.jsonl"  # pairs of another task: no true reasoning, no column
    other.write_text("".join(json.dumps({"id": s_id, "question": "q", "answer_pos": "a", "answer_neg": "b"}) + "\n"
                             for s_id in sorted({s["item_id"] for s in samples})))
    report = main(["--refine_dir", out, "--pref_file", str(other), "--output_dir", str(tmp_path / "cal")])
    assert report["right_true_reasoning"] is None and report["confidences"]["score"]["auroc_among_right"] is None


def test_among_right_pairs_only_right_judgments_of_one_prompt_true_against_false_reasoning():
    """Right judgments with the true reasoning (t) against right ones without (f), within a prompt;
    wrong judgments take no part whatever their confidence."""
    from generate.calibration import among_right_labels, calibration

    def rec(item, prompt, correct):
        return {"item_id": item, "prompt_id": prompt, "pos_slot": "A", "verdict": "A" if correct else "B",
                "correct": correct, "ppl": 2.0, "tokens": 4}

    records = [rec("i", "p", True), rec("i", "p", True), rec("i", "p", True), rec("i", "p", False),
               rec("i", "q", True), rec("j", "p", True)]
    faithful = [True, False, False, True, False, True]
    assert among_right_labels(records, faithful) == [True, False, False, None, False, True]
    scores = [0.9, 0.5, 0.95, 0.99, 0.1, 0.2]
    for r, v in zip(records, scores):
        r["score"] = r["ppl_score"] = v
    c = calibration(records, n_boot=20, faithful=faithful)["confidences"]["score"]
    # Only item i, prompt p has both kinds: t=0.9 against f=0.5 (won) and f=0.95 (lost).
    assert c["among_right_pairs"] == 2 and c["auroc_among_right"] == 0.5
