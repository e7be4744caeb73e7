"""What `GET /metrics` shows, in Prometheus' text format: one registry per served pipeline (see
:class:`ServingMetrics`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from haystack_crossrerank.utils.extras import require

if TYPE_CHECKING:
    from haystack_crossrerank.ranking.scheduler import RoundRecord, SchedulerStats

# Request latency buckets, in seconds: from a cached BM25 + small-model answer to a request at its deadline.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Pairs per scorer call: one query's candidates (10 to 100) up to a round of several requests.
BATCH_PAIR_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
# Requests whose pairs shared a scorer call.
BATCH_REQUEST_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class ServingMetrics:
    """
    The metrics of one served pipeline, in a registry of their own (so two apps in one process do not mix them).

    | metric | type | labels |
    |---|---|---|
    | `crossrerank_requests_total` | counter: `POST /<pipeline>/run` requests answered | `pipeline`, `status` |
    | `crossrerank_request_seconds` | histogram: their latency, arrival to answer | `pipeline` |
    | `crossrerank_queue_depth` | gauge: requests waiting for the scorer | `pipeline` |
    | `crossrerank_requests_in_progress` | gauge: requests inside the pipeline (first stage included) | `pipeline` |
    | `crossrerank_batch_pairs` | histogram: pairs per scorer call | `pipeline` |
    | `crossrerank_batch_requests` | histogram: requests per scorer call | `pipeline` |
    | `crossrerank_pairs_scored_total` | counter: pairs scored | `pipeline` |
    | `crossrerank_ready` | gauge: 1 once the pipeline is ready | `pipeline` |

    Usage example:

    ```python
    from haystack_crossrerank.commands.serving_metrics import ServingMetrics

    metrics = ServingMetrics("bm25_rerank")
    metrics.observe_request(200, 0.042)
    text = metrics.render().decode()
    print([line for line in text.splitlines() if line.startswith("crossrerank_requests_total")])
    # ['crossrerank_requests_total{pipeline="bm25_rerank",status="200"} 1.0']
    ```

    :param pipeline: The served pipeline's name (the `pipeline` label).
    :raises ImportError: Naming the `serve` extra if prometheus-client is not installed.
    """

    def __init__(self, pipeline: str) -> None:
        prometheus = require("prometheus_client", "serve")
        self.pipeline = pipeline
        self.registry = prometheus.CollectorRegistry()
        labels, registry = ["pipeline"], self.registry
        self._requests = prometheus.Counter(
            "crossrerank_requests",
            "Requests to the pipeline's run route, by HTTP status",
            [*labels, "status"],
            registry=registry,
        )
        self._latency = prometheus.Histogram(
            "crossrerank_request_seconds",
            "Request latency, from arrival to answer, in seconds",
            labels,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self._queue_depth = prometheus.Gauge(
            "crossrerank_queue_depth", "Requests waiting for the scorer", labels, registry=registry
        )
        self._in_progress = prometheus.Gauge(
            "crossrerank_requests_in_progress",
            "Requests inside the pipeline, first stage included",
            labels,
            registry=registry,
        )
        self._batch_pairs = prometheus.Histogram(
            "crossrerank_batch_pairs", "Pairs per scorer call", labels, registry=registry, buckets=BATCH_PAIR_BUCKETS
        )
        self._batch_requests = prometheus.Histogram(
            "crossrerank_batch_requests",
            "Requests whose pairs shared a scorer call",
            labels,
            registry=registry,
            buckets=BATCH_REQUEST_BUCKETS,
        )
        self._pairs_scored = prometheus.Counter("crossrerank_pairs_scored", "Pairs scored", labels, registry=registry)
        self._ready = prometheus.Gauge("crossrerank_ready", "1 once the pipeline is ready", labels, registry=registry)
        # Children made now, so that every series shows (at 0) from the first scrape on.
        children = (self._latency, self._queue_depth, self._in_progress, self._batch_pairs, self._batch_requests)
        for metric in (*children, self._pairs_scored, self._ready):
            metric.labels(pipeline)
        self._generate = prometheus.generate_latest
        self.content_type: str = prometheus.CONTENT_TYPE_LATEST

    def observe_request(self, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self._requests.labels(self.pipeline, str(status)).inc()
        self._latency.labels(self.pipeline).observe(seconds)

    def observe_round(self, record: RoundRecord) -> None:
        """Count one scorer call (the scheduler's `on_round` callback)."""
        if record.ok:
            self._batch_pairs.labels(self.pipeline).observe(record.pairs)
            self._batch_requests.labels(self.pipeline).observe(record.requests)
            self._pairs_scored.labels(self.pipeline).inc(record.pairs)

    def render(self, stats: SchedulerStats | None = None, *, ready: bool = False) -> bytes:
        """
        The metrics in Prometheus' text format.

        :param stats: The scheduler now, for the gauges (`None`: no scheduler yet; the gauges read 0).
        :param ready: Whether the pipeline is ready.
        :returns: The exposition, UTF-8.
        """
        self._queue_depth.labels(self.pipeline).set(stats.queued_requests if stats is not None else 0)
        self._in_progress.labels(self.pipeline).set(stats.open_scopes if stats is not None else 0)
        self._ready.labels(self.pipeline).set(1 if ready else 0)
        return bytes(self._generate(self.registry))
