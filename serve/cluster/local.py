"""`python -m serve` (serve/__main__.py): start (or join) Ray, deploy the configured models, serve until stopped.

SIGHUP re-reads the config and redeploys: Ray Serve rolls replicas over without dropping requests,
so a new model version or new batching settings go live under load. SIGINT/SIGTERM drain and stop.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from serve.api.auth import KeysError, check_auth
from serve.config import PROJECT_ROOT, ConfigError, ServerConfig, load_config
from serve.cluster.haproxy_orphans import haproxies_using, own_haproxy_dir, reap_orphaned_haproxy
from serve.cluster.ports import PortBusy, ensure_port_free, strangers_on_port
from serve.cluster.procs import kill_survivors, process_tree, snapshot, start_time, still_running
from serve.cluster.haproxy_config import wrapper_environment
from serve.cluster.ray_env import (QUIET_LOCAL_RAY, front_door_environment, local_haproxy_files,
                                   local_haproxy_ports, local_ray_environment)

APP_NAME = "resfam"
DRAIN_TIMEOUT_S = 30.0
DRAIN_GRACE_S = 15.0  # the redeploy that carries the drain, beyond the drain itself
PROCESS_SNAPSHOT_S = 5.0
RAYLET = "raylet"  # its process name (/proc/<pid>/comm)


class StoppedWithoutRay(Exception):
    """Ray's raylet was signalled with us: no drain is possible, and ray.shutdown() without a raylet crashes the
    process (SIGSEGV, or exit 1 from Ray's core worker) before anything after it runs. `main` exits at once
    instead, once its own clean-up is done."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "config.yaml"))
    parser.add_argument("--address", default=None,
                        help="Ray cluster address ('auto' joins a running cluster); default starts a local one")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        check_auth(config, config.http.host, PROJECT_ROOT)
    except (ConfigError, KeysError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Ray Serve reads its flags when imported, here and in every process Ray starts: set them first.
    # Ray starts its workers at niceness 15, below everything else on the host; the replicas and the
    # proxy are this server's whole job, so they run at normal priority (an explicit setting wins).
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.update(front_door_environment(config.http))
    with contextlib.ExitStack() as cleanup:
        haproxy_dir: Path | None = None
        if args.address is None:  # a local server: the port and HAProxy's files are ours to look after
            os.environ.update(local_ray_environment(config.http.host))
            for name, value in QUIET_LOCAL_RAY.items():  # an explicit setting wins
                os.environ.setdefault(name, value)
            haproxy = config.http.proxy == "haproxy"
            if haproxy and (stopped := reap_orphaned_haproxy()):
                print(f"warning: stopped haproxy {stopped}, left running by a server that was killed",
                      file=sys.stderr, flush=True)
            try:
                ensure_port_free(config.http.host, config.http.port)
            except PortBusy as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                return 1
            if haproxy:
                haproxy_dir = Path(cleanup.enter_context(own_haproxy_dir()))
                local = {**local_haproxy_ports(config.http.port), **local_haproxy_files(haproxy_dir)}
                for name, value in local.items():
                    os.environ.setdefault(name, value)
                os.environ.update(wrapper_environment(config, haproxy_dir))
        try:
            return serve_until_stopped(config, args, haproxy_dir)
        except StoppedWithoutRay:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skips the atexit ray.shutdown() that would crash without a raylet


def serve_until_stopped(config: ServerConfig, args: argparse.Namespace, haproxy_dir: Path | None) -> int:
    import ray
    from ray import serve as ray_serve

    from serve.cluster.app import build_app

    logging.basicConfig(level=args.log_level, format='{"level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray_serve.start(http_options={"host": config.http.host, "port": config.http.port,
                                  "keep_alive_timeout_s": config.http.keep_alive_timeout_s})
    logging_config = {"encoding": "JSON", "log_level": args.log_level, "enable_access_log": False}

    def deploy(cfg: ServerConfig, drain_s: float | None = None) -> None:
        ray_serve.run(build_app(cfg, PROJECT_ROOT, drain_s), name=APP_NAME, route_prefix="/",
                      logging_config=logging_config)
        if drain_s:
            return
        print(f"resfam-serve ready on http://{config.http.host}:{config.http.port} "
              f"(models: {', '.join(f'{m.name}/{m.version}' for m in cfg.models)})", flush=True)

    deploy(config)
    deployed = config
    # Ours: this process's tree, and the haproxy processes that run on our own HAProxy directory (a reloaded
    # haproxy need not stay under the process that started it).
    def ours() -> set[int]:
        return set(process_tree(os.getpid())) | set(haproxies_using(haproxy_dir) if haproxy_dir else ())

    if args.address is None and (strangers := strangers_on_port(config.http.host, config.http.port, ours)):
        # Another server bound the port between our check and our start; SO_REUSEPORT let both in.
        print(f"error: {config.http.host}:{config.http.port} is also served by {', '.join(map(str, strangers))}; "
              "stopping this server", file=sys.stderr, flush=True)
        ray.shutdown()
        return 1
    stop, reload = threading.Event(), threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: (reload.set(), stop.set()))
    known = snapshot(os.getpid())  # our processes as seen while serving (see kill_survivors)
    while True:
        while not stop.wait(PROCESS_SNAPSHOT_S):
            known.update(snapshot(os.getpid()))
        if not reload.is_set():
            break
        stop.clear()
        reload.clear()
        try:
            new_config = load_config(args.config)
            check_auth(new_config, new_config.http.host, PROJECT_ROOT)
            if new_config.http != config.http:
                raise ConfigError("http host/port cannot change without a restart")
            deploy(new_config)
            deployed = new_config
        except Exception as exc:  # a bad new config must not take down the running one
            print(f"error: reload failed, still serving the previous config: {exc}", file=sys.stderr, flush=True)
    print("draining in-flight requests and shutting down", flush=True)
    started = time.monotonic()
    # Every Ingress replica refuses new requests, finishes its admitted ones and writes its feedback buffer; a
    # handle call would reach only the replica its router picks. `serve.run` returns once all have.
    def drain() -> None:
        try:
            deploy(deployed, drain_s=DRAIN_TIMEOUT_S)
            replicas = sum(ray_serve.status().applications[APP_NAME].deployments["Ingress"].replica_states.values())
            print(f"drained: {dict(ingress_replicas=replicas, seconds=round(time.monotonic() - started, 2))}",
                  flush=True)
        except Exception as exc:  # stop anyway: Ray must not outlive us
            print(f"error: drain failed after {time.monotonic() - started:.1f} s: {exc}", file=sys.stderr, flush=True)

    # Bounded: a SIGTERM to the whole process group (systemd's default stop, `kill -TERM -<pgid>`) also reaches
    # Ray's raylet, which shares our group and dies of it (within ~10 s); a redeploy then waits forever for
    # replicas no raylet serves. (A SIGINT to the group, Ctrl-C in a terminal, leaves the raylet running.)
    raylets = {pid: started for pid, started in known.items() if _is_raylet(pid)} if args.address is None else {}
    draining = threading.Thread(target=drain, daemon=True)
    draining.start()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S + DRAIN_GRACE_S
    while draining.is_alive() and time.monotonic() < deadline and (not raylets or still_running(raylets)):
        draining.join(0.5)
    raylet_gone = bool(raylets) and not still_running(raylets)
    if raylet_gone:
        print("error: no drain: Ray's raylet was signalled too (a signal to the whole process group?); stopping",
              file=sys.stderr, flush=True)
    elif draining.is_alive():
        print(f"error: drain did not finish in {DRAIN_TIMEOUT_S + DRAIN_GRACE_S:g} s (was Ray itself signalled?); "
              "stopping anyway", file=sys.stderr, flush=True)
    if args.address is None:
        # Our own local Ray: nothing is left in flight, so stop it at once. Serve's graceful shutdown
        # would keep the proxy accepting connections for an app it is tearing down, and they would hang.
        # Whatever Ray leaves (its workers outlive a raylet that died first) is killed: nothing outlives us.
        known.update(snapshot(os.getpid()))
        known.update({pid: started for pid in ours() if (started := start_time(pid)) is not None})
        known.pop(os.getpid(), None)
        if not raylet_gone:
            ray.shutdown()
        if survivors := kill_survivors(known):
            print(f"killed {len(survivors)} of Ray's processes that outlived it: {survivors}", file=sys.stderr,
                  flush=True)
        if raylet_gone:
            raise StoppedWithoutRay
    else:
        ray_serve.shutdown()  # a shared cluster outlives us: remove the app, leave Ray running
    return 0


def _is_raylet(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == RAYLET
    except OSError:
        return False
