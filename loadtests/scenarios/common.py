"""What the scenarios share: request factories, server configs, warm-up and sweeps."""
from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from tqdm import tqdm

from loadtests.generator import LoadRun, Shot, ShotFactory, run_closed, run_open
from loadtests.photos import digit_pngs
from loadtests.server import LiveServer, ServerPool, default_config

DIGITS = "seresnet20_digits"


def image_shots(images: Sequence[bytes], content_type: str = "image/png", model: str | None = None,
                tag: str = "", headers: dict[str, str] | None = None) -> ShotFactory:
    """Single-image raw-body requests cycling through `images`."""
    params = {"model": model} if model else {}

    def make(i: int) -> Shot:
        return Shot("/classify", content=images[i % len(images)], headers={"Content-Type": content_type,
                    **(headers or {})}, params=params, tag=tag or (model or ""))
    return make


def multipart_shots(images: Sequence[bytes], per_request: int, content_type: str = "image/png",
                    model: str | None = None) -> ShotFactory:
    """Multipart requests of `per_request` images each."""
    params = {"model": model} if model else {}

    def make(i: int) -> Shot:
        chosen = [images[(i * per_request + j) % len(images)] for j in range(per_request)]
        files = [("file", (f"{j}.img", data, content_type)) for j, data in enumerate(chosen)]
        return Shot("/classify", files=files, params=params, images=per_request, tag=str(per_request))
    return make


def digits_config(**model_overrides: Any) -> dict:
    """The shipped config (both digits models) with overrides applied to every model."""
    config = default_config(0)
    for model in config["models"]:
        model.update(model_overrides)
    return config


def digits_shots() -> ShotFactory:
    return image_shots(digit_pngs(), model=DIGITS)


def warm_up(url: str, make: ShotFactory, seconds: float = 2.0, concurrency: int = 4) -> None:
    """Let replicas, connections and caches settle before anything is measured."""
    run_closed(url, make, concurrency, seconds)


def closed_sweep(url: str, make: ShotFactory, levels: Sequence[int], duration_s: float, desc: str,
                 stop_when: Callable[[dict], bool] | None = None) -> list[LoadRun]:
    runs = []
    for level in tqdm(levels, desc=desc, unit="level"):
        runs.append(run_closed(url, make, level, duration_s))
        if stop_when and stop_when(runs[-1].summary()):
            break
    return runs


def open_sweep(url: str, make: ShotFactory, rates: Sequence[float], duration_s: float, desc: str,
               stop_when: Callable[[dict], bool] | None = None, timeout_s: float = 10) -> list[LoadRun]:
    runs = []
    for rate in tqdm(rates, desc=desc, unit="rate"):
        runs.append(run_open(url, make, rate, duration_s, timeout_s=timeout_s))
        if stop_when and stop_when(runs[-1].summary()):
            break
    return runs


class Scenario:
    """A named scenario: NAME, HELP, OPTIONS (flag -> (type, default, help)) and run(args, pool) -> headline."""

    NAME = ""
    HELP = ""
    OPTIONS: dict[str, tuple[type, Any, str]] = {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for flag, (kind, default, text) in cls.OPTIONS.items():
            parser.add_argument(f"--{flag}", type=kind, default=default, help=text)

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        raise NotImplementedError


def warm_digits_server(pool: ServerPool, config: dict | None = None) -> tuple[LiveServer, ShotFactory]:
    """A ready, warmed-up server with the digits models, and single-image digit requests for it."""
    server = pool.get(config or digits_config())
    make = digits_shots()
    warm_up(server.url, make)
    return server, make


def capacity_per_s(url: str, make: ShotFactory, concurrency: int = 16, seconds: float = 5) -> float:
    """Requests/s a closed loop gets: the yardstick for open-loop rates."""
    return run_closed(url, make, concurrency, seconds).summary()["requests_per_s"]

