"""Every stage on a real pretrained model: SmolLM2-135M-Instruct, converted from the GGUF file the
package index ships (a 49,152-token vocabulary, a ChatML template with a default system prompt, and
pad = EOS = end of turn = <|im_end|>). Each stage runs at the smallest size that exercises it, with
the CPU recipe in configs/recipes/smollm2-135m."""
import json
import os

import pytest
import torch
import yaml

from tests.conftest import REAL_PROMPT, ROOT, assert_pairs_within_prompts, read_jsonl, read_refinement

RECIPE = os.path.join(ROOT, "configs", "recipes", "smollm2-135m")
SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
TINY_TRAINING = ["--max_steps", "1", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                 "--logging_steps", "1", "--save_strategy", "no", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def tok(real_model):
    from models.loading import load_tokenizer

    return load_tokenizer(real_model[0])


@pytest.fixture(scope="module")
def real_sft(real_model, synthetic_dir, tmp_path_factory):
    """SmolLM2's SFT judge after two steps of the recipe (the run the other stages start from)."""
    import run_sft

    out = str(tmp_path_factory.mktemp("real") / "sft")
    run_sft.main(["--config", os.path.join(RECIPE, "sft.yaml"), "--model_name_or_path", real_model[0],
                  "--train_file", os.path.join(synthetic_dir, "sft.jsonl"), "--output_dir", out,
                  *TINY_TRAINING, "--max_steps", "2"])
    return out


def test_the_converted_checkpoint_is_the_gguf_model(real_model, tok):
    from transformers import AutoModelForCausalLM

    from data.templates import apply_chat
    from data.tokens import encode_prompt

    path, gguf, gguf_logits = real_model
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model, "hf_quantizer", None) is None and "quantization_config" not in model.config.to_dict()
    assert model.dtype == torch.float32 and sum(p.numel() for p in model.parameters()) == 134_515_008
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([encode_prompt(tok, apply_chat(tok, REAL_PROMPT))])).logits
    assert logits.shape == gguf_logits.shape and logits.shape[-1] == 49_152
    assert torch.equal(logits, gguf_logits)
    assert tok.model_max_length == model.config.max_position_embeddings == 8192


def test_a_folder_already_converted_from_the_same_file_is_left_alone(tiny_model_dir, tmp_path, monkeypatch):
    """`make real-model` in a fresh clone runs the conversion again: the same GGUF (by content) in
    the same dtype rewrites nothing, so the weights keep the modification time the pipeline's
    fingerprints saw; another file is converted."""
    from models import from_gguf
    from models.loading import ModelArguments, load_model_and_tokenizer

    loads = []

    def load(args):  # the tiny model stands in for the GGUF's (loading a GGUF is models.gguf's test)
        loads.append(args.gguf_file)
        return load_model_and_tokenizer(ModelArguments(model_name_or_path=tiny_model_dir))

    monkeypatch.setattr(from_gguf, "load_model_and_tokenizer", load)
    gguf, out = tmp_path / "m.gguf", str(tmp_path / "converted")
    gguf.write_bytes(b"GGUF one")
    n, written = from_gguf.convert(str(gguf), out)
    weights = os.path.join(out, "model.safetensors")
    stamp = os.stat(weights).st_mtime_ns
    assert written and n > 0 and len(loads) == 1
    assert from_gguf.convert(str(gguf), out) == (n, False) and len(loads) == 1
    assert os.stat(weights).st_mtime_ns == stamp
    assert from_gguf.convert(str(gguf), out, dtype="bf16")[1] and len(loads) == 2  # another dtype: converted
    gguf.write_bytes(b"GGUF two")
    assert from_gguf.convert(str(gguf), out, dtype="bf16")[1] and len(loads) == 3  # another file: converted


def test_a_gguf_file_alone_names_its_folder_and_vllm_refuses_one(real_model, synthetic_dir, tmp_path):
    import run_eval
    from models.loading import ModelArguments
    from utils.io import DataError

    gguf = real_model[1]
    args = ModelArguments(gguf_file=gguf)
    assert (args.model_name_or_path, args.gguf_file) == (os.path.dirname(gguf), os.path.basename(gguf))
    assert args.source == gguf
    with pytest.raises(DataError, match="file not found"):
        ModelArguments(gguf_file=gguf + ".missing")
    with pytest.raises(DataError, match="^--sampler vllm takes a Hugging Face checkpoint, not --gguf_file"):
        run_eval.main(["--gguf_file", gguf, "--eval_files", os.path.join(synthetic_dir, "test.jsonl"),
                       "--output_file", str(tmp_path / "r.json"), "--sampler", "vllm"])
    assert not (tmp_path / "r.json").exists()


