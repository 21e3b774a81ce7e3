"""SQuAD v1.1: the official JSON (``data[{title, paragraphs[{context, qas[{id, question,
answers[{text}]}]}]}]``) and the Hugging Face rows (``id, title, context, question,
answers{text[]}``). The context paragraph is kept as the supporting paragraph."""

from __future__ import annotations

from eval.examples import Example, Paragraph, unique
from eval.loaders.reading import Location, answer_strings, record_id, require


def matches(record: dict) -> bool:
    paragraphs = record.get("paragraphs")
    if isinstance(paragraphs, list) and paragraphs and isinstance(paragraphs[0], dict):
        return "qas" in paragraphs[0]
    return isinstance(record.get("context"), str) and "answers" in record


def to_examples(record: dict, loc: Location, dataset: str) -> list[Example]:
    title = str(record.get("title") or "").replace("_", " ").strip()
    if "paragraphs" not in record:
        return [_example(record, require(record, "context", loc), title, loc, dataset, "")]
    out = []
    for p, para in enumerate(require(record, "paragraphs", loc, list)):
        context = require(para, "context", loc) if isinstance(para, dict) else None
        if context is None:
            raise loc.error("expected an object", f"paragraphs[{p}]")
        for q, qa in enumerate(require(para, "qas", loc, list)):
            out.append(_example(qa, context, title, loc, dataset, f"paragraphs[{p}].qas[{q}]."))
    return out


def _example(qa, context: str, title: str, loc: Location, dataset: str, where: str) -> Example:
    if not isinstance(qa, dict):
        raise loc.error("expected an object", where.rstrip(".") or None)
    question = qa.get("question")
    if not isinstance(question, str) or not question.strip():
        raise loc.error("missing or empty", where + "question")
    answers = qa.get("answers")
    if isinstance(answers, dict):
        texts = answers.get("text") or []
    elif isinstance(answers, list):
        texts = [a.get("text") for a in answers if isinstance(a, dict)]
    else:
        raise loc.error("missing field", where + "answers")
    qid = record_id(qa, loc, "id", where=where)
    if "id" not in qa and where:
        qid = f"{loc.position}-{where.rstrip('.')}"
    return Example(id=qid, question=question.strip(),
                   answers=unique(answer_strings(texts, loc, where + "answers")),
                   dataset=dataset, supporting_titles=[title] if title else [],
                   paragraphs=[Paragraph(title, context, True)])
