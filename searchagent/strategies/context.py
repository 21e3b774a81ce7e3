"""Fitting retrieved passages into a prompt's token budget."""

from __future__ import annotations

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
