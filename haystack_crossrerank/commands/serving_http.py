"""The production side of `crossrerank serve`, added to hayhooks' app: `GET /health`, `GET /metrics`, a deadline
and a cancel switch for each `POST /<pipeline>/run`, the scheduler stopped when the server stops, and the hayhooks
pipeline folder (:func:`write_wrapper`) and the uvicorn run with a graceful stop (:func:`run_until_stopped`).

The pipeline's route stays hayhooks' own; a middleware around it opens the request's scheduler scope when the
request arrives (its deadline counts from then), cancels it when the client disconnects (its queued pairs leave
the queue), and counts the answer's status and latency.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from haystack_crossrerank.utils.extras import require

if TYPE_CHECKING:
    from haystack_crossrerank.commands.serving import ServeSettings

logger = logging.getLogger(__name__)

# The status of a request whose client went away before its answer (nginx's convention; nobody receives it).
CLIENT_CLOSED_REQUEST = 499

_WRAPPER_SOURCE = '''"""Written by `crossrerank serve` for hayhooks; see haystack_crossrerank.commands.serving."""

from pathlib import Path

from hayhooks import BasePipelineWrapper
from pydantic import StrictBool

from haystack_crossrerank.commands.serving import Deployment, ServedPipeline, ServeSettings


class PipelineWrapper(BasePipelineWrapper):
    def setup(self) -> None:
        settings = ServeSettings.from_json((Path(__file__).parent / "settings.json").read_text(encoding="utf-8"))
        # The index and the model load in a background thread: the server answers (503) while they do.
        self.deployment = Deployment(settings, on_ready=self._ready)

    def _ready(self, served: ServedPipeline) -> None:
        self.pipeline = served.pipeline

    def run_api(self, query: str, first_stage: StrictBool = False, judgments: StrictBool = False) -> list[dict] | dict:
        """
        Rerank the corpus's candidates for `query`: the documents, best first.

        :param query: The query.
        :param first_stage: Also return the first stage's ranking and the time each stage took; the result is then
            an object: `{"documents": [...], "first_stage": [...], "timings_ms": {...}}`.
        :param judgments: Also return the query's judgments and nDCG@10 of both rankings (`"judgments"` in the
            result object; `null` for a query that is not judged); only on a server started with `--qrels`.
        """
        return self.deployment.run_checked(query, first_stage=first_stage, judgments=judgments)
'''

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class Cancellable(Protocol):
    """A request's scheduler scope, as the middleware uses it."""

    def cancel(self) -> None: ...


class ServedDeployment(Protocol):
    """What the routes and the middleware need of a served pipeline (a `serving.Deployment`)."""

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def render_metrics(self) -> tuple[bytes, str]: ...

    def serving_request(self) -> AbstractContextManager[Cancellable | None]: ...

    def observe_request(self, status: int, seconds: float) -> None: ...

    def close(self, *, drain: bool = True) -> None: ...


def add_production_routes(app: Any, pipeline: str, find: Callable[[], ServedDeployment | None]) -> None:
    """
    Add `GET /health`, `GET /metrics`, the run route's middleware and the scheduler's stop to hayhooks' app.

    :param app: hayhooks' FastAPI app, not yet started.
    :param pipeline: The served pipeline's name (its route is `POST /<pipeline>/run`).
    :param find: Returns the pipeline's deployment, or `None` while the app has not deployed it.
    """
    from fastapi.responses import JSONResponse, Response

    async def health() -> Response:
        """200 once the index is loaded and the model warmed up; 503 before, if loading failed, or while stopping."""
        found = find()
        if found is None:
            status, body = 503, {"status": "failed", "pipeline": pipeline, "error": "not deployed: see the log"}
        else:
            status, body = found.health()
        return JSONResponse(body, status_code=status, headers={"Retry-After": "1"} if status == 503 else None)

    async def metrics() -> Response:
        """The serving metrics in Prometheus' text format."""
        found = find()
        if found is None:
            return Response("the pipeline is not deployed: see the log\n", status_code=503, media_type="text/plain")
        body, content_type = found.render_metrics()
        return Response(body, media_type=content_type)

    app.add_api_route("/health", health, methods=["GET"], tags=["status"], summary="Readiness of the pipeline")
    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["status"], summary="Prometheus metrics")
    app.add_middleware(_RunRequestMiddleware, path=f"/{pipeline}/run", find=find)

    hayhooks_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with hayhooks_lifespan(app) as state:
            try:
                yield state
            finally:  # uvicorn has stopped accepting and waited for the requests in flight
                found = find()
                if found is not None:
                    await asyncio.to_thread(found.close, drain=True)

    app.router.lifespan_context = lifespan


