"""Read the server's own view from GET /metrics: the batch-size distribution its replicas saw."""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def batch_size_buckets(url: str, model: str | None = None) -> dict[float, float]:
    """Cumulative `resfam_batch_size` bucket counts (upper bound -> batches), summed over replicas."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "resfam_batch_size":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and (model is None or sample.labels.get("model") == model):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return dict(sorted(buckets.items()))


def batch_size_distribution(before: dict[float, float], after: dict[float, float]) -> dict[str, int]:
    """Batches per size bucket between two scrapes, as `<=bound` -> count (cumulative turned into per-bucket)."""
    delta = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in after}
    out, previous = {}, 0.0
    for bound, cumulative in delta.items():
        label = "+Inf" if bound == float("inf") else f"{bound:g}"
        out[label] = int(round(cumulative - previous))
        previous = cumulative
    return out


def histogram_totals(url: str, name: str) -> tuple[float, float]:
    """(sum, count) of histogram `name` over all its label sets, e.g. the mean batch size between two scrapes."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    totals = {"_sum": 0.0, "_count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for sample in family.samples:
                suffix = sample.name[len(name):]
                if suffix in totals:
                    totals[suffix] += sample.value
    return totals["_sum"], totals["_count"]
