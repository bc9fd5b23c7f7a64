"""Judge prompt templates (X), the one length budget for prompts, and the canonical response
format (E + Y).

SFT, preference refinement, M-DPO (through the prompts refinement wrote) and evaluation all render
prompts here, so a judge is always asked in the wording it was trained on, at the same length.
Several wordings exist because refinement samples across them (docs/method.md): the same judgment
asked in different words gives more diverse CoTs.

The length budget: a prompt longer than `max_prompt_length` tokens is fitted by shortening the
answers (and, if they alone cannot make room, the question) in the middle, with a visible marker,
*before* the chat template is applied: the template, the "Answer A:" labels and the generation
header always survive, and no stage ever cuts token ids.
"""
from __future__ import annotations

from typing import Callable

from data.tokens import encode_prompt
from utils.io import DataError

TEMPLATES: dict[str, str] = {
    "compare": (
        "Which answer to the question is better?\n"
        "Question: {question}\n"
        "Answer A: {answer_a}\n"
        "Answer B: {answer_b}\n"
        "Think step by step, then end with 'Verdict: A' or 'Verdict: B'."
    ),
    "judge": (
        "You are a careful judge. Compare the two responses to the user's request.\n"
        "[Request]\n{question}\n"
        "[Response A]\n{answer_a}\n"
        "[Response B]\n{answer_b}\n"
        "Explain your reasoning, then give the verdict."
    ),
    "brief": (
        "Question: {question}\n"
        "A: {answer_a}\n"
        "B: {answer_b}\n"
        "Which of A and B is correct and helpful? Reason first, then decide."
    ),
}
DEFAULT_TEMPLATE = "compare"
ORDERS = {"both": ("A", "B"), "A": ("A",), "B": ("B",)}  # slot(s) of the good answer
VERDICT_PREFIX = "Verdict:"


def template_ids(spec: str | list[str] = "all") -> list[str]:
    """'all', one id, a comma-separated list, or a list of ids -> validated list of ids."""
    if isinstance(spec, str):
        spec = list(TEMPLATES) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [t for t in spec if t not in TEMPLATES]
    if unknown or not spec:
        raise DataError(f"--templates: unknown template id(s) {unknown}; known: {', '.join(TEMPLATES)}")
    return list(spec)


def render_judge_prompt(template_id: str, question: str, answer_a: str, answer_b: str) -> str:
    """The judge prompt X, before any chat template."""
    return TEMPLATES[template_id].format(question=question, answer_a=answer_a, answer_b=answer_b)


