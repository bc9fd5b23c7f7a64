"""Prompts as real instruct models see them, in every stage: Llama-3-style and Qwen2.5-style
tokenizers (built here, no hub), one length budget, BOS once, the template's own end of turn, and
samples cut at max_new_tokens recorded as such."""
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import run_eval
import run_m_dpo
import generate.refinement as refine
import run_sft
from data.collate import IGNORE_INDEX, encode_prompt_response
from data.templates import apply_chat, fit_judge_prompt
from data.tokens import encode_prompt, end_of_turn_id, stop_token_ids
from generate.sampling import HFSampler
from models.m_dpo_trainer import MDPOConfig
from utils.io import DataError

STYLES = ("llama3", "qwen2", "llama3-base")  # llama3-base: the Llama 3 tokenizer without a chat template
MAX_PROMPT = 300
# UltraFeedback-length answers: several thousand characters each.
LONG_A = ("Photosynthesis converts light into chemical energy. " + "The light reactions split water. " * 120
          + "THE END A.")
LONG_B = "Plants eat sunlight, roughly speaking. " + "Chlorophyll absorbs red and blue light. " * 110 + "THE END B."


@pytest.fixture(scope="module", params=STYLES)
def styled(request, tmp_path_factory):
    """(style, model dir) of a tiny random Llama with that tokenizer."""
    from toy.model import build_tiny

    style = request.param
    path = str(tmp_path_factory.mktemp(style))
    build_tiny(path, seed=0, chat_style=style.replace("-base", ""), hidden_size=32, num_layers=1, num_heads=2,
               intermediate_size=64, max_position_embeddings=2048)
    if style.endswith("-base"):
        tok = AutoTokenizer.from_pretrained(path)
        tok.chat_template = None
        template_file = os.path.join(path, "chat_template.jinja")
        if os.path.exists(template_file):
            os.remove(template_file)
        tok.save_pretrained(path)
    return style, path


def _load(path):
    from models.loading import load_tokenizer

    return load_tokenizer(path), AutoModelForCausalLM.from_pretrained(path)


def test_the_fixtures_have_the_structure_of_the_real_tokenizers(styled):
    style, path = styled
    tok, _ = _load(path)
    eot = tok.convert_ids_to_tokens(end_of_turn_id(tok))
    if style == "llama3":
        assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|end_of_text|>" and eot == "<|eot_id|>"
        assert tok.convert_ids_to_tokens(stop_token_ids(tok)) == ["<|eot_id|>", "<|end_of_text|>"]
        assert tok("x")["input_ids"][0] == tok.bos_token_id  # the tokenizer adds BOS to plain text
        assert "<|start_header_id|>assistant<|end_header_id|>" in tok.apply_chat_template(
            [{"role": "user", "content": "q"}], tokenize=False, add_generation_prompt=True)
    elif style == "qwen2":
        assert tok.bos_token is None and eot == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
        assert tok.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False,
                                       add_generation_prompt=True).startswith("<|im_start|>system\n")
    else:
        assert not tok.chat_template and eot == "<|end_of_text|>"


def test_the_length_budget_shortens_answers_in_the_middle_and_keeps_the_template(styled):
    style, path = styled
    tok, _ = _load(path)
    question = "Explain photosynthesis to a ten-year-old."
    full, shortened = fit_judge_prompt(tok, "compare", question, LONG_A, LONG_B)
    assert not shortened and len(tok(full, add_special_tokens=False)["input_ids"]) > 3 * MAX_PROMPT
    prompt, shortened = fit_judge_prompt(tok, "compare", question, LONG_A, LONG_B, MAX_PROMPT)
    ids = encode_prompt(tok, prompt)
    assert shortened and MAX_PROMPT - 40 <= len(ids) <= MAX_PROMPT
    assert f"Question: {question}\nAnswer A: Photosynthesis" in prompt  # question intact, labels survive
    assert "THE END A.\nAnswer B: Plants eat" in prompt and "THE END B." in prompt  # heads and tails survive
    assert prompt.count("tokens omitted ...]") == 2
    assert prompt.endswith(apply_chat(tok, "")[-12:])  # the generation header survives
    if style != "llama3-base":
        assert prompt.startswith(apply_chat(tok, "")[:12])
    # a question of UltraFeedback length is shortened too, once the answers alone cannot make room
    prompt, _ = fit_judge_prompt(tok, "compare", "Summarise: " + LONG_A, "Short.", "Also short.", MAX_PROMPT)
    assert len(encode_prompt(tok, prompt)) <= MAX_PROMPT and prompt.count("omitted") == 1
    assert "Answer A: Short.\nAnswer B: Also short." in prompt
    with pytest.raises(DataError, match="--max_prompt_length 40 leaves too little room"):
        fit_judge_prompt(tok, "compare", question, LONG_A, LONG_B, 40)


