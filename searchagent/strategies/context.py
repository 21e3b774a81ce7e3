"""Fitting retrieved passages into a prompt's token budget, and a whole prompt into the
generator's context (``fit_prompt``: a question over half the room first, then passages,
then the question)."""

from __future__ import annotations

from searchagent.errors import InputError
from searchagent.types import Hit


def fit_passage(generator, title: str, text: str, max_tokens: int) -> str:
    """``text`` cut so that title + text take at most ``max_tokens``: on word boundaries,
    or on characters when words cannot do it (Chinese, Japanese, Thai have no spaces)."""
    if max_tokens <= 0:
        return ""
    used = generator.count_tokens(f"Title: {title}\n{text}")
    if used <= max_tokens:
        return text
    words = text.split()
    for total, prefix in ((len(words), lambda n: " ".join(words[:n])),
                          (len(text), lambda n: text[:n].rstrip())):
        keep = int(total * max_tokens / used)
        while keep > 0:
            cut = prefix(keep)
            if generator.count_tokens(f"Title: {title}\n{cut}") <= max_tokens:
                return cut + " ..."
            keep = int(keep * 0.85)
    return ""


def pack(generator, hits: list[Hit], budget_tokens: int,
         per_passage: int | None = None) -> list[tuple[str, str]]:
    """Passages in order, each at most ``per_passage`` tokens, all within the budget (one
    that cannot be cut small enough is skipped, not the ones after it)."""
    packed: list[tuple[str, str]] = []
    left = budget_tokens
    for hit in hits:
        cap = min(left, per_passage or left)
        text = fit_passage(generator, hit.title, hit.text, cap)
        if not text:
            continue
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


QUESTION_SHARE = 0.5    # of the room: a longer question is cut to it before any passage


def _cut_question(question: str, keep: int) -> str:
    """The question's opening and its end (where the ask usually is), ``keep`` chars."""
    head = keep * 2 // 3
    return f"{question[:head].rstrip()} ... {question[len(question) - (keep - head):].lstrip()}"


def _question_within(generator, question: str, tokens: int) -> str:
    """``question`` cut (``_cut_question``) to at most ``tokens`` tokens."""
    text, keep = question, len(question)
    while keep > 0 and (used := generator.count_tokens(text)) > tokens:
        keep = max(0, min(int(keep * tokens / used * 0.95), keep - 1))
        text = _cut_question(question, keep) if keep > 0 else ""
    return text


def fit_prompt(generator, build, question: str, passages: list[tuple[str, str]],
               max_new_tokens: int) -> tuple[list[dict], dict | None]:
    """``build(question, passages)`` cut to fit ``generator.context_tokens`` with room for
    ``max_new_tokens``: a question longer than ``QUESTION_SHARE`` of the room is cut to it
    (so it cannot push every passage out), then the last passages are shortened or
    dropped, then the question is shortened further. Returns the messages and what was
    cut (None when nothing was)."""
    limit = getattr(generator, "context_tokens", None)
    messages = build(question, passages)
    if not isinstance(limit, int) or limit <= 0:
        return messages, None                   # the backend does not say: nothing to fit
    room = limit - max_new_tokens
    size = given = prompt_size(generator, messages)
    if size <= room:
        return messages, None
    kept, shortened, text_of = list(passages), 0, question
    if kept and (text_of := _question_within(generator, question,
                                             int(room * QUESTION_SHARE))) != question:
        messages = build(text_of, kept)
        size = prompt_size(generator, messages)
    while kept and size > room:
        title, text = kept[-1]
        own = generator.count_tokens(f"Title: {title}\n{text}")
        cut = fit_passage(generator, title, text, own - (size - room) - 2)
        if cut != text and generator.count_tokens(cut) >= 16:
            kept[-1], shortened = (title, cut), shortened + 1
        else:
            kept.pop()
        messages = build(text_of, kept)
        size = prompt_size(generator, messages)
    keep = min(len(question), len(text_of))     # characters of the question kept
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
