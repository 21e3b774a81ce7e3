"""MuSiQue: the official JSONL (``paragraphs[{idx,title,paragraph_text,is_supporting}]``,
``answer``, ``answer_aliases``, ``question_decomposition``), also as a JSON list, with or
without paragraphs (then supporting titles come from ``document_id``)."""

from __future__ import annotations

import re

from eval.examples import Example, Paragraph, hop_label, unique
from eval.loaders.reading import Location, answer_strings, record_id, require


def matches(record: dict) -> bool:
    paragraphs = record.get("paragraphs")
    if isinstance(paragraphs, list) and paragraphs and isinstance(paragraphs[0], dict):
        return "paragraph_text" in paragraphs[0]
    return "answer_aliases" in record or "question_decomposition" in record


def to_examples(record: dict, loc: Location, dataset: str) -> list[Example]:
    qid = record_id(record, loc, "id", "_id")
    question = require(record, "question", loc)
    answers = answer_strings(require(record, "answer", loc, (str, int, list)), loc, "answer")
    aliases = record.get("answer_aliases") or []
    if not isinstance(aliases, list):     # silently dropped, its aliases scored as wrong
        raise loc.error("expected a list of strings", "answer_aliases")
    answers = unique(answers + [a for a in aliases if isinstance(a, str)])
    paragraphs = paragraph_list(record.get("paragraphs") or [], loc, "paragraphs")
    support = [p.title for p in paragraphs if p.supporting]
    if not paragraphs:
        support = [re.sub(r"_\d+$", "", step["document_id"])
                   for step in record.get("question_decomposition") or []
                   if isinstance(step, dict) and isinstance(step.get("document_id"), str)]
    hops = hop_label(qid)
    return [Example(id=qid, question=question.strip(), answers=answers, dataset=dataset,
                    qtype=hops, supporting_titles=unique(support), paragraphs=paragraphs)]


def paragraph_list(items, loc: Location, field: str, text_key: str = "paragraph_text"
                   ) -> list[Paragraph]:
    """Paragraph dicts with ``title``, ``text_key`` and optional ``is_supporting``."""
    if not isinstance(items, list):
        raise loc.error("expected a list of paragraphs", field)
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get(text_key), str):
            raise loc.error(f"expected an object with a string {text_key!r}", f"{field}[{n}]")
        title = item.get("title") or ""
        if not isinstance(title, str):
            raise loc.error("must be a string", f"{field}[{n}].title")
        if item[text_key].strip():
            out.append(Paragraph(title.strip(), item[text_key], bool(item.get("is_supporting"))))
    return out
