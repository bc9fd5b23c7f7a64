"""SFT rows from labelled pairs alone (run_bootstrap_cot.py): the hint filter, the reasoning a row
keeps, de-duplication, the cap per item and the answer-order balance, and both modes end to end on
the tiny judge (the real model's run is in test_real_model.py)."""
import json
import os

import pytest

from tests.conftest import read_jsonl, run_cli

LEAKS = [
    "As stated, answer A is better.",
    "I was told that B is the better one, so B.",
    "We are given that A is correct.",
    "The label says A, and 7 > 3 agrees.",
    "Given the hint, B wins.",
    "According to the instructions, answer B is better.",
    "You said B is better; B refuses the harmful request.",
    "The prompt says A is better.",
    "Answer A is known to be the better one.",
    # the hint's own words echoed back
    "In two or three sentences, explain why: 4 < 7.",
]
CLEAN = [
    "A says 923: right. B says 697: wrong.",
    "The request is about cooking, which is safe. Answer A helps. Answer B refuses.",
    "A gives 2 4 6 8: in order, right. B gives 2 6 4 8: 6 > 4, wrong.",
    "Both answers name a number; the larger is 473, which A states.",
    "Step by step: compare the hundreds digit first, then the tens.",
]


@pytest.mark.parametrize("text", LEAKS)
def test_a_judgment_that_leans_on_the_hint_is_caught(text):
    from generate.bootstrap import leaks_hint

    assert leaks_hint(text)


@pytest.mark.parametrize("text", CLEAN)
def test_reasoning_of_its_own_passes_the_hint_filter(text):
    from generate.bootstrap import leaks_hint

    assert not leaks_hint(text)


def test_a_row_keeps_the_reasoning_before_the_last_verdict_line():
    from generate.bootstrap import judgment_fate, reasoning_before_verdict

    assert reasoning_before_verdict("4 < 7, so B.\n**Verdict:** B\nHope this helps!") == ("B", "4 < 7, so B.")
    assert reasoning_before_verdict("Verdict: A? No.\nB is sorted.\nVerdict: B") == (
        "B", "Verdict: A? No.\nB is sorted.")
    assert reasoning_before_verdict("B is sorted, so it is better.") == (None, "")
    assert judgment_fate("filter", "A", "x\nVerdict: A", finished=False)[0] == "unfinished"
    assert judgment_fate("filter", "A", "no verdict here", True)[0] == "unparseable"
    assert judgment_fate("filter", "A", "4 > 3\nVerdict: B", True)[0] == "wrong_verdict"
    assert judgment_fate("filter", "A", "Verdict: A", True)[0] == "no_reasoning"
    assert judgment_fate("rationalize", "A", "As stated, A.\nVerdict: A", True)[0] == "hint_leak"
    assert judgment_fate("filter", "A", "B).\nVerdict: A", True)[0] == "no_reasoning"  # too short to teach
    assert judgment_fate("filter", "A", "A: 1 5 3\nVerdict: A", True)[0] == "no_reasoning"
    assert judgment_fate("filter", "A", "As stated, A is sorted.\nVerdict: A", True) == (
        "candidate", "As stated, A is sorted.")


def _candidate(item, slot, n, category="c", reasoning=None, template="compare"):
    return {"item_id": item, "category": category, "pos_slot": slot, "template": template, "temperature": 1.0,
            "sample": n, "fate": "candidate", "reasoning": reasoning or f"{item} {slot} reasoning {n}"}


