"""Error answers in the API's two shapes, and the per-request metrics every route records."""
from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.errors import ApiError, BadParameter, Overloaded, RequestTimeout, TooManyRequests
from serve.metrics import ServeMetrics

log = logging.getLogger(__name__)


def _error_headers(exc: ApiError) -> dict[str, str]:
    """Retry-After on refusals. A timed-out body, or one refused unread, leaves the connection mid-request:
    closing it is the only way to be rid of what the client may still send."""
    headers = {"Retry-After": "1"} if isinstance(exc, Overloaded) else {}
    if isinstance(exc, (RequestTimeout, TooManyRequests)):
        headers["Connection"] = "close"
    return headers


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=_error_headers(exc))


def v2_error_response(exc: ApiError) -> JSONResponse:
    """The Open Inference Protocol's clients expect `{"error": "message"}`."""
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=_error_headers(exc))


def internal_error() -> JSONResponse:
    return JSONResponse({"error": {"code": "internal", "message": "internal error; the request was not classified"}},
                        status_code=500)


def v2_internal_error() -> JSONResponse:
    return JSONResponse({"error": "internal error; the request was not run"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Every error a route raises, and Starlette's own 404/405, answer in the documented shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(BadParameter(f"invalid request: {exc.errors()}"))


class RequestLabels(dict):
    """The labels a request's metrics carry; filled in as the route learns the model and arm."""

    def __init__(self, route: str) -> None:
        super().__init__(model="", version="", arm="", route=route)

    def served_by(self, name: str, version: str, arm: str | None = None) -> None:
        self.update(model=name, version=version, arm=arm or "")


async def observed(metrics: ServeMetrics, route: str, handle: Callable[[RequestLabels], Awaitable[Response]],
                   on_error: Callable[[ApiError], Response], on_internal: Callable[[], Response]) -> Response:
    """Run a route's work, answer errors in the route's shape, and count and time the answer by outcome."""
    started = time.perf_counter()
    labels = RequestLabels(route)
    metrics.inflight.inc()
    try:
        response = await handle(labels)
    except ApiError as exc:
        response = on_error(exc)
    except Exception:
        log.exception("%s failed", route)
        response = on_internal()
    finally:
        metrics.inflight.dec()
    code = str(response.status_code)
    metrics.request_duration.labels(**labels, code=code).observe(time.perf_counter() - started)
    metrics.requests.labels(**labels, code=code).inc()
    return response
