"""`python -m serve`: start (or join) Ray, deploy the configured models, serve until stopped."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from serve.config import ConfigError, load_config

APP_NAME = "resfam"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    parser.add_argument("--config", default=str(Path(__file__).with_name("config.yaml")))
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
    import ray
    from ray import serve as ray_serve

    from serve.app import PROJECT_ROOT, build_app

    logging.basicConfig(level=args.log_level, format='{"level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray_serve.start(http_options={"host": config.http.host, "port": config.http.port})
    ray_serve.run(build_app(config, PROJECT_ROOT), name=APP_NAME, route_prefix="/",
                  logging_config={"encoding": "JSON", "log_level": args.log_level, "enable_access_log": False})
    print(f"resfam-serve ready on http://{config.http.host}:{config.http.port} "
          f"(models: {', '.join(m.name for m in config.models)})", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("draining in-flight requests and shutting down", flush=True)
    ray_serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
