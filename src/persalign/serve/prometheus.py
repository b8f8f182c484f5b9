"""Prometheus metrics of one server (its own registry, so tests can run several in a process).

    metrics = ServeMetrics()
    metrics.requests.labels(endpoint="/v1/completions", status="200").inc()
    text = metrics.render()                       # what GET /metrics returns

Requests (by endpoint and status), generated tokens, batch size per decoding step, queue wait
(submitted to admitted) and request latency (submitted to finished) histograms, live and
waiting rows.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """The server's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "persalign_requests",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.tokens = Counter("persalign_generated_tokens", "Tokens generated.", registry=r)
        self.batch_size = Histogram(
            "persalign_batch_size", "Rows per decoding step.", buckets=ROWS, registry=r
        )
        self.queue_wait = Histogram(
            "persalign_queue_wait_seconds", "Submitted to admitted.", buckets=SECONDS, registry=r
        )
        self.latency = Histogram(
            "persalign_request_latency_seconds",
            "Submitted to finished.",
            buckets=SECONDS,
            registry=r,
        )
        self.live = Gauge("persalign_live_rows", "Rows being decoded.", registry=r)
        self.waiting = Gauge("persalign_waiting_rows", "Rows waiting for room.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
