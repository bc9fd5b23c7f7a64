import json
import os

import pytest

from tests.conftest import ROOT, assert_pairs_within_prompts, floats_close, read_refinement, run_cli, run_script

import run_preference_refinement as refine


def _args(model, prefs, out, *extra):
    return ["--config", os.path.join(ROOT, "configs", "refine_demo.yaml"), "--model_name_or_path", model,
            "--pref_file", prefs, "--output_dir", out, "--num_samples", "4", "--templates", "compare,brief",
            "--max_new_tokens", "48", "--items_per_chunk", "4", "--generation_batch_size", "32", *extra]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def uninterrupted(sft_dir, synthetic_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("refine_full"))
    refine.main(_args(sft_dir, os.path.join(synthetic_dir, "prefs.jsonl"), out, "--max_items", "10"))
    return out


def test_refinement_outputs_are_consistent(uninterrupted):
    samples, pairs, stats = read_refinement(uninterrupted)
    assert len(samples) == 10 * 2 * 2 * 4 == stats["samples"]  # items x templates x orders x K
    for s in samples:
        assert s["correct"] == (s["verdict"] == s["pos_slot"])
        assert s["level"] in ("SA", "WA", "WR", "SR") and s["score"] > 0
        assert s["prompt_id"] == f"{s['template']}/{s['pos_slot']}"
    assert sum(stats["levels"].values()) == len(samples)
    assert stats["pairs"] == len(pairs) and all(p["gap"] > 0 for p in pairs)
    assert_pairs_within_prompts(samples, pairs)


def test_resume_gives_byte_identical_outputs(uninterrupted, sft_dir, synthetic_dir, tmp_path):
    prefs = os.path.join(synthetic_dir, "prefs.jsonl")
    out = str(tmp_path / "resumed")
    refine.main(_args(sft_dir, prefs, out, "--max_items", "6"))  # stops inside the second chunk
    with open(os.path.join(out, "samples.jsonl"), "a") as f:
        f.write('{"item_id": "torn')  # as if killed during an append
    refine.main(_args(sft_dir, prefs, out, "--max_items", "10"))
    for name in ("samples.jsonl", "pairs.jsonl", "stats.json"):
        assert _read(os.path.join(out, name)) == _read(os.path.join(uninterrupted, name)), name


def test_scores_from_the_hf_samplers_log_probs_equal_the_forward_pass(uninterrupted, sft_dir, synthetic_dir, tmp_path):
    """--score_with sampler (the default) on the HF path: the samples and perplexities of a second
    forward pass (--score_with model), without the pass."""
    out = str(tmp_path / "forward_scores")
    refine.main(_args(sft_dir, os.path.join(synthetic_dir, "prefs.jsonl"), out, "--max_items", "10",
                      "--score_with", "model"))
    sampled, forward = read_refinement(uninterrupted)[0], read_refinement(out)[0]
    assert [r["response"] for r in sampled] == [r["response"] for r in forward]
    assert sum(r["retokenized"] for r in sampled) < len(sampled) / 4  # the rest were scored again
    assert [r["ppl"] for r in sampled] == pytest.approx([r["ppl"] for r in forward], rel=1e-4)


def test_changed_settings_refuse_to_resume(uninterrupted, sft_dir, synthetic_dir):
    from utils.io import DataError

    with pytest.raises(DataError, match="other settings.*tau"):
        refine.main(_args(sft_dir, os.path.join(synthetic_dir, "prefs.jsonl"), uninterrupted,
                          "--max_items", "10", "--tau", "3"))


