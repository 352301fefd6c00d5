"""starts: start and stop the server many times in a row, as `make serve` and a crash loop would (issue 14).

HAProxy mode becomes the default front door only if it starts every time: each round starts `python -m serve`
on the digits models, waits until it is ready (GET /v2/health/ready 200 and "resfam-serve ready" logged), sends
one /classify, stops it with SIGTERM and checks that no process of its tree outlives it. A start that is not
ready within --timeout counts as a hang: its log is kept (hang-N.log) with the process list at that moment,
then the tree is killed and the rounds go on.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from loadtests.photos import digit_pngs
from loadtests.procs import title
from loadtests.report import plot_series, table, write_results
from loadtests.scenarios.common import DIGITS, Scenario, digits_config
from loadtests.server import LiveServer, ServerPool, free_port
from serve.cluster.procs import snapshot, still_running

COLUMNS = ["round", "start_s", "stop_s", "classify", "left_behind", "outcome"]


def one_round(index: int, proxy: str, workdir: Path, timeout_s: float, image: bytes) -> dict:
    config = digits_config()
    config["http"].update(proxy=proxy, host="127.0.0.1", port=free_port())
    server = LiveServer(config, workdir / f"round-{index}")
    row = {"round": index, "start_s": None, "stop_s": None, "classify": None, "left_behind": [], "outcome": "ok"}
    try:
        row["start_s"] = server.start(timeout_s=timeout_s)
    except RuntimeError as failure:
        row["outcome"] = "hang" if "not ready" in str(failure) else "failed"
        shutil.copy(server.log_path, workdir / f"{row['outcome']}-{index}.log")
        return row
    answer = httpx.post(f"{server.url}/classify", params={"model": DIGITS}, content=image,
                        headers={"Content-Type": "image/png"}, timeout=30)
    row["classify"] = answer.status_code
    tree = snapshot(server.pid)
    stopped = time.monotonic()
    server.stop()
    row["stop_s"] = time.monotonic() - stopped
    row["left_behind"] = [f"{pid} {title(pid)}" for pid in still_running(tree, grace_s=5.0)]
    if answer.status_code != 200 or row["left_behind"]:
        row["outcome"] = "failed"
        shutil.copy(server.log_path, workdir / f"failed-{index}.log")
    else:
        shutil.rmtree(server.workdir, ignore_errors=True)
    return row


class StartStop(Scenario):
    """starts: N consecutive starts and stops of `python -m serve` in one front-door mode; hangs counted."""

    NAME = "starts"
    HELP = "N consecutive starts and stops of the server; hangs, start and stop times, leftovers"
    OPTIONS = {
        "proxy": (str, "haproxy", "front door: haproxy or ray"),
        "count": (int, 100, "starts and stops"),
        "timeout": (float, 120, "seconds a start may take before it counts as a hang"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        pool.close()
        args.out.mkdir(parents=True, exist_ok=True)
        image = digit_pngs()[0]
        rows = [one_round(i, args.proxy, args.out, args.timeout, image)
                for i in tqdm(range(1, args.count + 1), desc=f"starts ({args.proxy})", unit="start")]
        outcomes = {o: sum(r["outcome"] == o for r in rows) for o in ("ok", "hang", "failed")}
        starts = [r["start_s"] for r in rows if r["start_s"] is not None]
        stops = [r["stop_s"] for r in rows if r["stop_s"] is not None]
        figures = {"rounds": len(rows), **outcomes,
                   "start_p50_s": statistics.median(starts) if starts else None,
                   "start_max_s": max(starts, default=None), "stop_p50_s": statistics.median(stops) if stops else None,
                   "stop_max_s": max(stops, default=None)}
        plot = plot_series(args.out, "start_stop_s.png",
                           {"start (s)": ([r["round"] for r in rows if r["start_s"] is not None], starts),
                            "stop (s)": ([r["round"] for r in rows if r["stop_s"] is not None], stops)},
                           "round", "seconds", f"{args.count} starts and stops, http.proxy: {args.proxy}")
        problems = [r for r in rows if r["outcome"] != "ok"]
        write_results(args.out, {"proxy": args.proxy, "timeout_s": args.timeout, **figures, "rounds": rows},
                      f"""# {cls.NAME}

`python -m loadtests starts --proxy {args.proxy} --count {args.count} --timeout {args.timeout:g}`: the digits
models, `http.proxy: {args.proxy}`, a fresh port each round; ready = GET /v2/health/ready 200 after the
server logged "resfam-serve ready"; one /classify; SIGTERM; every process of the tree must be gone within 5 s.

{table([figures], list(figures))}

{"Rounds that were not ok (their logs are kept next to this report):" if problems else "Every round was ok."}

{table(problems, COLUMNS) if problems else ""}

![start and stop times]({plot})
""")
        return {"scenario": cls.NAME,
                "figure": f"{args.proxy}: {outcomes['ok']}/{len(rows)} ok, {outcomes['hang']} hangs, "
                          f"{outcomes['failed']} failed; start p50 {figures['start_p50_s'] or 0:.1f} s",
                "ok": outcomes["ok"] == len(rows)}
