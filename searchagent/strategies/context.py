"""Fitting retrieved passages into a prompt's token budget, and a whole prompt into the
generator's context (``fit_prompt``: passages first, then the question)."""

from __future__ import annotations

from searchagent.errors import InputError
from searchagent.types import Hit


def fit_passage(generator, title: str, text: str, max_tokens: int) -> str:
    """``text`` cut (on word boundaries) so that title + text take at most ``max_tokens``."""
    if max_tokens <= 0:
        return ""
    used = generator.count_tokens(f"Title: {title}\n{text}")
    if used <= max_tokens:
        return text
    words = text.split()
    keep = int(len(words) * max_tokens / used)
    while keep > 0:
        cut = " ".join(words[:keep])
        if generator.count_tokens(f"Title: {title}\n{cut}") <= max_tokens:
            return cut + " ..."
        keep = int(keep * 0.85)
    return ""


def pack(generator, hits: list[Hit], budget_tokens: int,
         per_passage: int | None = None) -> list[tuple[str, str]]:
    """Passages in order, each at most ``per_passage`` tokens, all within the budget."""
    packed: list[tuple[str, str]] = []
    left = budget_tokens
    for hit in hits:
        cap = min(left, per_passage or left)
        text = fit_passage(generator, hit.title, hit.text, cap)
        if not text:
            break
        packed.append((hit.title, text))
        left -= generator.count_tokens(f"Title: {hit.title}\n{text}") + 2
    return packed


def prompt_size(generator, messages: list[dict]) -> int:
    """Prompt tokens of ``messages``: exact when the backend can render its chat template
    (``prompt_tokens``), else the contents' tokens plus a few per message."""
    measure = getattr(generator, "prompt_tokens", None)
    if callable(measure):
        return len(measure(messages))
    return sum(generator.count_tokens(m["content"]) + 4 for m in messages) + 2


def _cut_question(question: str, keep: int) -> str:
    """The question's opening and its end (where the ask usually is), ``keep`` chars."""
    head = keep * 2 // 3
    return f"{question[:head].rstrip()} ... {question[len(question) - (keep - head):].lstrip()}"


def fit_prompt(generator, build, question: str, passages: list[tuple[str, str]],
               max_new_tokens: int) -> tuple[list[dict], dict | None]:
    """``build(question, passages)`` cut to fit ``generator.context_tokens`` with room for
    ``max_new_tokens``: the last passages are shortened or dropped first, then the question
    is shortened. Returns the messages and what was cut (None when nothing was)."""
    limit = getattr(generator, "context_tokens", None)
    messages = build(question, passages)
    if not isinstance(limit, int) or limit <= 0:
        return messages, None                   # the backend does not say: nothing to fit
    room = limit - max_new_tokens
    size = given = prompt_size(generator, messages)
    if size <= room:
        return messages, None
    kept, shortened, text_of = list(passages), 0, question
    while kept and size > room:
        title, text = kept[-1]
        own = generator.count_tokens(f"Title: {title}\n{text}")
        cut = fit_passage(generator, title, text, own - (size - room) - 2)
        if len(cut.split()) >= 8 and cut != text:
            kept[-1], shortened = (title, cut), shortened + 1
        else:
            kept.pop()
        messages = build(text_of, kept)
        size = prompt_size(generator, messages)
    keep = len(question)                        # characters of the question kept
    while size > room and keep > 0:
        tokens = max(1, generator.count_tokens(text_of))
        keep = max(0, min(int(keep * (tokens - (size - room)) / tokens * 0.95), keep - 1))
        text_of = _cut_question(question, keep) if keep > 0 else ""
        messages = build(text_of, kept)
        size = prompt_size(generator, messages)
    if size > room:
        raise InputError(f"the prompt without passages or question takes {size} tokens; with "
                         f"max_new_tokens={max_new_tokens} it exceeds the context of {limit}",
                         field="generator.context_tokens")
    return messages, {"context_tokens": limit, "max_new_tokens": max_new_tokens,
                      "prompt_tokens_given": given, "prompt_tokens": size,
                      "passages_given": len(passages), "passages": len(kept),
                      "passages_shortened": shortened, "question_chars_given": len(question),
                      "question_chars": len(text_of)}
