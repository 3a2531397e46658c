"""The server's Prometheus metrics (`GET /metrics`, text format), in a registry of their own per application."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("translation_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "status"], registry=registry)
        self.errors = Counter("translation_errors", "Requests answered with an error, by reason", ["reason"],
                              registry=registry)
        self.sentences = Counter("translation_sentences", "Sentences (lines) translated", registry=registry)
        self.tokens = Counter("translation_source_tokens", "Source tokens decoded (pieces sent to the engine)",
                              registry=registry)
        self.batch_size = Histogram("translation_batch_size", "Pieces per engine batch", buckets=SIZE_BUCKETS,
                                    registry=registry)
        self.batch_tokens = Histogram("translation_batch_padded_tokens", "Rows x longest row of each engine batch",
                                      buckets=tuple(16 * b for b in SIZE_BUCKETS), registry=registry)
        self.batch_seconds = Histogram("translation_batch_seconds", "Time of one engine batch",
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_wait = Histogram("translation_queue_wait_seconds", "Time a piece waited before its batch began",
                                    buckets=LATENCY_BUCKETS, registry=registry)
        self.latency = Histogram("translation_request_seconds", "Time from a request's arrival to its answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.queued = Gauge("translation_queue_pieces", "Pieces waiting for a batch", registry=registry)

    def observe_batch(self, rows: int, padded_tokens: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.batch_tokens.observe(padded_tokens)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