def test_rows_are_deduplicated_capped_per_item_and_balanced_for_order_per_category():
    from generate.bootstrap import select_rows

    records = ([_candidate("i1", "A", n) for n in range(5)] + [_candidate("i1", "B", 0)]
               + [_candidate("i2", "A", n) for n in range(3)]
               + [_candidate("i2", "A", 9, reasoning="i2 A reasoning 0")]  # the same reasoning again
               + [_candidate("j1", "A", 0, "d"), _candidate("j1", "B", 0, "d"), _candidate("j2", "B", 1, "d")]
               + [{**_candidate("j2", "A", 2, "d"), "fate": "wrong_verdict"}])
    select_rows(records, max_rows_per_item=4, balance_orders=True)
    fates = [r["fate"] for r in records]
    assert fates[9] == "duplicate" and fates[-1] == "wrong_verdict"
    assert sum(f == "over_cap" for f in fates) == 2  # i1: A, B, A, A taken in turn; two more A over the cap
    kept = [r for r in records if r["fate"] == "kept"]
    for category in ("c", "d"):
        slots = [r["pos_slot"] for r in kept if r["category"] == category]
        assert slots.count("A") == slots.count("B") > 0
    # Category c had six rows with A first and one with B: the surplus comes from the items with most
    # A rows, so both items stay covered.
    assert {r["item_id"] for r in kept} == {"i1", "i2", "j1", "j2"}
    assert all(sum(r["item_id"] == i for r in kept) <= 4 for i in ("i1", "i2"))
    # Selected again (a finished run, other limits): the same candidates, one row per item at most.
    select_rows(records, max_rows_per_item=1, balance_orders=False)
    assert sorted(r["item_id"] for r in records if r["fate"] == "kept") == ["i1", "i2", "j1", "j2"]
    select_rows(records, max_rows_per_item=4, balance_orders=False)
    assert sum(r["fate"] == "order_balance" for r in records) == 0
    assert sum(r["fate"] == "kept" for r in records) == 4 + 3 + 2 + 1


def test_rationalize_asks_with_the_hint_and_the_row_keeps_the_plain_prompt(tiny_model_dir):
    from data.templates import judge_prompt
    from generate.bootstrap import HINT, BootstrapArguments, prompt_groups
    from models.loading import load_tokenizer
    from run_sft import sft_example

    tok = load_tokenizer(tiny_model_dir)
    row = {"id": 1, "question": "Which is larger, 473 or 438?", "answer_pos": "473", "answer_neg": "438"}
    for mode in ("filter", "rationalize"):
        args = BootstrapArguments(mode=mode, max_prompt_length=128)
        groups = prompt_groups([row], tok, args, ["compare", "brief"])[0]
        assert [g["prompt_id"] for g in groups] == ["compare/A", "compare/B", "brief/A", "brief/B"]
        for g in groups:
            a, b = ("473", "438") if g["pos_slot"] == "A" else ("438", "473")
            assert g["prompt"] == judge_prompt(tok, g["template"], row["question"], a, b, 128)
            sft_row = {"question": row["question"], "answer_a": a, "answer_b": b, "chain_of_thought": "x",
                       "verdict": g["pos_slot"], "template": g["template"]}
            assert sft_example(sft_row, 7, tok, ["judge"], 128)[0] == g["prompt"]  # the row's own template
            hint = HINT.format(L=g["pos_slot"]).strip()
            assert (hint in g["asked"]) == (mode == "rationalize") and hint not in g["prompt"]


def test_an_sft_row_naming_an_unknown_template_is_refused(tmp_path):
    from data.schemas import load_sft
    from utils.io import DataError

    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"question": "q", "answer_a": "a", "answer_b": "b", "chain_of_thought": "c",
                                "verdict": "A", "template": "nope"}) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:1: field 'template' must be one of compare"):
        load_sft(str(path))


BOOTSTRAP = ["--max_new_tokens", "48", "--max_prompt_length", "128", "--num_samples", "2", "--items_per_chunk", "8",
             "--max_items", "24", "--templates", "compare,brief", "--generation_batch_size", "64"]


