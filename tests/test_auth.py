"""API keys: 401 without a valid key, 403 without the scope, probes open, keys never shown, secure by default."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from serve.api.auth import (ENV_KEYS, AuthMiddleware, KeyRing, KeysError, KeySource, check_auth, keys_generation,
                            load_keys, parse_keys, required_scope)
from serve.config import ConfigError, parse_config
from serve.metrics import ServeMetrics

CLASSIFIER = {"name": "batch-job", "key": "k-classify-0123456789", "scopes": ["classify"]}
LABELLER = {"name": "labeller", "key": "k-feedback-0123456789", "scopes": ["feedback", "read"]}


def keys_file(tmp_path: Path, *entries: dict) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(list(entries)))
    return path


@pytest.mark.parametrize("text, problem", [
    ("{", "not JSON"),
    ('{"name": "a"}', "JSON list"),
    ('[{"name": "a", "key": "k-0123456789abcdef"}]', 'exactly "name", "key" and "scopes"'),
    ('[{"name": "a", "key": "short", "scopes": ["read"]}]', "at least 16"),
    ('[{"name": "a", "key": "k-0123456789abcdef", "scopes": ["admin"]}]', "scopes must be"),
    ('[{"name": "a b", "key": "k-0123456789abcdef", "scopes": ["read"]}]', "name must be"),
])
def test_unusable_keys_are_refused_without_quoting_a_key(text, problem):
    with pytest.raises(KeysError, match=problem) as caught:
        parse_keys(text, "keys.json")
    assert "0123456789" not in str(caught.value)


def test_keys_come_from_the_file_and_the_variable_together(tmp_path):
    path = keys_file(tmp_path, CLASSIFIER)
    keys = load_keys(path, {ENV_KEYS: json.dumps([LABELLER])})
    assert [k.name for k in keys] == ["batch-job", "labeller"]
    assert load_keys(None, {}) == []
    with pytest.raises(KeysError, match="of its own"):
        load_keys(path, {ENV_KEYS: json.dumps([{**LABELLER, "key": CLASSIFIER["key"]}])})
    with pytest.raises(KeysError, match="cannot read"):
        load_keys(tmp_path / "missing.json", {})


def test_a_key_is_identified_by_its_value_and_only_its_digest_is_kept():
    ring = KeyRing(parse_keys(json.dumps([CLASSIFIER, LABELLER]), "test"))
    assert ring.identify(CLASSIFIER["key"]).name == "batch-job"
    assert ring.identify(CLASSIFIER["key"] + "x") is None and ring.identify("") is None
    assert CLASSIFIER["key"] not in repr(ring.keys)


@pytest.mark.parametrize("method, path, scope", [
    ("POST", "/classify", "classify"), ("POST", "/v2/models/m/infer", "classify"),
    ("POST", "/v2/models/m/versions/1/infer", "classify"), ("POST", "/feedback", "feedback"),
    ("GET", "/models", "read"), ("GET", "/ab/report", "read"), ("GET", "/v2/models/m", "read"),
    ("GET", "/v2", "read"), ("GET", "/nowhere", "read"), ("GET", "/v2/health/ready", None),
    ("GET", "/v2/health/live", None), ("GET", "/metrics", None), ("GET", "/openapi.json", None),
])
def test_every_route_needs_its_scope(method, path, scope):
    assert required_scope(method, path, metrics_open=True) == scope


def test_metrics_can_need_a_key():
    assert required_scope("GET", "/metrics", metrics_open=False) == "read"


def protected_app(ring: KeyRing, metrics_open: bool = True) -> tuple[FastAPI, ServeMetrics]:
    app = FastAPI()
    app.add_middleware(AuthMiddleware)
    app.state.keys, app.state.metrics_open, app.state.metrics = ring, metrics_open, ServeMetrics()

    @app.post("/classify")
    @app.post("/feedback")
    @app.get("/models")
    @app.get("/metrics")
    @app.get("/v2/health/ready")
    async def answer(request: Request) -> dict:
        return {"ok": request.url.path}

    return app, app.state.metrics


def bearer(entry: dict) -> dict:
    return {"Authorization": f"Bearer {entry['key']}"}


def test_the_middleware_answers_401_403_or_lets_through(caplog):
    app, metrics = protected_app(KeyRing(parse_keys(json.dumps([CLASSIFIER, LABELLER]), "test")))
    caplog.set_level(logging.INFO, logger="resfam.access")
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": "Basic x"}):
            refused = client.post("/classify", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["error"]["code"] == "unauthorized"
        assert client.post("/classify", headers=bearer(CLASSIFIER)).status_code == 200
        forbidden = client.post("/feedback", headers=bearer(CLASSIFIER))
        assert forbidden.status_code == 403 and "batch-job" in forbidden.json()["error"]["message"]
        assert client.post("/feedback", headers=bearer(LABELLER)).status_code == 200
        assert client.get("/models", headers=bearer(LABELLER)).status_code == 200
        assert client.get("/v2/health/ready").status_code == 200 and client.get("/metrics").status_code == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "resfam.access"]
    assert {(line["client"], line["status"]) for line in lines} >= {("batch-job", 200), ("batch-job", 403), ("-", 401)}
    assert not any(k["key"] in caplog.text for k in (CLASSIFIER, LABELLER))
    assert metrics.registry.get_sample_value("resfam_client_requests_total",
                                             {"client": "batch-job", "scope": "classify", "code": "200"}) == 1


def test_with_metrics_protected_a_scrape_needs_a_read_key():
    app, _ = protected_app(KeyRing(parse_keys(json.dumps([CLASSIFIER, LABELLER]), "test")), metrics_open=False)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(CLASSIFIER)).status_code == 403
        assert client.get("/metrics", headers=bearer(LABELLER)).status_code == 200


def test_without_keys_everything_is_open():
    app, _ = protected_app(KeyRing())
    with TestClient(app) as client:
        assert client.post("/feedback").status_code == 200


def test_the_key_source_reloads_on_a_new_generation_and_keeps_keys_when_the_file_breaks(tmp_path):
    path = keys_file(tmp_path, CLASSIFIER)
    source = KeySource(path, enabled=True)
    first = keys_generation(path, {})
    assert [k.name for k in source.reload(first).keys] == ["batch-job"]
    path.write_text(json.dumps([LABELLER]))
    assert source.reload(first).keys[0].name == "batch-job"  # same generation: not re-read
    second = keys_generation(path, {})
    assert second != first and [k.name for k in source.reload(second).keys] == ["labeller"]
    path.write_text("{broken")
    assert [k.name for k in source.reload(keys_generation(path, {})).keys] == ["labeller"]
    assert KeySource(path, enabled=False).reload("x").keys == ()


CONFIG = {"models": [{"name": "seresnet20_digits"}]}


def test_a_server_without_keys_may_only_listen_on_loopback(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEYS, raising=False)
    check_auth(parse_config(CONFIG), "127.0.0.1", tmp_path)  # what `make serve` does: nothing needed
    with pytest.raises(ConfigError, match="auth: none"):
        check_auth(parse_config(CONFIG), "0.0.0.0", tmp_path)
    check_auth(parse_config({**CONFIG, "auth": "none"}), "0.0.0.0", tmp_path)
    keyed = {**CONFIG, "auth": {"keys_file": "keys.json"}}  # relative to the base
    keys_file(tmp_path, CLASSIFIER)
    check_auth(parse_config(keyed), "0.0.0.0", tmp_path)
    monkeypatch.setenv(ENV_KEYS, json.dumps([LABELLER]))
    check_auth(parse_config(CONFIG), "0.0.0.0", tmp_path)
    with pytest.raises(KeysError):
        check_auth(parse_config({**CONFIG, "auth": {"keys_file": "missing.json"}}), "127.0.0.1", tmp_path)