def test_a_scalar_reward_models_text_is_fitted_in_the_middle_and_keeps_the_answers_end(styled):
    from data.templates import scalar_rm_text

    style, path = styled
    tok, _ = _load(path)
    question = "Explain photosynthesis to a ten-year-old."
    full = scalar_rm_text(tok, question, LONG_A)
    text = scalar_rm_text(tok, question, LONG_A, MAX_PROMPT)
    assert len(encode_prompt(tok, full)) > 3 * MAX_PROMPT
    assert MAX_PROMPT - 40 <= len(encode_prompt(tok, text)) <= MAX_PROMPT
    assert text.count("tokens omitted ...]") == 1 and question in text
    assert full.endswith(text[text.index("THE END A."):])  # the answer's end and the template after it survive
    if style == "qwen2":
        assert text.endswith("THE END A.<|im_end|>\n")


class Recorder:
    """Wraps the sampling loops (continuous and batch by batch) and the scoring forward to record the
    ids each stage feeds the model."""

    def __init__(self, model, monkeypatch):
        import generate.sampling as sampling

        self.generated, self.scored = [], []
        real_sample = sampling.sample_batch

        def sample(model, prompts, num_samples, temperature, max_new_tokens, stop_ids, *rest):
            self.stop_ids = stop_ids
            self.generated.extend(list(p) for p in prompts)
            return real_sample(model, prompts, num_samples, temperature, max_new_tokens, stop_ids, *rest)

        monkeypatch.setattr(sampling, "sample_batch", sample)
        real_continuous = sampling.sample_continuous

        def continuous(model, requests, max_new_tokens, stop_ids, *rest):
            self.stop_ids = stop_ids
            self.generated.extend(list(r.prompt) for r in requests)
            return real_continuous(model, requests, max_new_tokens, stop_ids, *rest)

        monkeypatch.setattr(sampling, "sample_continuous", continuous)
        import generate.perplexity as perplexity

        real_forward = perplexity.forward_logps

        def forward(model, batch):
            for ids, labels in zip(batch["input_ids"], batch["labels"]):
                self.scored.append((ids.tolist(), labels.tolist()))
            return real_forward(model, batch)

        monkeypatch.setattr(perplexity, "forward_logps", forward)


def _prompt_part(ids, labels):
    """The ids before the first labelled one (right padding after the response is not prompt)."""
    first = next(n for n, label in enumerate(labels) if label != IGNORE_INDEX)
    return list(ids[:first])


def test_every_stage_sees_the_same_prompt_ids_one_bos_and_the_templates_end_of_turn(styled, monkeypatch, tmp_path):
    style, path = styled
    tok, model = _load(path)
    item = {"id": "x1", "question": "Which is larger, 473 or 438?", "answer_pos": LONG_A, "answer_neg": LONG_B}
    eot = end_of_turn_id(tok)

    # SFT: a judge-form row whose good answer is in slot A, asked with the 'compare' template
    sft_row = {"question": item["question"], "answer_a": LONG_A, "answer_b": LONG_B,
               "chain_of_thought": "A explains it.", "verdict": "A"}
    (sft,) = run_sft.build_dataset([sft_row], tok, run_sft.SFTDataArguments(templates="compare", max_length=2048,
                                                                             max_prompt_length=MAX_PROMPT))
    prompt_ids = _prompt_part(sft["input_ids"], sft["labels"])
    assert len(prompt_ids) <= MAX_PROMPT and sft["input_ids"][-1] == eot

    # refinement: sampling and scoring, through the chunk the script runs
    recorder = Recorder(model, monkeypatch)
    args = refine.RefinementArguments(num_samples=2, templates="compare", orders="A", max_new_tokens=6,
                                      max_prompt_length=MAX_PROMPT, generation_batch_size=8,
                                      score_with="model")  # the scoring pass sees the ids sampling saw
    groups = refine.prompt_groups([item], tok, args, ["compare"])[0]
    records = refine.sample_chunk(0, groups, HFSampler(model, tok, batch_size=8), model, tok, args, [1.0])
    assert recorder.generated == [prompt_ids]  # one prompt, its K samples in one call
    assert recorder.stop_ids == stop_token_ids(tok)
    assert len(recorder.scored) == len(records) == 2
    scored = sorted(recorder.scored, key=lambda s: [label for label in s[1] if label != IGNORE_INDEX])
    for (ids, labels), record in zip(scored, sorted(records, key=lambda r: encode_prompt_response(
            tok, r["prompt"], r["response"], r["finished"])["labels"])):
        assert _prompt_part(ids, labels) == prompt_ids
        response = [label for label in labels if label != IGNORE_INDEX]
        assert (response[-1:] == [eot]) == record["finished"]  # an end of turn only where one was produced

    # M-DPO, on pairs as refinement writes them (one rejected judgment cut at max_new_tokens)
    pair = {"prompt": records[0]["prompt"], "chosen": "A explains it.\nVerdict: A", "rejected": "B is",
            "rejected_finished": False, "chosen_level": "SA", "rejected_level": "WR"}
    (ex,) = run_m_dpo.build_dataset([pair], tok, MDPOConfig(output_dir=str(tmp_path), max_length=2048,
                                                            max_prompt_length=MAX_PROMPT, use_cpu=True))
    assert _prompt_part(ex["chosen_input_ids"], ex["chosen_labels"]) == prompt_ids
    assert _prompt_part(ex["rejected_input_ids"], ex["rejected_labels"]) == prompt_ids
    assert ex["chosen_input_ids"][-1] == eot and eot not in ex["rejected_labels"]

    # evaluation, in the order where the good answer is in slot A
    recorder.generated.clear()
    from generate.judge import Judge

    judge = Judge(model, tok, "compare", max_new_tokens=6, max_prompt_length=MAX_PROMPT)
    run_eval.judge_generative([{**item, "_index": "0"}], judge, seed=0)
    assert recorder.generated[0] == prompt_ids or recorder.generated[1] == prompt_ids

    bos = tok.bos_token_id
    if style == "qwen2":
        assert bos is None and tok.convert_ids_to_tokens(prompt_ids[0]) == "<|im_start|>"
    else:  # the template writes BOS (llama3) or the tokenizer would add it (llama3-base): exactly one
        assert prompt_ids[0] == bos and prompt_ids.count(bos) == 1