def test_pair_settings_may_change_on_resume(uninterrupted, sft_dir, synthetic_dir, tmp_path):
    """The pair cap acts after sampling: a rerun with another cap rebuilds pairs from the logged
    samples instead of refusing or sampling again."""
    import shutil
    from collections import Counter

    out = str(tmp_path / "recapped")
    shutil.copytree(uninterrupted, out)
    refine.main(_args(sft_dir, os.path.join(synthetic_dir, "prefs.jsonl"), out, "--max_items", "10",
                      "--max_pairs_per_item", "1"))
    assert _read(os.path.join(out, "samples.jsonl")) == _read(os.path.join(uninterrupted, "samples.jsonl"))
    with open(os.path.join(out, "pairs.jsonl")) as f:
        per_item = Counter(json.loads(line)["item_id"] for line in f)
    with open(os.path.join(uninterrupted, "pairs.jsonl")) as f:
        before = Counter(json.loads(line)["item_id"] for line in f)
    assert per_item and max(per_item.values()) == 1 and set(per_item) == set(before)
    refine.main(_args(sft_dir, os.path.join(synthetic_dir, "prefs.jsonl"), out, "--max_items", "10",
                      "--pairing", "all_levels", "--balance_orders", "true"))  # acts after sampling too
    assert _read(os.path.join(out, "samples.jsonl")) == _read(os.path.join(uninterrupted, "samples.jsonl"))
    with open(os.path.join(out, "pairs.jsonl")) as f:
        pairs = [json.loads(line) for line in f]
    with open(os.path.join(out, "stats.json")) as f:
        stats = json.load(f)
    assert pairs and stats["chosen_verdicts"]["A"] == stats["chosen_verdicts"]["B"] == len(pairs) // 2
    assert all(Counter(p["chosen_verdict"] for p in pairs if p["item_id"] == i)["A"] * 2 == n
               for i, n in Counter(p["item_id"] for p in pairs).items())


@pytest.mark.parametrize("score", ["verdict_prob", "agreement"])
def test_levels_may_come_from_another_confidence(uninterrupted, sft_dir, synthetic_dir, tmp_path, score):
    """--score acts after sampling, like the threshold: the same judgments, levels from the chosen
    confidence, and the paper's score kept beside it."""
    import math
    import shutil
    from collections import Counter

    out = str(tmp_path / score)
    shutil.copytree(uninterrupted, out)
    refine.main(_args(sft_dir, os.path.join(synthetic_dir, "prefs.jsonl"), out, "--max_items", "10", "--score", score))
    base, _, _ = read_refinement(uninterrupted)
    samples, pairs, stats = read_refinement(out)
    assert [s["response"] for s in samples] == [s["response"] for s in base] and stats["score"] == score
    assert [s["ppl_score"] for s in samples] == pytest.approx([s["score"] for s in base])
    picks = lambda s: None if s["verdict"] is None else s["verdict"] == s["pos_slot"]  # noqa: E731
    per_item = {i: Counter(picks(s) for s in samples if s["item_id"] == i) for i in {s["item_id"] for s in samples}}
    for s in samples:
        if score == "verdict_prob":
            want = 0.0 if s.get("verdict_logp") is None else math.exp(s["verdict_logp"])
        else:
            want = 0.0 if picks(s) is None else per_item[s["item_id"]][picks(s)] / sum(per_item[s["item_id"]].values())
        assert s["score"] == pytest.approx(want)
        strong = s["score"] > stats["threshold"]
        levels = {True: "SA", False: "WA"} if s["correct"] and s["finished"] else {True: "SR", False: "WR"}
        assert s["level"] == levels[strong]
    assert sum(s.get("verdict_logp") is not None for s in samples) > len(samples) // 2  # mostly a real confidence
    assert_pairs_within_prompts(samples, pairs)


