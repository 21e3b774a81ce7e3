"""Forming the next hop's query (multi-hop arm).

A tiny generator's reasoning sentence alone is an unreliable query, so besides IRCoT's
``step`` mode there are ``question`` (question only; the funnel's exclusion of passages
already seen still moves each hop forward) and ``bridge`` (question + step + bridge
entities: titles and named spans of the newest passages that the question does not
already mention). ``benchmarks/strategies.py --hop-queries`` measures them side by side.
"""

from __future__ import annotations

import re

from searchagent.answers import ANSWER_MARKER
from searchagent.types import Hit

MODES = ("question", "step", "question+step", "bridge")

_PLACEHOLDER = re.compile(r"<\s*short\s+answer\s*>", re.IGNORECASE)   # copied instruction
_QUOTED = re.compile(r"\"([^\"]{3,60})\"")
_NAMED = re.compile(r"\b([A-Z][\w'\-]*(?:\s+(?:(?:of|the|de|von|van)\s+)?[A-Z][\w'\-]*)*)")
_PAREN = re.compile(r"\s*\([^)]*\)\s*$")
_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def bridge_entities(question: str, hits: list[Hit], limit: int = 4,
                    per_hit_chars: int = 300) -> list[str]:
    """Titles and named spans in the newest passages that add words the question lacks."""
    known = _words(question)
    found: list[str] = []
    for hit in hits:
        spans = [_PAREN.sub("", hit.title)]
        head = hit.text[:per_hit_chars]
        spans += _QUOTED.findall(head) + _NAMED.findall(head)
        for span in spans:
            span = span.strip(" .,;:")
            new = _words(span) - known
            if len(span) < 3 or not new or span in found:
                continue
            found.append(span)
            known |= new
            if len(found) >= limit:
                return found
    return found


def next_query(mode: str, question: str, step: str, new_hits: list[Hit]) -> str:
    """The query for the next hop; ``step`` is the latest reasoning sentence."""
    step = _PLACEHOLDER.sub(" ", step.replace(ANSWER_MARKER, " ")).strip()
    if mode == "question" or (mode == "step" and not step):
        return question
    if mode == "step":
        return step
    if mode == "question+step":
        return f"{question} {step}".strip()
    if mode == "bridge":
        return " ".join([question, step, *bridge_entities(f"{question} {step}", new_hits)]).strip()
    raise ValueError(f"unknown hop query mode {mode!r} (choose from {', '.join(MODES)})")
