"""The Grafana dashboard, built from the PromQL below so the queries are written (and tested) once."""
from typing import Any

RATE = "$__rate_interval"   # Grafana's rate window; tests substitute a fixed one

def latency_quantile(q: float) -> str:
    return (f"histogram_quantile({q}, sum by (le, model, arm) "
            f"(rate(resfam_request_duration_seconds_bucket[{RATE}])))")


# (title, unit, [(legend, PromQL)]). Label names follow DESIGN.md's metric contract.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Request latency p50/p95/p99 by model and arm", "s", [
        (f"{{{{model}}}} {{{{arm}}}} p{int(q * 100)}", latency_quantile(q)) for q in (0.5, 0.95, 0.99)]),
    ("Throughput", "reqps", [
        ("{{model}} {{arm}} requests/s", f"sum by (model, arm) (rate(resfam_requests_total[{RATE}]))"),
        ("{{model}} images/s", f"sum by (model) (rate(resfam_images_total[{RATE}]))"),
    ]),
    ("Batch size", "none", [
        ("{{model}} mean", f"sum by (model) (rate(resfam_batch_size_sum[{RATE}])) "
                           f"/ sum by (model) (rate(resfam_batch_size_count[{RATE}]))"),
        ("{{model}} p95", f"histogram_quantile(0.95, sum by (le, model) (rate(resfam_batch_size_bucket[{RATE}])))"),
    ]),
    ("Queue time p50/p95", "s", [
        (f"{{{{model}}}} p{int(q * 100)}", f"histogram_quantile({q}, sum by (le, model) "
                                          f"(rate(resfam_queue_duration_seconds_bucket[{RATE}])))")
        for q in (0.5, 0.95)]),
    ("Errors (4xx/5xx per second)", "reqps", [
        ("{{model}} {{route}} {{code}}",
         f'sum by (model, route, code) (rate(resfam_requests_total{{code=~"[45].."}}[{RATE}]))'),
    ]),
    ("In-flight requests", "none", [("in flight", "sum(resfam_inflight_requests)")]),
    ("GPU utilisation (Ray node metrics)", "percent", [
        ("{{instance}} GPU {{GpuIndex}}", "avg by (instance, GpuIndex) (ray_node_gpus_utilization)"),
    ]),
]


def _panel(index: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (legend, expr) in enumerate(targets)],
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": "resfam-serve",
        "title": "resfam-serve",
        "tags": ["resfam", "ray-serve"],
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": [_panel(i, title, unit, targets) for i, (title, unit, targets) in enumerate(PANELS)],
    }


def queries() -> list[str]:
    """Every PromQL expression on the dashboard."""
    return [expr for _, _, targets in PANELS for _, expr in targets]
