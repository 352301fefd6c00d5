"""peers: resfam-serve against the server a user would write instead, side by side in one run (issue 14).

ResNet-50 (random weights) on the load tests' real photos as 500x375 JPEGs, the same closed-loop generator at
each concurrency, against: resfam-serve as shipped (`http.proxy: haproxy`, the model in the ingress,
`runs_in: ingress`), with the model in a replica of its own behind either front door (`haproxy`, `ray`: what a
cluster runs), and loadtests/plain_server.py (FastAPI + one ONNX Runtime session, same model file and
preprocessing).
For every server and level: images/s, latency, errors, the ratio to the plain server, and the CPU time each
process of the server's tree spent per request (from /proc), so the serving path's cost outside ONNX Runtime
shows. Then the front door alone: the digits model (about 1 ms of inference) at one concurrency, requests/s and
CPU per request. Last, what feeding a GPU costs: CPU per image for decoding small and phone-size photos, for
the serving path, and for clients that send preprocessed tensors (Open Inference Protocol, binary extension),
turned into the CPU cores a node needs to keep one GPU replica busy.
Targets (issue 14): with the shipped front door, images/s at c=8 at least the plain server's, p50 at c=1
within 5 ms of it. More levels say where the gaps come from: the shipped server at c=1 and c=8 with every process
off the request path paused (PAUSED), and both servers at c=1 with ONNX Runtime on one thread, a core to spare
(SPARE).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import time
from typing import Iterator

import numpy as np
from tqdm import tqdm

from loadtests import cpu
from loadtests.generator import Shot, ShotFactory, run_closed
from loadtests.inprocess import NO_PIXEL_LIMIT, session_for
from loadtests.photos import digit_pngs, jpeg_photos
from loadtests.plain_server import PlainServer
from loadtests.report import plot_bars, table, write_results
from loadtests.scenarios import cpu_resnet50
from loadtests.scenarios.common import Scenario, digits_config, digits_shots, image_shots, warm_up
from loadtests.scenarios.decode import phone_photos
from loadtests.scrape import histogram_totals
from loadtests.server import ROOT, LiveServer, ServerPool, free_port
from serve.runtime.inference import OnnxClassifier
from serve.runtime.preprocess import decode_and_preprocess
from serve.runtime.repository import ModelArtifact, load_artifact

PLAIN, SHIPPED, HAPROXY, RAY = "plain", "resfam shipped", "resfam haproxy", "resfam ray"
# resfam's layouts: (http.proxy, models[].runs_in)
LAYOUTS = {SHIPPED: ("haproxy", "ingress"), HAPROXY: ("haproxy", "replica"), RAY: ("ray", "replica")}
TENSOR = " (OIP tensor)"
# The shipped server at c=1 and c=8 with every process off the request path stopped (SIGSTOP) for the level: how
# much of its gap to the plain server is Ray's own processes (raylet, GCS, controller, metrics hub, ...) taking turns
# on the cores ONNX Runtime's threads need. A diagnosis, not a way to run: stopped, they would miss health checks.
PAUSED = " (Ray's other processes paused)"
# Both servers at c=1 with ONNX Runtime on one thread (the model's num_cpus: 1), so a core is left to everything
# else: the gap on a node where Ray's processes need not take turns with the model's threads.
SPARE = " (1 ONNX Runtime thread, a core to spare)"
ON_PATH = ("ingress replica", "haproxy")
# resnet50 fp16, batch 32, one H100 through ONNX Runtime's CUDA provider (loadtests/results/gpu-h100-inprocess.txt)
GPU_IMAGES_PER_S = 5106.0
ORT_BATCHES = (1, 2, 4, 8, 16)
CLASSIFIER = "classifier replica"
PATH_ROLES = ("ray proxy", "haproxy", "ingress replica")
# Process names (loadtests.procs.short_name) -> the role they play in serving a request.
ROLES = (("ProxyActor", "ray proxy"), ("Ingress", "ingress replica"), ("classifier", CLASSIFIER),
         ("MetricsHub", "metrics hub"), ("ServeController", "controller"), ("raylet", "raylet/gcs"),
         ("gcs_server", "raylet/gcs"), ("haproxy", "haproxy"), ("plain_server", "plain server"),
         ("python -m serve", "serve driver"), (cpu.GENERATOR, cpu.GENERATOR))


INCONCLUSIVE = """ — **inconclusive on this run**: other work held the cores when it began (1-minute load average
above cores + 1), and the servers ran one after another, so the throughput and latency ratios between them
moved with that work. The CPU per request figures hold better: CPU time is counted per process."""


def role(name: str) -> str:
    return next((r for marker, r in ROLES if marker in name), "other ray processes")


def tensor_shots(artifact: ModelArtifact, photos: tuple[bytes, ...], class_count: int = 5) -> ShotFactory:
    """Open Inference Protocol requests carrying one preprocessed image each as raw FP32 after the JSON header
    (binary tensor extension), as tritonclient sends them: what a client that preprocesses itself posts."""
    bodies = []
    for data in photos:
        tensor = decode_and_preprocess(data, artifact.preprocessing, NO_PIXEL_LIMIT, "fast")[None].astype(np.float32)
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(tensor.shape),
                                         "parameters": {"binary_data_size": tensor.nbytes}}],
                             "outputs": [{"name": "probabilities", "parameters": {"classification": class_count}}]})
        bodies.append((header.encode(), tensor.tobytes()))

    def make(i: int) -> Shot:
        header, raw = bodies[i % len(bodies)]
        return Shot(f"/v2/models/{artifact.name}/infer", content=header + raw, tag="tensor",
                    headers={"Content-Type": "application/octet-stream",
                             "Inference-Header-Content-Length": str(len(header))})
    return make


def ort_cpu_ms(model: OnnxClassifier, shape: tuple[int, ...], batch: int, seconds: float = 1.5) -> float:
    """CPU milliseconds (all ONNX Runtime threads) per image at `batch`, in this process: what a replica's
    inference costs, to take out of its process's CPU time."""
    data = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    model.predict(data)
    images, cpu_started, started = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - started < seconds or images < 3 * batch:
        model.predict(data)
        images += batch
    return 1000 * (time.process_time() - cpu_started) / images


