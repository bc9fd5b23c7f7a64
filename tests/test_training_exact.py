"""Training arithmetic that must not depend on how a batch is cut: gradient accumulation, the
log-prob kernel, token-budget batches; plus the precision policy and setups refused up front."""
import copy
import gc
import os
import tempfile
import types
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

import models.logprobs as logprobs
from data.collate import IGNORE_INDEX, budget_batches, logits_to_keep
from models.bt_trainer import BTCollator, BTTrainer, encode_bt
from models.loading import ModelArguments, load_tokenizer
from models.m_dpo_trainer import MDPOConfig, MDPOTrainer, PairCollator
from models.training import (check_training_setup, deepspeed_zero_stage, load_trainable_model, training_dtype,
                             warn_if_updates_round_away)
from tests.test_m_dpo import dataset, make_pairs
from utils.io import DataError


def full_log_softmax_logps(logits, labels):
    """The plain formula every optimisation must reproduce: log_softmax over all positions in fp32."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    token = torch.log_softmax(logits.float(), -1).gather(-1, labels.masked_fill(~mask, 0)[..., None])[..., 0]
    return (token * mask).sum(-1), mask.sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_log_softmax_equals_the_full_one_with_gradients(dtype, monkeypatch):
    monkeypatch.setattr(logprobs, "CHUNK_BYTES", 4 * 1000 * 7)  # 7 rows per chunk: many chunks, one partial
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 40, 1000)).to(dtype)
    labels = torch.randint(0, 1000, (3, 40))
    for row, span in ((0, slice(None, 25)), (1, slice(None, 31)), (2, slice(None, 28)), (2, slice(37, None))):
        labels[row, span] = IGNORE_INDEX
    keep = logits_to_keep(labels)
    assert keep == 40 - 25 + 1
    ours_in, full_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours, n_ours = logprobs.sequence_logps(ours_in[:, -keep:], labels)
    full, n_full = full_log_softmax_logps(full_in, labels)
    assert n_ours.tolist() == n_full.tolist() == [15, 9, 9]
    assert torch.allclose(ours, full, rtol=1e-5, atol=1e-5 * full.abs().max().item())
    weights = torch.tensor([1.0, -2.0, 0.5])
    (ours * weights).sum().backward()
    (full * weights).sum().backward()
    assert torch.allclose(ours_in.grad.float(), full_in.grad.float(), atol=1e-5 if dtype == torch.float32 else 1e-2)
    with pytest.raises(ValueError, match="do not cover"):
        logprobs.sequence_logps(logits[:, -(keep - 1):], labels)


def test_budget_batches_respect_rows_and_tokens():
    lengths = [5, 40, 12, 33, 7, 40, 21, 3]
    batches = budget_batches(lengths, max_rows=3, max_tokens=80, rows_per_item=2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3 and 2 * len(b) * max(lengths[i] for i in b) <= 80
    assert [lengths[b[0]] for b in batches] == sorted(lengths[b[0]] for b in batches)  # shortest first
    assert budget_batches(lengths, max_rows=None, max_tokens=None) == [sorted(range(8), key=lengths.__getitem__)]
    with pytest.raises(ValueError, match="smaller than one item"):
        budget_batches(lengths, max_tokens=79, rows_per_item=2)


def _one_sgd_step(trainer_cls, model, data, collator, ga, batch_size, **config):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch_size,
                  gradient_accumulation_steps=ga, learning_rate=0.05, max_steps=1, optim="sgd",
                  lr_scheduler_type="constant", max_grad_norm=0.0, report_to="none", use_cpu=True, logging_steps=1,
                  save_strategy="no", disable_tqdm=True, seed=0, remove_unused_columns=False)
    args = (MDPOConfig if trainer_cls is MDPOTrainer else TrainingArguments)(**common, **config)
    trainer = trainer_cls(model=model, args=args, train_dataset=copy.deepcopy(data), data_collator=collator)
    trainer.train()
    update = torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters()])
    return update, next(h for h in trainer.state.log_history if "loss" in h)


def _assert_same_step(a, b, metrics=()):
    (update_a, log_a), (update_b, log_b) = a, b
    assert update_a.abs().max() > 0
    assert (update_a - update_b).abs().max() <= 1e-4 * update_a.abs().max()
    for key in ("loss", *metrics):
        assert log_a[key] == pytest.approx(log_b[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("normalization", ["none", "batch"])
def test_gradient_accumulation_is_exact_for_m_dpo(tiny_model_dir, normalization):
    """GA 4 x batch 2 == GA 1 x batch 8 with level weights and the NLL term (whose token counts
    differ between micro-batches): the same update and the same logged loss and metrics; with
    per-batch weight normalisation the weights' sum is the whole step's too."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = make_pairs(8)
    for p, extra in zip(pairs, range(8)):  # chosen responses of different lengths
        p["chosen"] = p["chosen"].replace(". ", ". Let me check the sum once more." * (extra % 3) + " ")
    config = dict(beta=0.1, weighting="levels", loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0],
                  weight_normalization=normalization)
    data = dataset(pairs, tok, MDPOConfig(output_dir="unused", **config))
    collator = PairCollator(tok.pad_token_id)
    steps = [_one_sgd_step(MDPOTrainer, AutoModelForCausalLM.from_pretrained(tiny_model_dir), data, collator, ga, bs,
                           **config) for ga, bs in ((1, 8), (4, 2), (3, 3))]  # 3 x 3: the last micro-batch is short
    _assert_same_step(steps[0], steps[1], ("rewards/margins", "nll_loss", "logps/chosen"))
    _assert_same_step(steps[0], steps[2], ("rewards/margins", "nll_loss"))


