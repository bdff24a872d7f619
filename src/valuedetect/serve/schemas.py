"""Request and response models of the HTTP API: the OpenAPI schema is generated from these."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from valuedetect.data import _STANCE_ALIASES, Argument, text_problem
from valuedetect.taxonomy import CATEGORY_NAMES

CategoryName = Literal[CATEGORY_NAMES]  # type: ignore[valid-type]


def _encodable(value: str) -> str:
    """Refuse text that is no valid Unicode (a lone surrogate, ``"\\ud800"`` in JSON): the
    tokenizer would fail on it in a forward pass shared with other requests."""
    problem = text_problem(value, max_chars=None)
    if problem is not None:
        raise ValueError(f"the text {problem}")
    return value


# Every string a client sends goes through this check; the error names the field.
Text = Annotated[str, AfterValidator(_encodable)]
MAX_UNKNOWN_FIELDS = 5  # more unknown keys in one object are one error, not one error each


class _StrictObject(BaseModel):
    """Unknown fields are errors (``extra="forbid"``), each named, but an object with many
    of them (90,000 keys fit in a 1 MB body) is refused as a whole: one error per key would
    cost the server a second of work on its event loop, and the client a long answer."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _not_too_many_unknown_fields(cls, data: object) -> object:
        if isinstance(data, dict) and len(data) > len(cls.model_fields) + MAX_UNKNOWN_FIELDS:
            unknown = [str(k) for k in data if k not in cls.model_fields]
            shown = ", ".join(repr(k[:40]) for k in unknown[:MAX_UNKNOWN_FIELDS])
            raise ValueError(f"{len(unknown)} unknown fields, e.g. {shown}")
        return data

_EXAMPLE_ARGUMENT = {
    "id": "A01",
    "premise": "we should ban fast food because it makes people ill and costs the health system a fortune",
    "conclusion": "We should ban fast food",
    "stance": "in favor of",
}


class ArgumentIn(_StrictObject):
    """An argument (premise, with conclusion and stance if known) or a plain text."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE_ARGUMENT]})

    id: Text | None = Field(None, max_length=200, description="Your identifier; echoed back. Default: its position.")
    premise: Text | None = Field(None, description="The argument's premise (its reasons).")
    conclusion: Text | None = Field(None, description="What the premise argues for or against.")
    stance: Text | None = Field(None, description="'in favor of' or 'against' the conclusion.")
    text: Text | None = Field(None, description="Plain text instead of premise/conclusion/stance.")

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


class PredictRequest(_StrictObject):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"arguments": [_EXAMPLE_ARGUMENT]}]})

    arguments: list[ArgumentIn] = Field(..., min_length=1, description="One or more arguments to label.")


class ArgumentResult(BaseModel):
    id: str
    detected: list[CategoryName] = Field(description="Categories whose probability reaches their threshold.")
    probabilities: dict[CategoryName, float] = Field(description="Per category, in the official order.")
    level1: dict[str, float] | None = Field(
        None, description="Probabilities of the 54 level-1 values, when the detector predicts them; else null."
    )
    level1_detected: list[str] | None = Field(
        None, description="Level-1 values whose probability reaches their own threshold (chosen on dev, as the "
                          "categories' are), in the official order; null when the detector does not predict them."
    )


class PredictResponse(BaseModel):
    model: str
    results: list[ArgumentResult]


class ExplainRequest(_StrictObject):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"argument": _EXAMPLE_ARGUMENT}]})

    argument: ArgumentIn
    categories: list[CategoryName] | None = Field(
        None, max_length=len(CATEGORY_NAMES), description="Categories to explain; default: the detected ones."
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


class Level1Info(BaseModel):
    name: str
    threshold: float | None = Field(description="Its decision threshold; null when the detector does not "
                                                "predict level-1 values.")


class CategoryInfo(BaseModel):
    name: CategoryName
    group: str
    description: str
    threshold: float
    level1: list[Level1Info] = Field(description="The category's level-1 values (a category is present when "
                                                 "any of them is), in the official order.")


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
    predicts_level1: bool = Field(description="Whether results carry the 54 level-1 values.")
    limits: dict[str, int]
    limits_profile: Literal["encoder", "language-model"] = Field(
        description="Which defaults the limits come from: a language-model detector asks 20 questions per "
                    "argument (20 API calls for a remote LLM), so it takes far fewer arguments per request.")
    explain_max_words: int = Field(description="Words /v1/explain leaves out one at a time, at most.")
    jobs: dict[str, int] = Field(description="File jobs: at most max_running at once and max_queued waiting "
                                             "(beyond: 429 with Retry-After); the last max_kept are kept.")


class Health(BaseModel):
    status: Literal["ok"]
    model: str


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable reason, e.g. 'too_many_arguments'.")
    message: str
    limit: str | None = Field(None, description="Which limit was exceeded, when one was.")
    fields: list[dict[str, str]] | None = Field(
        None, description="For invalid requests: field and problem (the first few; `fields_total` counts all)."
    )
    fields_total: int | None = Field(None, description="How many problems were found in all.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    queue_position: int | None = Field(None, description="Jobs ahead of this one while it is queued.")
    done: int
    total: int
    filename: str
    error: str | None = None
    downloads: dict[str, str] = Field(default_factory=dict, description="Result formats and their URLs.")
    group_columns: list[str] = Field(default_factory=list, description=(
        "Columns of the file that can group the counts (`/v1/jobs/{id}/counts?group=...`): those with 2 to 50 "
        "distinct values, some of them repeated."))


class CountSeries(BaseModel):
    name: str = Field(description="The group's value in the group column, or 'all texts'.")
    texts: int
    detected: list[int] = Field(description="Texts in which each category was detected, in `categories` order.")


class CountsOut(BaseModel):
    """How often each category was detected across a finished job's file, overall or per group."""

    job: str
    texts: int
    group: str | None = Field(None, description="The group column, or null for the whole file.")
    categories: list[str]
    series: list[CountSeries]


class PyvaluesDocument(BaseModel):
    """What pyvalues' remote classifiers send: a document split into segments."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"id": "doc-1", "language": "en", "segments": [_EXAMPLE_ARGUMENT["premise"]]}]},
    )

    id: Text | None = None
    language: Text = "en"
    segments: list[Text] | None = None


class PyvaluesResponse(BaseModel):
    values: list[dict[str, float]] = Field(description="One value dictionary per segment, in order.")


def limited_requests(max_arguments: int) -> tuple[type[PredictRequest], type[PyvaluesDocument]]:
    """The request models with the server's argument limit in the schema itself.

    Validation then stops at the first argument over the limit, so a huge list costs no more
    than ``max_arguments`` items to check (and to report), and the schema documents the limit.
    The error handler turns the schema's "too long" into the usual 413 ``too_many_arguments``.
    """
    predict = create_model(
        "PredictRequest", __base__=PredictRequest,
        arguments=(list[ArgumentIn], Field(..., min_length=1, max_length=max_arguments,
                                           description=f"One to {max_arguments} arguments to label.")),
    )
    document = create_model(
        "PyvaluesDocument", __base__=PyvaluesDocument,
        segments=(list[Text] | None, Field(None, max_length=max_arguments,
                                           description=f"At most {max_arguments} segments.")),
    )
    return predict, document
