import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from data.collate import collate_prompt_response, encode_prompt_response
from generate.perplexity import ppl_score, response_perplexities


def test_perplexity_is_exp_of_the_models_own_masked_loss(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = ["<|user|>\nWhat is 1 + 1?\n<|assistant|>\n",
               "<|user|>\nReverse the word 'abcd', carefully and slowly, please.\n<|assistant|>\n",
               "<|user|>\nHow do I bake bread?\n<|assistant|>\n"]
    responses = ["1 + 1 = 2.\nVerdict: A", "Reversed, 'abcd' is 'dcba'. Answer B matches.\nVerdict: B", ""]
    expected = []
    for p, r in zip(prompts, responses):  # one at a time, no padding: the model's own loss
        ex = collate_prompt_response([encode_prompt_response(tok, p, r)], tok.pad_token_id)
        with torch.no_grad():
            expected.append(math.exp(model(input_ids=ex["input_ids"], labels=ex["labels"]).loss.item()))
    got = response_perplexities(model, tok, prompts, responses, batch_size=3)  # one padded batch
    for g, e in zip(got, expected):
        assert abs(g - e) <= 1e-5 * e, (got, expected)
    assert response_perplexities(model, tok, prompts, responses, batch_size=1) == \
        response_perplexities(model, tok, prompts, responses, batch_size=1)


def test_score_form():
    assert ppl_score(1.0, 10.0) == math.exp(-0.1)
    assert ppl_score(5.0, 10.0) > ppl_score(20.0, 10.0)
