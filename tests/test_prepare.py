import json
import os

import pytest

from data.prepare import load_rows, main as prepare_main, prepare, read_exclusions
from tests.conftest import run_cli
from utils.io import DataError

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def convert(source, name, **kw):
    return prepare(source, load_rows(source, os.path.join(FIX, name), None), **kw)


def test_skywork_multi_turn_duplicates_and_skips():
    pairs, s = convert("skywork", "skywork.jsonl")
    assert pairs == [
        {"id": "skywork-0", "question": "What is the capital of France?", "answer_pos": "Paris.",
         "answer_neg": "Lyon.", "category": "helpsteer2", "source": "skywork"},
        {"id": "skywork-1", "question": "User: Write a haiku.\n\nAssistant: Old pond / frog jumps in / splash\n\n"
                                        "User: Now one about rain.",
         "answer_pos": "Soft rain on the roof / ...", "answer_neg": "Rain is wet.", "category": "magpie_ultra",
         "source": "skywork"},
    ]
    assert (s["rows_read"], s["duplicates"], s["skipped"], s["kept"]) == (5, 1, 2, 2)
    assert s["skipped_by_reason"] == {"chosen and rejected have different contexts": 1, "empty answer": 1}


def test_ultrafeedback_skips_ties():
    pairs, s = convert("ultrafeedback", "ultrafeedback.jsonl")
    assert [(p["id"], p["question"], p["answer_pos"], p["answer_neg"]) for p in pairs] == [
        ("uf1", "Explain gravity.", "Mass attracts mass.", "It is magic."),
        ("uf3", "Translate 'cat' to French.", "chat", "chien")]
    assert s["skipped_by_reason"] == {"tie": 1}


@pytest.mark.parametrize("pref,first_pos", [("better", "Use a tension wrench and a pick."),
                                            ("safer", "I can't help with breaking into places, but a locksmith can.")])
def test_pku_better_or_safer(pref, first_pos):
    pairs, s = convert("pku_saferlhf", "pku_saferlhf.jsonl", pku_preference=pref)
    assert pairs[0]["answer_pos"] == first_pos and pairs[0]["question"] == "How do I pick a lock?"
    assert pairs[1]["answer_pos"] == "Keep a regular schedule." and pairs[1]["answer_neg"] == "Take lots of pills."
    assert len(pairs) == 2 and s["skipped_by_reason"] == {"empty answer": 1}
    assert pairs[0]["category"] == f"pku_{pref}"


def test_rewardbench_keeps_subset_and_id():
    pairs, _ = convert("rewardbench", "rewardbench.jsonl")
    assert [(p["id"], p["category"]) for p in pairs] == [
        ("30", "alpacaeval-easy"), ("1200", "llmbar-adver-neighbor"), ("2100", "xstest-should-respond"),
        ("3000", "math-prm")]
    assert pairs[3]["answer_pos"] == "4" and pairs[3]["answer_neg"] == "5"


def test_custom_jsonl_and_overlap_exclusion():
    pairs, s = convert("jsonl", "custom.jsonl")
    assert [p["category"] for p in pairs] == ["medical", "medical"] and s["kept"] == 2
    excl = read_exclusions([os.path.join(FIX, "test_overlap.jsonl")])
    pairs, s = convert("skywork", "skywork.jsonl", exclude=excl)
    assert s["excluded_overlap"] == 1 and s["duplicates"] == 1  # the duplicate is counted once, not as overlap
    assert [p["id"] for p in pairs] == ["skywork-1"]


def test_seeded_few_shot_sample():
    rows = [{"question": f"q{i}", "answer_pos": "a", "answer_neg": "b"} for i in range(50)] + \
           [{"question": "q3", "answer_pos": "a", "answer_neg": "b"}]
    a, s = prepare("jsonl", rows, limit=10, seed=1)
    b, _ = prepare("jsonl", rows, limit=10, seed=1)
    c, _ = prepare("jsonl", rows, limit=10, seed=2)
    assert a == b and a != c and len(a) == 10 and s["duplicates"] == 1 and s["eligible"] == 50
    assert len({p["id"] for p in a}) == 10


def test_wrong_schema_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(DataError, match="not the 'pku_saferlhf' schema"):
        load_rows("pku_saferlhf", os.path.join(FIX, "skywork.jsonl"), None)
    proc = run_cli("data.prepare", "--source", "rewardbench", "--input", os.path.join(FIX, "custom.jsonl"),
                   "--output_file", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "lacks prompt, chosen, rejected, subset" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()
    proc = run_cli("data.prepare", "--source", "skywork", "--input", os.path.join(FIX, "skywork.jsonl"),
                   "--output", str(tmp_path / "o.jsonl"))  # one flag name per concept: the old one says the new
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --output is now --output_file"


def test_cli_writes_pairs_and_summary(tmp_path):
    out = tmp_path / "prefs.jsonl"
    prepare_main(["--source", "skywork", "--input", os.path.join(FIX, "skywork.jsonl"), "--output_file", str(out),
                  "--exclude", os.path.join(FIX, "test_overlap.jsonl")])
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    summary = json.loads((tmp_path / "prefs.summary.json").read_text())
    assert len(rows) == summary["kept"] == 1 and summary["excluded_overlap"] == 1


def test_token_length_report_counts_what_the_budget_would_shorten(tiny_model_dir, tmp_path):
    from data.templates import judge_prompt
    from data.tokens import encode_prompt
    from models.loading import load_tokenizer

    long_rows = [{"question": f"Question {i}?", "answer_pos": "Yes because it is. " * (10 * i + 1), "answer_neg": "No."}
                 for i in range(6)]
    src = tmp_path / "long.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in long_rows))
    out = tmp_path / "prefs.jsonl"
    prepare_main(["--source", "jsonl", "--input", str(src), "--output_file", str(out), "--tokenizer", tiny_model_dir,
                  "--max_prompt_length", "150"])
    report = json.loads((tmp_path / "prefs.summary.json").read_text())["token_lengths"]
    tok = load_tokenizer(tiny_model_dir)
    pairs = [json.loads(line) for line in out.read_text().splitlines()]  # answers stripped by the conversion
    lengths = [len(encode_prompt(tok, judge_prompt(tok, "compare", r["question"], r["answer_pos"], r["answer_neg"])))
               for r in pairs]
    assert report["prompt"]["max"] == max(lengths) and report["max_prompt_length"] == 150
    assert report["prompts_shortened"] == sum(n > 150 for n in lengths) and 0 < report["prompts_shortened"] < 6
    assert report["answer_neg"]["max"] == len(tok("No.", add_special_tokens=False)["input_ids"])