def ort_profile(artifact: ModelArtifact, num_cpus: float) -> dict[int, float]:
    model = session_for(artifact, "cpu", num_cpus, [])
    return {b: ort_cpu_ms(model, artifact.preprocessing.input_shape, b) for b in ORT_BATCHES}


def ort_ms_at(profile: dict[int, float], mean_batch: float) -> float:
    """The profile's figure at the largest measured batch not above the mean batch (an upper bound)."""
    return profile[max((b for b in profile if b <= max(mean_batch, 1)), default=1)]


@contextlib.contextmanager
def serving(pool: ServerPool, name: str, config: dict) -> Iterator[LiveServer]:
    """A ready server: resfam-serve through the pool, the plain server on its own (the pool's server stopped)."""
    if name != PLAIN:
        proxy, runs_in = LAYOUTS[name]
        yield pool.get({**config, "http": {**config.get("http", {}), "proxy": proxy},
                        "models": [{**m, "runs_in": runs_in} for m in config["models"]]})
        return
    pool.close()
    pool.starts += 1
    with PlainServer({**config, "http": {"host": "127.0.0.1", "port": free_port()}},
                     pool.workdir / f"plain-{pool.starts}") as server:
        yield server


@contextlib.contextmanager
def paused_off_path(root: int) -> Iterator[list[int]]:
    """Every process of `root`'s tree that no request of the shipped layout passes through, stopped (SIGSTOP)
    meanwhile and continued (SIGCONT) after, whatever happens."""
    stopped = []
    try:
        for pid, (name, _) in cpu.snapshot(root).items():
            if role(name) not in ON_PATH:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
        yield stopped
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def measure_level(server: LiveServer, name: str, make: ShotFactory, level: int, duration_s: float,
                  ort: dict[int, float] | None = None) -> dict:
    """One closed-loop level with the CPU each process of the server (and the generator) spent per request.
    `outside_classifier_cpu_ms`: every process but the classifier replica (front door, ingress, Ray), measured
    directly; with `ort` (a small model's in-process profile) also `outside_ort_cpu_ms`, the whole serving path.
    A PAUSED name runs the level with paused_off_path."""
    metrics = not name.startswith(PLAIN)

    def load() -> object:
        with paused_off_path(server.pid) if name.endswith(PAUSED) else contextlib.nullcontext():
            return run_closed(server.url, make, level, duration_s)

    before = histogram_totals(server.url, "resfam_batch_size") if metrics else (0.0, 0.0)
    run, spent = cpu.measure(server.pid, load)
    after = histogram_totals(server.url, "resfam_batch_size") if metrics else (1.0, 1.0)
    summary = run.summary()
    answered = max(summary["requests"] - summary["errors"], 1)
    by_role: dict[str, float] = {}
    for process, seconds in spent.items():
        by_role[role(process)] = by_role.get(role(process), 0.0) + 1000 * seconds / answered
    mean_batch = (after[0] - before[0]) / max(after[1] - before[1], 1)
    server_ms = sum(v for r, v in by_role.items() if r != cpu.GENERATOR)
    row = {**summary, "server": name, "mean_batch": mean_batch if metrics else None, "cpu_ms": by_role,
           "server_cpu_ms": server_ms, "generator_cpu_ms": by_role.get(cpu.GENERATOR, 0.0),
           "outside_classifier_cpu_ms": server_ms - by_role.get(CLASSIFIER, 0.0) if metrics else None,
           "load_average": os.getloadavg()[0]}
    if ort is not None:
        row["ort_cpu_ms_est"] = ort_ms_at(ort, mean_batch)
        row["outside_ort_cpu_ms"] = server_ms - row["ort_cpu_ms_est"]
    return row


