"""Serving a shipped query pipeline over HTTP with hayhooks (the `serve` extra).

`crossrerank serve --corpus PATH` indexes the corpus into the store the YAML pipelines share (`--index DIR`
loads an index saved by `crossrerank index` instead), writes a hayhooks pipeline folder whose `PipelineWrapper`
holds a :class:`ServedPipeline`, and runs hayhooks' FastAPI app with uvicorn. A request is hayhooks' convention
for a deployed pipeline: `POST /<pipeline>/run` with `{"query": "..."}`; the answer is
`{"result": [{"id", "content", "score", "meta"}, ...]}`, best first.

Requests are served one at a time through the pipeline (a lock): on a CPU one model gains nothing from running
two batches at once, and the results then cannot depend on what else is in flight.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from haystack_crossrerank.utils.extras import require

logger = logging.getLogger(__name__)

# Longest query accepted, in characters: far beyond any real query, far below what would tie up the model.
MAX_QUERY_CHARS = 2048
SERVED_PIPELINES = ("bm25_rerank", "faiss_rerank", "hybrid_rerank")

_WRAPPER_SOURCE = '''"""Written by `crossrerank serve` for hayhooks; see haystack_crossrerank.commands.serving."""

from pathlib import Path

from hayhooks import BasePipelineWrapper

from haystack_crossrerank.commands.serving import ServedPipeline, ServeSettings


class PipelineWrapper(BasePipelineWrapper):
    def setup(self) -> None:
        settings = ServeSettings.from_json((Path(__file__).parent / "settings.json").read_text(encoding="utf-8"))
        self.served = ServedPipeline(settings)
        self.pipeline = self.served.pipeline

    def run_api(self, query: str) -> list[dict]:
        """Rerank the corpus's candidates for `query`: the documents, best first."""
        return self.served.run_checked(query)
