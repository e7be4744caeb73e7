"""Serving a shipped query pipeline over HTTP with hayhooks (the `serve` extra).

`crossrerank serve --corpus PATH` indexes the corpus into the store the YAML pipelines share (`--index DIR`
loads an index saved by `crossrerank index` instead), writes a hayhooks pipeline folder whose `PipelineWrapper`
holds a :class:`Deployment`, and runs hayhooks' FastAPI app with uvicorn. A request is hayhooks' convention for a
deployed pipeline: `POST /<pipeline>/run` with `{"query": "..."}`; the answer is
`{"result": [{"id", "content", "score", "meta"}, ...]}`, best first (`"first_stage": true` adds the first stage's
ranking, see :meth:`Deployment.run_checked`; the page at `GET /` shows both: see `commands.search_page`).

Requests run the first stage concurrently and meet in a
:class:`~haystack_crossrerank.ranking.scheduler.BatchingScorer`, which scores the pairs of requests that arrive
together in shared batches, each request getting exactly its own logits. The scheduler's queue is bounded
(beyond it: 503 with `Retry-After`) and each request has a deadline (past it: 504). The HTTP side (a client that
disconnects, `/health`, `/metrics`, a graceful stop) is in :mod:`haystack_crossrerank.commands.serving_http`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haystack_crossrerank.commands.search_page import (
    ComponentClock,
    Judgments,
    add_search_page,
    check_options,
    compared_answer,
    judgment_files,
    stage_timings,
)
from haystack_crossrerank.commands.serving_http import (
    CLIENT_CLOSED_REQUEST,
    add_production_routes,
    run_until_stopped,
    scheduler_http_error,
    write_wrapper,
)
from haystack_crossrerank.utils.checks import check_int, check_number
from haystack_crossrerank.utils.extras import require

if TYPE_CHECKING:
    from haystack_crossrerank.commands.serving_metrics import ServingMetrics
    from haystack_crossrerank.ranking.scheduler import BatchingScorer, RequestScope, RoundRecord

logger = logging.getLogger(__name__)

# Longest query accepted, in characters: far beyond any real query, far below what would tie up the model.
MAX_QUERY_CHARS = 2048
SERVED_PIPELINES = ("bm25_rerank", "faiss_rerank", "hybrid_rerank")
# How long uvicorn waits for requests in flight after SIGTERM, beyond the requests' own deadline, in seconds.
SHUTDOWN_GRACE_S = 5.0

# The scheduler scope of the HTTP request being served in this context (set by the HTTP middleware; copied into
# the thread that runs the pipeline), so that a client that disconnects cancels its own pairs.
_REQUEST_SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "crossrerank_request_scope", default=None
)


@dataclass(frozen=True)
class ServeSettings:
    """
    What `crossrerank serve` serves, and how it treats load.

    :param corpus: A BEIR folder (its `corpus.jsonl[.gz]`) or a JSON lines file of documents, indexed at start.
    :param pipeline: One of :data:`SERVED_PIPELINES`.
    :param model: The cross-encoder (`None`: the offline default model, built if needed).
    :param ranker: Other ranker settings for this deployment (e.g. `{"backend": "openvino"}`).
    :param depth: Candidates the first stage retrieves (`None`: the pipeline's own).
    :param index: Instead of `corpus`, a folder written by `crossrerank index`; the dense pipelines embed queries
        with its embedder.
    :param max_queue: The most requests waiting for the scorer; beyond it a request gets 503 with `Retry-After`.
    :param timeout_s: A request's deadline in seconds, from its arrival; past it the request gets 504 and its
        pairs leave the queue.
    :param max_wait_ms: The longest the scorer waits for other requests' pairs before scoring, in milliseconds.
    :param max_batch_requests: The most requests whose pairs share a scorer call; `None`: no limit; 1: one
        request at a time.
    :param max_batch_tokens: The most padded tokens per forward pass (the ranker's `max_batch_tokens`); `None`:
        the ranker's setting.
    :param qrels: A BEIR qrels TSV: the search page marks the judged documents and shows nDCG@10 of both rankings
        for a query whose text is a judged query's.
    :param queries: The judged queries' texts: a BEIR `queries.jsonl` or its folder (`None`: the `corpus` folder's).
    :raises ValueError: Unless exactly one of `corpus` and `index` is given, for `queries` without `qrels`, or for
        a count that is not > 0 or a time that is negative (`timeout_s` must be > 0).
    :raises TypeError: For a limit of the wrong type.
    """

    corpus: str | None = None
    pipeline: str = "bm25_rerank"
    model: str | None = None
    ranker: dict[str, Any] | None = None
    depth: int | None = None
    index: str | None = None
    max_queue: int = 64
    timeout_s: float = 30.0
    max_wait_ms: float = 5.0
    max_batch_requests: int | None = None
    max_batch_tokens: int | None = None
    qrels: str | None = None
    queries: str | None = None

    def __post_init__(self) -> None:
        if (self.corpus is None) == (self.index is None):
            raise ValueError(f"give one of `corpus` and `index`, but got corpus={self.corpus!r}, index={self.index!r}")
        if self.queries is not None and self.qrels is None:
            raise ValueError(f"`queries` go with `qrels`, but got queries={self.queries!r} and no qrels")
        check_int("max_queue", self.max_queue, minimum=1)
        check_int("max_batch_requests", self.max_batch_requests, minimum=1, optional=True)
        check_int("max_batch_tokens", self.max_batch_tokens, minimum=1, optional=True)
        check_number("timeout_s", self.timeout_s)
        check_number("max_wait_ms", self.max_wait_ms)
        if not 0 < self.timeout_s < math.inf:
            raise ValueError(f"`timeout_s` must be a finite number > 0, but got {self.timeout_s}")
        if not 0 <= self.max_wait_ms < math.inf:
            raise ValueError(f"`max_wait_ms` must be a finite number >= 0, but got {self.max_wait_ms}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


class ServedPipeline:
    """
    A shipped query pipeline over an indexed corpus, ready to answer queries (in process; the server holds one).

    The ranker scores through a :class:`~haystack_crossrerank.ranking.scheduler.BatchingScorer`, so threads that
    call :meth:`run` together share batches; each gets the ranking it would get alone. Call :meth:`close` (or use
    `with`) when done, to stop the scheduler's thread.

    :param settings: What to serve.
    :param on_round: Called after each scorer call with its
        :class:`~haystack_crossrerank.ranking.scheduler.RoundRecord` (for metrics).
    :raises ValueError: For a pipeline that is not one of :data:`SERVED_PIPELINES`, or an index that does not
        match its manifest or the pipeline's settings.
    :raises FileNotFoundError: If the corpus or the index (or one of its files) does not exist.
    """

    def __init__(self, settings: ServeSettings, *, on_round: Callable[[RoundRecord], None] | None = None) -> None:
        from haystack_crossrerank.data.beir import read_corpus
        from haystack_crossrerank.ranker import CrossEncoderRanker
        from haystack_crossrerank.ranking.scheduler import BatchingScorer
        from haystack_crossrerank.retrievers.index import read_manifest
        from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path
        from haystack_crossrerank.retrievers.stages import first_stage, index_corpus, offline_embedder
        from haystack_crossrerank.utils.adapted import with_recorded_settings

        if settings.pipeline not in SERVED_PIPELINES:
            raise ValueError(f"pipeline must be one of {list(SERVED_PIPELINES)}, but got {settings.pipeline!r}")
        self.settings = settings
        self.stage = first_stage(settings.pipeline.removesuffix("_rerank"))
        if settings.index is not None:
            manifest = read_manifest(settings.index)  # the files are checked as the pipeline loads them
            embedder, count = (manifest["embedder"] or {}).get("model"), manifest["document_count"]
        else:
            corpus = read_corpus(str(settings.corpus))
            index_corpus(corpus, self.stage.indexing)
            embedder, count = None, len(corpus)
        self.document_count: int = count
        model = settings.model or _default_model()
        overrides = self.stage.overrides(settings.depth) if settings.depth is not None else {}
        if self.stage.dense:  # queries are embedded as the documents were
            overrides["text_embedder"] = {"model": embedder or offline_embedder()}
        # An adapted model's folder records the ranker settings it runs with; explicit settings win.
        overrides["ranker"] = {"model": model, **with_recorded_settings(model, settings.pipeline, settings.ranker)}
        if settings.max_batch_tokens is not None:
            overrides["ranker"]["max_batch_tokens"] = settings.max_batch_tokens
        self.pipeline = load_pipeline(pipeline_path(settings.pipeline), overrides=overrides, index=settings.index)
        self.pipeline.warm_up()
        ranker = self.pipeline.get_component("ranker")
        if not isinstance(ranker, CrossEncoderRanker) or ranker.scorer is None:
            raise TypeError(
                f"the pipeline's `ranker` must be a warmed-up CrossEncoderRanker, but got {type(ranker).__name__}"
            )
        self.batching: BatchingScorer = BatchingScorer(
            ranker.scorer,
            max_wait_ms=settings.max_wait_ms,
            max_batch_requests=settings.max_batch_requests,
            max_queue=settings.max_queue,
            timeout_s=settings.timeout_s,
            on_round=on_round,
        )
        ranker.use_scorer(self.batching)
        self.clock = ComponentClock(self.pipeline)
        logger.info("Serving %s over %d documents with %s", settings.pipeline, count, model)

    def run(self, query: str, top_k: int | None = None, *, scope: RequestScope | None = None) -> list[dict[str, Any]]:
        """
        The reranked documents for a query, as JSON-ready dictionaries.

        :param query: The query.
        :param top_k: The most documents (default: the pipeline's ranker setting).
        :param scope: The request's scheduler scope, made by `self.batching.scope()` (its deadline; another thread
            may cancel it); `None`: a new one with the settings' `timeout_s`.
        :returns: `{"id", "content", "score", "meta"}` per document, best first.
        :raises haystack.core.errors.PipelineRuntimeError: From a component; a
            :class:`~haystack_crossrerank.ranking.scheduler.SchedulerError` (queue full, deadline passed, request
            cancelled, scheduler closed) is its `__cause__`.
        """
        return list(self._run(query, top_k, scope, compare=False)["documents"])

    def run_compared(
        self, query: str, top_k: int | None = None, *, scope: RequestScope | None = None
    ) -> dict[str, Any]:
        """
        :meth:`run`, with the first stage's ranking beside the reranked one and the time each stage took.

        :param query: The query.
        :param top_k: The most reranked documents (default: the pipeline's ranker setting).
        :param scope: As in :meth:`run`.
        :returns: `{"documents", "first_stage", "timings_ms"}`: the reranked documents as :meth:`run` gives them;
            the first stage's candidates (all of them, best first) likewise; and the milliseconds spent in the
            first stage's components (`"first_stage"`), in the ranker (`"ranker"`, waiting for a shared batch
            included) and in the whole pipeline run (`"total"`).
        :raises haystack.core.errors.PipelineRuntimeError: As :meth:`run`.
        """
        return self._run(query, top_k, scope, compare=True)

    def _run(self, query: str, top_k: int | None, scope: RequestScope | None, *, compare: bool) -> dict[str, Any]:
        ranker_inputs: dict[str, Any] = {"query": query}
        if top_k is not None:
            ranker_inputs["top_k"] = top_k
        inputs = {**self.stage.inputs(query), "ranker": ranker_inputs}
        outputs = {self.stage.output} if compare else None
        with scope if scope is not None else self.batching.scope(), self.clock.measure() as spent:
            started = time.perf_counter()
            out = self.pipeline.run(inputs, include_outputs_from=outputs)
            total = time.perf_counter() - started
        answer: dict[str, Any] = {"documents": _documents(out["ranker"]["documents"])}
        if compare:
            answer["first_stage"] = _documents(out[self.stage.output]["documents"])
            answer["timings_ms"] = stage_timings(spent, total)
        return answer

    def close(self, *, drain: bool = True) -> None:
        """Stop the scheduler: new requests are refused; with `drain`, queued ones are scored first."""
        self.batching.close(drain=drain)

    def __enter__(self) -> ServedPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Deployment:
    """
    A :class:`ServedPipeline` for a server: it loads in a background thread, so that the server can answer
    (`/health`: 503) while the index loads and the model warms up, and it turns queries into HTTP answers.

    `run_checked` is what the hayhooks wrapper calls for `POST /<pipeline>/run`; :attr:`metrics` is what
    `GET /metrics` shows; :attr:`judgments` (read from `settings.qrels` as the pipeline loads) is what the search
    page scores rankings with.

    Usage example:

    ```python
    from haystack_crossrerank.commands.serving import Deployment, ServeSettings

    deployment = Deployment(ServeSettings(corpus="corpus.jsonl", model="path/to/cross-encoder"))
    print(deployment.health()[0])  # the index and the model load in the background
    # 503
    deployment.wait_loaded()
    print(deployment.health())
    # (200, {'status': 'ready', 'pipeline': 'bm25_rerank', 'documents': 2})
    print(deployment.run_checked("capital of France")[0]["id"])
    # d1
    deployment.close()
    ```

    :param settings: What to serve.
    :param on_ready: Called in the loading thread with the :class:`ServedPipeline` once it is ready.
    :raises ImportError: Naming the `serve` extra if prometheus-client is not installed.
    """

    def __init__(self, settings: ServeSettings, *, on_ready: Callable[[ServedPipeline], None] | None = None) -> None:
        from haystack_crossrerank.commands.serving_metrics import ServingMetrics

        self.settings = settings
        self.metrics: ServingMetrics = ServingMetrics(settings.pipeline)
        self.served: ServedPipeline | None = None
        self.error: BaseException | None = None
        self.judged: bool = settings.qrels is not None
        self.judgments: Judgments | None = None
        self._on_ready = on_ready
        self._lock = threading.Lock()
        self._closed = False
        self._loaded = threading.Event()  # set when loading ends, ready or failed
        self._loader = threading.Thread(target=self._load, name="crossrerank-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            files = judgment_files(self.settings.qrels, self.settings.queries, self.settings.corpus)
            self.judgments = Judgments.load(*files) if files is not None else None
            served = ServedPipeline(self.settings, on_round=self.metrics.observe_round)
        except Exception as error:
            logger.exception("Loading %s failed; the server answers 503", self.settings.pipeline)
            self.error = error
            self._loaded.set()
            return
        with self._lock:
            closed = self._closed
            if not closed:
                self.served = served
        if closed:  # the server stopped while this loaded
            served.close(drain=False)
        else:
            logger.info("Ready in %.1fs", time.perf_counter() - started)
            if self._on_ready is not None:
                self._on_ready(served)
        self._loaded.set()

    @property
    def state(self) -> str:
        """`"loading"`, `"ready"`, `"failed"` or `"stopping"`."""
        if self._closed:
            return "stopping"
        if self.served is not None:
            return "ready"
        return "failed" if self.error is not None else "loading"

    def wait_loaded(self, timeout_s: float | None = None) -> bool:
        """Wait until loading ends (ready or failed); return whether it has."""
        return self._loaded.wait(timeout_s)

    def health(self) -> tuple[int, dict[str, Any]]:
        """The answer to `GET /health`: 200 once ready, 503 before (or if loading failed, or while stopping)."""
        state = self.state
        body: dict[str, Any] = {"status": state, "pipeline": self.settings.pipeline}
        if state == "ready":
            assert self.served is not None
            body["documents"] = self.served.document_count
            return 200, body
        if state == "failed":
            body["error"] = f"{type(self.error).__name__}: {self.error}"
        return 503, body

    @contextmanager
    def serving_request(self) -> Iterator[RequestScope | None]:
        """
        Around one HTTP request (in the event loop, before the pipeline runs in a thread): a scheduler scope
        whose deadline starts now, seen by :meth:`run_checked` in this context and the threads that copy it.

        :returns: The scope (cancel it when the client disconnects), or `None` before the pipeline is ready.
        """
        served = self.served
        scope = served.batching.scope() if served is not None else None
        token = _REQUEST_SCOPE.set(scope)
        try:
            yield scope
        finally:
            _REQUEST_SCOPE.reset(token)

    def run_checked(
        self, query: Any, *, first_stage: Any = False, judgments: Any = False
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """
        :meth:`ServedPipeline.run` for an HTTP request: every failure is an HTTP error that says what happened.

        :param query: The query.
        :param first_stage: Also give the first stage's ranking and the time each stage took.
        :param judgments: Also give the query's judgments and nDCG@10 of both rankings (needs `settings.qrels`).
        :returns: The reranked documents, best first; with `first_stage` or `judgments`, the object of
            :func:`~haystack_crossrerank.commands.search_page.compared_answer` (the documents in `"documents"`).
        :raises fastapi.HTTPException: 422 for a blank or non-string query, an option that is not a boolean, or
            `judgments` on a server without qrels; 413 for a query longer than :data:`MAX_QUERY_CHARS`; 503 (with
            `Retry-After`) while loading, if loading failed, when the scheduler's queue is full or the server is
            stopping; 504 past the deadline; 499 if the client went away.
        """
        from fastapi import HTTPException

        if not isinstance(query, str) or not query.strip():
            raise HTTPException(status_code=422, detail=f"`query` must be a non-empty string, but got {query!r}")
        check_options(first_stage=first_stage, judgments=judgments, judged=self.judged)
        if len(query) > MAX_QUERY_CHARS:
            raise HTTPException(
                status_code=413,
                detail=f"`query` must be at most {MAX_QUERY_CHARS} characters, but got {len(query)}",
            )
        served, state = self.served, self.state
        if served is None or state != "ready":
            detail = {"loading": "the pipeline is loading", "stopping": "the server is stopping"}.get(state)
            detail = detail or f"the pipeline failed to load: {self.error}"
            raise HTTPException(status_code=503, detail=detail, headers={"Retry-After": "1"})
        scope = _REQUEST_SCOPE.get()
        if scope is not None and scope.cancelled:  # the client left while the request waited for a thread
            raise HTTPException(status_code=CLIENT_CLOSED_REQUEST, detail="the request was cancelled")
        if scope is not None and scope.deadline is not None and scope.deadline <= time.monotonic():
            raise HTTPException(status_code=504, detail="the request's deadline passed before the pipeline ran")
        try:
            if not (first_stage or judgments):
                return served.run(query, scope=scope)
            compared = served.run_compared(query, scope=scope)
            return compared_answer(compared, self.judgments if judgments else None, query, first_stage=first_stage)
        except Exception as error:
            http_error = scheduler_http_error(error)
            if http_error is None:
                raise
            raise http_error from error

    def observe_request(self, status: int, seconds: float) -> None:
        """Count one answered HTTP request in the metrics."""
        self.metrics.observe_request(status, seconds)

    def render_metrics(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and their content type."""
        served = self.served
        text = self.metrics.render(served.batching.stats() if served is not None else None, ready=self.state == "ready")
        return text, self.metrics.content_type

    def close(self, *, drain: bool = True) -> None:
        """Refuse new requests and stop the scheduler (with `drain`, after scoring what is queued)."""
        with self._lock:
            self._closed, served = True, self.served
        if served is not None:
            served.close(drain=drain)


def _documents(documents: list[Any]) -> list[dict[str, Any]]:
    return [{"id": doc.id, "content": doc.content, "score": doc.score, "meta": dict(doc.meta)} for doc in documents]


def _default_model() -> str:
    from haystack_crossrerank.commands.offline import build_default_model

    return str(build_default_model())


def create_app(settings: ServeSettings, pipelines_dir: Path | None = None) -> Any:
    """
    The hayhooks FastAPI app with the pipeline deployed, `GET /health` and `GET /metrics`.

    The index loads and the model warms up in a background thread once the app starts: until then `/health` and
    the pipeline's route answer 503, and hayhooks' own routes work.

    :param settings: What to serve.
    :param pipelines_dir: Where the wrapper folder is written (default: a new temporary folder).
    :returns: The app.
    :raises ImportError: Naming the `serve` extra if hayhooks or prometheus-client is not installed.
    """
    require("hayhooks", "serve")
    require("prometheus_client", "serve")
    from hayhooks.settings import settings as hayhooks_settings

    folder = pipelines_dir or Path(tempfile.mkdtemp(prefix="crossrerank-serve-"))
    write_wrapper(settings, folder)
    hayhooks_settings.pipelines_dir = str(folder)
    from hayhooks.server.app import create_app as hayhooks_app

    app = hayhooks_app()

    def find() -> Deployment | None:  # the wrapper's, once hayhooks has deployed it at start-up
        found = getattr(app.state.pipeline_registry.get(settings.pipeline), "deployment", None)
        return found if isinstance(found, Deployment) else None

    add_production_routes(app, settings.pipeline, find)

    def find_all() -> dict[str, Deployment]:  # every served pipeline, for the search page
        registry = app.state.pipeline_registry
        found = {name: getattr(registry.get(name), "deployment", None) for name in registry.get_names()}
        return {name: deployment for name, deployment in found.items() if isinstance(deployment, Deployment)}

    add_search_page(app, find_all)
    logger.info("App for %s created (pipelines folder %s)", settings.pipeline, folder)
    return app


def serve(settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 1416) -> None:
    """
    Serve until SIGTERM or Ctrl-C: `POST http://HOST:PORT/<pipeline>/run` with `{"query": "..."}`.

    On SIGTERM the server stops accepting connections, finishes the requests in flight (waiting at most the
    requests' deadline and :data:`SHUTDOWN_GRACE_S`), stops the scheduler, and returns.

    :param settings: What to serve.
    :param host: The interface to listen on.
    :param port: The port.
    :raises FileNotFoundError: If the corpus, the index, the qrels or the queries do not exist.
    :raises ValueError: For qrels without queries to match them to.
    """
    require("uvicorn", "serve")
    source = settings.index if settings.index is not None else settings.corpus
    if not Path(str(source)).exists():
        raise FileNotFoundError(f"the {'index' if settings.index else 'corpus'} {source} does not exist")
    judgment_files(settings.qrels, settings.queries, settings.corpus)
    run_until_stopped(create_app(settings), host=host, port=port, grace_s=settings.timeout_s + SHUTDOWN_GRACE_S)