def decode_cpu_ms(images: tuple[bytes, ...], artifact: ModelArtifact, repeats: int) -> float:
    """CPU milliseconds per image of decode_and_preprocess (decode: fast), in this process: CPU time, not wall
    time, because other work on the cores stretches the latter."""
    decode_and_preprocess(images[0], artifact.preprocessing, NO_PIXEL_LIMIT, "fast")
    started = time.process_time()
    for _ in range(repeats):
        for data in images:
            decode_and_preprocess(data, artifact.preprocessing, NO_PIXEL_LIMIT, "fast")
    return 1000 * (time.process_time() - started) / (repeats * len(images))


class Peers(Scenario):
    NAME = "peers"
    HELP = "resfam-serve (both front doors) vs a plain FastAPI + ONNX Runtime server; CPU per request by process"
    OPTIONS = {
        "duration": (float, 10, "seconds per level"),
        "concurrency": (str, "1,8,32", "closed-loop users on ResNet-50"),
        "front-door-concurrency": (int, 32, "closed-loop users on the digits model"),
        "tensor-concurrency": (int, 32, "closed-loop users sending preprocessed tensors (OIP)"),
        "repeats": (int, 5, "decode timings: repeats per photo"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        cpu_resnet50.ensure_model()
        pool.close()  # nothing of ours competes with the in-process figures
        load_before = os.getloadavg()
        resnet = load_artifact(cpu_resnet50.CACHE, cpu_resnet50.MODEL, cpu_resnet50.VERSION)
        digits_cfg = digits_config()
        digits = load_artifact(ROOT / "models", digits_cfg["default_model"], "latest")
        photos, phones = jpeg_photos(), phone_photos()
        ort = ort_profile(digits, digits_cfg["models"][0]["num_cpus"])
        decode_ms = {"500x375": decode_cpu_ms(photos, resnet, args.repeats),
                     "4032x3024": decode_cpu_ms(phones, resnet, args.repeats),
                     "digits PNG": decode_cpu_ms(digit_pngs(), digits, args.repeats)}
        kb = {"500x375": statistics.mean(map(len, photos)) / 1e3, "4032x3024": statistics.mean(map(len, phones)) / 1e3,
              "tensor": float(np.prod(resnet.preprocessing.input_shape)) * 4 / 1e3}
        levels = [int(c) for c in args.concurrency.split(",")]
        jpegs, tensors = image_shots(photos, "image/jpeg"), tensor_shots(resnet, photos)
        rows, front = [], []
        for name in tqdm((SHIPPED, HAPROXY, RAY, PLAIN), desc=cls.NAME, unit="server"):
            with serving(pool, name, cpu_resnet50.server_config("replica")) as server:
                warm_up(server.url, jpegs, seconds=5)
                rows += [measure_level(server, name, jpegs, c, args.duration) for c in levels]
                if name == SHIPPED:
                    rows += [measure_level(server, SHIPPED + PAUSED, jpegs, c, args.duration) for c in (1, 8)]
                if name != PLAIN:
                    warm_up(server.url, tensors)
                    rows.append(measure_level(server, name + TENSOR, tensors, args.tensor_concurrency, args.duration))
            with serving(pool, name, digits_cfg) as server:
                warm_up(server.url, digits_shots())
                front.append(measure_level(server, name, digits_shots(), args.front_door_concurrency,
                                           args.duration, ort))
        for name in (SHIPPED, PLAIN):
            with serving(pool, name, cpu_resnet50.server_config("replica", replica_cpus=1)) as server:
                warm_up(server.url, jpegs, seconds=5)
                rows.append(measure_level(server, name + SPARE, jpegs, 1, args.duration))
        pool.close()
        results = {**summarise(rows, front, ort, decode_ms, load_before, os.getloadavg()), "kb_per_image": kb}
        write_results(args.out, results, markdown(results, plots(args.out, results), args.duration))
        print(gpu_table(results))
        t = results["targets"]
        return {"scenario": cls.NAME,
                "figure": f"c=8: shipped {t['ratio_at_8']:.2f}x, model in a replica behind haproxy "
                          f"{t['haproxy_ratio_at_8']:.2f}x, behind ray {t['ray_ratio_at_8']:.2f}x the plain server's "
                          f"images/s ({t['paused_ratio_at_8']:.2f}x with Ray's other processes paused); "
                          f"c=1 p50 {t['p50_gap_ms_at_1']:+.1f} ms ({t['paused_p50_gap_ms_at_1']:+.1f} with them paused, "
                          f"{t['spare_p50_gap_ms_at_1']:+.1f} with a core to spare); "
                          f"front door c={args.front_door_concurrency} "
                          + ", ".join(f"{r['server']} {r['requests_per_s']:.0f}" for r in front) + " req/s"
                          + (" (inconclusive: shared machine)" if t["contended"] else ""),
                "ok": None if t["contended"] else t["met"]}


def summarise(rows: list[dict], front: list[dict], ort: dict, decode_ms: dict, load_before: tuple,
              load_after: tuple) -> dict:
    plain = {r["level"]: r for r in rows if r["server"] == PLAIN}
    spare_plain = {r["level"]: r for r in rows if r["server"] == PLAIN + SPARE}
    for r in rows:
        ref = (spare_plain if r["server"].endswith(SPARE) else plain).get(r["level"])
        r["ratio_to_plain"] = r["images_per_s"] / ref["images_per_s"] if ref and not r["server"].endswith(TENSOR) else None
        r["p50_gap_ms"] = r["p50_ms"] - ref["p50_ms"] if ref and not r["server"].endswith(TENSOR) else None
    at = {(r["server"], r["level"]): r for r in rows}
    shipped8, shipped1 = at.get((SHIPPED, 8)), at.get((SHIPPED, 1))

    def ratio_at_8(server: str) -> float:
        return at[(server, 8)]["ratio_to_plain"] if (server, 8) in at else float("nan")

    paused1, paused8 = at.get((SHIPPED + PAUSED, 1)), at.get((SHIPPED + PAUSED, 8))
    spare1 = at.get((SHIPPED + SPARE, 1))
    targets = {"ratio_at_8": ratio_at_8(SHIPPED), "haproxy_ratio_at_8": ratio_at_8(HAPROXY),
               "ray_ratio_at_8": ratio_at_8(RAY),
               "p50_gap_ms_at_1": shipped1["p50_gap_ms"] if shipped1 else float("nan"),
               "paused_p50_gap_ms_at_1": paused1["p50_gap_ms"] if paused1 else float("nan"),
               "paused_ratio_at_8": paused8["ratio_to_plain"] if paused8 else float("nan"),
               "spare_p50_gap_ms_at_1": spare1["p50_gap_ms"] if spare1 else float("nan")}
    targets["met"] = bool(shipped8 and shipped1 and targets["ratio_at_8"] >= 1.0 and shipped8["errors"] == 0
                          and targets["p50_gap_ms_at_1"] <= 5)
    targets["contended"] = load_before[0] > (os.cpu_count() or 1) + 1
    return {"runs": rows, "front_door": front, "ort_cpu_ms_per_image": ort, "decode_ms": decode_ms,
            "gpu": gpu_feeding(rows, front, decode_ms), "targets": targets,
            "machine_load_average": {"before": load_before, "after": load_after}}


def front_ms(row: dict) -> float:
    """CPU per request of the processes every request passes outside the classifier replica. Ray's controller,
    raylet/gcs and the metrics hub are left out: they cost per second, not per request (at 12 requests/s they
    add ~8 ms to each; at thousands, nothing)."""
    return sum(row["cpu_ms"].get(r, 0.0) for r in PATH_ROLES)


def gpu_feeding(rows: list[dict], front: list[dict], decode_ms: dict) -> list[dict]:
    """CPU cores per GPU replica at GPU_IMAGES_PER_S, where ONNX Runtime runs on the GPU and everything else on
    the node's cores, for the layouts with the model in a replica of its own (what a GPU cluster runs). Per image: the request path (front_ms) and the classifier replica's cost outside inference
    and decoding, both from the digits front-door row (~1 ms of inference, hundreds of requests/s, so little
    else hides in them); decoding, in-process by photo size; for tensors, what a ResNet-50 tensor body costs the
    request path more than a JPEG body (the two ResNet-50 rows at the highest concurrency)."""
    out = []
    for server in (RAY, HAPROXY):
        jpeg = max((r for r in rows if r["server"] == server), key=lambda r: r["level"], default=None)
        tensor = next((r for r in rows if r["server"] == server + TENSOR), None)
        small = next((r for r in front if r["server"] == server), None)
        if jpeg is None or tensor is None or small is None:
            continue
        replica = small["cpu_ms"].get(CLASSIFIER, 0.0) - small["ort_cpu_ms_est"] - decode_ms["digits PNG"]
        inputs = {"500x375 JPEG": (0.0, decode_ms["500x375"]), "4032x3024 JPEG (decode: fast)": (0.0, decode_ms["4032x3024"]),
                  "preprocessed tensor (OIP binary)": (front_ms(tensor) - front_ms(jpeg), 0.0)}
        for what, (body, decode) in inputs.items():
            ms = front_ms(small) + body + replica + decode
            out.append({"server": server, "input": what, "request_path_ms": front_ms(small) + body,
                        "replica_overhead_ms": replica, "decode_ms": decode, "cpu_ms_per_image": ms,
                        "cores_per_gpu": GPU_IMAGES_PER_S * ms / 1000})
    return out


def gpu_table(results: dict) -> str:
    return table(results["gpu"], ["server", "input", "request_path_ms", "replica_overhead_ms", "decode_ms",
                                  "cpu_ms_per_image", "cores_per_gpu"])


def role_rows(rows: list[dict]) -> tuple[list[dict], list[str]]:
    roles = sorted({k for r in rows for k in r["cpu_ms"]}, key=lambda k: -max(r["cpu_ms"].get(k, 0) for r in rows))
    return [{"server": r["server"], "level": r["level"], **r["cpu_ms"]} for r in rows], roles


def generator_shares(results: dict) -> str:
    return ", ".join(f"{r['server']} c={r['level']} {100 * r['generator_cpu_ms'] / (r['generator_cpu_ms'] + r['server_cpu_ms']):.0f}%"
                     for r in results["front_door"])


def plots(out, results: dict) -> list[str]:
    rows = [r for r in results["runs"] if not r["server"].endswith(TENSOR)]
    top = max(r["level"] for r in rows)
    servers = list(dict.fromkeys(r["server"] for r in rows))
    return [plot_bars(out, "throughput.png", {s: {str(r["level"]): r["images_per_s"] for r in rows if r["server"] == s}
                                              for s in servers}, "concurrency", "images/s", "ResNet-50, 500x375 JPEGs"),
            plot_bars(out, "p50.png", {s: {str(r["level"]): r["p50_ms"] for r in rows if r["server"] == s}
                                       for s in servers}, "concurrency", "p50 latency (ms)", "median latency"),
            plot_bars(out, "cpu_by_process.png", {r["server"]: r["cpu_ms"] for r in rows if r["level"] == top},
                      "process", "CPU ms per request", f"where the CPU goes, c={top}"),
            plot_bars(out, "front_door_cpu.png", {r["server"]: r["cpu_ms"] for r in results["front_door"]},
                      "process", "CPU ms per request", "front door: digits model")]


def markdown(results: dict, pngs: list[str], duration: float) -> str:
    t, load, kb = results["targets"], results["machine_load_average"], results["kb_per_image"]
    main_cols = ["server", "level", "images_per_s", "ratio_to_plain", "p50_ms", "p50_gap_ms", "p95_ms", "p99_ms",
                 "errors", "mean_batch", "server_cpu_ms", "outside_classifier_cpu_ms", "generator_cpu_ms", "load_average"]
    by_role, roles = role_rows(results["runs"])
    front_roles, front_cols = role_rows(results["front_door"])
    ort = [{"model": "digits", **{f"batch {b}": v for b, v in results["ort_cpu_ms_per_image"].items()}}]
    return f"""# peers

ResNet-50 (random weights), the load tests' real photos as 500x375 JPEGs, one closed-loop aiohttp client on the
same 2 cores, {duration:g} s per level. `resfam shipped`: the shipped layout (`http.proxy: haproxy`, the model
inside the ingress replica, `runs_in: ingress`); `resfam haproxy` and `resfam ray`: the model in a replica of its
own (`runs_in: replica`, as a cluster runs it) behind HAProxy or Ray's proxy; `plain`: loadtests/plain_server.py
(FastAPI + one ONNX Runtime session, uvicorn, no batching; ONNX Runtime on as many threads as the model's `num_cpus`
gives a resfam replica: 2 for ResNet-50, 1 for digits). `(OIP tensor)`: the same server fed preprocessed FP32 tensors through
POST /v2/models/resnet50/infer (binary extension), one image per request.

CPU columns are milliseconds of CPU per answered request, read from /proc/<pid>/stat (utime+stime) of every
process in the server's tree before and after each level. `outside_classifier_cpu_ms`: every process but the
classifier replica (front door, ingress, Ray's daemons): the serving path's cost that does not scale with the
model (for `resfam shipped` it holds the model too: there is no classifier replica). The classifier replica's CPU holds ONNX Runtime (whose idle threads spin, so its CPU per image exceeds
the compute), decoding, batching and Ray's actor calls. `generator_cpu_ms`: the load generator's own.
Machine load average (1 min) at each level in `load_average`; before the run {load['before'][0]:.1f}, after
{load['after'][0]:.1f} (2 cores: above 2 other work shared them; compare ratios within this run).

{table(results['runs'], main_cols)}

## Targets (issue 14)

- c=8, shipped: **{t['ratio_at_8']:.2f}x** the plain server's images/s (target ≥ 1.00); the model in a replica behind haproxy {t['haproxy_ratio_at_8']:.2f}x, behind ray {t['ray_ratio_at_8']:.2f}x;
  shipped with Ray's other processes paused (below) {t['paused_ratio_at_8']:.2f}x
- c=1 p50 − plain p50: **{t['p50_gap_ms_at_1']:+.1f} ms** (target ≤ 5 ms); {t['paused_p50_gap_ms_at_1']:+.1f} ms with
  Ray's other processes paused for the level (`{SHIPPED + PAUSED}`: every process of the server's tree but
  the ingress replica and HAProxy stopped with SIGSTOP, continued after), so about
  {t['p50_gap_ms_at_1'] - t['paused_p50_gap_ms_at_1']:.1f} ms of the gap is Ray's own processes taking turns on
  the 2 cores that ONNX Runtime's two threads need for every image
- with a core to spare (`{SHIPPED + SPARE}` against `{PLAIN + SPARE}`: the model's `num_cpus: 1`, so one
  ONNX Runtime thread in both servers and a core left to everything else): **{t['spare_p50_gap_ms_at_1']:+.1f} ms**
- met: **{t['met']}**{INCONCLUSIVE if t.get('contended') else ''}

## CPU ms per request by process

{table(by_role, ['server', 'level', *roles])}

ONNX Runtime CPU ms per image for the digits model in-process (all its threads), by batch size; the front-door
table subtracts it (`ort_cpu_ms_est`, at the level's mean batch) to leave the whole serving path
(`outside_ort_cpu_ms`):

{table(ort, ['model', *[f'batch {b}' for b in ORT_BATCHES]])}

## Front door: digits model

The shipped digits model (about 1 ms of inference), small PNGs, one per request.

{table(results['front_door'], ['server', 'level', 'requests_per_s', 'p50_ms', 'p99_ms', 'errors', 'server_cpu_ms', 'ort_cpu_ms_est', 'outside_ort_cpu_ms', 'generator_cpu_ms', 'load_average'])}

{table(front_roles, ['server', 'level', *front_cols])}

The load generator's share of all CPU spent (is the Python client the bottleneck?): {generator_shares(results)}.

## What feeding a GPU costs

Decode + preprocess with `decode: fast`, in-process, CPU ms per image (mean over the photos): 500x375
JPEG {results['decode_ms']['500x375']:.1f} ms, 4032x3024 JPEG {results['decode_ms']['4032x3024']:.1f} ms (to 224x224),
digits PNG {results['decode_ms']['digits PNG']:.2f} ms. With ONNX Runtime on a GPU, a node's cores pay the rest of
each image: `request_path_ms` (front door and ingress replica per request, from the digits front-door row, plus
for tensors what their body costs the path more than a JPEG's at the highest ResNet-50 level), `replica_overhead_ms`
(the classifier replica's CPU outside inference and decoding, from the digits front-door row) and `decode_ms`.
Ray's controller, raylet/gcs and metrics hub cost per second, not per request, and are left out. `cores_per_gpu`: that times {GPU_IMAGES_PER_S:,.0f} images/s, one GPU replica busy at
resnet50 fp16 batch 32 on one H100 (loadtests/results/gpu-h100-inprocess.txt). Single-image requests;
multi-image requests spread the per-request part over their images. The tensor path moves decoding to the
clients: {kb['tensor']:.0f} KB per image on the wire instead of {kb['500x375']:.0f} KB (500x375 JPEG) or
{kb['4032x3024']:.0f} KB (4032x3024 JPEG).

{gpu_table(results)}

{chr(10).join(f'![{p}]({p})' for p in pngs)}
"""
