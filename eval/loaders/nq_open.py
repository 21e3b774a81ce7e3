"""NQ-open and plain question lists: ``{question, answer: [str] | str}`` with an optional
``id`` (records without one are numbered by position). The bundled sample's shape,
``{id, question, answers: [str], supporting_titles, type}``, is read here too."""

from __future__ import annotations

from eval.examples import Example, unique
from eval.loaders.reading import Location, answer_strings, record_id, require


def matches(record: dict) -> bool:
    return "question" in record and (isinstance(record.get("answer"), (list, str))
                                     or isinstance(record.get("answers"), list))


def to_examples(record: dict, loc: Location, dataset: str) -> list[Example]:
    question = require(record, "question", loc)
    key = "answer" if "answer" in record else "answers"
    answers = answer_strings(require(record, key, loc, (list, str)), loc, key)
    titles = record.get("supporting_titles")
    return [Example(id=record_id(record, loc, "id", "question_id", "_id"),
                    question=question.strip(), answers=unique(answers), dataset=dataset,
                    qtype=str(record.get("type") or ""),
                    supporting_titles=unique(titles) if isinstance(titles, list) else [])]