def test_oracle_levels_come_from_the_reasoning(uninterrupted, sft_dir, synthetic_dir, tmp_path):
    """--score oracle on the synthetic task: the same judgments; strong exactly when the reasoning is
    the item's true one; no threshold; the score is the reasoning's similarity to it."""
    import shutil

    from toy.oracle import reasoning_of, true_reasoning
    from utils.io import read_jsonl

    prefs = os.path.join(synthetic_dir, "prefs.jsonl")
    rows = {str(r["id"]): r for r in read_jsonl(prefs)}
    out = str(tmp_path / "oracle")
    shutil.copytree(uninterrupted, out)
    refine.main(_args(sft_dir, prefs, out, "--max_items", "10", "--score", "oracle"))
    base, _, _ = read_refinement(uninterrupted)
    samples, pairs, stats = read_refinement(out)
    assert [s["response"] for s in samples] == [s["response"] for s in base]
    assert stats["score"] == "oracle" and stats["threshold"] is None
    faithful = [reasoning_of(s["response"]) == true_reasoning(rows[s["item_id"]], s["pos_slot"]) for s in samples]
    assert 0 < sum(faithful) < len(samples)  # the SFT judge's reasoning is true in some judgments, not all
    for s, f in zip(samples, faithful):
        accepted = s["correct"] and s["finished"]
        assert s["level"] == ({True: "SA", False: "WA"} if accepted else {True: "WR", False: "SR"})[f]
        assert (s["score"] == 1.0) == f and 0.0 <= s["score"] <= 1.0
    assert_pairs_within_prompts(samples, pairs)

    from utils.io import DataError

    other = tmp_path / "other.jsonl"  # rows of another task: refused, naming the file and the item
    other.write_text("".join(l.replace('"arithmetic"', '"math"') for l in open(prefs)))
    with pytest.raises(DataError, match=f"{other}: item 'prefs-0': --score oracle needs the synthetic task's rows"):
        refine.main(_args(sft_dir, str(other), str(tmp_path / "o2"), "--max_items", "10", "--score", "oracle",
                          "--samples_from", uninterrupted))


def test_samples_from_reuses_a_larger_runs_judgments_and_rebuilds_levels(uninterrupted, sft_dir, synthetic_dir,
                                                                          tmp_path):
    from utils.io import DataError

    prefs = os.path.join(synthetic_dir, "prefs.jsonl")
    out = str(tmp_path / "first4")
    refine.main(_args(sft_dir, prefs, out, "--max_items", "4", "--samples_from", uninterrupted))
    big, _, _ = read_refinement(uninterrupted)
    samples, pairs, stats = read_refinement(out)
    first4 = {s["item_id"] for s in samples}
    assert len(first4) == 4 == stats["items"] and stats["samples"] == len(samples) == 4 * 2 * 2 * 4
    strip = lambda s: {k: v for k, v in s.items() if k != "level"}  # noqa: E731
    assert [strip(s) for s in samples] == [strip(s) for s in big if s["item_id"] in first4]  # the same judgments
    scores = sorted(s["score"] for s in samples)  # threshold and levels from this run's items only
    assert stats["threshold"] == pytest.approx((scores[31] + scores[32]) / 2)
    assert all(s["level"] in (("SA", "WA") if s["correct"] and s["finished"] else ("WR", "SR")) for s in samples)
    assert_pairs_within_prompts(samples, pairs)

    with pytest.raises(DataError, match="sampled with other settings \\(num_samples\\)"):
        refine.main(_args(sft_dir, prefs, str(tmp_path / "k2"), "--max_items", "4", "--samples_from", uninterrupted,
                          "--num_samples", "2"))
    with pytest.raises(DataError, match="no judgments of item 'prefs-10'"):
        refine.main(_args(sft_dir, prefs, str(tmp_path / "more"), "--max_items", "11", "--samples_from", uninterrupted))
    with pytest.raises(DataError, match="not a finished refinement"):
        refine.main(_args(sft_dir, prefs, str(tmp_path / "x"), "--max_items", "4", "--samples_from", str(tmp_path)))


def test_bad_pref_rows_fail_with_the_line_number(tmp_path, tiny_model_dir):
    """The exit-code contract, in a real process: one line on stderr, exit code 2, nothing written."""
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text('{"id": 1, "question": "q", "answer_pos": "a", "answer_neg": "b"}\n'
                     '{"id": 2, "question": "q", "answer_pos": "a"}\n')
    out = tmp_path / "out"
    proc = run_script("run_preference_refinement.py", *_args(tiny_model_dir, str(prefs), str(out)))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {prefs}:2: missing field 'answer_neg'"
    assert not (out / "pairs.jsonl").exists() and not (out / "stats.json").exists()


