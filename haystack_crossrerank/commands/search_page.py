"""The search page of `crossrerank serve`, and what the API gives it: the first stage's ranking beside the reranked
one, the time each stage took, and, with judgments, nDCG@10 of both.

`GET /` answers the page (static HTML, CSS and a small script, shipped in `commands/static/`: no build step, no
CDN); `GET /search/config` tells it the served pipelines and whether they have judgments. The page calls the same
`POST /<pipeline>/run` as programs do, with `"first_stage": true` (and `"judgments": true` when the server has
them), and shows the two lists side by side.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

STATIC_DIR = Path(__file__).parent / "static"
# The page's files other than `index.html`, with their content types (served under `/search/static/`).
PAGE_FILES = {"search.css": "text/css; charset=utf-8", "search.js": "text/javascript; charset=utf-8"}
# The most judged queries `GET /search/config` lists (the page offers them as suggestions).
MAX_LISTED_QUERIES = 1000


class ComponentClock:
    """
    Times each component of a pipeline, for the requests that ask: inside `with clock.measure() as spent:`,
    `spent` collects the seconds each component's `run` took in this context (the thread that runs the pipeline).

    Haystack runs a synchronous pipeline's components in the calling thread, so concurrent requests, each in a
    thread of its own, never see each other's times. Outside `measure`, a component's `run` costs one context
    lookup more.

    :param pipeline: A Haystack pipeline; its components' `run` methods are wrapped in place.
    """

    def __init__(self, pipeline: Any) -> None:
        self._spent: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
            "crossrerank_component_times", default=None
        )
        for name, instance in pipeline.walk():
            instance.run = self._timed(name, instance.run)

    def _timed(self, name: str, run: Callable[..., Any]) -> Callable[..., Any]:
        def timed(**inputs: Any) -> Any:
            spent = self._spent.get()
            if spent is None:
                return run(**inputs)
            started = time.perf_counter()
            try:
                return run(**inputs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

        return timed

    @contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        """Collect the seconds spent in each component (by name) while the block runs, in this context."""
        spent: dict[str, float] = {}
        token = self._spent.set(spent)
        try:
            yield spent
        finally:
            self._spent.reset(token)


def stage_timings(spent: Mapping[str, float], total_s: float, ranker: str = "ranker") -> dict[str, float]:
    """
    The time each stage of a pipeline run took.

    :param spent: Seconds per component, from :meth:`ComponentClock.measure`.
    :param total_s: Seconds the whole run took.
    :param ranker: The ranker's name; every other component is the first stage's.
    :returns: Milliseconds: `{"first_stage", "ranker", "total"}`.
    """
    first_stage = sum(seconds for name, seconds in spent.items() if name != ranker)
    return {"first_stage": 1e3 * first_stage, "ranker": 1e3 * spent.get(ranker, 0.0), "total": 1e3 * total_s}


class Judgments:
    """
    Relevance judgments for the search page: a typed query is matched to a judged query by its text (case and
    spacing aside), and both rankings are scored with nDCG@10 (trec_eval's, as in the benchmark).

    Usage example:

    ```python
    from haystack_crossrerank.commands.search_page import Judgments

    judgments = Judgments({"q1": {"d1": 1, "d3": 2}}, {"q1": "Capital of France", "q2": "unjudged"})
    found = judgments.evaluate("capital  of france", reranked=["d3", "d1", "d2"], first_stage=["d2", "d1", "d3"])
    print(found["query_id"], found["ndcg@10"])
    # q1 {'first_stage': 0.6199..., 'reranked': 1.0}
    print(judgments.evaluate("capital of germany", reranked=["d1"], first_stage=["d1"]))
    # None
    ```

    :param qrels: query id -> {doc id: relevance}.
    :param queries: query id -> text (queries without judgments are ignored).
    :raises ValueError: If no judged query has a text in `queries`.
    """

    def __init__(self, qrels: Mapping[str, Mapping[str, int]], queries: Mapping[str, str]) -> None:
        self.qrels = {q: dict(docs) for q, docs in qrels.items()}
        self.queries: dict[str, str] = {}  # normalized text -> query id, the first of equal texts
        self.texts: list[str] = []
        for query_id, text in queries.items():
            key = normalized(text)
            if query_id in self.qrels and key and key not in self.queries:
                self.queries[key] = query_id
                self.texts.append(text)
        if not self.queries:
            raise ValueError(
                f"none of the {len(self.qrels)} judged queries has a text among the {len(queries)} queries given: "
                "expected the queries file that the qrels belong to"
            )

    @classmethod
    def load(cls, qrels: str | Path, queries: str | Path) -> Judgments:
        """
        Read a BEIR qrels TSV and the queries it judges.

        :param qrels: The qrels file (`query-id`, `corpus-id`, `score`).
        :param queries: A BEIR `queries.jsonl`, or the folder that holds it.
        :returns: The judgments.
        :raises FileNotFoundError: If a file does not exist.
        :raises ValueError: On a malformed file, or if no judged query has a text.
        """
        from haystack_crossrerank.data.beir import read_qrels, read_queries

        path = Path(qrels).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"qrels '{path}' do not exist: expected a BEIR qrels TSV file")
        return cls(read_qrels(path), read_queries(queries))

    def find(self, query: str) -> str | None:
        """The id of the judged query with this text (case and spacing aside), or `None`."""
        return self.queries.get(normalized(query))

    def evaluate(self, query: str, *, reranked: Sequence[str], first_stage: Sequence[str]) -> dict[str, Any] | None:
        """
        The judgments of a query and nDCG@10 of both rankings, each cut to the length of the reranked list (the
        two lists the page shows side by side, so that neither is scored on more documents than the other).

        :param query: The typed query.
        :param reranked: The reranked document ids, best first.
        :param first_stage: The first stage's document ids, best first.
        :returns: `{"query_id", "relevance": {doc id: grade}, "ndcg@10": {"first_stage", "reranked"}}`, or `None`
            if the query is not judged.
        :raises ImportError: Naming the `bench` extra if pytrec_eval is not installed.
        """
        from haystack_crossrerank.evaluation.retrieval import per_query_ndcg10

        query_id = self.find(query)
        if query_id is None:
            return None
        judged = {query_id: self.qrels[query_id]}
        cut = len(reranked)
        return {
            "query_id": query_id,
            "relevance": dict(self.qrels[query_id]),
            "ndcg@10": {
                "first_stage": per_query_ndcg10(judged, {query_id: list(first_stage)[:cut]})[query_id],
                "reranked": per_query_ndcg10(judged, {query_id: list(reranked)})[query_id],
            },
        }


def normalized(text: str) -> str:
    """A query's text as matched against the judged queries: spacing collapsed, case folded."""
    return " ".join(text.split()).casefold()


def judgment_files(qrels: str | None, queries: str | None, corpus: str | None) -> tuple[Path, Path] | None:
    """
    Where `serve` reads judgments from: the qrels file and the queries (given, or the `corpus` BEIR folder's).

    :param qrels: The qrels file, or `None` for no judgments.
    :param queries: The queries file or folder (`None`: the corpus folder's `queries.jsonl`).
    :param corpus: The served corpus.
    :returns: `(qrels, queries)`, or `None` without qrels.
    :raises FileNotFoundError: If the qrels or the queries do not exist.
    :raises ValueError: If there are queries but no qrels, or qrels but no queries to take from anywhere.
    """
    if qrels is None:
        if queries is not None:
            raise ValueError(f"`queries` go with `qrels`, but got queries={queries!r} and no qrels")
        return None
    qrels_path = Path(qrels).expanduser()
    if not qrels_path.is_file():
        raise FileNotFoundError(f"qrels '{qrels_path}' do not exist: expected a BEIR qrels TSV file")
    if queries is None:
        if corpus is None or not Path(corpus).expanduser().is_dir():
            raise ValueError(
                "judgments are matched to the typed query by the judged queries' text: give `queries` (a BEIR "
                f"queries.jsonl) or a BEIR folder as the corpus, but got corpus={corpus!r} and no queries"
            )
        queries = corpus
    queries_path = Path(queries).expanduser()
    if queries_path.is_dir():
        queries_path = queries_path / "queries.jsonl"
    if not queries_path.is_file():
        raise FileNotFoundError(f"queries '{queries_path}' do not exist: expected a BEIR queries.jsonl or its folder")
    return qrels_path, queries_path


def compared_answer(
    compared: Mapping[str, Any], judgments: Judgments | None, query: str, *, first_stage: bool
) -> dict[str, Any]:
    """
    The answer to a run request with `first_stage` or `judgments`.

    :param compared: :meth:`~haystack_crossrerank.commands.serving.ServedPipeline.run_compared`'s result.
    :param judgments: The server's judgments, when the request asked for them.
    :param query: The query.
    :param first_stage: Whether the request asked for the first stage's ranking.
    :returns: `{"documents": [...]}`, with `"first_stage"` and `"timings_ms"` if asked, and `"judgments"` (the
        query's, or `None` if it is not judged) if asked.
    """
    answer: dict[str, Any] = {"documents": compared["documents"]}
    if first_stage:
        answer["first_stage"] = compared["first_stage"]
        answer["timings_ms"] = compared["timings_ms"]
    if judgments is not None:
        answer["judgments"] = judgments.evaluate(
            query,
            reranked=[doc["id"] for doc in compared["documents"]],
            first_stage=[doc["id"] for doc in compared["first_stage"]],
        )
    return answer


class PageDeployment(Protocol):
    """What the page's config needs of a served pipeline (a `serving.Deployment`)."""

    judged: bool
    judgments: Judgments | None


def add_search_page(app: Any, find: Callable[[], Mapping[str, PageDeployment]]) -> None:
    """
    Add the search page to hayhooks' app: `GET /`, its files under `/search/static/`, and `GET /search/config`.

    :param app: hayhooks' FastAPI app.
    :param find: Returns the served pipelines' deployments by pipeline name.
    """
    from fastapi import HTTPException
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    async def page() -> Response:
        """The search page: the first stage's top k beside the reranked top k."""
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    async def page_file(name: str) -> Response:
        """The page's stylesheet and script."""
        if name not in PAGE_FILES:
            raise HTTPException(status_code=404, detail=f"no page file {name!r}: expected one of {sorted(PAGE_FILES)}")
        return Response((STATIC_DIR / name).read_bytes(), media_type=PAGE_FILES[name])

    async def config() -> Response:
        """The served pipelines, whether each has judgments, and the judged queries' texts."""
        pipelines = [
            {
                "name": name,
                "judged": deployment.judged,
                "judged_queries": (deployment.judgments.texts if deployment.judgments is not None else [])[
                    :MAX_LISTED_QUERIES
                ],
            }
            for name, deployment in sorted(find().items())
        ]
        return JSONResponse({"pipelines": pipelines})

    app.add_api_route("/", page, methods=["GET"], tags=["search page"], summary="The search page")
    app.add_api_route("/search/static/{name}", page_file, methods=["GET"], tags=["search page"], summary="Page files")
    app.add_api_route("/search/config", config, methods=["GET"], tags=["search page"], summary="The page's settings")


def check_options(*, first_stage: Any, judgments: Any, judged: bool) -> None:
    """
    Check a run request's options.

    :param first_stage: The request's `first_stage`.
    :param judgments: The request's `judgments`.
    :param judged: Whether the server has judgments.
    :raises fastapi.HTTPException: 422 for an option that is not a boolean, or `judgments` without judgments.
    """
    from fastapi import HTTPException

    for name, value in (("first_stage", first_stage), ("judgments", judgments)):
        if not isinstance(value, bool):
            raise HTTPException(status_code=422, detail=f"`{name}` must be true or false, but got {value!r}")
    if judgments and not judged:
        raise HTTPException(
            status_code=422, detail="`judgments` needs a server started with qrels (`--qrels`), but it has none"
        )
