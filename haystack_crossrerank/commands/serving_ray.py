"""Replicas of `crossrerank serve` on Ray Serve (the `ray` extra): `crossrerank serve --ray [ADDRESS] --replicas N`.

Each replica is a Ray actor that builds the single-process server's app (:func:`~.serving.create_app`: hayhooks'
routes, `POST /<pipeline>/run`, `/health`, `/metrics`) in its own process and runs its lifespan, so it loads the
index and warms up the model as that server does. A replica counts as started only once its pipeline is ready
(its start waits for the load), so Serve routes no request to a replica that is still loading; its health check
fails if the pipeline is not ready (loading failed, or it is stopping), and Serve replaces a replica whose check
fails or whose process dies. Serve's proxy listens on `--host`/`--port` and spreads the requests over the replicas;
each replica has its own scheduler (shared batches, bounded queue, deadlines), metrics and health.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from haystack_crossrerank.commands.serving import SHUTDOWN_GRACE_S, Deployment, ServeSettings, create_app
from haystack_crossrerank.utils.checks import check_int, check_number
from haystack_crossrerank.utils.extras import require

logger = logging.getLogger(__name__)

# The Serve application's name (its replicas are the Ray actors `ServeReplica:crossrerank:<pipeline>`).
RAY_APP_NAME = "crossrerank"
PROXY_DRAIN_S = 2.0  # after SIGTERM, before Serve shuts down: requests already at the proxy reach a replica
# How often Serve calls a replica's health check, in seconds.
HEALTH_CHECK_PERIOD_S = 2.0
# The object store of a local Ray, in bytes: the replicas pass nothing big through it.
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


class ServeReplica:
    """
    One replica of the served pipeline, for Ray Serve: :func:`build_application` wraps it in `serve.ingress` and
    `serve.deployment`; Serve creates it in the replica's process and calls the methods below.

    Usage example (what `crossrerank serve --ray` does, on a Ray that is already initialized):

    ```python
    from ray import serve

    from haystack_crossrerank.commands.serving import ServeSettings
    from haystack_crossrerank.commands.serving_ray import build_application

    settings = ServeSettings(index="/data/scifact-index", model="/models/cross-encoder")
    serve.start(http_options={"host": "127.0.0.1", "port": 1416})
    serve.run(build_application(settings, replicas=2), name="crossrerank", route_prefix="/")  # once loaded
    print(serve.status().applications["crossrerank"].status)
    # ApplicationStatus.RUNNING
    ```

    :param settings_json: The :class:`~.serving.ServeSettings`, as :meth:`~.serving.ServeSettings.to_json` writes
        them.
    """

    def __init__(self, settings_json: str) -> None:
        self.settings = ServeSettings.from_json(settings_json)
        self.deployment: Deployment | None = None

    def __serve_build_asgi_app__(self) -> Any:
        """The single-process server's app, whose start (run by Serve) waits until the pipeline is ready."""
        app = create_app(self.settings)
        started = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            async with started(app) as state:
                self.deployment = await asyncio.to_thread(_loaded_deployment, app, self.settings.pipeline)
                yield state

        app.router.lifespan_context = lifespan
        return app

    def check_health(self) -> None:
        """
        Serve's health check: passes while the pipeline is ready.

        :raises RuntimeError: If the pipeline is not loaded, failed to load, or is stopping.
        """
        if self.deployment is None:
            raise RuntimeError(f"the pipeline {self.settings.pipeline} is not loaded")
        status, body = self.deployment.health()
        if status != 200:
            raise RuntimeError(f"the pipeline {self.settings.pipeline} is not ready: {body}")


def _loaded_deployment(app: Any, pipeline: str) -> Deployment:
    """The app's deployment (hayhooks deployed it as the app started), once its pipeline is loaded."""
    registry = getattr(app.state, "pipeline_registry", None)
    deployment = getattr(registry.get(pipeline), "deployment", None) if registry is not None else None
    if not isinstance(deployment, Deployment):
        raise RuntimeError(f"hayhooks did not deploy the pipeline {pipeline}: see the replica's log")
    deployment.wait_loaded()
    status, body = deployment.health()
    if status != 200:
        raise RuntimeError(f"the pipeline {pipeline} did not load: {body}")
    return deployment