class _RunRequestMiddleware:
    """
    ASGI middleware around `POST /<pipeline>/run`: the request's scheduler scope (its deadline from arrival), a
    watch for the client's disconnect that cancels the scope, and the request's status and latency in the metrics.

    :param app: The app it wraps.
    :param path: The run route's path, e.g. `/bm25_rerank/run`.
    :param find: Returns the deployment (`None` until the app has deployed it).
    """

    def __init__(self, app: ASGIApp, *, path: str, find: Callable[[], ServedDeployment | None]) -> None:
        self.app = app
        self.path = path
        self.find = find

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        found = self.find() if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None or _route_path(scope) != self.path:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before it answers
        answered = False

        async def send_observed(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        with found.serving_request() as request_scope:

            def disconnected() -> None:
                if request_scope is not None and not answered:
                    request_scope.cancel()

            watch = _DisconnectWatch(receive, disconnected)
            try:
                await self.app(scope, watch.receive, send_observed)
            finally:
                watch.stop()
                if watch.disconnected and not answered:
                    status = CLIENT_CLOSED_REQUEST
                found.observe_request(status, time.perf_counter() - started)


class _DisconnectWatch:
    """
    Passes the request's messages to the app and, once the body is read, listens for the client's disconnect
    (uvicorn sends `http.disconnect` when the connection closes), calling `on_disconnect` when it comes.
    """

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        self._receive = receive
        self._on_disconnect = on_disconnect
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.disconnected = False

    async def receive(self) -> Message:
        if self._task is not None:  # the body is read: what can still come is the disconnect
            await self._event.wait()
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._disconnect()
        elif not message.get("more_body", False):
            self._task = asyncio.create_task(self._watch())
        return message

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._disconnect()

    def _disconnect(self) -> None:
        self.disconnected = True
        self._event.set()
        self._on_disconnect()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def scheduler_http_error(error: BaseException) -> Any:
    """
    The HTTP error for a scheduler error, found in `error` or its causes (Haystack wraps a component's error in a
    `PipelineRuntimeError`).

    :returns: A `fastapi.HTTPException`: 503 with `Retry-After` for a full queue or a closed scheduler, 504 for
        a deadline, 499 for a cancelled request; `None` if no scheduler error is in the chain.
    """
    from fastapi import HTTPException

    from haystack_crossrerank.ranking.scheduler import (
        DeadlineExceeded,
        RequestCancelled,
        SchedulerBusy,
        SchedulerClosed,
    )

    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, SchedulerBusy):
            retry = str(max(1, math.ceil(cause.retry_after_s)))
            return HTTPException(status_code=503, detail=str(cause), headers={"Retry-After": retry})
        if isinstance(cause, SchedulerClosed):
            return HTTPException(status_code=503, detail=str(cause), headers={"Retry-After": "1"})
        if isinstance(cause, DeadlineExceeded):
            return HTTPException(status_code=504, detail=str(cause))
        if isinstance(cause, RequestCancelled):
            return HTTPException(status_code=CLIENT_CLOSED_REQUEST, detail=str(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _route_path(scope: MutableMapping[str, Any]) -> str:
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def write_wrapper(settings: ServeSettings, pipelines_dir: Path) -> Path:
    """
    Write the hayhooks pipeline folder for a deployment: `pipeline_wrapper.py` and `settings.json`.

    :param settings: What to serve (a :class:`~haystack_crossrerank.commands.serving.ServeSettings`).
    :param pipelines_dir: hayhooks' pipelines folder.
    :returns: The pipeline's folder (`<pipelines_dir>/<pipeline>`).
    """
    folder = pipelines_dir / settings.pipeline
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline_wrapper.py").write_text(_WRAPPER_SOURCE, encoding="utf-8")
    (folder / "settings.json").write_text(settings.to_json(), encoding="utf-8")
    return folder


def run_until_stopped(app: Any, *, host: str, port: int, grace_s: float) -> None:
    """
    Run an app with uvicorn until SIGTERM or Ctrl-C, then return once the requests in flight are answered.

    :param app: The ASGI app.
    :param host: The interface to listen on.
    :param port: The port.
    :param grace_s: The longest uvicorn waits for the requests in flight after the signal, in seconds.
    :raises ImportError: Naming the `serve` extra if uvicorn is not installed.
    """
    uvicorn = require("uvicorn", "serve")
    # uvicorn raises SIGTERM again after its graceful shutdown, for the handler that was there before it; with
    # Python's default one the process would die of the signal. This one lets the run return, so the exit is 0.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stopped) if main_thread else None
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=math.ceil(grace_s))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _stopped(signum: int, frame: Any) -> None:
    logger.info("Stopped by signal %d after a graceful shutdown", signum)