'''


@dataclass(frozen=True)
class ServeSettings:
    """
    What `crossrerank serve` serves.

    :param corpus: A BEIR folder (its `corpus.jsonl[.gz]`) or a JSON lines file of documents, indexed at start.
    :param pipeline: One of :data:`SERVED_PIPELINES`.
    :param model: The cross-encoder (`None`: the offline default model, built if needed).
    :param ranker: Other ranker settings for this deployment (e.g. `{"backend": "openvino"}`).
    :param depth: Candidates the first stage retrieves (`None`: the pipeline's own).
    :param index: Instead of `corpus`, a folder written by `crossrerank index`; the dense pipelines embed queries
        with its embedder.
    :raises ValueError: Unless exactly one of `corpus` and `index` is given.
    """

    corpus: str | None = None
    pipeline: str = "bm25_rerank"
    model: str | None = None
    ranker: dict[str, Any] | None = None
    depth: int | None = None
    index: str | None = None

    def __post_init__(self) -> None:
        if (self.corpus is None) == (self.index is None):
            raise ValueError(f"give one of `corpus` and `index`, but got corpus={self.corpus!r}, index={self.index!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


class ServedPipeline:
    """
    A shipped query pipeline over an indexed corpus, ready to answer queries (in process; hayhooks calls it).

    :param settings: What to serve.
    :raises ValueError: For a pipeline that is not one of :data:`SERVED_PIPELINES`, or an index that does not
        match its manifest or the pipeline's settings.
    :raises FileNotFoundError: If the corpus or the index (or one of its files) does not exist.
    """

    def __init__(self, settings: ServeSettings) -> None:
        from haystack_crossrerank.data.beir import read_corpus
        from haystack_crossrerank.retrievers.index import read_manifest
        from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path
        from haystack_crossrerank.retrievers.stages import first_stage, index_corpus, offline_embedder

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
        model = settings.model or _default_model()
        overrides = self.stage.overrides(settings.depth) if settings.depth is not None else {}
        if self.stage.dense:  # queries are embedded as the documents were
            overrides["text_embedder"] = {"model": embedder or offline_embedder()}
        overrides["ranker"] = {"model": model, **(settings.ranker or {})}
        self.pipeline = load_pipeline(pipeline_path(settings.pipeline), overrides=overrides, index=settings.index)
        self.pipeline.warm_up()
        self._lock = threading.Lock()
        logger.info("Serving %s over %d documents with %s", settings.pipeline, count, model)

    def run(self, query: str, top_k: int | None = None) -> list[dict[str, Any]]:
        """
        The reranked documents for a query, as JSON-ready dictionaries.

        :param query: The query.
        :param top_k: The most documents (default: the pipeline's ranker setting).
        :returns: `{"id", "content", "score", "meta"}` per document, best first.
        """
        ranker_inputs: dict[str, Any] = {"query": query}
        if top_k is not None:
            ranker_inputs["top_k"] = top_k
        with self._lock:
            out = self.pipeline.run({**self.stage.inputs(query), "ranker": ranker_inputs})
        return [
            {"id": doc.id, "content": doc.content, "score": doc.score, "meta": dict(doc.meta)}
            for doc in out["ranker"]["documents"]
        ]

    def run_checked(self, query: Any) -> list[dict[str, Any]]:
        """
        :meth:`run` for an HTTP request: a bad query is a 4xx that says what was expected.

        :raises fastapi.HTTPException: 422 for a blank or non-string query, 413 for one longer than
            :data:`MAX_QUERY_CHARS`.
        """
        from fastapi import HTTPException

        if not isinstance(query, str) or not query.strip():
            raise HTTPException(status_code=422, detail=f"`query` must be a non-empty string, but got {query!r}")
        if len(query) > MAX_QUERY_CHARS:
            raise HTTPException(
                status_code=413,
                detail=f"`query` must be at most {MAX_QUERY_CHARS} characters, but got {len(query)}",
            )
        return self.run(query)


def _default_model() -> str:
    from haystack_crossrerank.commands.offline import build_default_model

    return str(build_default_model())


def write_wrapper(settings: ServeSettings, pipelines_dir: Path) -> Path:
    """
    Write the hayhooks pipeline folder for a deployment: `pipeline_wrapper.py` and `settings.json`.

    :param settings: What to serve.
    :param pipelines_dir: hayhooks' pipelines folder.
    :returns: The pipeline's folder (`<pipelines_dir>/<pipeline>`).
    """
    folder = pipelines_dir / settings.pipeline
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline_wrapper.py").write_text(_WRAPPER_SOURCE, encoding="utf-8")
    (folder / "settings.json").write_text(settings.to_json(), encoding="utf-8")
    return folder


def create_app(settings: ServeSettings, pipelines_dir: Path | None = None) -> Any:
    """
    The hayhooks FastAPI app with the pipeline deployed (the corpus is indexed and the model loaded here).

    :param settings: What to serve.
    :param pipelines_dir: Where the wrapper folder is written (default: a new temporary folder).
    :returns: The app.
    :raises ImportError: Naming the `serve` extra if hayhooks is not installed.
    """
    require("hayhooks", "serve")
    from hayhooks.settings import settings as hayhooks_settings

    folder = pipelines_dir or Path(tempfile.mkdtemp(prefix="crossrerank-serve-"))
    write_wrapper(settings, folder)
    hayhooks_settings.pipelines_dir = str(folder)
    from hayhooks.server.app import create_app as hayhooks_app

    started = time.perf_counter()
    app = hayhooks_app()
    logger.info("Deployed %s in %.1fs (pipelines folder %s)", settings.pipeline, time.perf_counter() - started, folder)
    return app


def serve(settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 1416) -> None:
    """
    Serve until interrupted: `POST http://HOST:PORT/<pipeline>/run` with `{"query": "..."}`.

    :param settings: What to serve.
    :param host: The interface to listen on.
    :param port: The port.
    """
    uvicorn = require("uvicorn", "serve")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
