import copy
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models.losses import level_values, m_dpo_loss, pair_weights, weights_for_pairs
from models.m_dpo_trainer import MDPOConfig, MDPOTrainer, PairCollator, encode_pair
from tests.conftest import ROOT, run_cli

PROMPT = ("<|user|>\nWhich answer to the question is better?\nQuestion: What is {a} + {b}?\n"
          "Answer A: {x}\nAnswer B: {y}\n<|assistant|>\n")


def make_pairs(n=8):
    pairs = []
    for i in range(n):
        a, b = 10 + i, 20 + 2 * i
        s = a + b
        good, bad = ("A", "B") if i % 2 == 0 else ("B", "A")
        x, y = (s, s + 1) if good == "A" else (s + 1, s)
        levels = [("SA", "SR"), ("WA", "WR"), ("SA", "WR"), ("WA", "SR")][i % 4]
        pairs.append({
            "item_id": f"i{i}", "prompt_id": "compare/" + good, "prompt": PROMPT.format(a=a, b=b, x=x, y=y),
            "chosen": f"{a} + {b} = {s}. Answer {good} matches.\nVerdict: {good}",
            "rejected": f"{a} + {b} = {s + 1}. Answer {bad} matches.\nVerdict: {bad}",
            "chosen_level": levels[0], "rejected_level": levels[1], "chosen_score": 0.5 + i / 40,
            "rejected_score": 0.4 + i / 50, "gap": {"SA": 2, "WA": 1, "WR": -1, "SR": -2}[levels[0]]
            - {"SA": 2, "WA": 1, "WR": -1, "SR": -2}[levels[1]],
        })
    return pairs


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                learning_rate=1e-3, max_steps=1, beta=0.1, weighting="none", report_to="none", use_cpu=True,
                logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0, lr_scheduler_type="constant")
    base.update(kw)
    return MDPOConfig(**base)


def dataset(pairs, tok, args):
    w = weights_for_pairs(pairs, args.weighting, args.alpha, args.weight_normalization == "dataset")
    return [encode_pair(tok, p["prompt"], p["chosen"], p["rejected"], wi)
            for p, wi in zip(pairs, w.tolist())]


def full_batch_loss(trainer, n):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


def test_softplus_weights_by_hand():
    w = pair_weights(torch.tensor([4.0, 3.0, 2.0, 0.0]), alpha=1.0)
    import math
    expected = [math.log(1 + math.exp(g)) for g in (4, 3, 2, 0)]
    assert torch.allclose(w, torch.tensor(expected), atol=1e-6)
    assert torch.allclose(pair_weights(torch.tensor([2.0]), 0.5), torch.tensor([math.log(1 + math.e)]))
    assert level_values(["SA", "WA", "WR", "SR"]).tolist() == [2, 1, -1, -2]
    assert level_values(["SA", "SR"], "continuous", [0.9, 0.8]).tolist() == pytest.approx([0.9, -0.8])
    pairs = make_pairs(4)
    assert weights_for_pairs(pairs, "none", 1.0).tolist() == [1.0] * 4
    lv = weights_for_pairs(pairs, "levels", 1.0)
    assert lv.tolist() == pytest.approx([math.log(1 + math.exp(g)) for g in (4, 2, 3, 3)])
    assert weights_for_pairs(pairs, "levels", 1.0, normalize=True).mean().item() == pytest.approx(1.0)


def test_unit_weights_are_exactly_dpo_and_weights_scale_gradients():
    torch.manual_seed(0)
    pc, pr = torch.randn(5, requires_grad=True), torch.randn(5, requires_grad=True)
    rc, rr = torch.randn(5), torch.randn(5)
    loss, cr, rj = m_dpo_loss(pc, pr, rc, rr, torch.ones(5), beta=0.1)
    dpo = -torch.nn.functional.logsigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()
    assert torch.allclose(loss, dpo)
    assert torch.allclose(cr, 0.1 * (pc - rc)) and torch.allclose(rj, 0.1 * (pr - rr))
    loss.backward()
    g1 = pc.grad.clone()
    pc.grad = None
    w = torch.ones(5)
    w[2] = 2.0
    m_dpo_loss(pc, pr, rc, rr, w, beta=0.1)[0].backward()
    assert torch.allclose(pc.grad[2], 2 * g1[2]) and torch.allclose(pc.grad[[0, 1, 3, 4]], g1[[0, 1, 3, 4]])


