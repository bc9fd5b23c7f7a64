"""The sampling loop (generate/decoding.py): a row samples what it would alone, whatever shares its
batch and whenever its neighbours finish; the log-probs it reports are the model's."""
import math

import pytest
import torch

from data.tokens import encode_prompt
from generate.decoding import draw, sample_batch, top_p_filter
from generate.perplexity import response_perplexities
from generate.sampling import HFSampler
from models.loading import ModelArguments, load_model, tokenizer_of


@pytest.fixture(scope="module")
def judge(sft_dir, synthetic_dir):
    import json
    import os

    args = ModelArguments(model_name_or_path=sft_dir)
    tok = tokenizer_of(args)
    model = load_model(args, tok).eval()
    from data.templates import fit_judge_prompt

    with open(os.path.join(synthetic_dir, "test.jsonl")) as f:
        rows = [json.loads(line) for line in f][:6]
    prompts = [fit_judge_prompt(tok, "compare", r["question"], r["answer_pos"], r["answer_neg"], None)[0] for r in rows]
    prompts[1] = fit_judge_prompt(tok, "brief", rows[1]["question"], rows[1]["answer_neg"], rows[1]["answer_pos"],
                                  None)[0]  # another template: another prompt length
    return model, tok, prompts


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    probs = torch.tensor([[0.0625, 0.5, 0.1875, 0.25]])  # exact in binary
    assert top_p_filter(probs.clone(), 0.75).tolist() == [[0.0, 0.5, 0.0, 0.25]]
    assert top_p_filter(probs.clone(), 0.76).tolist() == [[0.0, 0.5, 0.1875, 0.25]]
    assert top_p_filter(probs.clone(), 0.1).tolist() == [[0.0, 0.5, 0.0, 0.0]]  # the top token always stays
    assert top_p_filter(probs.clone(), 1.0).tolist() == probs.tolist()


def test_draw_follows_the_distribution_and_never_takes_a_zero():
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0]]).repeat(20000, 1)
    tokens = draw(probs, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=5).tolist()
    assert counts[0] == counts[2] == counts[4] == 0
    assert abs(counts[1] / 20000 - 0.25) < 0.015  # 5 standard errors
    assert torch.equal(draw(probs[:50], torch.Generator().manual_seed(1)),
                       draw(probs[:50], torch.Generator().manual_seed(1)))


def test_a_row_samples_what_it_would_alone(judge):
    model, tok, prompts = judge
    ids = [encode_prompt(tok, p) for p in prompts]
    assert len({len(i) for i in ids}) > 1  # padding is exercised
    sampler = HFSampler(model, tok)
    together = sample_batch(model, ids, 1, 0.0, 48, sampler.stop_ids, tok.pad_token_id)
    assert len({len(r.token_ids) for r in together}) > 1 and any(r.finished for r in together)  # rows end apart
    for prompt, row in zip(ids, together):
        (alone,) = sample_batch(model, [prompt], 1, 0.0, 48, sampler.stop_ids, tok.pad_token_id)
        assert alone.token_ids == row.token_ids and alone.finished == row.finished
        assert max(abs(a - b) for a, b in zip(alone.logprobs, row.logprobs)) < 1e-4


def test_samples_follow_the_seed_and_their_log_probs_are_the_models(judge):
    model, tok, prompts = judge
    sampler = HFSampler(model, tok, batch_size=8)  # 4 samples of 2 prompts per call
    first = sampler.generate(prompts, 4, 1.0, 48, seed=3)
    assert sampler.generate(prompts, 4, 1.0, 48, seed=3) == first
    assert sampler.generate(prompts, 4, 1.0, 48, seed=4) != first
    assert all(len({c.token_ids for c in out}) > 1 for out in first[:3])  # K samples, not K copies
    flat = [(p, c) for p, out in zip(prompts, first) for c in out]
    sums, counts, again = sampler.sequence_logps([p for p, _ in flat], [c for _, c in flat])
    # nearly every sample re-tokenizes to the ids it was sampled as; at temperature 1 a few hold a split
    # the tokenizer would merge (" " + "a" for " a"), and those are scored again by a forward pass
    assert sum(again) <= len(again) // 8
    ppl = response_perplexities(model, tok, [p for p, _ in flat], [c.text for _, c in flat], 16,
                                finished=[c.finished for _, c in flat])
    for s, n, reference in zip(sums, counts, ppl):
        assert math.exp(-s / n) == pytest.approx(reference, rel=1e-4)
