"""The HTTP API's messages as pydantic models: they make the OpenAPI document say what the server answers.

Answers are built as plain dicts on the hot path (validation per request costs CPU for nothing); the
tests check real answers against the document built from these models.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Closed):
    code: str = Field(description="stable machine-readable reason, e.g. bad_image, model_not_found, overloaded")
    message: str


class ErrorBody(_Closed):
    error: ErrorDetail


class V2ErrorBody(_Closed):
    """The Open Inference Protocol's error shape, which its clients (tritonclient) parse."""

    error: str


class ModelSummary(_Closed):
    name: str
    version: str
    arch: str | None


class ScoredLabel(_Closed):
    label: str
    index: int
    score: float


class ImageResult(_Closed):
    predictions: list[ScoredLabel]


class ClassifyResponse(_Closed):
    """One image: `predictions`; several (multipart): `results`, in the order sent."""

    request_id: str = Field(description="quote it in POST /feedback")
    model: ModelSummary
    arm: str | None = Field(description="the experiment's arm that answered; null when the request named a model")
    predictions: list[ScoredLabel] | None = None
    results: list[ImageResult] | None = None


class FeedbackBody(_Closed):
    request_id: str
    label: str | int = Field(description="the true class: a label name or an index into the model's labels")
    image: int = Field(0, ge=0, le=2**31 - 1, description="the image's position in a multi-image request")


class FeedbackResponse(_Closed):
    request_id: str
    image: int
    arm: str | None
    label: str
    index: int
    correct: bool
    counted: bool = Field(description="false for a repeat: only the first feedback per image counts")


class ModelDescription(ModelSummary):
    metadata: dict[str, Any]


class ModelList(_Closed):
    models: list[ModelDescription]
    default: str


class ModelVersions(_Closed):
    name: str
    versions: list[ModelDescription]


class ExperimentArm(_Closed):
    arm: str
    weight: float


class ExperimentDescription(_Closed):
    name: str
    enabled: bool
    mode: Literal["split", "shadow"]
    sticky_header: str
    primary: str
    arms: list[ExperimentArm]


class ArmSummary(_Closed):
    arm: str
    requests: int
    feedback: int
    correct: int
    accuracy: float | None
    accuracy_ci95: list[float] | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p95_ci95_s: list[float | None] = Field(
        description="distribution-free 95% interval of p95 from order statistics; an end needs enough samples")
    mean_confidence: float | None


class FixedPlan(_Closed):
    labels_per_arm: list[int]
    labels: int
    seconds: float


class SequentialPlan(_Closed):
    mean_labels: float
    median_labels: float
    p90_labels: float
    decided_right: float
    cap_labels: int
    experiments: int
    mean_seconds: float
    median_seconds: float


class Planning(_Closed):
    """Labels and time to tell `min_difference` from the first arm's accuracy at the feedback rate seen so far."""

    status: str
    baseline: float | None = None
    min_difference: float | None = None
    alpha: float | None = None
    power: float | None = None
    weights: list[float] | None = None
    rate_labels_per_s: float | None = None
    tau: float | None = None
    fixed: FixedPlan | None = None
    sequential: SequentialPlan | None = None


class AlwaysValidComparison(_Closed):
    """mSPRT with a normal mixture (Johari et al. 2017): valid however often the report is read."""

    always_valid_p_value: float
    confidence_sequence: list[float] = Field(description="for accuracy of the second arm minus the first")
    alpha: float
    tau: float
    verdict: str


class AlwaysValidPaired(_Closed):
    """Beta-binomial mixture test on the discordant pairs of shadow mode."""

    always_valid_p_value: float
    win_share: float | None = Field(description="the shadow's share of the images only one arm got right")
    win_share_confidence_sequence: list[float]
    alpha: float
    prior: float
    verdict: str


class ArmComparison(_Closed):
    arms: list[str]
    n: int
    difference: float
    z: float
    p_value: float = Field(description="fixed-sample: valid only when read once, at a size fixed in advance")
    verdict: str
    always_valid: AlwaysValidComparison


class ShadowComparison(_Closed):
    primary: str
    shadow: str
    compared: int
    agreement: float | None
    shadow_latency_p50_s: float | None
    shadow_latency_p95_s: float | None
    paired_feedback: int
    b_primary_only_correct: int
    c_shadow_only_correct: int
    mcnemar_statistic: float
    mcnemar_method: str
    p_value: float
    verdict: str
    agreement_confidence_sequence: list[float] | None
    always_valid: AlwaysValidPaired


class RolloutPlan(_Closed):
    challenger: str
    steps: list[float]
    min_step_s: float
    min_feedback: int
    max_error_rate: float
    max_p95_latency_ratio: float
    accuracy_margin: float
    min_shadow_agreement: float | None
    alpha: float
    decide_every_s: float


class RolloutDecision(_Closed):
    step: int
    action: Literal["advance", "rollback", "complete"]
    weight: float
    reason: str
    decided_at: float


class RolloutHold(_Closed):
    step: int
    reason: str
    decided_at: float


class RolloutReport(_Closed):
    """The experiment's guarded rollout (docs/ab/ROLLOUT.md): where it stands and every step's decision."""

    experiment: str
    baseline: str
    challenger: str
    plan: RolloutPlan
    status: Literal["running", "completed", "rolled_back"]
    step: int
    challenger_weight: float
    started_at: float
    step_started_at: float
    decisions: list[RolloutDecision]
    latest_hold: RolloutHold | None


class ABReport(_Closed):
    experiment: ExperimentDescription | None
    arms: list[ArmSummary]
    comparisons: list[ArmComparison]
    shadow: list[ShadowComparison]
    verdict: str = Field(description="the always-valid verdict: safe to read at any time")
    planning: Planning | None = None
    rollout: RolloutReport | None = None


class Liveness(_Closed):
    live: bool


class Readiness(_Closed):
    ready: bool


class V2ServerMetadata(_Closed):
    name: str
    version: str
    extensions: list[str]


class V2Tensor(BaseModel):
    """A tensor in JSON; with the binary extension its bytes follow the JSON header instead of `data`."""

    model_config = ConfigDict(extra="allow")
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2TensorMetadata(_Closed):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(_Closed):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ModelReady(_Closed):
    name: str
    ready: bool


class V2RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None


class V2InferResponse(_Closed):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


def error_responses(*statuses: int, model: type[BaseModel] = ErrorBody) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each error status it can answer, with the error shape."""
    return {status: {"model": model, "description": ERROR_MEANINGS[status]} for status in statuses}


ERROR_MEANINGS = {
    400: "the body is empty, not an image, truncated or malformed",
    401: "API keys are configured and no valid key was sent (Authorization: Bearer <key>)",
    403: "the API key lacks the route's scope",
    404: "unknown model, route or request id",
    405: "method not allowed",
    408: "the body stopped arriving, or came too slowly (http.body_* limits); the connection is closed",
    413: "the body, an image's pixels or the image count is over the limit",
    415: "an unsupported media type (SVG, PDF, HTML)",
    422: "a parameter is out of range or of the wrong type",
    429: "this client address has too many requests in flight; retry after Retry-After",
    500: "an internal error; nothing was recorded",
    503: "overloaded, shutting down or a replica was lost; retry after Retry-After",
}

IMAGE_BODY = {
    "required": True,
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"},
                    "example": "raw JPEG/PNG/WebP/BMP/GIF/TIFF bytes"},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                    "description": "one or more images, answered in order"}}}},
    },
}

V2_INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "description": "binary extension: the JSON header (its length in Inference-Header-Content-Length), "
                           "then each input's raw bytes"},
    },
}
