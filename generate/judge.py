"""The trained judge as a product: compare two answers, with a verdict, the reasoning, and
P(A better); and a reward function for RL trainers.

    from generate.judge import Judge
    judge = Judge.from_pretrained("ckpt/gfriend")
    j = judge.compare("Which is larger, 473 or 438?", "473", "438")
    j.verdict, j.p_a, j.consistent, j.reasoning

Every pair is asked in both answer orders (the given one and the swapped one), in the wording and
at the length the judge was trained with. **P(A better)** is read from the judge's own next-token
distribution at its verdict, after its own chain of thought: at the position where it wrote the
verdict letter, p = P(letter A) / (P(letter A) + P(letter B)). In the swapped order the letters
name the other answers, so p there counts for B; the two orders are averaged, so a judge's
position bias cancels, and with `num_samples` > 1 the samples of each order are averaged first.
A judgment with no readable verdict has no verdict position and no p (never a guess); when only
one order has one, p_a is that order's. The verdict is the answer p_a favours; it is None with no
p at all, or when p_a is within TIE of 0.5 (a confident judge that picks a different answer in each
order averages to 0.5 +- 1e-6: the preference is the position's, not the answers'). `consistent`
says whether both orders picked the same answer.

`direct=True` asks for no chain of thought: the judge's response is taken to open with the verdict
line, and P(A) is read at its letter ("Verdict: " then A or B), the letter with the larger
probability being the order's verdict; nothing is sampled (one forward pass per prompt). For a
small judge, reading the verdict's probability directly can beat the verdict after its own
reasoning; this is the row that measures it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from data.collate import budget_batches, pad
from data.templates import VERDICT_PREFIX, fit_judge_prompt, template_ids
from data.tokens import encode_prompt
from generate.parsing import TIE, majority_verdict, verdict_position
from generate.backends import build_sampler
from generate.sampling import Completion, HFSampler


@dataclass
class Judgment:
    verdict: str | None  # "A", "B" (of the answers as given) or None
    p_a: float | None  # P(answer A is better), both orders averaged
    consistent: bool  # both orders picked the same answer
    reasoning: str  # the judgment in the order given (its first sample)
    orders: list[dict] = field(default_factory=list)  # per order: prompt, responses, finished, verdicts,
    # p_as (each sample's P(A as given is better)), p_a (their mean)


class Judge:
    def __init__(self, model, tokenizer, template: str = "compare", max_new_tokens: int = 512,
                 max_prompt_length: int | None = None, num_samples: int = 1, temperature: float = 0.7,
                 batch_size: int = 64, sampler=None, direct: bool = False):
        (self.template,) = template_ids(template)
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.max_prompt_length = max_new_tokens, max_prompt_length
        self.num_samples, self.temperature, self.batch_size = num_samples, temperature, batch_size
        self.direct = direct
        self.sampler = sampler or HFSampler(model, tokenizer, batch_size=batch_size)
        if isinstance(self.sampler, HFSampler):  # the letters' logits come out of the sampling loop
            self.sampler.watch_ids = letter_token_ids(tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, dtype: str = "auto", device: str | None = None,
                        sampler: str = "hf", vllm_options=None, gguf_file: str | None = None, **kwargs) -> "Judge":
        """`sampler="vllm"` generates with vLLM and reads P(A) from the engine: no second model.
        `gguf_file` loads a GGUF file (a path, or a file name inside `name_or_path`)."""
        from models.loading import ModelArguments, load_model, tokenizer_of

        model_args = ModelArguments(model_name_or_path=name_or_path, gguf_file=gguf_file, dtype=dtype)
        tokenizer = tokenizer_of(model_args)
        model = None
        if sampler == "hf":
            model = load_model(model_args, tokenizer)
            model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        return cls(model, tokenizer, sampler=build_sampler(sampler, model_args, tokenizer, model, vllm_options,
                                                           kwargs.get("batch_size", 64)), **kwargs)

    def compare(self, question: str, answer_a: str, answer_b: str, seed: int = 0) -> Judgment:
        return self.compare_batch([{"question": question, "answer_a": answer_a, "answer_b": answer_b}], seed)[0]

    def compare_batch(self, rows: list[dict], seed: int = 0) -> list[Judgment]:
        """One Judgment per {question, answer_a, answer_b} row."""
        prompts, shortened = [], []
        for r in rows:
            for prompt, cut in both_orders(self.tokenizer, self.template, r, self.max_prompt_length):
                prompts.append(prompt)
                shortened.append(cut)
        outs, letters, p_letter_a = (self._direct_verdicts(prompts) if self.direct
                                     else self._sampled_verdicts(prompts, seed))
        judgments, k = [], 0
        for i in range(len(rows)):
            orders = []
            for j, swapped in ((2 * i, False), (2 * i + 1, True)):
                ps = p_letter_a[k : k + len(outs[j])]
                k += len(outs[j])
                # P(answer A as given is better): in the swapped order that is the letter B
                ps = [None if p is None else (1.0 - p if swapped else p) for p in ps]
                known = [p for p in ps if p is not None]
                written = [v for v, _ in letters[j]]
                verdicts = [_as_given(v, swapped) for v in written]
                orders.append({"prompt": prompts[j], "prompt_shortened": shortened[j], "swapped": swapped,
                               "written": written,
                               "responses": [c.text for c in outs[j]], "finished": [c.finished for c in outs[j]],
                               "verdicts": verdicts, "p_as": ps, "p_a": sum(known) / len(known) if known else None})
            judgments.append(_combine(orders))
        return judgments

    def _sampled_verdicts(self, prompts: list[str], seed: int) -> tuple[list, list, list]:
        """Each prompt's judgments (greedy at one sample), their written verdicts (letter, position)
        and P(letter A) at each verdict."""
        greedy = self.num_samples == 1
        outs = self.sampler.generate(prompts, self.num_samples, 0.0 if greedy else self.temperature,
                                     self.max_new_tokens, seed=seed)
        letters = [[verdict_position(c.text) for c in completions] for completions in outs]
        return outs, letters, self._letters_p(prompts, outs, letters)

    def _direct_verdicts(self, prompts: list[str]) -> tuple[list, list, list]:
        """No reasoning: the verdict line is the whole response and its letter is read, not sampled;
        the letter the judge finds likelier is its verdict."""
        opened = [[Completion(f"{VERDICT_PREFIX} A", True)] for _ in prompts]
        found = [[verdict_position(c.text) for c in completions] for completions in opened]
        p_letter_a = self._letters_p(prompts, opened, found)
        letters = [[("A" if p >= 0.5 else "B", pos)] for p, [(_, pos)] in zip(p_letter_a, found)]
        return [[Completion(f"{VERDICT_PREFIX} {v}", True)] for [(v, _)] in letters], letters, p_letter_a

    def _letters_p(self, prompts: list[str], outs: list, letters: list) -> list[float | None]:
        return self.letter_probabilities([(p, c, pos) for p, completions, found in zip(prompts, outs, letters)
                                          for c, (_, pos) in zip(completions, found)])

    def letter_probabilities(self, judged: list[tuple]) -> list[float | None]:
        """P(letter A) / (P(letter A) + P(letter B)) at each (prompt, completion, verdict position)'s
        letter, or None where there is none. The context is the prompt and the response up to the
        letter, tokenized as training tokenizes them; the letters are the two tokens where "...A" and
        "...B" part (in the case the judge wrote). Where the sampled ids are that context, the
        letters' logits are the ones the sampling loop kept at that step (HF sampler); otherwise a
        forward pass reads them (or, for a vLLM judge, the engine)."""
        tok = self.tokenizer
        contexts, letter_ids, where = [], [], []
        out: list[float | None] = [None] * len(judged)
        for n, (prompt, completion, pos) in enumerate(judged):
            if pos is None:
                continue
            response = completion.text
            a, b = ("A", "B") if response[pos].isupper() else ("a", "b")
            with_a = tok(response[:pos] + a, add_special_tokens=False)["input_ids"]
            with_b = tok(response[:pos] + b, add_special_tokens=False)["input_ids"]
            split = next(i for i, (x, y) in enumerate(zip(with_a, with_b)) if x != y)
            pair = (with_a[split], with_b[split])
            seen = completion.watched
            if (seen is not None and pair[0] in seen and pair[1] in seen and len(completion.token_ids) > split
                    and list(completion.token_ids[:split]) == with_a[:split]):
                out[n] = 1.0 / (1.0 + math.exp(seen[pair[1]][split] - seen[pair[0]][split]))
                continue
            contexts.append(encode_prompt(tok, prompt) + with_a[:split])
            letter_ids.append(pair)
            where.append(n)
        if contexts and self.model is None:  # a vLLM judge: the engine reads the two letters' log-probs itself
            probs = self.sampler.letter_probabilities(contexts, letter_ids)
        else:
            probs = self._next_token_probabilities(contexts, letter_ids) if contexts else []
        for n, p in zip(where, probs):
            out[n] = p
        return out

    @torch.no_grad()
    def _next_token_probabilities(self, contexts: list[list[int]], letter_ids: list[tuple[int, int]]) -> list[float]:
        """Each row left-padded with its own positions, so the next-token distribution is read at
        the last position of every row."""
        model, tok = self.model, self.tokenizer
        probs = [0.0] * len(contexts)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        for idx in budget_batches([len(c) for c in contexts], self.batch_size):
            rows = [contexts[i] for i in idx]
            ids = pad([r[::-1] for r in rows], tok.pad_token_id).flip(1)  # left padding
            mask = pad([[1] * len(r) for r in rows], 0).flip(1)
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                           use_cache=False, logits_to_keep=1).logits[:, -1].float()
            pair = torch.tensor([letter_ids[i] for i in idx], device=device)
            for i, value in zip(idx, torch.softmax(logits.gather(1, pair), dim=-1)[:, 0].tolist()):
                probs[i] = value
        model.train(was_training)
        return probs


def both_orders(tokenizer, template: str, row: dict, max_prompt_length: int | None) -> list[tuple[str, bool]]:
    """(prompt, shortened) of a row asked as given and with the answers swapped."""
    return [fit_judge_prompt(tokenizer, template, row["question"], a, b, max_prompt_length)
            for a, b in ((row["answer_a"], row["answer_b"]), (row["answer_b"], row["answer_a"]))]


@functools.lru_cache(maxsize=8)
def letter_token_ids(tokenizer) -> list[int]:
    """Every token that reads as a verdict letter A, B, a or b (with or without a leading space):
    the ids whose logits the sampling loop keeps for P(A better)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [i for i, t in enumerate(tokens)
            if t is not None and tokenizer.convert_tokens_to_string([t]).strip() in ("A", "B", "a", "b")]