def test_the_real_tokenizer_pads_with_its_end_of_turn_and_every_stage_asks_with_one_system_turn(tok):
    from data.collate import IGNORE_INDEX, collate_prompt_response, encode_prompt_response
    from generate.label_pairs import label_pairs
    from data.templates import judge_prompt_groups, scalar_rm_text
    from data.tokens import adds_bos, end_of_turn_id, stop_token_ids
    from generate.judge import both_orders
    from run_sft import sft_example

    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.pad_token_id == tok.eos_token_id == end_of_turn_id(tok) == eot and stop_token_ids(tok) == [eot]
    assert len(tok) == 49_152 and not adds_bos(tok)
    item = {"id": "x", "question": "Which is larger, 473 or 438?", "answer_pos": "473", "answer_neg": "438"}
    prompts = [sft_example({"question": item["question"], "answer_a": "473", "answer_b": "438",
                            "chain_of_thought": "4 = 4, 7 > 3.", "verdict": "A"}, 0, tok, ["compare"])[0],
               *[g["prompt"] for g in judge_prompt_groups(tok, item, ["compare", "judge", "brief"])],
               *[p for p, _ in both_orders(tok, "compare", {"question": "q", "answer_a": "a", "answer_b": "b"}, None)],
               label_pairs([item], tok, ["compare"])[0]["prompt"], scalar_rm_text(tok, item["question"], "473")]
    for p in prompts:  # SFT, refinement/evaluation, the judge, label pairs and BT: the same system turn, once
        assert p.startswith(SYSTEM) and p.count("<|im_start|>system") == 1, p
    # The response's end of turn is the pad id, yet it stays a label: the judge learns to stop.
    short = encode_prompt_response(tok, prompts[1], "4 = 4, 7 > 3.\nVerdict: A")
    long = encode_prompt_response(tok, prompts[1], "4 = 4, 7 > 3, so 473 is larger.\nVerdict: A")
    assert short["labels"][-1] == eot
    batch = collate_prompt_response([short, long], tok.pad_token_id)
    n = len(short["input_ids"])
    assert batch["labels"][0, n - 1] == eot and (batch["labels"][0, n:] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][0, n:] == 0).all() and (batch["input_ids"][0, n:] == eot).all()


