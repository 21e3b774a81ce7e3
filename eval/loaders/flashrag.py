"""FlashRAG JSONL: ``id, question, golden_answers, metadata``. Known metadata shapes give
paragraphs: ``context {title[], content|sentences[][]}`` plus ``supporting_facts`` (2Wiki,
HotpotQA) and ``question_decomposition[].support_paragraph`` (MuSiQue)."""

from __future__ import annotations

from eval.examples import Example, Paragraph, unique
from eval.loaders.hotpotqa import context_paragraphs, supporting_titles
from eval.loaders.reading import Location, answer_strings, record_id, require


def matches(record: dict) -> bool:
    return "golden_answers" in record


def to_examples(record: dict, loc: Location, dataset: str) -> list[Example]:
    question = require(record, "question", loc)
    answers = answer_strings(require(record, "golden_answers", loc, (list, str)), loc,
                             "golden_answers")
    meta = record.get("metadata") or {}
    if not isinstance(meta, dict):
        raise loc.error("expected an object", "metadata")
    support = supporting_titles(meta.get("supporting_facts"), loc)
    paragraphs = [Paragraph(t, x, t in support)
                  for t, x in context_paragraphs(meta.get("context"), loc, "metadata.context")]
    steps = meta.get("question_decomposition") or []
    for step in steps if isinstance(steps, list) else []:
        para = step.get("support_paragraph") if isinstance(step, dict) else None
        if isinstance(para, dict) and isinstance(para.get("paragraph_text"), str):
            title = str(para.get("title") or "").strip()
            paragraphs.append(Paragraph(title, para["paragraph_text"], True))
            support.add(title)
    qtype = meta.get("type") or (f"{len(steps)}hop" if isinstance(steps, list) and steps else "")
    return [Example(id=record_id(record, loc, "id"), question=question.strip(),
                    answers=answers, dataset=dataset, qtype=str(qtype),
                    supporting_titles=unique(sorted(support)), paragraphs=paragraphs)]
