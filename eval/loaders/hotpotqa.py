"""HotpotQA and 2WikiMultiHopQA: the official JSON and the Hugging Face JSONL shapes.

Official: ``_id, question, answer, type, level, supporting_facts [[title, sent_id]],
context [[title, [sentences]]]`` (2Wiki adds ``evidences``). Hugging Face distractor:
``id, ..., supporting_facts {title[], sent_id[]}, context {title[], sentences[][]}``.
"""

from __future__ import annotations

from eval.examples import Example, Paragraph, join_sentences, unique
from eval.loaders.reading import Location, answer_strings, record_id, require


def matches(record: dict) -> bool:
    return "supporting_facts" in record or isinstance(record.get("context"), (list, dict))


def to_examples(record: dict, loc: Location, dataset: str) -> list[Example]:
    question = require(record, "question", loc)
    answers = answer_strings(require(record, "answer", loc, (str, int, list)), loc, "answer")
    support = supporting_titles(record.get("supporting_facts"), loc)
    paragraphs = [Paragraph(title, text, title in support)
                  for title, text in context_paragraphs(record.get("context"), loc, "context")]
    return [Example(id=record_id(record, loc, "_id", "id"), question=question.strip(),
                    answers=answers, dataset=dataset, qtype=str(record.get("type") or ""),
                    supporting_titles=sorted(support, key=_order(paragraphs)),
                    paragraphs=paragraphs)]


def supporting_titles(facts, loc: Location) -> set[str]:
    """Titles from ``[[title, sent_id], ...]`` or ``{"title": [...], "sent_id": [...]}``."""
    if facts is None:
        return set()
    if isinstance(facts, dict):
        titles = facts.get("title")
    elif isinstance(facts, list):
        titles = [f[0] for f in facts if isinstance(f, list) and f]
    else:
        titles = None
    if not isinstance(titles, list):
        raise loc.error("expected [[title, sent_id], ...] or {title: [...]}", "supporting_facts")
    return set(unique(titles))


def context_paragraphs(context, loc: Location, field: str) -> list[tuple[str, str]]:
    """``(title, text)`` pairs from ``[[title, sentences]]`` or ``{title[], sentences|content[]}``."""
    if context is None:
        return []
    if isinstance(context, dict):
        titles = context.get("title")
        bodies = context.get("sentences", context.get("content"))
        if not isinstance(titles, list) or not isinstance(bodies, list) or \
                len(titles) != len(bodies):
            raise loc.error("expected {title: [...], sentences: [...]} of equal length", field)
        pairs = list(zip(titles, bodies))
    elif isinstance(context, list):
        if not all(isinstance(c, list) and len(c) == 2 for c in context):
            raise loc.error("expected [[title, [sentences]], ...]", field)
        pairs = [tuple(c) for c in context]
    else:
        raise loc.error("expected a list or an object", field)
    out = []
    for n, (title, body) in enumerate(pairs):
        text = join_sentences(body) if isinstance(body, list) else body
        if not isinstance(title, str) or not isinstance(text, str):
            raise loc.error("title and sentences must be strings", f"{field}[{n}]")
        if text.strip():
            out.append((title.strip(), text))
    return out


def _order(paragraphs: list[Paragraph]):
    position = {p.title: n for n, p in reversed(list(enumerate(paragraphs)))}
    return lambda title: (position.get(title, len(position)), title)