def _as_given(letter: str | None, swapped: bool) -> str | None:
    if letter is None or not swapped:
        return letter
    return "B" if letter == "A" else "A"


def _combine(orders: list[dict]) -> Judgment:
    ps = [o["p_a"] for o in orders if o["p_a"] is not None]
    p_a = sum(ps) / len(ps) if ps else None
    verdict = None if p_a is None or abs(p_a - 0.5) < TIE else ("A" if p_a > 0.5 else "B")
    picks = [majority_verdict(o["verdicts"]) for o in orders]
    return Judgment(verdict=verdict, p_a=p_a, consistent=picks[0] is not None and picks[0] == picks[1],
                    reasoning=orders[0]["responses"][0], orders=orders)


def _text(message) -> str:
    """A prompt or completion as TRL passes it: a string, or a list of chat messages."""
    if isinstance(message, str):
        return message
    return "\n\n".join(m["content"] for m in message if m.get("role") != "system") if len(message) > 1 \
        else message[0]["content"]


class JudgeReward:
    """A reward function for TRL's GRPO/RLOO trainers (`reward_funcs=[JudgeReward(judge)]`):
    each completion is judged against the reference answer in column `reference_column`, and its
    reward is P(completion better than the reference), both orders averaged; `centered` gives
    2p - 1 in [-1, 1]. A pair the judge cannot read scores as no preference (0.5, or 0 centred)."""

    def __init__(self, judge: Judge, reference_column: str = "reference", centered: bool = False):
        self.judge, self.reference_column, self.centered = judge, reference_column, centered
        self.__name__ = "gfriend_judge"  # the name TRL logs the reward under

    def __call__(self, prompts, completions, **columns) -> list[float]:
        if self.reference_column not in columns:
            raise KeyError(f"the reward needs a '{self.reference_column}' column with a reference answer per prompt")
        rows = [{"question": _text(p), "answer_a": _text(c), "answer_b": _text(r)}
                for p, c, r in zip(prompts, completions, columns[self.reference_column])]
        step = getattr(columns.get("trainer_state"), "global_step", 0)
        rewards = []
        for j in self.judge.compare_batch(rows, seed=step):
            p = 0.5 if j.p_a is None else j.p_a
            rewards.append(2 * p - 1 if self.centered else p)
        return rewards