@pytest.mark.parametrize("mode", ["filter", "rationalize"])
def test_both_modes_write_balanced_rows_of_right_verdicts_and_resume(mode, sft_dir, synthetic_dir, tmp_path):
    """The tiny SFT judge as teacher; then a run stopped after its first chunk (and inside the second)
    resumes to the same files, and a finished run re-selects with another cap without sampling."""
    from data.schemas import load_prefs, load_sft
    from data.templates import format_response
    from generate.parsing import parse_verdict

    out = str(tmp_path / mode)
    args = ["--config", os.path.join("configs", "cot_demo.yaml"), "--model_name_or_path", sft_dir,
            "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"), "--output_dir", out, "--mode", mode, *BOOTSTRAP]
    proc = run_cli("run_bootstrap_cot.py", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows, samples = load_sft(os.path.join(out, "sft.jsonl")), read_jsonl(os.path.join(out, "samples.jsonl"))
    with open(os.path.join(out, "stats.json")) as f:
        stats = json.load(f)
    labelled = {str(r["id"]): r for r in load_prefs(os.path.join(synthetic_dir, "prefs.jsonl"))}
    assert len(samples) == stats["samples"] == 24 * 2 * 2 * 2 and rows and len(rows) == stats["rows"]
    for r in rows:
        item = labelled[r["item_id"]]
        assert (r["answer_a"], r["answer_b"]) == ((item["answer_pos"], item["answer_neg"]) if r["verdict"] == "A"
                                                  else (item["answer_neg"], item["answer_pos"]))
        assert r["template"] in ("compare", "brief")
        assert parse_verdict(format_response(r["chain_of_thought"], r["verdict"])) == r["verdict"]
    for category, c in stats["by_category"].items():
        assert c["A"] == c["B"] == sum(r["verdict"] == "A" for r in rows if r["category"] == category)
    assert stats["items_covered"] == len({r["item_id"] for r in rows}) and stats["coverage"] == round(
        stats["items_covered"] / 24, 4)
    assert sum(stats["dropped"].values()) + stats["rows"] == stats["samples"]
    assert max(sum(r["item_id"] == i for r in rows) for i in labelled) <= 4
    assert proc.stdout.strip().endswith("dropped: " + ", ".join(f"{n} {w}" for w, n in stats["dropped"].items() if n))

    # Stopped inside the second chunk: the first chunk and half of the second are logged, nothing else.
    first = [s for s in samples if int(s["item_id"].split("-")[1]) < 8]
    partial = [s for s in samples if 8 <= int(s["item_id"].split("-")[1]) < 12]
    with open(os.path.join(out, "samples.jsonl"), "w") as f:
        f.writelines(json.dumps({**s, "fate": "candidate"} if s["fate"] == "kept" else s) + "\n"
                     for s in first + partial)
    for name in ("stats.json", "sft.jsonl"):
        os.remove(os.path.join(out, name))
    assert run_cli("run_bootstrap_cot.py", *args).returncode == 0
    assert load_sft(os.path.join(out, "sft.jsonl")) == rows
    # Pairs kept, another cap: selected again from the logged judgments; another sample count: refused.
    assert run_cli("run_bootstrap_cot.py", *args, "--max_rows_per_item", "1").returncode == 0
    assert read_jsonl(os.path.join(out, "samples.jsonl"))[0]["response"] == samples[0]["response"]
    assert len(load_sft(os.path.join(out, "sft.jsonl"))) <= stats["items_covered"]
    refused = run_cli("run_bootstrap_cot.py", *args, "--num_samples", "3")
    assert refused.returncode == 2 and "other settings (num_samples)" in refused.stderr


def test_a_teacher_that_keeps_nothing_fails_without_an_sft_file(tiny_model_dir, synthetic_dir, tmp_path):
    """The untrained tiny model writes no readable verdict: one line says what was dropped, stats.json
    says it in full, and no sft.jsonl is left to train on."""
    out = tmp_path / "cot"
    proc = run_cli("run_bootstrap_cot.py", "--config", os.path.join("configs", "cot_demo.yaml"),
                   "--model_name_or_path", tiny_model_dir, "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"),
                   "--output_dir", str(out), *BOOTSTRAP, "--max_items", "4", "--max_new_tokens", "8")
    assert proc.returncode == 2 and "the teacher kept no judgment" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unfinished" in errors[0] and not (out / "sft.jsonl").exists()
    assert json.loads((out / "stats.json").read_text())["rows"] == 0
