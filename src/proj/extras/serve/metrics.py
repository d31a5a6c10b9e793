"""GET /metrics: Prometheus metrics named by its conventions (counters end in _total, durations are histograms in
seconds), in a registry of the server's own. Every request and model call is counted in the server's process
(model processes only compute), so no multiprocess collection is needed.

    proj_serve_requests_total{status}          POST /predict answers, by HTTP status
    proj_serve_request_duration_seconds         histogram: a request's time in the server (read, queue, model, answer)
    proj_serve_requests_in_progress             requests being answered now
    proj_serve_model_call_duration_seconds      histogram: one model call (one batch)
    proj_serve_batch_samples                    histogram: samples per model call (how well batching works)
    proj_serve_model_info{run,version,sha256}   1: which model this server answers with
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # each series' creation time (*_created): noise on a page scraped every few seconds

SAMPLE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, float("inf"))
SECOND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))


class Metrics:
    def __init__(self, identity: dict[str, str]):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("proj_serve_requests", "POST /predict answers by status", ["status"], registry=registry)
        self.request_seconds = Histogram(
            "proj_serve_request_duration_seconds", "Time of a request in the server", registry=registry,
            buckets=SECOND_BUCKETS,
        )  # fmt: skip
        self.in_flight = Gauge("proj_serve_requests_in_progress", "Requests being answered", registry=registry)
        self.call_seconds = Histogram(
            "proj_serve_model_call_duration_seconds", "Time of one model call (one batch)", registry=registry,
            buckets=SECOND_BUCKETS,
        )  # fmt: skip
        self.samples = Histogram(
            "proj_serve_batch_samples", "Samples per model call", registry=registry, buckets=SAMPLE_BUCKETS
        )
        info = Gauge("proj_serve_model_info", "The model served", list(identity), registry=registry)
        info.labels(**identity).set(1)

    def request(self, status: int, seconds: float) -> None:
        self.requests.labels(str(status)).inc()
        self.request_seconds.observe(seconds)

    def model_call(self, seconds: float, samples: int) -> None:
        self.call_seconds.observe(seconds)
        self.samples.observe(samples)
