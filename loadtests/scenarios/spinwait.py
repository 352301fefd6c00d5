"""spin-wait: ONNX Runtime's threads busy-waiting (`models[].spin_wait: true`) or sleeping (false, the default)
behind each front door, ResNet-50 on the load tests' photos, against the plain server, in rounds that alternate
the variants so that all of them see the same machine.

Spinning buys a few milliseconds per batch and costs CPU the serving path then lacks: which wins depends on how
much CPU the front door and the ingress take beside the model.
"""
from __future__ import annotations

import argparse
import os
import statistics

from tqdm import tqdm

from loadtests.photos import jpeg_photos
from loadtests.report import plot_bars, table, write_results
from loadtests.scenarios import cpu_resnet50
from loadtests.scenarios.common import Scenario, image_shots, warm_up
from loadtests.scenarios.peers import HAPROXY, PLAIN, RAY, measure_level, serving
from loadtests.server import ServerPool

COLUMNS = ["variant", "level", "images_per_s", "p50_ms", "server_cpu_ms", "rounds"]


def variants() -> list[tuple[str, str, bool | None]]:
    return [(f"{server}, spin_wait {spin}".replace("resfam ", ""), server, spin)
            for server in (RAY, HAPROXY) for spin in (False, True)] + [(PLAIN, PLAIN, None)]


class SpinWait(Scenario):
    """spin-wait: models[].spin_wait false vs true, both front doors, and the plain server, alternating."""

    NAME = "spin-wait"
    HELP = "ONNX Runtime threads spinning or sleeping, behind each front door, against the plain server"
    OPTIONS = {
        "duration": (float, 10, "seconds per level"),
        "concurrency": (str, "1,8", "closed-loop users"),
        "rounds": (int, 2, "rounds over every variant"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        cpu_resnet50.ensure_model()
        levels = [int(c) for c in args.concurrency.split(",")]
        jpegs = image_shots(jpeg_photos(), "image/jpeg")
        raw: dict[tuple[str, int], list[dict]] = {}
        for _ in tqdm(range(args.rounds), desc=cls.NAME, unit="round"):
            for label, server_name, spin in variants():
                config = cpu_resnet50.server_config("replica")
                if spin is not None:
                    config["models"][0]["spin_wait"] = spin
                with serving(pool, server_name, config) as server:
                    warm_up(server.url, jpegs, seconds=4)
                    for level in levels:
                        raw.setdefault((label, level), []).append(
                            measure_level(server, server_name, jpegs, level, args.duration))
        pool.close()
        rows = [{"variant": label, "level": level, "rounds": len(runs),
                 **{k: statistics.median(r[k] for r in runs) for k in ("images_per_s", "p50_ms", "server_cpu_ms")}}
                for (label, level), runs in raw.items()]
        plot = plot_bars(args.out, "throughput.png",
                         {f"c={level}": {r["variant"]: r["images_per_s"] for r in rows if r["level"] == level}
                          for level in levels}, "variant", "images/s (median of rounds)", "spin_wait by front door")
        write_results(args.out, {"rows": rows, "runs": {f"{k[0]} c={k[1]}": v for k, v in raw.items()},
                                 "load_average_after": os.getloadavg()}, f"""# {cls.NAME}

`python -m loadtests {cls.NAME} --rounds {args.rounds} --duration {args.duration:g}`: ResNet-50 (random weights),
500x375 JPEGs, one replica with 2 CPUs, closed loop; medians over {args.rounds} rounds that alternate the variants.
`server_cpu_ms`: CPU of every process of the server per answered request.

{table(rows, COLUMNS)}

![throughput]({plot})
""")
        best = {level: max((r for r in rows if r["level"] == level), key=lambda r: r["images_per_s"])["variant"]
                for level in levels}
        return {"scenario": cls.NAME, "figure": "best " + ", ".join(f"c={c}: {v}" for c, v in best.items()),
                "ok": True}