def test_loss_matches_trl_dpo_trainer(tiny_model_dir, tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pairs = make_pairs(8)
    args = config(tmp_path, precompute_ref_log_probs=False)
    ours = MDPOTrainer(model=model, args=args, train_dataset=dataset(pairs, tok, args),
                       data_collator=PairCollator(tok.pad_token_id), ref_model=copy.deepcopy(model))
    # Move the policy away from the reference so the loss is not just log 2.
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    our_loss = full_batch_loss(ours, 8)

    trl_args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=8,
                             report_to="none", use_cpu=True, bf16=False, max_length=None, loss_type=["sigmoid"])
    rows = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])
    theirs = trl.DPOTrainer(model=model, ref_model=ours.ref_model, args=trl_args, train_dataset=rows,
                            processing_class=tok)
    batch = next(iter(theirs.get_train_dataloader()))
    with torch.no_grad():
        trl_loss = theirs.compute_loss(model, batch).item()
    assert our_loss == pytest.approx(trl_loss, abs=1e-4)
    import math
    assert abs(our_loss - math.log(2)) > 1e-2


def test_precomputed_and_live_reference_agree(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = make_pairs(8)
    losses = []
    for precompute in (True, False):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        ref = copy.deepcopy(model)
        args = config(tmp_path, precompute_ref_log_probs=precompute, weighting="levels")
        trainer = MDPOTrainer(model=model, args=args, train_dataset=dataset(pairs, tok, args),
                              data_collator=PairCollator(tok.pad_token_id), ref_model=ref)
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        losses.append(full_batch_loss(trainer, 8))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_a_step_changes_the_policy(tiny_model_dir, tmp_path):
    """The authors' loss ran under no_grad and trained nothing; ours must move the weights."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = config(tmp_path, weighting="levels")
    trainer = MDPOTrainer(model=model, args=args, train_dataset=dataset(make_pairs(8), tok, args),
                          data_collator=PairCollator(tok.pad_token_id))
    batch = trainer.data_collator(trainer.train_dataset[:8])
    loss = trainer.compute_loss(model, batch)
    assert loss.requires_grad
    trainer.train()
    changed = sum(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert changed == len(before)


def test_short_run_learns_the_preferences(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = config(tmp_path, weighting="levels", max_steps=30, learning_rate=2e-3, logging_steps=5)
    trainer = MDPOTrainer(model=model, args=args, train_dataset=dataset(make_pairs(16), tok, args),
                          data_collator=PairCollator(tok.pad_token_id))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "rewards/accuracies" in h]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
            "weights/mean"} <= set(logs[-1])
    assert logs[-1]["rewards/accuracies"] > 0.5
    assert logs[-1]["rewards/margins"] > logs[0]["rewards/margins"] and logs[-1]["rewards/margins"] > 0


def test_run_m_dpo_cli_trains_and_saves_a_loadable_judge(tiny_model_dir, tmp_path):
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(8)))
    out = tmp_path / "judge"
    proc = run_cli("run_m_dpo.py", "--config", os.path.join(ROOT, "configs", "mdpo_demo.yaml"),
                      "--model_name_or_path", tiny_model_dir, "--pairs_file", str(pairs_file),
                      "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reusing" not in proc.stderr
    reloaded = AutoModelForCausalLM.from_pretrained(str(out))
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(reloaded.lm_head.weight, original.lm_head.weight)

    # the reference log-probs are kept: a rerun on the same pairs reuses them, changed pairs do not
    again = run_cli("run_m_dpo.py", *proc.args[1:])
    assert again.returncode == 0 and "reusing the reference log-probs of 8 pairs" in again.stderr
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(8)[:6]))
    changed = run_cli("run_m_dpo.py", *proc.args[1:])
    assert "reusing" not in changed.stderr and "stale" in changed.stderr
    with open(out / "reference_logps.json") as f:
        assert len(json.load(f)["logps"]) == 6


def test_malformed_pairs_file_names_the_line(tiny_model_dir, tmp_path):
    pairs_file = tmp_path / "pairs.jsonl"
    good = make_pairs(2)
    bad = dict(good[1])
    del bad["rejected"]
    pairs_file.write_text(json.dumps(good[0]) + "\n" + json.dumps(bad) + "\n")
    proc = run_cli("run_m_dpo.py", "--config", os.path.join(ROOT, "configs", "mdpo_demo.yaml"),
                   "--model_name_or_path", tiny_model_dir, "--pairs_file", str(pairs_file),
                   "--output_dir", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {pairs_file}:2: missing field 'rejected'"
    assert not (tmp_path / "o" / "config.json").exists()


def test_sft_loss_term_adds_the_chosen_nll_and_loss_weights_scale_the_terms(tiny_model_dir, tmp_path):
    """TRL 1.x's loss_type/loss_weights."""
    from utils.io import DataError

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pairs = make_pairs(4)
    settings = {"dpo": dict(loss_type=["sigmoid"]),
                "dpo+nll": dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5]),
                "nll": dict(loss_type=["sft"], loss_weights=[0.5])}
    losses = {}
    for name, kw in settings.items():
        args = config(tmp_path, **kw)
        trainer = MDPOTrainer(model=model, args=args, train_dataset=dataset(pairs, tok, args),
                              data_collator=PairCollator(tok.pad_token_id))
        losses[name] = full_batch_loss(trainer, 4)
    # the model's own loss on the chosen rows alone is the per-token NLL
    from data.collate import collate_prompt_response, encode_prompt_response
    batch = collate_prompt_response([encode_prompt_response(tok, p["prompt"], p["chosen"]) for p in pairs],
                                    tok.pad_token_id)
    with torch.no_grad():
        nll = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"]).loss.item()
    assert losses["dpo+nll"] == pytest.approx(losses["dpo"] + 0.5 * nll, abs=1e-5)
    assert losses["nll"] == pytest.approx(0.5 * nll, abs=1e-5) and losses["dpo"] > 0.1
    for bad, message in ((dict(loss_type=["ipo"]), "--loss_type must be"),
                         (dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0]), "--loss_weights needs one weight"),
                         (dict(beta=0.0), "--beta must be")):
        with pytest.raises(DataError, match=message):
            config(tmp_path, **bad)