def apply_chat(tokenizer, user_text: str) -> str:
    """Wrap a user message in the tokenizer's chat template (generation prompt included), or
    return it with a trailing newline for base models without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )
    return user_text + "\n"


def fit_judge_prompt(tokenizer, template_id: str, question: str, answer_a: str, answer_b: str,
                     max_prompt_length: int | None = None) -> tuple[str, bool]:
    """(the chat-templated judge prompt fitted to `max_prompt_length` tokens, whether it was shortened)."""
    render = lambda f: apply_chat(tokenizer, render_judge_prompt(template_id, *f))  # noqa: E731
    return fit_prompt(tokenizer, render, [question, answer_a, answer_b], max_prompt_length)


def judge_prompt(tokenizer, template_id: str, question: str, answer_a: str, answer_b: str,
                 max_prompt_length: int | None = None) -> str:
    return fit_judge_prompt(tokenizer, template_id, question, answer_a, answer_b, max_prompt_length)[0]


OMITTED = "\n[... {n} tokens omitted ...]\n"
MIN_KEEP = 16  # tokens a shortened field keeps at least (half at each end)


def fit_prompt(tokenizer, render: Callable[[list[str]], str], fields: list[str], max_prompt_length: int | None,
               question_first: bool = True) -> tuple[str, bool]:
    """(prompt, shortened): `render(fields)`, with the fields shortened in their middle until the
    prompt has at most `max_prompt_length` tokens. fields[0] is the question: it keeps its length
    while the others (the answers) can still keep a fair share, then all share the room."""
    prompt = render(fields)
    n = len(encode_prompt(tokenizer, prompt))
    if max_prompt_length is None or n <= max_prompt_length:
        return prompt, False
    ids = [tokenizer(f, add_special_tokens=False)["input_ids"] for f in fields]
    lengths = [len(x) for x in ids]
    marker = len(tokenizer(OMITTED.format(n=max(lengths)), add_special_tokens=False)["input_ids"])
    overhead = len(encode_prompt(tokenizer, render([""] * len(fields))))
    room = max_prompt_length - overhead
    for _ in range(8):  # token merges across the cuts can cost a few tokens: tighten and retry
        first = _share(room, lengths, question_first)  # which fields must be cut, then room for their markers
        keep = _share(room - marker * sum(k < n for k, n in zip(first, lengths)), lengths, question_first)
        if any(k < MIN_KEEP for k, n in zip(keep, lengths) if k < n):
            raise DataError(f"--max_prompt_length {max_prompt_length} leaves too little room: the template takes "
                            f"{overhead} tokens and each shortened field at least {MIN_KEEP} plus a {marker}-token "
                            f"marker; the fields have {', '.join(map(str, lengths))} tokens")
        prompt = render([f if k >= len(x) else _cut_middle(tokenizer, x, k) for f, x, k in zip(fields, ids, keep)])
        n = len(encode_prompt(tokenizer, prompt))
        if n <= max_prompt_length:
            return prompt, True
        room -= n - max_prompt_length
    raise DataError(f"could not fit a prompt into --max_prompt_length {max_prompt_length} tokens")


def _share(room: int, lengths: list[int], question_first: bool) -> list[int]:
    """Tokens each field keeps. The answers are shortened first; the question too once each answer
    would keep less than a quarter of the room."""
    if question_first and room - lengths[0] >= (room // 4) * (len(lengths) - 1):
        return [lengths[0]] + _water_fill(room - lengths[0], lengths[1:])
    return _water_fill(room, lengths)


def _water_fill(room: int, lengths: list[int]) -> list[int]:
    """Equal shares of `room`; a field shorter than its share keeps its length and leaves the rest."""
    keep = [0] * len(lengths)
    left = sorted(range(len(lengths)), key=lambda i: lengths[i])
    while left:
        share = room // len(left)
        i = left.pop(0)
        keep[i] = min(lengths[i], share)
        room -= keep[i]
    return keep


def _cut_middle(tokenizer, ids: list[int], keep: int) -> str:
    head, tail = keep - keep // 2, keep // 2
    return (tokenizer.decode(ids[:head]) + OMITTED.format(n=len(ids) - keep)
            + (tokenizer.decode(ids[len(ids) - tail:]) if tail else ""))


def format_response(reasoning: str, verdict: str) -> str:
    """The canonical response: the chain of thought E, then the verdict line Y."""
    if verdict not in ("A", "B"):
        raise ValueError(f"verdict must be 'A' or 'B', got {verdict!r}")
    return f"{reasoning.strip()}\n{VERDICT_PREFIX} {verdict}"


def slot_answers(answer_pos: str, answer_neg: str, pos_slot: str) -> tuple[str, str]:
    """(answer_a, answer_b) with the good answer in `pos_slot` ('A' or 'B')."""
    return (answer_pos, answer_neg) if pos_slot == "A" else (answer_neg, answer_pos)


def judge_prompt_groups(tokenizer, item: dict, templates: list[str], slots=("A", "B"),
                        max_prompt_length: int | None = None) -> list[dict]:
    """Every way of asking one labelled pair: template x slot of the good answer. Each group has a
    `prompt_id` ("template/slot") that identifies the exact prompt, and says whether the prompt
    was shortened to fit `max_prompt_length`."""
    groups = []
    for tid in templates:
        for slot in slots:
            a, b = slot_answers(item["answer_pos"], item["answer_neg"], slot)
            try:
                prompt, shortened = fit_judge_prompt(tokenizer, tid, item["question"], a, b, max_prompt_length)
            except DataError as e:
                raise DataError(f"item {item['id']!r}: {e}") from None
            groups.append({"template": tid, "pos_slot": slot, "prompt_id": f"{tid}/{slot}", "prompt": prompt,
                           "shortened": shortened})
    return groups


def scalar_rm_text(tokenizer, question: str, answer: str, max_length: int | None = None) -> str:
    """What a scalar (Bradley-Terry) reward model reads: the question and one answer as a chat,
    fitted to `max_length` tokens under the one prompt budget (the answer, then the question,
    shortened in the middle): the answer's end, where the reward is read, always survives."""
    def render(fields: list[str]) -> str:
        q, a = fields
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                                 tokenize=False)
        return f"{apply_chat(tokenizer, q)}{a}"

    return fit_prompt(tokenizer, render, [question, answer], max_length)[0]
