"""The one example type every dataset loader produces."""

from __future__ import annotations

import re

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paragraph:
    """One context paragraph shipped with a question (gold or distractor)."""

    title: str
    text: str
    supporting: bool = False


@dataclass
class Example:
    """A benchmark question with its gold answers (aliases included) and known evidence."""

    id: str
    question: str
    answers: list[str]
    dataset: str
    qtype: str = ""
    supporting_titles: list[str] = field(default_factory=list)
    paragraphs: list[Paragraph] = field(default_factory=list)

    @property
    def supporting_paragraphs(self) -> list[Paragraph]:
        return [p for p in self.paragraphs if p.supporting]


def join_sentences(sentences: list[str]) -> str:
    """Concatenate sentences, adding a space only where neither side already has one."""
    out = ""
    for sentence in sentences:
        if not isinstance(sentence, str) or not sentence:
            continue
        if out and not out[-1].isspace() and not sentence[0].isspace():
            out += " "
        out += sentence
    return out.strip()


def unique(values) -> list[str]:
    """Strings in first-seen order, stripped, empties and duplicates dropped."""
    seen: dict[str, None] = {}
    for value in values:
        if isinstance(value, str) and value.strip():
            seen.setdefault(value.strip(), None)
    return list(seen)


def hop_label(qid: str) -> str:
    """MuSiQue-style ids ``2hop__…``, ``3hop1__…`` -> ``2hop``, ``3hop``; else ''."""
    match = re.match(r"(\d+hop)", qid)
    return match.group(1) if match else ""


def subset(examples: list[Example], limit: int | None, seed: int | None = None
           ) -> list[Example]:
    """The first ``limit`` examples, or with a ``seed`` a reproducible random sample of that
    size (kept in file order). ``None`` keeps everything."""
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if seed is None:
        return list(examples[:limit])
    import random

    chosen = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[n] for n in chosen]


def interleave(groups: list[list[Example]]) -> list[Example]:
    """Round-robin over datasets, so a partial run covers every dataset evenly."""
    out: list[Example] = []
    for n in range(max((len(g) for g in groups), default=0)):
        out += [g[n] for g in groups if n < len(g)]
    return out