def test_sft_trains_the_real_model(real_sft, real_model):
    from safetensors.torch import load_file

    with open(os.path.join(real_sft, "trainer_state.json")) as f:
        losses = [h["loss"] for h in json.load(f)["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)
    before = load_file(os.path.join(real_model[0], "model.safetensors"))["model.layers.0.mlp.down_proj.weight"]
    after = load_file(os.path.join(real_sft, "model.safetensors"))["model.layers.0.mlp.down_proj.weight"]
    assert before.dtype == after.dtype == torch.float32 and not torch.equal(before, after)


def test_refinement_on_the_real_model(real_sft, synthetic_dir, tmp_path):
    import run_preference_refinement as refine

    out = str(tmp_path / "refine")
    refine.main(["--config", os.path.join(RECIPE, "refine.yaml"), "--model_name_or_path", real_sft,
                 "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"), "--output_dir", out, "--max_items", "2",
                 "--num_samples", "2", "--temperatures", "1.0", "--templates", "compare", "--max_new_tokens", "24",
                 "--items_per_chunk", "2"])
    samples, pairs, stats = read_refinement(out)
    assert len(samples) == stats["samples"] == 2 * 2 * 2
    for s in samples:
        assert s["prompt"].startswith(SYSTEM) and "<|im_end|>" not in s["response"]
        assert 1.0 < s["ppl"] < 1e4 and s["level"] in ("SA", "WA", "WR", "SR")
    assert stats["unfinished"] == sum(not s["finished"] for s in samples)
    assert_pairs_within_prompts(samples, pairs)


@pytest.fixture(scope="module")
def real_pairs(tok, synthetic_dir, tmp_path_factory):
    """Label pairs (the "w/o CoT-S" form) of two labelled pairs: a pairs.jsonl that always holds pairs."""
    from generate.label_pairs import label_pairs
    from data.schemas import load_prefs
    from utils.io import write_jsonl

    path = str(tmp_path_factory.mktemp("real_pairs") / "pairs.jsonl")
    write_jsonl(path, label_pairs(load_prefs(os.path.join(synthetic_dir, "prefs.jsonl"))[:2], tok, ["compare"]))
    return path


@pytest.mark.parametrize("variant", [[], ["--weighting", "none"], ["--loss_type", "sft", "--loss_weights", "16"]],
                         ids=["mdpo", "dpo", "rft"])
def test_m_dpo_plain_dpo_and_rft_train_the_real_model(variant, real_sft, real_pairs, tmp_path):
    import run_m_dpo

    out = str(tmp_path / "run")
    run_m_dpo.main(["--config", os.path.join(RECIPE, "mdpo.yaml"), "--model_name_or_path", real_sft,
                    "--pairs_file", real_pairs, "--output_dir", out, *TINY_TRAINING, *variant])
    with open(os.path.join(out, "trainer_state.json")) as f:
        first = next(h for h in json.load(f)["log_history"] if "loss" in h)
    assert 0 < first["loss"] < 1e3
    if "sft" not in variant:  # before the first update the policy is the reference
        with open(os.path.join(out, "run_config.yaml")) as f:
            bf16 = yaml.safe_load(f)["bf16"]  # the recipe's bf16_if_native: autocast on AMX / AVX-512 BF16 CPUs
        # Under bf16 autocast the reference pass (16 pairs a batch) and the policy's forward (4) pad and
        # block the same rows differently: their sequence log-probs agree to ~1e-3 relative, not 1e-6.
        bound = 0.1 if bf16 else 1e-3
        assert abs(first["rewards/margins"]) < bound and abs(first["rewards/chosen"]) < bound
    with open(os.path.join(out, "reference_logps.json")) as f:
        logps = json.load(f)["logps"]
    assert len(logps) == 4 and all(-1e4 < x < 0 for pair in logps for x in pair)


def test_bt_reads_its_reward_at_the_last_real_token(real_sft, synthetic_dir, tok, tmp_path):
    import run_bt_baseline
    import run_eval
    from transformers import AutoModelForSequenceClassification

    from data.collate import pad
    from data.templates import scalar_rm_text
    from models.rewards import reward_head, sequence_rewards

    out = str(tmp_path / "bt")
    run_bt_baseline.main(["--config", os.path.join(RECIPE, "bt.yaml"), "--model_name_or_path", real_sft,
                          "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"), "--output_dir", out,
                          *TINY_TRAINING])
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    texts = [scalar_rm_text(tok, "Which is larger, 473 or 438?", a) for a in ("473", "473 is larger, since 7 > 3.")]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    ids.append(ids[0][:-1])  # a text that ends with <|im_end|>, the pad id
    assert ids[2][-1] == tok.pad_token_id
    with torch.no_grad():
        batched = sequence_rewards(model, pad(ids, tok.pad_token_id), pad([[1] * len(x) for x in ids], 0))
        alone = [sequence_rewards(model, torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long)).item()
                 for x in ids]
        per_position = reward_head(model)(model.model(input_ids=torch.tensor([ids[2]])).last_hidden_state)[0, :, 0]
        theirs = model(input_ids=torch.tensor([ids[2]])).logits[0, 0]
    assert batched.tolist() == pytest.approx(alone, abs=1e-4)  # right padding changes nothing
    assert alone[2] == pytest.approx(per_position[-1].item(), abs=1e-5)  # the text's own last token
    assert theirs.item() == pytest.approx(per_position[-2].item(), abs=1e-5)  # transformers skips a pad-id ending
    result = str(tmp_path / "bt.json")
    run_eval.main(["--config", os.path.join(RECIPE, "eval.yaml"), "--model_name_or_path", out, "--model_type", "scalar",
                   "--eval_files", os.path.join(synthetic_dir, "test.jsonl"), "--output_file", result,
                   "--max_items", "4"])
    with open(result) as f:
        items = json.load(f)["items"]["test.jsonl"]
    assert len(items) == 4 and all(it["correct"] == float(it["reward_pos"] > it["reward_neg"]) for it in items)


