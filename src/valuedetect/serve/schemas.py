"""Request and response models of the HTTP API: the OpenAPI schema is generated from these."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from valuedetect.data import _STANCE_ALIASES, Argument
from valuedetect.taxonomy import CATEGORY_NAMES

CategoryName = Literal[CATEGORY_NAMES]  # type: ignore[valid-type]

_EXAMPLE_ARGUMENT = {
    "id": "A01",
    "premise": "we should ban fast food because it makes people ill and costs the health system a fortune",
    "conclusion": "We should ban fast food",
    "stance": "in favor of",
}


class ArgumentIn(BaseModel):
    """An argument (premise, with conclusion and stance if known) or a plain text."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE_ARGUMENT]})

    id: str | None = Field(None, max_length=200, description="Your identifier; echoed back. Default: its position.")
    premise: str | None = Field(None, description="The argument's premise (its reasons).")
    conclusion: str | None = Field(None, description="What the premise argues for or against.")
    stance: str | None = Field(None, description="'in favor of' or 'against' the conclusion.")
    text: str | None = Field(None, description="Plain text instead of premise/conclusion/stance.")

    @field_validator("stance")
    @classmethod
    def _known_stance(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        stance = _STANCE_ALIASES.get(value.strip().lower())
        if stance is None:
            raise ValueError("stance must be 'in favor of' or 'against'")
        return stance

    @model_validator(mode="after")
    def _one_text(self) -> ArgumentIn:
        if (self.premise is None) == (self.text is None):
            raise ValueError("give either 'premise' (with optional 'conclusion' and 'stance') or 'text'")
        body = self.premise if self.premise is not None else self.text
        if not body or not body.strip():
            raise ValueError("the text is empty")
        if self.text is not None and (self.conclusion or self.stance):
            raise ValueError("'conclusion' and 'stance' go with 'premise', not with 'text'")
        if self.stance and not (self.conclusion or "").strip():
            raise ValueError("a stance needs a conclusion")
        return self

    def to_argument(self, position: int) -> Argument:
        premise = self.premise if self.premise is not None else self.text
        assert premise is not None
        conclusion = (self.conclusion or "").strip()
        return Argument(
            id=self.id or str(position + 1),
            premise=premise,
            conclusion=conclusion,
            stance=self.stance if conclusion else None,
        )

    @property
    def characters(self) -> int:
        return len(self.premise or self.text or "") + len(self.conclusion or "")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"arguments": [_EXAMPLE_ARGUMENT]}]})

    arguments: list[ArgumentIn] = Field(..., min_length=1, description="One or more arguments to label.")


class ArgumentResult(BaseModel):
    id: str
    detected: list[CategoryName] = Field(description="Categories whose probability reaches their threshold.")
    probabilities: dict[CategoryName, float] = Field(description="Per category, in the official order.")
    level1: dict[str, float] | None = Field(
        None, description="Probabilities of the 54 level-1 values, when the detector predicts them; else null."
    )


class PredictResponse(BaseModel):
    model: str
    results: list[ArgumentResult]


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"argument": _EXAMPLE_ARGUMENT}]})

    argument: ArgumentIn
    categories: list[CategoryName] | None = Field(
        None, description="Categories to explain; default: the detected ones."
    )
    top_k: int = Field(5, ge=1, le=50, description="Words to return per category.")


class WordOut(BaseModel):
    word: str
    field: Literal["premise", "conclusion"] = Field(
        description="Where the word is; 'premise' also for plain text."
    )
    start: int = Field(description="Character offset in that field, as sent.")
    end: int
    weight: float = Field(description="How much the category's probability drops without this word.")


class CategoryExplanationOut(BaseModel):
    category: CategoryName
    probability: float
    threshold: float
    detected: bool
    words: list[WordOut]


class ExplainResponse(BaseModel):
    id: str
    method: str = Field(description="How weights were computed.")
    detected: list[CategoryName]
    probabilities: dict[CategoryName, float]
    explanations: list[CategoryExplanationOut]


class CategoryInfo(BaseModel):
    name: CategoryName
    group: str
    description: str
    threshold: float


class ModelInfo(BaseModel):
    name: str
    type: str
    base_model: str | None
    threshold_mode: str | None
    validation_f1: float | None = Field(description="Official F1 on the validation split, as shipped.")
    parameters_total: int | None
    parameters_trainable: int | None
    taxonomy_version: str
    valuedetect_version: str
    categories: list[CategoryInfo]
    limits: dict[str, int]


class Health(BaseModel):
    status: Literal["ok"]
    model: str


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable reason, e.g. 'too_many_arguments'.")
    message: str
    limit: str | None = Field(None, description="Which limit was exceeded, when one was.")
    fields: list[dict[str, str]] | None = Field(None, description="For invalid requests: field and problem.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JobOut(BaseModel):
    id: str
    status: Literal["running", "done", "failed"]
    done: int
    total: int
    filename: str
    error: str | None = None
    downloads: dict[str, str] = Field(default_factory=dict, description="Result formats and their URLs.")


class PyvaluesDocument(BaseModel):
    """What pyvalues' remote classifiers send: a document split into segments."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"id": "doc-1", "language": "en", "segments": [_EXAMPLE_ARGUMENT["premise"]]}]},
    )

    id: str | None = None
    language: str = "en"
    segments: list[str] | None = None


class PyvaluesResponse(BaseModel):
    values: list[dict[str, float]] = Field(description="One value dictionary per segment, in order.")
