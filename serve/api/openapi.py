"""The OpenAPI document at /openapi.json (and its viewer at /docs), true to what the routes read and answer.

Bodies are read raw (the body limit is enforced while reading, images are not JSON), so FastAPI cannot
infer them: the routes declare their request bodies, and the models those declarations name are added
to the document's components here.
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serve.api.auth import required_scope
from serve.api.schemas import ERROR_MEANINGS, FeedbackBody, V2InferRequest

REQUEST_BODY_MODELS = (FeedbackBody, V2InferRequest)
DOC_PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


def describe_api(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in REQUEST_BODY_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, nested in schema.pop("$defs", {}).items():
                    components.setdefault(name, nested)
                components[model.__name__] = schema
            app.openapi_schema = _with_key_refusals(_validation_errors_as_error_body(document))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _validation_errors_as_error_body(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a malformed parameter as its own HTTPValidationError; this server answers it as
    ErrorBody (code bad_parameter), so the document says that."""
    text = json.dumps(document).replace('"#/components/schemas/HTTPValidationError"',
                                        '"#/components/schemas/ErrorBody"')
    document = json.loads(text)
    for name in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(name, None)
    return document


def _with_key_refusals(document: dict[str, Any]) -> dict[str, Any]:
    """The auth middleware answers before any route: every route that needs a key may answer 401 or 403."""
    for path, operations in document["paths"].items():
        shape = "V2ErrorBody" if path.startswith("/v2/") else "ErrorBody"
        for method, operation in operations.items():
            if required_scope(method.upper(), path, metrics_open=False) is None:
                continue
            for status in (401, 403):
                operation["responses"].setdefault(str(status), {
                    "description": ERROR_MEANINGS[status],
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}}})
    return document


def disable_docs(app: FastAPI) -> None:
    """`http.docs: false`: the document and its viewer are not served at all (404 like any unknown path)."""
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in DOC_PATHS]
