"""The server's Prometheus metrics (`GET /metrics`, text format), in a registry of their own per application.

What a model does (sentences, tokens, batches, queue) carries a `model` label, its language pair (`es-en`; `*-*` for
a single model whose languages are unknown): `Metrics.of(label)` is one model's view. API keys are never labels."""

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
        self.sentences = Counter("translation_sentences", "Sentences (lines) translated", ["model"],
                                 registry=registry)
        self.tokens = Counter("translation_source_tokens", "Source tokens decoded (pieces sent to the engine)",
                              ["model"], registry=registry)
        self.batch_size = Histogram("translation_batch_size", "Pieces per engine batch", ["model"],
                                    buckets=SIZE_BUCKETS, registry=registry)
        self.batch_tokens = Histogram("translation_batch_padded_tokens", "Rows x longest row of each engine batch",
                                      ["model"], buckets=tuple(16 * b for b in SIZE_BUCKETS), registry=registry)
        self.batch_seconds = Histogram("translation_batch_seconds", "Time of one engine batch", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_wait = Histogram("translation_queue_wait_seconds", "Time a piece waited before its batch began",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.latency = Histogram("translation_request_seconds", "Time from a request's arrival to its answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.queued = Gauge("translation_queue_pieces", "Pieces waiting for a batch", ["model"], registry=registry)

    def of(self, model: str) -> ModelMetrics:
        return ModelMetrics(self, model)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """One model's metrics (its `model` label)."""

    def __init__(self, metrics: Metrics, model: str):
        self.sentences, self.tokens = metrics.sentences.labels(model), metrics.tokens.labels(model)
        self.batch_size, self.batch_tokens = metrics.batch_size.labels(model), metrics.batch_tokens.labels(model)
        self.batch_seconds, self.queue_wait = metrics.batch_seconds.labels(model), metrics.queue_wait.labels(model)
        self.queued = metrics.queued.labels(model)

    def observe_batch(self, rows: int, padded_tokens: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.batch_tokens.observe(padded_tokens)
        self.batch_seconds.observe(seconds)
