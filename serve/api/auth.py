"""API keys: who may classify, send feedback (which decides the A/B verdict) and read.

Keys come from a JSON file (`auth.keys_file`) and/or `RESFAM_API_KEYS` (a Kubernetes Secret), both a list
of `{"name", "key", "scopes"}`, never from the YAML. Only SHA-256 digests are kept in memory, compared in
constant time against every key, and only a key's name is ever logged.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.config import ConfigError, ServerConfig

ENV_KEYS = "RESFAM_API_KEYS"
SCOPES = ("classify", "feedback", "read")
MIN_KEY_LENGTH = 16
REALM = 'Bearer realm="resfam-serve"'

log = logging.getLogger(__name__)
access_log = logging.getLogger("resfam.access")


class KeysError(ValueError):
    """The keys file or variable is unusable; the message never quotes a key."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes
    scopes: frozenset[str]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(text: str, source: str) -> list[ApiKey]:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeysError(f"{source}: not JSON (line {exc.lineno})") from None
    if not isinstance(entries, list):
        raise KeysError(f'{source}: must be a JSON list of {{"name", "key", "scopes"}}')
    keys = []
    for position, entry in enumerate(entries):
        where = f"{source}[{position}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "key", "scopes"}:
            raise KeysError(f'{where}: needs exactly "name", "key" and "scopes"')
        name, key, scopes = entry["name"], entry["key"], entry["scopes"]
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise KeysError(f"{where}: name must be letters, digits, '-' or '_'")
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
            raise KeysError(f"{where} ({name}): key must be a string of at least {MIN_KEY_LENGTH} characters")
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES):
            raise KeysError(f"{where} ({name}): scopes must be a non-empty list of {list(SCOPES)}")
        keys.append(ApiKey(name, _digest(key), frozenset(scopes)))
    return keys


def load_keys(keys_file: Path | None, environ: dict[str, str] | None = None) -> list[ApiKey]:
    """Both sources together; a name or a key used twice is refused, so a name always means one key."""
    environ = os.environ if environ is None else environ
    keys: list[ApiKey] = []
    if keys_file is not None:
        try:
            keys += parse_keys(keys_file.read_text(), str(keys_file))
        except OSError as exc:
            raise KeysError(f"cannot read {keys_file}: {exc.strerror}") from None
    if environ.get(ENV_KEYS):
        keys += parse_keys(environ[ENV_KEYS], ENV_KEYS)
    names, digests = [k.name for k in keys], [k.digest for k in keys]
    if len(set(names)) != len(names) or len(set(digests)) != len(digests):
        raise KeysError("every key needs a name and a key of its own")
    return keys


def keys_generation(keys_file: Path | None, environ: dict[str, str] | None = None) -> str:
    """Changes whenever the keys do, without revealing them: the ingress reloads its keys when it changes."""
    environ = os.environ if environ is None else environ
    digest = hashlib.sha256(environ.get(ENV_KEYS, "").encode())
    if keys_file is not None and keys_file.exists():
        digest.update(keys_file.read_bytes())
    return digest.hexdigest()[:16]


def check_auth(config: ServerConfig, host: str, base: Path) -> None:
    """Secure by default: keys must be readable, and a server without any may only listen on loopback unless
    its config says `auth: none`. A cluster (RayService) is reachable by definition: it checks with 0.0.0.0."""
    if config.auth == "none":
        return
    if not load_keys(config.keys_path(base)) and not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        raise ConfigError(f"{host} is reachable from other machines and no API key is configured "
                          f"(auth.keys_file or {ENV_KEYS}); add keys, or set `auth: none` to serve without them")


class KeyRing:
    """Empty means open: a loopback server with no keys configured (the start-up check refuses the rest)."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self.keys = tuple(keys)

    @property
    def enforcing(self) -> bool:
        return bool(self.keys)

    def identify(self, presented: str) -> ApiKey | None:
        """Every key is compared, matched or not, so the time taken says nothing about which one is close."""
        digest, found = _digest(presented), None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def required_scope(method: str, path: str, metrics_open: bool) -> str | None:
    """None: open to anyone. Probes stay open so that orchestrators need no key; so do the API's docs."""
    if path.startswith("/v2/health/") or path in ("/docs", "/docs/oauth2-redirect", "/openapi.json"):
        return None
    if path == "/metrics":
        return None if metrics_open else "read"
    if method == "POST" and (path == "/classify" or path.endswith("/infer")):
        return "classify"
    if method == "POST" and path == "/feedback":
        return "feedback"
    return "read"


def _refusal(path: str, status: int, message: str, code: str) -> Response:
    """In the route's own error shape: the V2 protocol's clients expect `{"error": "message"}`."""
    headers = {"WWW-Authenticate": REALM} if status == 401 else None
    body = {"error": message} if path.startswith("/v2/") else {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" else None
    return None


class AuthMiddleware:
    """Plain ASGI, like the drain gate: reads `state.keys` (a KeyRing) and `state.metrics_open` of the app.

    Answers 401 (no or unknown key, with WWW-Authenticate) or 403 (a key without the scope) before the
    route runs, and writes one access-log line per request with the key's name.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        ring: KeyRing = getattr(state, "keys", KeyRing())
        started, client, status = time.perf_counter(), "-", [500]
        needed = required_scope(scope["method"], scope["path"], getattr(state, "metrics_open", True))
        refusal = None
        if ring.enforcing and needed is not None:
            token = _bearer(scope)
            key = ring.identify(token) if token else None
            if key is None:
                refusal = _refusal(scope["path"], 401, "send a valid API key: Authorization: Bearer <key>", "unauthorized")
            else:
                client = key.name
                if needed not in key.scopes:
                    refusal = _refusal(scope["path"], 403, f"key {key.name!r} lacks the {needed!r} scope", "forbidden")

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await (refusal or self.app)(scope, receive, send_status)
        finally:
            self._account(state, scope, client, needed, status[0], started)

    @staticmethod
    def _account(state: object, scope: Scope, client: str, needed: str | None, status: int, started: float) -> None:
        """Per-client figures by key name (`-`: no key), and the access log (INFO: quiet by default)."""
        metrics = getattr(state, "metrics", None)
        if metrics is not None:
            metrics.client_requests.labels(client, needed or "open", str(status)).inc()
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({"method": scope["method"], "path": scope["path"], "status": status,
                                        "client": client, "ms": round((time.perf_counter() - started) * 1e3, 2)}))


class KeySource:
    """The ingress's keys, re-read when their generation changes (SIGHUP with a changed file); a file that has
    become unusable keeps the keys in force and says why, rather than locking everyone out or letting all in."""

    def __init__(self, keys_file: Path | None, enabled: bool) -> None:
        self.keys_file, self.enabled = keys_file, enabled
        self.generation: object = object()  # matches nothing: the first reload always reads
        self.ring = KeyRing()

    def reload(self, generation: str | None) -> KeyRing:
        if not self.enabled or generation == self.generation:
            return self.ring
        try:
            self.ring = KeyRing(load_keys(self.keys_file))
            self.generation = generation
            log.warning(json.dumps({"event": "api_keys_loaded", "names": [k.name for k in self.ring.keys]}))
        except KeysError as exc:
            log.error(json.dumps({"event": "api_keys_unusable", "error": str(exc), "kept": len(self.ring.keys)}))
        return self.ring
