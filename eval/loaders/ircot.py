"""The IRCoT / Adaptive-RAG processed JSONL: ``question_id, question_text,
answers_objects[{number, date{day,month,year}, spans}], contexts[{title, paragraph_text,
is_supporting}]``."""

from __future__ import annotations

from eval.examples import Example, hop_label, unique
from eval.loaders.musique import paragraph_list
from eval.loaders.reading import Location, record_id, require


def matches(record: dict) -> bool:
    return "question_text" in record and "answers_objects" in record


def to_examples(record: dict, loc: Location, dataset: str) -> list[Example]:
    qid = record_id(record, loc, "question_id", "id")
    question = require(record, "question_text", loc)
    objects = require(record, "answers_objects", loc, list)
    answers = unique(answer for n, obj in enumerate(objects)
                     for answer in object_answers(obj, loc, f"answers_objects[{n}]"))
    if not answers:
        raise loc.error("no gold answer", "answers_objects")
    paragraphs = paragraph_list(record.get("contexts") or [], loc, "contexts")
    hops = hop_label(qid)
    return [Example(id=qid, question=question.strip(), answers=answers, dataset=dataset,
                    qtype=str(record.get("type") or hops),
                    supporting_titles=unique(p.title for p in paragraphs if p.supporting),
                    paragraphs=paragraphs)]


def object_answers(obj, loc: Location, field: str) -> list[str]:
    """The DROP-style answer object: its spans, else its number, else its date."""
    if not isinstance(obj, dict):
        raise loc.error("expected an answer object", field)
    spans = [s for s in obj.get("spans") or [] if isinstance(s, str) and s.strip()]
    if spans:
        return spans
    if str(obj.get("number") or "").strip():
        return [str(obj["number"]).strip()]
    date = obj.get("date") or {}
    parts = [str(date.get(k) or "").strip() for k in ("day", "month", "year")]
    return [" ".join(p for p in parts if p)] if any(parts) else []
