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


def _requests(tok, prompts, k, temperature, seed=0):
    from generate.continuous import Request
    from utils.seed import derive_seed

    return [Request(encode_prompt(tok, p), k, temperature, derive_seed(seed, i)) for i, p in enumerate(prompts)]


def test_continuous_batching_judges_each_prompt_as_alone_and_keeps_the_batch_full(judge):
    """Greedy, 6 prompts through 2 slots: four wait at first, each takes a freed slot; the cache
    shifts its columns left more than once; every judgment equals the prompt judged alone."""
    from generate.continuous import sample_continuous

    model, tok, prompts = judge
    stop = HFSampler(model, tok).stop_ids
    occupancy = []
    rows = sample_continuous(model, _requests(tok, prompts, 1, 0.0), 48, stop, tok.pad_token_id, slots=2,
                             occupancy=occupancy)
    assert len(occupancy) > 2 * 48 + 1  # more steps than the cache's room: it shifted
    tail = max(len(r[0].token_ids) for r in rows)  # the last judgment may end alone
    assert set(occupancy[:-tail]) == {2} and set(occupancy[-tail:]) <= {1, 2}
    assert sum(occupancy) == sum(len(r[0].token_ids) for r in rows)  # a busy row writes a token every step
    for prompt, (row,) in zip(prompts, rows):
        (alone,) = sample_batch(model, [encode_prompt(tok, prompt)], 1, 0.0, 48, stop, tok.pad_token_id)
        assert alone.token_ids == row.token_ids and alone.finished == row.finished
        assert max(abs(a - b) for a, b in zip(alone.logprobs, row.logprobs)) < 1e-4


def test_a_sampled_row_follows_its_own_seed_whatever_shares_the_batch(judge):
    from generate.continuous import sample_continuous

    model, tok, prompts = judge
    stop = HFSampler(model, tok).stop_ids
    requests = _requests(tok, prompts, 3, 1.0, seed=7)
    wide = sample_continuous(model, requests, 32, stop, tok.pad_token_id, slots=18)
    narrow = sample_continuous(model, requests, 32, stop, tok.pad_token_id, slots=3)  # every prompt waits its turn
    assert [[s.token_ids for s in r] for r in wide] == [[s.token_ids for s in r] for r in narrow]
    assert all(len({tuple(s.token_ids) for s in r}) > 1 for r in wide[:3])  # K samples, not K copies
    alone = sample_continuous(model, requests[2:3], 32, stop, tok.pad_token_id, slots=3)
    assert [s.token_ids for s in alone[0]] == [s.token_ids for s in wide[2]]
    other = sample_continuous(model, _requests(tok, prompts, 3, 1.0, seed=8), 32, stop, tok.pad_token_id, slots=18)
    assert [[s.token_ids for s in r] for r in other] != [[s.token_ids for s in r] for r in wide]


def test_eager_attention_and_the_batch_by_batch_path_judge_alike(judge, sft_dir):
    """A model loaded with eager attention (its prompts prefill eagerly, its steps take the slots'
    attention), and the batch-by-batch path for models the slots do not serve: the same greedy
    judgments."""
    model, tok, prompts = judge
    eager = load_model(ModelArguments(model_name_or_path=sft_dir, attn_implementation="eager"), tok).eval()
    assert eager.config._attn_implementation == "eager"
    reference = [o[0].token_ids for o in HFSampler(model, tok, batch_size=2).generate(prompts, 1, 0.0, 40, 0)]
    assert [o[0].token_ids for o in HFSampler(eager, tok, batch_size=2).generate(prompts, 1, 0.0, 40, 0)] == reference
    batches = HFSampler(model, tok, batch_size=2, continuous=False)
    assert [o[0].token_ids for o in batches.generate(prompts, 1, 0.0, 40, 0)] == reference


def test_same_judgments_fails_on_one_changed_verdict(tmp_path):
    import copy
    import json

    from benchmarks import same_judgments

    order = {"responses": ["A is right.\nVerdict: A"], "finished": [True], "verdicts": ["A"], "verdict": "A",
             "correct": True, "p_pos": 0.9}
    before = {"items": {"t.jsonl": [{"orders": [order, {**order, "p_pos": None}]}]}}
    after = copy.deepcopy(before)
    after["items"]["t.jsonl"][0]["orders"][0]["p_pos"] = 0.9 + 1e-9
    paths = [tmp_path / "before.json", tmp_path / "after.json"]
    for path, results in zip(paths, (before, after)):
        path.write_text(json.dumps(results))
    same_judgments.main([str(p) for p in paths])  # float rounding in P(A better) is no difference
    assert same_judgments.compare(before, after)["t.jsonl"] == {"orders": 2, "identical": 2,
                                                               "max_p_diff": pytest.approx(1e-9)}
    after["items"]["t.jsonl"][0]["orders"][1]["verdict"] = "B"
    paths[1].write_text(json.dumps(after))
    with pytest.raises(SystemExit):
        same_judgments.main([str(p) for p in paths])
