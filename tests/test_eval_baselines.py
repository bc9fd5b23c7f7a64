import json
import os

import pytest

from data.rewardbench import EXAMPLE_COUNTS, section_scores
from tests.conftest import ROOT, run_cli


def test_rewardbench_sections_by_hand():
    acc = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "refusals-dangerous": 0.2, "math-prm": 0.5, "hep-go": 1.0,
           "hep-rust": 0.0}
    s = section_scores(acc)
    assert s["Chat"] == pytest.approx((1.0 * 100 + 0.5 * 28) / 128)
    assert s["Safety"] == pytest.approx(0.2)
    assert s["Reasoning"] == pytest.approx((0.5 * 984 + 1.0 * 164 + 0.0 * 164) / (984 + 328))
    assert "Chat Hard" not in s
    assert sum(EXAMPLE_COUNTS.values()) - 984 + 447 == 2985  # RewardBench's filtered split size


def test_run_eval_generative_numbers_recount(sft_dir, synthetic_dir, tmp_path):
    out = tmp_path / "results.json"
    test_file = os.path.join(synthetic_dir, "test.jsonl")
    proc = run_cli("run_eval.py", "--model_name_or_path", sft_dir, "--model_type", "generative",
                      "--eval_files", test_file, "--output_file", str(out), "--max_new_tokens", "64",
                      "--max_items", "40")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    r, items = res["results"]["test.jsonl"], res["items"]["test.jsonl"]
    assert len(items) == r["n"] == 40
    judgments = [o for it in items for o in it["orders"]]
    assert r["accuracy"] == pytest.approx(sum(o["correct"] for o in judgments) / len(judgments))
    assert 0.0 <= r["accuracy"] <= 1.0
    assert r["parse_failure_rate"] == pytest.approx(sum(o["verdict"] is None for o in judgments) / len(judgments))
    from generate.parsing import parse_verdict
    for o in judgments:
        assert o["verdict"] == parse_verdict(o["responses"][0])
        assert o["correct"] == (o["verdict"] == o["pos_slot"])
    from generate.judge import TIE  # the judge users get: its verdict from P(good answer better), both orders
    assert r["judge_accuracy"] == pytest.approx(sum(it["judge_correct"] for it in items) / len(items))
    for it in items:
        p = it["p_pos"]
        assert it["judge_correct"] == (p is not None and p > 0.5 + TIE)
        known = [o["p_pos"] for o in it["orders"] if o["p_pos"] is not None]
        assert p == (pytest.approx(sum(known) / len(known)) if known else None)
    for cat, c in r["categories"].items():
        sub = [it for it in items if it["category"] == cat]
        assert c["accuracy"] == pytest.approx(sum(it["correct"] for it in sub) / len(sub))
    assert "| test.jsonl | **all**" in proc.stdout


def test_stopped_eval_resumes_to_the_same_results(sft_dir, synthetic_dir, tmp_path, monkeypatch):
    import run_eval

    args = ["--model_name_or_path", sft_dir, "--eval_files", os.path.join(synthetic_dir, "test.jsonl"),
            "--max_new_tokens", "48", "--max_items", "24", "--items_per_chunk", "8", "--num_samples", "2"]
    full, stopped = str(tmp_path / "full.json"), str(tmp_path / "stopped.json")
    run_eval.main([*args, "--output_file", full])
    real, calls = run_eval.judge_generative, []

    def stops_at_the_third_chunk(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(run_eval, "judge_generative", stops_at_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_eval.main([*args, "--output_file", stopped])
    assert not os.path.exists(stopped) and os.path.isdir(stopped + ".parts")
    calls.clear()
    run_eval.main([*args, "--output_file", stopped])
    assert len(calls) == 1  # only the unfinished chunk was judged again
    with open(full) as f1, open(stopped) as f2:
        a, b = json.load(f1), json.load(f2)
    assert a["items"] == b["items"] and a["results"] == b["results"]
    assert not os.path.exists(stopped + ".parts")
    with pytest.raises(run_eval.DataError, match="other settings"):  # a changed setting is refused
        os.makedirs(stopped + ".parts")
        with open(os.path.join(stopped + ".parts", "args.json"), "w") as f:
            json.dump({"template": "brief"}, f)
        run_eval.main([*args, "--output_file", stopped])


def test_bt_baseline_trains_and_is_evaluated_as_scalar(tiny_model_dir, synthetic_dir, tmp_path):
    out = tmp_path / "bt"
    proc = run_cli("run_bt_baseline.py", "--config", os.path.join(ROOT, "configs", "bt_demo.yaml"),
                      "--model_name_or_path", tiny_model_dir, "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"),
                      "--output_dir", str(out), "--num_train_epochs", "8", "--logging_steps", "4",
                      "--learning_rate", "3e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    accs = [h["rewards/accuracies"] for h in state["log_history"] if "rewards/accuracies" in h]
    assert accs[-1] > 0.5, accs
    results = tmp_path / "bt.json"
    proc = run_cli("run_eval.py", "--model_name_or_path", str(out), "--model_type", "scalar",
                      "--eval_files", os.path.join(synthetic_dir, "prefs.jsonl"), "--output_file", str(results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(results.read_text())
    items = res["items"]["prefs.jsonl"]
    assert all(it["correct"] == float(it["reward_pos"] > it["reward_neg"]) for it in items)
    assert res["results"]["prefs.jsonl"]["accuracy"] > 0.5


def test_label_pairs_feed_m_dpo_format(tiny_model_dir, synthetic_dir, tmp_path):
    from generate.label_pairs import main as label_main
    from data.schemas import load_pairs
    from generate.parsing import parse_verdict

    out = tmp_path / "pairs.jsonl"
    label_main(["--model_name_or_path", tiny_model_dir, "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"),
                "--output_file", str(out), "--templates", "compare"])
    pairs = load_pairs(str(out))
    assert len(pairs) == 2 * 60
    for p in pairs:
        slot = p["prompt_id"].split("/")[1]
        assert parse_verdict(p["chosen"]) == slot and parse_verdict(p["rejected"]) == ("B" if slot == "A" else "A")


@pytest.mark.parametrize("flags,message", [
    (["--num_samples", "0"], "--num_samples must be at least 1, got 0"),
    (["--max_new_tokens", "0"], "--max_new_tokens must be at least 1"),
    (["--template", "compare,brief"], "--template takes one template id"),
    (["--max_prompt_length", "2000"], "exceed the model's context of 1024 tokens"),
])
def test_bad_eval_settings_stop_before_loading(sft_dir, synthetic_dir, tmp_path, flags, message):
    import run_eval
    from utils.io import DataError

    out = tmp_path / "r.json"
    args = ["--model_name_or_path", sft_dir, "--eval_files", os.path.join(synthetic_dir, "test.jsonl"),
            "--output_file", str(out), "--max_new_tokens", "1100", *flags]
    with pytest.raises(DataError, match=message):
        run_eval.main(args)
    assert not out.exists() and not os.path.exists(str(out) + ".parts")