def build_application(
    settings: ServeSettings, *, replicas: int = 2, num_cpus: float = 1.0, actor_options: dict[str, Any] | None = None
) -> Any:
    """
    The Ray Serve application that serves `settings` with `replicas` replicas.

    A replica may hold up to twice `settings.max_queue` requests, so that its own scheduler answers an overload
    (503 with `Retry-After`) as the single-process server does; beyond that, Serve's proxy queues at most
    `settings.max_queue` more and answers 503 to the rest. A replica stops gracefully within the requests' deadline
    and :data:`~.serving.SHUTDOWN_GRACE_S`.

    :param settings: What each replica serves.
    :param replicas: How many replicas.
    :param num_cpus: The CPUs Ray reserves for each replica (may be fractional).
    :param actor_options: Other Ray actor options for each replica, e.g. `{"num_gpus": 1}`.
    :returns: The application (`serve.run` deploys it).
    :raises ValueError: If `replicas` is not >= 1 or `num_cpus` not > 0.
    :raises ImportError: Naming the `ray` extra if Ray Serve is not installed.
    """
    check_int("replicas", replicas, minimum=1)
    check_number("num_cpus", num_cpus)
    if not 0 < num_cpus < math.inf:
        raise ValueError(f"`num_cpus` must be a finite number > 0, but got {num_cpus}")
    serve = _require_serve()
    replica = serve.deployment(
        serve.ingress()(ServeReplica),
        name=settings.pipeline,
        num_replicas=replicas,
        ray_actor_options={**(actor_options or {}), "num_cpus": num_cpus},
        max_ongoing_requests=2 * settings.max_queue,
        max_queued_requests=settings.max_queue,
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        graceful_shutdown_timeout_s=settings.timeout_s + SHUTDOWN_GRACE_S,
    )
    return replica.bind(settings.to_json())


