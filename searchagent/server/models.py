"""Request and response bodies of the REST API (validated by pydantic; bad input is a 422)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo,
                      model_validator)

StrategyName = Literal["auto", "parametric", "single", "multi"]


def _not_blank(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        raise ValueError(f"{info.field_name} is blank")
    return value


Text = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_not_blank)]


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    question: Text = Field(description="the question")
    strategy: StrategyName = Field("auto", description="an arm, or auto (the policy picks)")
    lam: Optional[float] = Field(None, alias="lambda", ge=0.0, le=10.0,
                                 description="cost weight of the policy (accuracy vs. steps)")
    k: Optional[int] = Field(None, ge=1, le=50, description="passages per retrieval")
    max_hops: Optional[int] = Field(None, ge=1, le=8, description="multi-hop limit")


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
    k: int = Field(10, ge=1, le=100)
    mode: Optional[Literal["bm25", "dense", "hybrid"]] = None


class HitOut(BaseModel):
    id: str
    score: float
    title: str
    text: str


class SearchResponse(BaseModel):
    hits: list[HitOut]
    seconds: float


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    gold: Optional[str] = Field(None, max_length=2000, description="the correct answer")
    reward: Optional[float] = Field(None, ge=-10.0, le=10.0)

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
    error: str
    detail: Any = None
