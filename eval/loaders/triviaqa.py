"""TriviaQA: the official JSON (``Data[{QuestionId, Question, Answer{Value, Aliases}}]``), the
Hugging Face rows (``question_id, question, answer{value, aliases}``) and ``{question,
answer: str}`` samples. Gold answers are the value plus every alias."""

from __future__ import annotations

from eval.examples import Example, unique
from eval.loaders.reading import Location, answer_strings, record_id, require


def matches(record: dict) -> bool:
    return "Question" in record or isinstance(record.get("answer"), dict)


def to_examples(record: dict, loc: Location, dataset: str) -> list[Example]:
    official = "Question" in record
    question = require(record, "Question" if official else "question", loc)
    answer_key = "Answer" if official else "answer"
    answer = require(record, answer_key, loc, (dict, str, list))
    if isinstance(answer, dict):
        value_key, alias_key = ("Value", "Aliases") if official else ("value", "aliases")
        aliases = answer.get(alias_key) or []
        if not isinstance(aliases, list):   # list("Paris") would make each letter a gold
            raise loc.error("expected a list of strings", f"{answer_key}.{alias_key}")
        values = [answer.get(value_key)] + aliases
        answers = answer_strings([v for v in values if v is not None], loc, answer_key)
    else:
        answers = answer_strings(answer, loc, answer_key)
    return [Example(id=record_id(record, loc, "QuestionId", "question_id", "id"),
                    question=question.strip(), answers=unique(answers), dataset=dataset)]