def test_evaluation_the_judge_cli_and_the_rl_reward_on_the_real_model(real_sft, synthetic_dir, tmp_path):
    import run_eval
    import run_judge
    from generate.judge import Judge, JudgeReward

    result = str(tmp_path / "eval.json")
    run_eval.main(["--config", os.path.join(RECIPE, "eval.yaml"), "--model_name_or_path", real_sft,
                   "--eval_files", os.path.join(synthetic_dir, "test.jsonl"), "--output_file", result,
                   "--max_items", "2", "--max_new_tokens", "24"])
    with open(result) as f:
        res = json.load(f)
    r, items = res["results"]["test.jsonl"], res["items"]["test.jsonl"]
    assert r["n"] == 2 and 0.0 <= r["accuracy"] <= 1.0
    assert all(o["prompt"].startswith(SYSTEM) for it in items for o in it["orders"])
    rows = str(tmp_path / "rows.jsonl")
    with open(rows, "w") as f:
        f.write(json.dumps({"question": "Which is larger, 473 or 438?", "answer_a": "438", "answer_b": "473",
                            "mine": 1}) + "\n")
    labelled = str(tmp_path / "labelled.jsonl")
    run_judge.main(["--model_name_or_path", real_sft, "--input_file", rows, "--output_file", labelled,
                    "--max_new_tokens", "24", "--max_prompt_length", "256"])
    (row,) = read_jsonl(labelled)
    assert row["mine"] == 1 and row["verdict"] in ("A", "B", None) and len(row["orders"]) == 2
    assert row["p_a"] is None or 0.0 <= row["p_a"] <= 1.0
    reward = JudgeReward(Judge.from_pretrained(real_sft, max_new_tokens=24, max_prompt_length=256))
    (value,) = reward(prompts=["Which is larger, 473 or 438?"], completions=["473"], reference=["438"])
    assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("mode", ["filter", "rationalize"])
def test_the_real_model_writes_its_own_chains_of_thought(mode, real_model, synthetic_dir, tmp_path):
    """Both modes with SmolLM2 as its own teacher, on two labelled pairs: every judgment is logged with
    its fate, the asked prompts carry the chat template (and, rationalizing, the hint), and the run
    either writes balanced rows of right verdicts or fails in one line without an sft.jsonl."""
    import run_bootstrap_cot
    from data.schemas import load_sft
    from utils.io import DataError

    out = tmp_path / mode
    args = ["--config", os.path.join(RECIPE, "cot.yaml"), "--model_name_or_path", real_model[0],
            "--pref_file", os.path.join(synthetic_dir, "prefs.jsonl"), "--output_dir", str(out), "--mode", mode,
            "--max_items", "2", "--num_samples", "2", "--temperatures", "1.0", "--templates", "compare",
            "--max_new_tokens", "32"]
    try:
        run_bootstrap_cot.main(args)
        rows = load_sft(str(out / "sft.jsonl"))
    except DataError as e:
        assert "the teacher kept no judgment" in str(e)
        rows = []
    assert (out / "sft.jsonl").exists() == bool(rows)
    samples = read_jsonl(out / "samples.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    assert len(samples) == stats["samples"] == 2 * 2 * 2 and stats["rows"] == len(rows)
    assert {s["fate"] for s in samples} <= {"kept", "unfinished", "unparseable", "wrong_verdict", "hint_leak",
                                              "no_reasoning", "duplicate", "over_cap", "order_balance"}
    assert sum(stats["dropped"].values()) + len(rows) == len(samples)
    assert sum(r["verdict"] == "A" for r in rows) == sum(r["verdict"] == "B" for r in rows)
    from generate.bootstrap import HINT, BootstrapArguments, prompt_groups
    from models.loading import load_tokenizer

    tok = load_tokenizer(real_model[0])
    groups = prompt_groups([read_jsonl(os.path.join(synthetic_dir, "prefs.jsonl"))[0]], tok,
                           BootstrapArguments(mode=mode, max_prompt_length=256), ["compare"])[0]
    for g in groups:
        assert g["asked"].startswith(SYSTEM) and g["prompt"].startswith(SYSTEM)
        assert (HINT.format(L=g["pos_slot"]).strip() in g["asked"]) == (mode == "rationalize")