def test_generation_stops_at_the_end_of_turn_and_cut_samples_are_marked(styled):
    _, path = styled
    tok, model = _load(path)
    hidden = model.config.hidden_size

    def always(token_id):  # a model whose every next token is `token_id`
        model.lm_head = torch.nn.Linear(hidden, model.config.vocab_size, bias=True)
        with torch.no_grad():
            model.lm_head.weight.zero_()
            model.lm_head.bias.fill_(-10.0)
            model.lm_head.bias[token_id] = 10.0

    sampler = HFSampler(model, tok, batch_size=4)
    always(end_of_turn_id(tok))
    (out,) = sampler.generate(["Is 2 > 1?"], 2, 1.0, 12, seed=0)
    assert [(c.text, c.finished) for c in out] == [("", True), ("", True)]
    word = tok("hello", add_special_tokens=False)["input_ids"][0]
    always(word)
    (out,) = sampler.generate(["Is 2 > 1?"], 1, 0.0, 5, seed=0)
    assert not out[0].finished and out[0].text.count(tok.decode([word]).strip()) == 5
    (copies,) = sampler.generate(["Is 2 > 1?"], 3, 0.0, 5, seed=0)  # greedy: K copies of the one judgment
    assert copies == [out[0]] * 3
    cut = encode_prompt_response(tok, "Is 2 > 1?", out[0].text, finished=out[0].finished)
    assert end_of_turn_id(tok) not in cut["input_ids"][-2:]


def test_unfinished_samples_are_rejected_or_dropped_and_counted():
    def record(i, correct, finished, score):
        return {"item_id": "1", "prompt_id": "compare/A", "prompt": "p", "response": f"r{i}",
                "verdict": "A" if correct else "B", "correct": correct, "finished": finished, "ppl_score": score,
                "ppl": 1.0, "prompt_shortened": i == 0}

    records = [record(0, True, True, 0.9), record(1, True, False, 0.95), record(2, False, True, 0.2)]
    args = refine.RefinementArguments(threshold="0.5", unfinished="reject")
    out, pairs, stats = refine.finalize([dict(r) for r in records], args)
    assert [r["level"] for r in out] == ["SA", "SR", "WR"]  # correct but cut: rejected, and confidently so
    assert stats["unfinished"] == 1 and stats["prompts_shortened"] == 1 and stats["without_level"] == 0
    assert {(p["chosen"], p["rejected"], p["rejected_finished"]) for p in pairs} == \
        {("r0", "r1", False), ("r0", "r2", True)}
    out, pairs, stats = refine.finalize([dict(r) for r in records], refine.RefinementArguments(threshold="0.5",
                                                                                               unfinished="drop"))
    assert [r["level"] for r in out] == ["SA", None, "WR"] and stats["without_level"] == 1
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("r0", "r2")]
