"""NQ-open and plain question lists: ``{question, answer: [str] | str}`` with an optional
``id`` (records without one are numbered by position)."""

from __future__ import annotations

from eval.examples import Example, unique
from eval.loaders.reading import Location, answer_strings, record_id, require


def matches(record: dict) -> bool:
    return "question" in record and isinstance(record.get("answer"), (list, str))


def to_examples(record: dict, loc: Location, dataset: str) -> list[Example]:
    question = require(record, "question", loc)
    answers = answer_strings(require(record, "answer", loc, (list, str)), loc, "answer")
    return [Example(id=record_id(record, loc, "id", "question_id", "_id"),
                    question=question.strip(), answers=unique(answers), dataset=dataset)]
