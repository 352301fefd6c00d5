"""/openapi.json describes every route the server has, and the server's real answers match it."""
from __future__ import annotations

import base64
import json

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from serve.api.ingress import app as ingress_app
from serve.api.openapi import describe_api, disable_docs
from tests.images import encode
from tests.test_input_robustness import SVG

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def document(client: httpx.Client) -> dict:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def check_against_document(document: dict, method: str, path: str, answer: httpx.Response) -> None:
    """The status is documented for the route and, for JSON, the body validates against its schema."""
    responses = document["paths"][path][method]["responses"]
    assert str(answer.status_code) in responses, f"{method} {path} answered {answer.status_code}: not documented"
    content = responses[str(answer.status_code)].get("content", {})
    if answer.headers["content-type"].startswith("application/json"):
        schema = {**content["application/json"]["schema"], "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(answer.json())
    else:
        assert answer.headers["content-type"].split(";")[0] in content


def api_routes(routes: list) -> list[APIRoute]:
    """Ray Serve's class-based views arrive as an included router (FastAPI keeps its routes inside)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(api_routes(route.original_router.routes))
    return found


def test_every_route_of_the_app_is_documented(document):
    served = {(r.path, m.lower()) for r in api_routes(ingress_app.routes) for m in r.methods}
    documented = {(p, m) for p, ops in document["paths"].items() for m in ops}
    assert served and served == documented


def test_request_bodies_are_documented(document):
    classify = document["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert {"image/*", "multipart/form-data"} <= set(classify)
    feedback = document["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert feedback["$ref"] == "#/components/schemas/FeedbackBody"
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert infer["application/json"]["schema"]["$ref"] == "#/components/schemas/V2InferRequest"
    refs = set(json.dumps(document).split('"$ref": "')[1:])
    missing = {r.split('"')[0].rsplit("/", 1)[1] for r in refs} - set(document["components"]["schemas"])
    assert not missing, f"dangling references {missing}"


def test_real_answers_match_the_document(client: httpx.Client, document):
    from resfam.data import digits

    png = encode(digits("test")[0][0], "PNG")
    classified = client.post("/classify", content=png, headers={"Content-Type": "image/png"})
    request_id = classified.json()["request_id"]
    tensor = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32], "data": [0.0] * 1024}]}
    images = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                          "data": [base64.b64encode(png).decode()]}],
              "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    calls = [
        ("post", "/classify", "/classify", {"content": png}),
        ("post", "/classify", "/classify", {"files": [("file", png), ("file", png)], "params": {"k": "2"}}),
        ("post", "/classify", "/classify", {"content": b"not an image"}),
        ("post", "/classify", "/classify", {"content": SVG, "headers": {"Content-Type": "image/svg+xml"}}),
        ("post", "/classify", "/classify", {"content": png, "params": {"k": "0"}}),
        ("post", "/classify", "/classify", {"content": png, "params": {"model": "nope"}}),
        ("post", "/classify", "/classify", {"files": [("file", png)] * 17}),
        ("post", "/feedback", "/feedback", {"json": {"request_id": request_id, "label": 3}}),
        ("post", "/feedback", "/feedback", {"json": {"request_id": "never", "label": 3}}),
        ("post", "/feedback", "/feedback", {"json": {"request_id": request_id, "label": "cat"}}),
        ("post", "/feedback", "/feedback", {"content": b"{"}),
        ("get", "/ab/report", "/ab/report", {}),
        ("get", "/models", "/models", {}),
        ("get", "/models/{name}", "/models/seresnet20_digits", {}),
        ("get", "/models/{name}", "/models/nope", {}),
        ("get", "/metrics", "/metrics", {}),
        ("get", "/v2", "/v2", {}),
        ("get", "/v2/health/live", "/v2/health/live", {}),
        ("get", "/v2/health/ready", "/v2/health/ready", {}),
        ("get", "/v2/models/{name}", "/v2/models/seresnet20_digits", {}),
        ("get", "/v2/models/{name}", "/v2/models/nope", {}),
        ("get", "/v2/models/{name}/versions/{version}", "/v2/models/seresnet20_digits/versions/1", {}),
        ("get", "/v2/models/{name}/ready", "/v2/models/seresnet20_digits/ready", {}),
        ("get", "/v2/models/{name}/versions/{version}/ready", "/v2/models/seresnet20_digits/versions/9/ready", {}),
        ("post", "/v2/models/{name}/infer", "/v2/models/seresnet20_digits/infer", {"json": tensor}),
        ("post", "/v2/models/{name}/infer", "/v2/models/seresnet20_digits/infer", {"json": images}),
        ("post", "/v2/models/{name}/infer", "/v2/models/seresnet20_digits/infer", {"content": b"[]"}),
        ("post", "/v2/models/{name}/versions/{version}/infer", "/v2/models/nope/versions/1/infer", {"json": tensor}),
    ]
    statuses = set()
    for method, template, url, kwargs in calls:
        answer = client.request(method.upper(), url, **kwargs)
        check_against_document(document, method, template, answer)
        statuses.add(answer.status_code)
    assert {200, 400, 404, 413, 415, 422} <= statuses


def test_a_mismatching_answer_is_caught(document):
    """The check is not vacuous: a classify answer without its request_id fails it."""
    wrong = httpx.Response(200, json={"model": {"name": "x", "version": "1", "arch": None}, "arm": None})
    with pytest.raises(jsonschema.ValidationError):
        check_against_document(document, "post", "/classify", wrong)


def test_docs_can_be_switched_off():
    app = FastAPI()
    describe_api(app)

    @app.get("/ping")
    async def ping() -> dict:
        return {"pong": True}

    with TestClient(app) as client:
        assert client.get("/docs").status_code == 200 and "/ping" in client.get("/openapi.json").json()["paths"]
    disable_docs(app)
    with TestClient(app) as client:
        assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404
        assert client.get("/ping").json() == {"pong": True}
