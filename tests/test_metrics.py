from prometheus_client.parser import text_string_to_metric_families

from serve.metrics import MetricsStore, ServeMetrics, merge_snapshots


def _samples(text: bytes) -> dict:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _replica(latencies, batch_sizes):
    m = ServeMetrics()
    for latency in latencies:
        m.request_duration.labels("m", "1", "", "/classify", "200").observe(latency)
        m.requests.labels("m", "1", "", "/classify", "200").inc()
    for size in batch_sizes:
        m.batch_size.labels("m", "1").observe(size)
    m.inflight.set(2)
    return m


def test_merge_sums_counters_and_histogram_buckets_across_replicas():
    a, b = _replica([0.004, 0.02], [1, 4]), _replica([0.3], [8])
    samples = _samples(merge_snapshots([a.snapshot(), b.snapshot()]))
    labels = (("arm", ""), ("code", "200"), ("model", "m"), ("route", "/classify"), ("version", "1"))
    assert samples[("resfam_requests_total", labels)] == 3
    assert samples[("resfam_request_duration_seconds_count", labels)] == 3
    assert samples[("resfam_request_duration_seconds_bucket", tuple(sorted(labels + (("le", "0.005"),))))] == 1
    assert samples[("resfam_request_duration_seconds_bucket", tuple(sorted(labels + (("le", "+Inf"),))))] == 3
    assert abs(samples[("resfam_request_duration_seconds_sum", labels)] - 0.324) < 1e-9
    assert samples[("resfam_batch_size_bucket", (("le", "4.0"), ("model", "m"), ("version", "1")))] == 2
    assert samples[("resfam_inflight_requests", ())] == 4


def test_store_keeps_latest_snapshot_per_source_and_drops_stale_gauges():
    store = MetricsStore(stale_after_s=0.0)
    m = _replica([0.01], [1])
    store.update("x", m.snapshot())
    m.requests.labels("m", "1", "", "/classify", "200").inc()
    store.update("x", m.snapshot())  # replaces, never double counts
    samples = _samples(store.render())
    assert sum(v for (n, _), v in samples.items() if n == "resfam_requests_total") == 2
    assert ("resfam_inflight_requests", ()) not in samples


def test_every_design_metric_is_exposed():
    names = {f.name for f in text_string_to_metric_families(merge_snapshots([ServeMetrics().snapshot()]).decode())}
    for name in ["resfam_request_duration_seconds", "resfam_queue_duration_seconds", "resfam_preprocess_duration_seconds",
                 "resfam_inference_duration_seconds", "resfam_batch_size", "resfam_requests", "resfam_images",
                 "resfam_prediction_confidence", "resfam_feedback", "resfam_inflight_requests"]:
        assert name in names