def test_gradient_accumulation_is_exact_for_bt(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = [encode_bt(tok, p["prompt"] + p["chosen"], p["prompt"] + p["rejected"]) for p in make_pairs(8)]

    def model():
        torch.manual_seed(0)
        m = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
        m.config.pad_token_id = tok.pad_token_id
        return m

    collator = BTCollator(tok.pad_token_id)
    steps = [_one_sgd_step(BTTrainer, model(), data, collator, ga, bs) for ga, bs in ((1, 8), (4, 2))]
    _assert_same_step(steps[0], steps[1], ("rewards/margins",))


def test_sft_loss_is_the_models_own_loss_and_exact_under_accumulation(tiny_model_dir):
    from data.collate import PromptResponseCollator, encode_prompt_response
    from models.sft_trainer import SFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = make_pairs(8)
    data = [encode_prompt_response(tok, p["prompt"], p["chosen"] + " More words." * (i % 3))
            for i, p in enumerate(pairs)]
    collator = PromptResponseCollator(tok.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = SFTTrainer(model=model, args=TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True,
                                                             report_to="none"), data_collator=collator)
    batch = collator(data)
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        assert trainer.compute_loss(model, batch).item() == pytest.approx(plain.loss.item(), rel=1e-5)
    steps = [_one_sgd_step(SFTTrainer, AutoModelForCausalLM.from_pretrained(tiny_model_dir), data, collator, ga, bs)
             for ga, bs in ((1, 8), (4, 2))]
    _assert_same_step(steps[0], steps[1])


def test_a_separate_reference_model_is_released_after_the_pass(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = MDPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, report_to="none",
                      precompute_ref_batch_size=3, precompute_ref_max_tokens=10_000)
    data = dataset(make_pairs(8), tok, args)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    alive = weakref.ref(ref)
    trainer = MDPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args, train_dataset=data,
                          data_collator=PairCollator(tok.pad_token_id), ref_model=ref)
    del ref
    gc.collect()
    assert alive() is None and trainer.ref_model is None
    # every pair got the reference's log-probs, in 3 batches of at most 3 pairs
    with torch.no_grad():
        batch = PairCollator(tok.pad_token_id)(data)
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        expected = full_log_softmax_logps(logits, batch["labels"])[0]
    got = torch.tensor([ex["ref_chosen_logps"] for ex in data] + [ex["ref_rejected_logps"] for ex in data])
    assert torch.allclose(got, expected, atol=1e-4)


def _bf16_checkpoint(tiny_model_dir, path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).to(torch.bfloat16)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return str(path)


def test_full_fine_tuning_keeps_fp32_master_weights_and_saves_as_stored(tiny_model_dir, synthetic_dir, tmp_path):
    """dtype auto on a bf16 checkpoint trains fp32 weights (small updates survive) and saves bf16;
    explicit bf16 weights lose the same updates, and the run says so."""
    import run_sft

    ckpt = _bf16_checkpoint(tiny_model_dir, tmp_path / "bf16")
    args = TrainingArguments(output_dir=str(tmp_path / "o"), learning_rate=1e-6, use_cpu=True)
    tok = load_tokenizer(ckpt)
    moved = {}
    for dtype in ("auto", "bf16"):
        margs = ModelArguments(model_name_or_path=ckpt, dtype=dtype)
        model = load_trainable_model(margs, args, tok)
        weight = model.model.layers[0].mlp.up_proj.weight
        before = weight.detach().clone()
        with torch.no_grad():  # what an Adam step of size ~lr does to every weight
            weight.add_(torch.full_like(weight, args.learning_rate))
        moved[dtype] = (weight.detach() != before).float().mean().item()
        message = warn_if_updates_round_away(model, margs, args)
        assert (message is None) == (dtype == "auto"), message
        assert weight.dtype == (torch.float32 if dtype == "auto" else torch.bfloat16)
    assert moved["auto"] == 1.0 and moved["bf16"] < 0.05
    assert training_dtype(ModelArguments(model_name_or_path=ckpt, use_peft=True), args) == "auto"

    out = tmp_path / "sft"
    run_sft.main(["--model_name_or_path", ckpt, "--train_file", os.path.join(synthetic_dir, "sft.jsonl"),
                  "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2",
                  "--max_length", "128", "--max_prompt_length", "100", "--dtype", "auto", "--report_to", "none",
                  "--disable_tqdm", "true"])
    saved = AutoModelForCausalLM.from_pretrained(str(out), dtype="auto")
    assert saved.dtype == torch.bfloat16


def _with_zero_stage(stage):
    plugin = types.SimpleNamespace(zero_stage=stage, deepspeed_config={"zero_optimization": {"stage": stage}})
    return types.SimpleNamespace(deepspeed_plugin=plugin)


def test_setups_that_cannot_work_are_refused_up_front():
    assert deepspeed_zero_stage(types.SimpleNamespace(deepspeed_plugin=None)) is None
    assert deepspeed_zero_stage(_with_zero_stage(2)) == 2
    lora = ModelArguments(model_name_or_path="m", use_peft=True)
    full = ModelArguments(model_name_or_path="m")
    with pytest.raises(DataError, match="--use_peft is not supported under DeepSpeed ZeRO-3"):
        check_training_setup(lora, _with_zero_stage(3))
    with pytest.raises(DataError, match="--precompute_ref_log_probs false is not supported under DeepSpeed ZeRO-3"):
        check_training_setup(full, _with_zero_stage(3), live_reference=True)
    check_training_setup(lora, _with_zero_stage(2))
    check_training_setup(full, _with_zero_stage(3))
    with pytest.raises(DataError, match="--dtype must be one of"):
        check_training_setup(ModelArguments(model_name_or_path="m", dtype="int3"), _with_zero_stage(None))
