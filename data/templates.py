"""Judge prompt templates (X) and the canonical response format (E + Y).

SFT, preference refinement and evaluation all render prompts here, so a judge is always asked in
the wording it was trained on. Several wordings exist because refinement samples across them
(design.md §1 step 2): the same judgment asked in different words gives more diverse CoTs.
"""
from __future__ import annotations

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
        raise ValueError(f"unknown template id(s) {unknown}; known: {', '.join(TEMPLATES)}")
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


def judge_prompt(tokenizer, template_id: str, question: str, answer_a: str, answer_b: str) -> str:
    return apply_chat(tokenizer, render_judge_prompt(template_id, question, answer_a, answer_b))


def format_response(reasoning: str, verdict: str) -> str:
    """The canonical response: the chain of thought E, then the verdict line Y."""
    if verdict not in ("A", "B"):
        raise ValueError(f"verdict must be 'A' or 'B', got {verdict!r}")
    return f"{reasoning.strip()}\n{VERDICT_PREFIX} {verdict}"


def slot_answers(answer_pos: str, answer_neg: str, pos_slot: str) -> tuple[str, str]:
    """(answer_a, answer_b) with the good answer in `pos_slot` ('A' or 'B')."""
    return (answer_pos, answer_neg) if pos_slot == "A" else (answer_neg, answer_pos)


def judge_prompt_groups(tokenizer, item: dict, templates: list[str], slots=("A", "B")) -> list[dict]:
    """Every way of asking one labelled pair: template x slot of the good answer. Each group has a
    `prompt_id` ("template/slot") that identifies the exact prompt."""
    groups = []
    for tid in templates:
        for slot in slots:
            a, b = slot_answers(item["answer_pos"], item["answer_neg"], slot)
            groups.append({"template": tid, "pos_slot": slot, "prompt_id": f"{tid}/{slot}",
                           "prompt": judge_prompt(tokenizer, tid, item["question"], a, b)})
    return groups


def scalar_rm_text(tokenizer, question: str, answer: str) -> str:
    """What a scalar (Bradley-Terry) reward model reads: the question and one answer as a chat."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}], tokenize=False)
    return f"{apply_chat(tokenizer, question)}{answer}"