def test_weights_normalised_per_batch_give_a_weighted_mean_and_over_the_data_mean_one(tiny_model_dir, tmp_path):
    """--weight_normalization: none is mean(w * loss), batch is sum(w * loss) / sum(w) (blind to the
    weights' scale), dataset divides w by its mean over the pairs."""
    from utils.io import DataError

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pairs = make_pairs(8)
    losses, weights = {}, {}
    for name in ("none", "batch", "dataset"):
        args = config(tmp_path, weighting="levels", alpha=1.0, weight_normalization=name)
        data = dataset(pairs, tok, args)
        weights[name] = torch.tensor([ex["weight"] for ex in data])
        trainer = MDPOTrainer(model=model, args=args, train_dataset=data, data_collator=PairCollator(tok.pad_token_id))
        losses[name] = full_batch_loss(trainer, 8)
        if name == "batch":  # the weights' scale does not matter to a weighted mean
            for ex in data:
                ex["weight"] *= 3.0
            losses["batch x3"] = full_batch_loss(trainer, 8)
    assert weights["none"].max() / weights["none"].min() > 1.5  # gaps 1 to 4: the weights differ
    assert torch.allclose(weights["dataset"], weights["none"] / weights["none"].mean())
    assert weights["dataset"].mean().item() == pytest.approx(1.0)
    assert losses["batch"] == pytest.approx(losses["none"] * 8 / weights["none"].sum().item(), rel=1e-5)
    assert losses["batch x3"] == pytest.approx(losses["batch"], rel=1e-5)
    assert losses["dataset"] == pytest.approx(losses["batch"], rel=1e-5)  # one batch holds the whole data set
    with pytest.raises(DataError, match="--weight_normalization must be one of"):
        config(tmp_path, weight_normalization="mean")


def test_pairs_whose_chosen_equals_rejected_are_skipped_and_counted(tiny_model_dir, tmp_path):
    import run_m_dpo
    from utils.io import DataError

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = make_pairs(4)
    pairs[1]["rejected"] = pairs[1]["chosen"]
    args = config(tmp_path, weighting="levels")
    data = run_m_dpo.build_dataset(pairs, tok, args, "pairs.jsonl")
    assert len(data) == 3
    cut = dict(pairs[1], rejected_finished=False)  # the same text, once cut at max_new_tokens: a real pair
    assert len(run_m_dpo.build_dataset([cut], tok, args, "pairs.jsonl")) == 1
    with pytest.raises(DataError, match=r"pairs.jsonl: no pair left to train on \(1 chosen equals rejected\)"):
        run_m_dpo.build_dataset([pairs[1]], tok, args, "pairs.jsonl")
    with pytest.raises(DataError, match=r"pairs.jsonl: record 1: the prompt has \d+ tokens, more than "
                                        r"--max_prompt_length 20"):
        run_m_dpo.build_dataset(pairs, tok, config(tmp_path, max_prompt_length=20, max_length=64), "pairs.jsonl")
