"""The load generator itself, against a tiny local HTTP server: concurrency bound, rates, open-loop timing."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from loadtests.generator import LoadRun, Outcome, Shot, require_loopback, run_closed, run_open
from loadtests.procs import short_name
from loadtests.scenarios.endurance import memory_growth, recovery_s
from loadtests.scrape import batch_size_distribution
from loadtests.stats import knee, linear_slope, percentile_ms


class TinyServer(ThreadingHTTPServer):
    """`/work?ms=N` sleeps N ms; `serial=1` makes requests wait for each other (one at a time)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.inflight = 0
        self.max_inflight = 0
        self.count_lock = threading.Lock()
        self.serial_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server: TinyServer = self.server  # type: ignore[assignment]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        query = parse_qs(urlsplit(self.path).query)
        delay = float(query.get("ms", ["0"])[0]) / 1000
        with server.count_lock:
            server.inflight += 1
            server.max_inflight = max(server.max_inflight, server.inflight)
        if query.get("serial") == ["1"]:
            with server.serial_lock:
                time.sleep(delay)
        else:
            time.sleep(delay)
        with server.count_lock:
            server.inflight -= 1
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def tiny() -> TinyServer:
    server = TinyServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def shots(**params: str):
    return lambda i: Shot("/work", content=b"x", params=params)


def test_closed_loop_never_exceeds_its_concurrency(tiny: TinyServer) -> None:
    load = run_closed(tiny.url, shots(ms="30"), concurrency=4, duration_s=1.0)
    assert tiny.max_inflight == 4
    assert load.summary()["errors"] == 0
    # 4 users, ~30 ms each: about 130 requests/s; far fewer would mean users waited on each other.
    assert 40 < load.summary()["requests_per_s"] < 140


def test_closed_loop_stops_at_its_request_bound(tiny: TinyServer) -> None:
    started = time.perf_counter()
    load = run_closed(tiny.url, shots(), concurrency=3, duration_s=30, max_requests=7)
    assert len(load.outcomes) == 7
    assert time.perf_counter() - started < 10


