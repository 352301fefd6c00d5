"""Client-facing errors: each carries its HTTP status and a stable code."""
from __future__ import annotations


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadImage(ApiError):
    status, code = 400, "bad_image"


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class ModelNotFound(ApiError):
    status, code = 404, "model_not_found"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class BadParameter(ApiError):
    status, code = 422, "bad_parameter"


class Overloaded(ApiError):
    status, code = 503, "overloaded"


class RequestTimeout(ApiError):
    """The client stopped sending its body, or sent it too slowly to finish (serve/api/body.py BodyPace)."""

    status, code = 408, "request_timeout"


class TooManyRequests(Overloaded):
    """This client address already has http.max_inflight_per_client requests in flight (serve/api/client_limit.py)."""

    status, code = 429, "too_many_requests"


class UnknownRequest(ApiError):
    status, code = 404, "unknown_request"


class UnknownLabel(ApiError):
    status, code = 422, "unknown_label"


class StoreUnavailable(Overloaded):
    """The feedback database is down or unreachable: classification goes on, feedback and the report wait
    (503 with Retry-After) until it is back."""

    code = "store_unavailable"


class ReplicaUnavailable(Overloaded):
    """The replica died mid-request (node lost, process killed); classifying is idempotent, so a retry is safe."""

    code = "replica_unavailable"
