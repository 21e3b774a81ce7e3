"""Request and response bodies of the REST API (validated by pydantic; bad input is a 422).

Numbers are strict (``true`` or ``"3"`` is not a number); every error body is
``ErrorBody``, a 422 ``ValidationErrorBody`` with one ``FieldError`` per problem.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      StrictFloat, ValidationInfo, model_validator)
from pydantic_core import PydanticCustomError

StrategyName = Literal["auto", "parametric", "single", "multi"]


# Some character that Python's str.strip() keeps: the schema's "pattern" and the check are
# the same regular expression, so a client sees exactly what counts as blank.
NOT_BLANK = ("[^\\u0009-\\u000d\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a"
             "\\u2028\\u2029\\u202f\\u205f\\u3000]")


def _not_blank(value: str, info: ValidationInfo) -> str:
    if not re.search(NOT_BLANK, value):
        raise ValueError(f"{info.field_name} is blank")
    return value


def _json_integer(value: Any) -> Any:
    """A JSON integer (``35`` or ``35.0``), never ``true`` or ``"35"``."""
    if isinstance(value, (bool, str, bytes)):
        raise PydanticCustomError("int_type", "Input should be a valid integer (a JSON number)")
    return value


def integer(low: int, high: int) -> Any:
    """A JSON integer within [low, high] (bounds first: so the schema shows them)."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_json_integer)]
Text = Annotated[str, Field(min_length=1, max_length=2000,
                            json_schema_extra={"pattern": NOT_BLANK}),
                 AfterValidator(_not_blank)]


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: Text = Field(description="the question")
    strategy: StrategyName = Field("auto", description="an arm, or auto (the policy picks)")
    lam: Optional[StrictFloat] = Field(None, alias="lambda", ge=0.0, le=10.0,
                                       allow_inf_nan=False,
                                       description="cost weight of the policy (accuracy vs. "
                                       "steps)")
    k: Optional[integer(1, 50)] = Field(None, description="passages per retrieval")
    max_hops: Optional[integer(1, 8)] = Field(None, description="multi-hop limit")


class AnswerResponse(BaseModel):
    request_id: str
    answer: str
    arm: str
    passages: list[dict[str, Any]]
    steps: int = Field(description="retrieval calls made")
    hops: int = 0
    confidence: Optional[float] = None
    timings: dict[str, Any]
    trace: list[dict[str, Any]]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Text
    k: integer(1, 100) = 10
    mode: Optional[Literal["bm25", "dense", "hybrid"]] = None


class HitOut(BaseModel):
    id: str
    score: float
    title: str
    text: str


class SearchResponse(BaseModel):
    hits: list[HitOut]
    seconds: float


def _no_default(schema: dict) -> None:
    schema.pop("default", None)


def _not_blank_no_default(schema: dict) -> None:
    _no_default(schema)
    schema["pattern"] = NOT_BLANK


class FeedbackRequest(BaseModel):
    """Exactly one of ``gold`` or ``reward`` (neither may be null)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["gold"]}, {"required": ["reward"]}]})

    request_id: str = Field(min_length=1, max_length=200)
    # typed without null: an explicit null is a 422, as the schema says
    gold: Annotated[str, AfterValidator(_not_blank)] = Field(  # type: ignore[assignment]
        None, min_length=1, max_length=2000, description="the correct answer",
        json_schema_extra=_not_blank_no_default)
    reward: StrictFloat = Field(None, ge=-10.0, le=10.0,  # type: ignore[assignment]
                                allow_inf_nan=False,
                                description="a reward given directly",
                                json_schema_extra=_no_default)

    @model_validator(mode="after")
    def _one_signal(self) -> "FeedbackRequest":
        if (self.gold is None) == (self.reward is None):
            raise ValueError("give exactly one of gold (the correct answer) or reward")
        return self


class FeedbackResponse(BaseModel):
    request_id: str
    accepted: bool
    detail: dict[str, Any] = {}


class ErrorBody(BaseModel):
    """Every error response: what went wrong, and details (504s add the partial trace)."""

    error: str
    detail: Any = None


class FieldError(BaseModel):
    field: str = Field(description="where, e.g. body.question")
    message: str
    type: str


class ValidationErrorBody(BaseModel):
    """A 422: the request was understood but some fields are invalid."""

    error: str
    detail: list[FieldError]


class Readiness(BaseModel):
    ready: bool
    reason: str


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=500, description="corpus id; an existing id is "
                    "replaced")
    title: str = Field("", max_length=2000)
    text: Annotated[str, Field(min_length=1, max_length=60000,
                               json_schema_extra={"pattern": NOT_BLANK}),
                    AfterValidator(_not_blank)]


class UpsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        min_length=1, max_length=10000)


class UpdateResponse(BaseModel):
    """The committed generation and what it changed."""

    generation: int
    passages: int = Field(description="live passages after the update")
    inserted: int = 0
    replaced: int = 0
    deleted_ids: int = 0
    missing_ids: list[str] = []
    seconds: float
    compacted: Optional[dict[str, Any]] = Field(
        None, description="this update also compacted the index (server.compact_every): "
        "the generation that committed, its seconds and the files it removed; or the "
        "error, when the compaction failed and was rolled back (the update stands)")