def test_open_loop_keeps_its_rate(tiny: TinyServer) -> None:
    load = run_open(tiny.url, shots(ms="5"), rate=40, duration_s=2.5)
    assert len(load.outcomes) == 100
    sent = sorted(o.sent for o in load.outcomes)
    assert (sent[-1] - sent[0]) == pytest.approx(99 / 40, rel=0.1)
    # Answers per second also include the last answer's latency in the elapsed time: a looser bound.
    assert load.summary()["requests_per_s"] == pytest.approx(40, rel=0.3)
    lateness = [o.sent - o.intended for o in load.outcomes]
    assert sorted(lateness)[len(lateness) // 2] < 0.02  # sent on schedule


def test_open_loop_latency_includes_queueing_at_a_stalled_server(tiny: TinyServer) -> None:
    # The server serves one request per 200 ms (5/s); 10/s arrive. Each request waits for those before it,
    # so latency measured from the intended send time must grow by about 100 ms per request.
    load = run_open(tiny.url, shots(ms="200", serial="1"), rate=10, duration_s=2.0, max_connections=64)
    latencies = [o.latency_s for o in sorted(load.outcomes, key=lambda o: o.intended)]
    assert len(latencies) == 20
    assert latencies[0] < 0.4
    assert latencies[-1] > 1.5
    assert linear_slope(range(20), latencies) == pytest.approx(0.1, rel=0.35)
    # A closed loop against the same server shows only the service time: the figure an open loop exists to avoid.
    closed = run_closed(tiny.url, shots(ms="200", serial="1"), concurrency=1, duration_s=1.0)
    assert max(o.latency_s for o in closed.outcomes) < 0.4


def test_a_request_is_given_up_at_its_total_timeout(tiny: TinyServer) -> None:
    load = run_closed(tiny.url, shots(ms="3000"), concurrency=2, duration_s=0.1, timeout_s=0.5)
    assert all(o.timed_out for o in load.outcomes) and len(load.outcomes) == 2
    assert max(o.done - o.sent for o in load.outcomes) < 1.5


def test_connection_errors_are_counted_not_raised() -> None:
    load = run_closed("http://127.0.0.1:9", shots(), concurrency=2, duration_s=0.3, max_requests=4)
    assert [o.status for o in load.outcomes] == [0, 0, 0, 0]
    assert load.summary()["errors"] == 4


def test_only_loopback_is_loaded() -> None:
    for url in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:80"):
        require_loopback(url)
    with pytest.raises(ValueError, match="loopback"):
        require_loopback("http://10.0.0.1:8000")


def test_percentiles_on_known_data() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentile_ms(latencies, 50) == pytest.approx(50.5)
    assert percentile_ms(latencies, 99) == pytest.approx(99.01)
    assert percentile_ms(latencies, 100) == pytest.approx(100)
    assert percentile_ms([], 50) is None


def test_summary_counts_images_of_good_answers_and_all_latencies() -> None:
    outcomes = [Outcome("", 2, 0.0, 0.0, 0.1, 200), Outcome("", 2, 0.0, 0.0, 0.3, 200),
                Outcome("", 1, 0.5, 0.5, 1.0, 503, "overloaded")]
    summary = LoadRun("closed", 2, 0.0, 2.0, outcomes).summary()
    assert summary["images_per_s"] == 2.0 and summary["requests_per_s"] == 1.0
    assert summary["errors"] == 1 and summary["statuses"] == {"200": 2, "503": 1}
    assert summary["p50_ms"] == pytest.approx(300)


def test_knee_is_where_throughput_stops_rising() -> None:
    assert knee([1, 2, 4, 8, 16], [10, 19, 35, 36, 36]) == 4
    assert knee([1, 2], [10, 20]) is None


def test_batch_size_distribution_turns_cumulative_buckets_into_counts() -> None:
    before = {1.0: 10, 2.0: 12, 4.0: 12, float("inf"): 12}
    after = {1.0: 15, 2.0: 20, 4.0: 23, float("inf"): 23}
    assert batch_size_distribution(before, after) == {"1": 5, "2": 3, "4": 3, "+Inf": 0}


def test_process_names_stay_put_while_ray_workers_run_methods() -> None:
    busy = short_name("ray::ServeReplica:resfam:classifier-resnet50-1.handle_request_with_rejection")
    assert busy == short_name("ray::ServeReplica:resfam:classifier-resnet50-1") == "ServeReplica:resfam:classifier-resnet50-1"
    assert short_name("/venv/bin/python -m serve --config c.yaml") == "python serve"
    assert short_name("/usr/lib/gcs_server --port 1") == "gcs_server"


def test_recovery_is_when_throughput_returns_after_the_event() -> None:
    # 10 images/s for 5 s, nothing for 4 s (the fault), then 10/s again until 15 s.
    outcomes = [Outcome("", 1, t / 10, t / 10, t / 10, 200) for t in range(150) if not 50 <= t < 90]
    load = LoadRun("closed", 1, 0.0, 15.0, outcomes)
    assert recovery_s(load, event_t=5.0, baseline=10.0) == pytest.approx(4.0)
    assert memory_growth([0, 60, 120, 180, 240, 300], [100, 500, 110, 120, 130, 140]) == pytest.approx(10.0)


def test_every_scenario_has_a_printable_help() -> None:
    """argparse %-formats help strings: a bare '%' in one breaks `python -m loadtests --help` for all."""
    from loadtests.__main__ import build_parser
    from loadtests.scenarios import SCENARIOS

    parser, parsers = build_parser()
    assert "peers" in parser.format_help()
    for name in SCENARIOS:
        assert parsers[name].format_help().startswith("usage: python -m loadtests " + name)