def serve_ray(
    settings: ServeSettings,
    *,
    address: str | None = None,
    replicas: int = 2,
    host: str = "127.0.0.1",
    port: int = 1416,
    num_cpus: float | None = None,
    stop: threading.Event | None = None,
) -> None:
    """
    Serve `settings` with `replicas` replicas on Ray Serve until SIGTERM or Ctrl-C (or `stop` is set):
    `POST http://HOST:PORT/<pipeline>/run` with `{"query": "..."}`, the same routes and answers as
    :func:`~.serving.serve`.

    While serving it logs each change of the replicas' states. When stopped, on a local Ray it shuts Serve and Ray
    down; on a cluster it deletes only this application. A Ray that the caller initialized is used as it is (and
    left running).

    :param settings: What each replica serves.
    :param address: `None` or `"local"`: start a local Ray on this machine's cores (no dashboard); else the address
        of a running cluster (`auto`, `HOST:PORT`, `ray://HOST:PORT`).
    :param replicas: How many replicas.
    :param host: The interface Serve's proxy listens on.
    :param port: Its port.
    :param num_cpus: The CPUs Ray reserves for each replica; `None`: on a local Ray, this machine's cores shared
        evenly; on a cluster, 1.
    :param stop: Set it to stop the server (for callers that run this in a thread).
    :raises FileNotFoundError: If the corpus or the index does not exist.
    :raises ValueError: If `replicas` is not >= 1 or `num_cpus` not > 0.
    :raises RuntimeError: If the application could not be deployed (a replica failed to load: see the log).
    :raises ImportError: Naming the `ray` extra if Ray Serve is not installed.
    """
    check_int("replicas", replicas, minimum=1)
    source = settings.index if settings.index is not None else settings.corpus
    if not Path(str(source)).exists():
        raise FileNotFoundError(f"the {'index' if settings.index else 'corpus'} {source} does not exist")
    ray = require("ray", "ray")
    serve = _require_serve()
    settings = _for_replicas(settings)
    local = address in (None, "local")
    cores = os.cpu_count() or 1
    if num_cpus is None:
        num_cpus = cores / replicas if local else 1.0
    application = build_application(settings, replicas=replicas, num_cpus=num_cpus)
    stop = stop or threading.Event()
    serving = threading.Event()

    def on_sigterm(signum: int, frame: Any) -> None:
        stop.set()
        if not serving.is_set():  # still starting: interrupt the start-up, as Ctrl-C would
            raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    started_ray = not ray.is_initialized()
    if started_ray and local:
        ray.init(num_cpus=cores, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    elif started_ray:
        ray.init(address=address)
    try:
        # After `ray.init`, which installs handlers that end the process at once, without stopping Serve first.
        if main_thread:
            signal.signal(signal.SIGTERM, on_sigterm)
        logger.info("Ray at %s (%s)", ray.get_runtime_context().gcs_address, "local" if local else address)
        serve.start(
            http_options={
                "host": host,
                "port": port,
                # Serve's own deadline (408), past the replicas' (504): for a request that never reached one.
                "request_timeout_s": math.ceil(settings.timeout_s + SHUTDOWN_GRACE_S),
            }
        )
        serve.run(application, name=RAY_APP_NAME, route_prefix="/")
        serving.set()
        logger.info("Serving %s with %d replicas on http://%s:%d", settings.pipeline, replicas, host, port)
        _watch(serve, settings.pipeline, stop)
        # Serve's proxy drops the requests it holds when Serve shuts down: give those that arrived before the signal
        # time to reach a replica, whose own graceful shutdown then waits for them.
        logger.info("Stopping: %.0f s for the requests that have arrived", PROXY_DRAIN_S)
        time.sleep(PROXY_DRAIN_S)
    except KeyboardInterrupt:
        logger.info("Interrupted")
    finally:
        serving.set()  # a signal now only sets `stop`
        _shut_down(ray, serve, local=local, started_ray=started_ray)
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _for_replicas(settings: ServeSettings) -> ServeSettings:
    """The settings with absolute paths (a replica's working folder is Ray's) and the model chosen once here."""
    from haystack_crossrerank.commands.offline import build_default_model

    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path is not None and Path(path).exists() else path

    model = absolute(settings.model) if settings.model is not None else str(build_default_model())
    return replace(
        settings,
        corpus=absolute(settings.corpus),
        index=absolute(settings.index),
        qrels=absolute(settings.qrels),
        queries=absolute(settings.queries),
        model=model,
    )


def _require_serve() -> Any:
    require("ray", "ray")
    return require("ray.serve", "ray")


def _watch(serve: Any, pipeline: str, stop: threading.Event) -> None:
    """Until `stop` is set: log the replicas' states (`RUNNING`, `STARTING`, ...) each time they change."""
    seen: dict[str, int] | None = None
    while not stop.wait(1.0):
        try:
            deployment = serve.status().applications[RAY_APP_NAME].deployments[pipeline]
        except Exception as error:  # the controller may be restarting; keep serving
            logger.warning("Could not read Serve's status: %s", error)
            continue
        states = {str(getattr(state, "value", state)): int(count) for state, count in deployment.replica_states.items()}
        states = dict(sorted(states.items()))
        if states != seen:
            seen = states
            summary = ", ".join(f"{state} {count}" for state, count in states.items()) or "none"
            status = getattr(deployment.status, "value", deployment.status)
            logger.info("Replicas of %s: %s (%s)", pipeline, summary, status)
    logger.info("Stopping: the replicas finish the requests in flight")


def _shut_down(ray: Any, serve: Any, *, local: bool, started_ray: bool) -> None:
    try:
        if local and started_ray:
            serve.shutdown()
        else:
            serve.delete(RAY_APP_NAME)
    finally:
        if started_ray:
            ray.shutdown()
        logger.info("Stopped")