def _parsed(path):
    with open(path) as f:
        return [json.loads(line) for line in f] if path.endswith(".jsonl") else json.load(f)


def test_two_processes_write_the_same_files_as_one(uninterrupted, sft_dir, synthetic_dir, tmp_path):
    """Chunks dealt to 2 CPU processes (accelerate launch, gloo) merge into the outputs of one: the
    same samples, levels and pairs; perplexities to 1e-6, since a process with one thread rounds
    a decode step's logits otherwise than one with two (the same thread count gives the same bytes:
    test_resume_gives_byte_identical_outputs)."""
    from tests.test_distributed import launch

    out = str(tmp_path / "two")
    launch("run_preference_refinement.py",
           *_args(sft_dir, os.path.join(synthetic_dir, "prefs.jsonl"), out, "--max_items", "10"), port=29533)
    for name in ("samples.jsonl", "pairs.jsonl", "stats.json"):
        assert floats_close(_parsed(os.path.join(out, name)), _parsed(os.path.join(uninterrupted, name))), name
    assert not any(f.startswith("samples.rank") for f in os.listdir(out))


@pytest.mark.parametrize("flags,message", [
    (["--num_samples", "0"], "--num_samples must be at least 1, got 0"),
    (["--tau", "0"], "--tau must be greater than 0.0, got 0.0"),
    (["--threshold", "1.5"], "--threshold must be in [0, 1]"),
    (["--threshold", "q2"], "--threshold quantile must be qX with 0 < X < 1"),
    (["--temperatures", "0.7,hot"], "--temperatures must be comma-separated numbers"),
    (["--temperatures", "-1"], "--temperatures must be one or more numbers >= 0"),
    (["--top_p", "0"], "--top_p must be greater than 0.0"),
    (["--generation_batch_size", "0"], "--generation_batch_size must be at least 1"),
    (["--unfinished", "keep"], "--unfinished must be one of reject, drop"),
    (["--score", "bleu"], "--score must be one of ppl, verdict_prob, agreement, oracle"),
    (["--score", "verdict_prob", "--score_with", "model"], "--score verdict_prob needs --score_with sampler"),
    (["--templates", "nope"], "--templates: unknown template id"),
    (["--max_prompt_length", "20"], "--max_prompt_length 20 leaves too little room"),
])
def test_bad_settings_stop_before_anything_is_loaded_or_written(tiny_model_dir, synthetic_dir, tmp_path, flags,
                                                                message):
    from utils.io import DataError

    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        refine.main(_args(tiny_model_dir, os.path.join(synthetic_dir, "prefs.jsonl"), str(out), *flags))
    assert message in str(e.value) and not out.exists()


def test_a_non_utf8_file_names_its_line(tiny_model_dir, tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    bad_line = b'{"id": 2, "question": "caf\xe9", "answer_pos": "a", "answer_neg": "b"}\n'
    prefs.write_bytes(b'{"id": 1, "question": "q", "answer_pos": "a", "answer_neg": "b"}\n' + bad_line)
    out = tmp_path / "out"
    proc = run_cli("run_preference_refinement.py", *_args(tiny_model_dir, str(prefs), str(out)))
    assert proc.returncode == 2
    column = bad_line.index(b"\xe9") + 1
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {prefs}:2: not UTF-8 (byte 0xe9 at column {column}); "
                                                    "re-encode the file as UTF-8")
    assert not out.exists()


def test_the_vllm_sampler_without_vllm_says_how_to_install_it(tiny_model_dir, synthetic_dir, tmp_path):
    import importlib.util

    from utils.io import DataError

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed in this environment (tests/test_vllm.py covers it)")
    prefs, out = os.path.join(synthetic_dir, "prefs.jsonl"), tmp_path / "out"
    with pytest.raises(DataError, match=r"--sampler vllm: vLLM is not installed: `make setup-vllm`"):
        refine.main(_args(tiny_model_dir, prefs, str(out), "--sampler", "vllm"))
    assert not out.exists()
