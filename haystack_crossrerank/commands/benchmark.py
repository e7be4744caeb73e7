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

from haystack_crossrerank.data.beir import load_beir
from haystack_crossrerank.evaluation.retrieval import evaluate_rankings, paired_gain
from haystack_crossrerank.ranker import CrossEncoderRanker
from haystack_crossrerank.ranking.documents import deduplicate_documents
from haystack_crossrerank.ranking.fusion import fuse_scores
from haystack_crossrerank.retrievers.index import attach_index
from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path
from haystack_crossrerank.retrievers.stages import (
    STORE_INDEX,
    FirstStage,
    check_document_count,
    first_stage,
    index_corpus,
    offline_embedder,
    query_pipeline,
    retrieve,
    shipped_depth,
)
from haystack_crossrerank.utils.progress import progress, transformers_bars_off

logger = logging.getLogger(__name__)

PLOT_DEPTHS = (10, 20, 50, 100)


@dataclass
class BenchOptions:
    """Settings of one benchmark run (see `crossrerank bench --help`)."""

    data_dir: str
    dataset: str = "scifact"
    split: str = "test"
    first_stage: str = "bm25"
    depth: int = 100
    models: list[str] = field(default_factory=list)
    # Passage modes to measure side by side; `None`: "document" and the shipped pipeline's own mode.
    passages: list[str] | None = None
    # Fusion rows: `None` takes the shipped pipeline's fusion (none if it has none).
    fusion: str | None = None
    fusion_weight: float | None = None
    peer: bool = True
    peer_queries: int = 20
    max_queries: int | None = None
    # A seeded random sample of this many queries instead of all (or of the first `max_queries`).
    sample_queries: int | None = None
    rerank_queries: int | None = None
    precision: str = "auto"
    batch_size: int | None = None  # the scorer's default
    plot: str | None = None
    plot_queries: int = 20
    embedder_model: str | None = None
    # Ranker init parameters that replace the shipped pipeline's (e.g. {"aggregation": "max"}).
    ranker_settings: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True
    # A saved index of the data set's corpus (`crossrerank index`) for the first stage, instead of indexing it here.
    index: str | None = None


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
    # The label of the model whose CrossEncoderRanker made the row ("" for the first stage and the peer).
    model: str = ""

    def summary(self, qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
        judged = {q: qrels[q] for q in self.rankings}
        metrics = evaluate_rankings(judged, self.rankings)
        return {
            "row": self.name,
            "queries": len(self.rankings),
            **{k: round(v, 4) for k, v in metrics.items()},
            "ms_p50": round(_percentile(self.latencies_ms, 50), 1),
            "ms_p95": round(_percentile(self.latencies_ms, 95), 1),
            "pairs": self.pairs,
            "pairs_per_s": round(self.pairs / self.rerank_seconds, 1) if self.rerank_seconds else None,
            "wall_s": round(self.wall_seconds, 1),
            "note": self.note,
            "model": self.model,
        }


@dataclass
class Measured:
    """A reranked row with the scores behind it, for fusion rows and the depth plot."""

    row: Row
    scores: dict[str, dict[str, float]]
    mode: str


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """
    Run the benchmark, print the table and return it (rows, settings, index time).

    For each model and each passage mode: the ranker alone, then (if fusion is on) the same scores fused
    with the retriever's, then the peer on a subset (document mode only: the peer has no passages).

    :param options: The settings.
    :returns: `{"settings": ..., "index_seconds": ..., "rows": [...]}`.
    :raises ValueError: On an unknown first stage, a depth < 1, or no model.
    """
    stage = first_stage(options.first_stage)
    if options.depth < 1:
        raise ValueError(f"`depth` must be > 0, but got {options.depth}")
    if not options.models:
        raise ValueError("at least one cross-encoder model is needed")
    data = load_beir(options.data_dir, options.split, dataset=options.dataset)
    if options.max_queries is not None:
        data = data.head(options.max_queries)
    if options.sample_queries is not None:
        data = data.sample(options.sample_queries)
    embedder = options.embedder_model or offline_embedder()

    if options.index is None:
        index_seconds = index_corpus(data, stage.indexing, embedder)
    else:
        index_seconds = 0.0
        check_document_count(options.index, len(data.corpus))
        # The retrievers read the saved index; nothing indexed earlier in this process may stand in for it.
        InMemoryDocumentStore(index=STORE_INDEX).delete_all_documents()
    ranker_settings = {"precision": options.precision, "batch_size": options.batch_size, **options.ranker_settings}
    # --fusion / --fusion-weight replace the shipped ranker's, so that the pipeline checked below is the one measured
    if options.fusion is not None:
        ranker_settings["fusion"] = options.fusion
    if options.fusion_weight is not None:
        ranker_settings["fusion_weight"] = options.fusion_weight
    shipped = load_pipeline(
        pipeline_path(f"{options.first_stage}_rerank"),
        model=options.models[0],
        overrides={**stage.overrides(options.depth, embedder), "ranker": ranker_settings},
    )
    if options.index is not None:
        attach_index(shipped, options.index)
    template = shipped.get_component("ranker")
    assert isinstance(template, CrossEncoderRanker)
    modes = options.passages or list(dict.fromkeys(["document", template.passages]))
    fusion = options.fusion if options.fusion is not None else template.fusion
    weight = options.fusion_weight if options.fusion_weight is not None else template.fusion_weight

    queries = list(data.queries.items())
    rows: list[Row] = []
    candidates, first_row = _run_first_stage(stage, queries, embedder, options)
    rows.append(first_row)
    first_ms = dict(zip((q for q, _ in queries), first_row.latencies_ms, strict=True))

    reranked_queries = queries[: options.rerank_queries] if options.rerank_queries else queries
    if options.rerank_queries:
        rows.append(_subset_row(first_row, [q for q, _ in reranked_queries], "the reranked queries"))
    reranked_candidates = {q: candidates[q] for q, _ in reranked_queries}
    plotted: list[Measured] = []
    for model in options.models:
        label = Path(model).name or model
        for mode in modes:
            ranker = _ranker_like(template, model=model, top_k=options.depth, options=options, passages=mode)
            row, scores = _rerank_row(
                f"+ CrossEncoderRanker ({label}, {mode})", ranker, reranked_queries, candidates, first_ms, options
            )
            row.model = label
            rows.append(row)
            fused = None
            if fusion is not None:
                fused = _fusion_row(
                    f"+ {label}, {mode}, {fusion} fusion", row, scores, reranked_candidates, fusion, weight
                )
                fused.model = label
                rows.append(fused)
            if model == options.models[0]:
                plotted.append(Measured(row, scores, mode))
                if mode == template.passages:
                    checked = fused if template.fusion is not None and fused is not None else row
                    checked.note = _check_pipeline(shipped, stage, reranked_queries[:3], checked, checked.note)
            if options.peer and mode == "document":
                subset = reranked_queries[: options.peer_queries]
                rows.append(_subset_row(row, [q for q, _ in subset], "same queries as the peer row"))
                rows.append(_peer_row(model, label, subset, candidates, first_ms, options))

    # with each row, its mean per-query nDCG@10 gain over the first stage on its queries and a 90% interval
    table = [{**row.summary(data.qrels), **paired_gain(data.qrels, rows[0].rankings, row.rankings)} for row in rows]
    print_table(table, f"{data.name} {options.split}: {options.first_stage} top-{options.depth}")
    result: dict[str, Any] = {
        "settings": {
            **{k: v for k, v in vars(options).items() if k != "show_progress"},
            "passages": modes,
            "fusion": fusion,
            "fusion_weight": weight,
            "shipped_ranker": {k: v for k, v in template.to_dict()["init_parameters"].items() if k != "token"},
        },
        "dataset": data.name,
        "corpus_size": len(data.corpus),
        "index_seconds": round(index_seconds, 1),
        "rows": table,
    }
    if options.plot:
        result["plot"] = plot_depths(
            options, plotted, reranked_queries, reranked_candidates, data.qrels, template, fusion, weight
        )
    return result


def _run_first_stage(
    stage: FirstStage, queries: list[tuple[str, str]], embedder: str, options: BenchOptions
) -> tuple[dict[str, list[Document]], Row]:
    pipeline = query_pipeline(stage, options.depth, embedder)
    if options.index is not None:
        attach_index(pipeline, options.index)
    # Build the BM25/FAISS index outside the timed loop (it is built once, at the first query).
    retrieve(pipeline, stage, queries[0][1], options.depth)
    candidates: dict[str, list[Document]] = {}
    latencies = []
    start = time.perf_counter()
    for query_id, text in progress(
        queries, desc=f"{options.first_stage} first stage", unit="query", enabled=options.show_progress
    ):
        t0 = time.perf_counter()
        candidates[query_id] = retrieve(pipeline, stage, text, options.depth)
        latencies.append((time.perf_counter() - t0) * 1000)
    row = Row(
        options.first_stage,
        {q: [d.id for d in docs] for q, docs in candidates.items()},
        latencies,
        wall_seconds=time.perf_counter() - start,
    )
    return candidates, row


def _ranker_like(
    template: CrossEncoderRanker, *, model: str, top_k: int, options: BenchOptions, passages: str
) -> CrossEncoderRanker:
    """The shipped ranker's settings with another model and passage mode, all candidates back, fusion off
    (fusion rows reuse the row's scores)."""
    data = template.to_dict()
    data["init_parameters"].update(
        {
            "model": model,
            "top_k": top_k,
            "precision": options.precision,
            "batch_size": options.batch_size,
            "passages": passages,
            "fusion": None,
        }
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
    with transformers_bars_off():  # the peer's load would draw transformers' "Loading weights" bar
        ranker.warm_up()
    if queries:  # one untimed call so that lazy initialisation is not counted
        ranker.run(query=queries[0][1], documents=candidates[queries[0][0]][:2])
    rankings: dict[str, list[str]] = {}
    scores: dict[str, dict[str, float]] = {}
    latencies = []
    pairs = 0
    rerank_seconds = 0.0
    start = time.perf_counter()
    for query_id, text in progress(queries, desc=name, unit="query", enabled=options.show_progress):
        docs = candidates[query_id]
        t0 = time.perf_counter()
        ranked = ranker.run(query=text, documents=docs)["documents"] if docs else []
        elapsed = time.perf_counter() - t0
        rerank_seconds += elapsed
        pairs += _pairs_scored(ranker, docs)  # outside the timed part
        latencies.append(first_ms[query_id] + elapsed * 1000)
        rankings[query_id] = [d.id for d in ranked]
        scores[query_id] = {d.id: float(d.score) for d in ranked}
    row = Row(name, rankings, latencies, pairs, rerank_seconds, time.perf_counter() - start)
    return row, scores


def _pairs_scored(ranker: Any, docs: list[Document]) -> int:
    """How many (query, text) pairs a ranker scored for these documents: passages in the passage modes."""
    if isinstance(ranker, CrossEncoderRanker) and ranker.passages != "document":
        return sum(len(ranker.document_passages(doc)) for doc in deduplicate_documents(docs))
    return len(docs)


def _fusion_row(
    name: str,
    reranked: Row,
    scores: dict[str, dict[str, float]],
    candidates: dict[str, list[Document]],
    method: str,
    weight: float,
) -> Row:
    """Fusion reuses the row's cross-encoder scores with the same function the ranker's `fusion` applies."""
    rankings = {q: _fused_ranking(scores[q], docs, method, weight) for q, docs in candidates.items()}
    note = f"weight {weight}; scores and latency of the row above"
    return Row(name, rankings, reranked.latencies_ms, reranked.pairs, reranked.rerank_seconds, 0.0, note)


def _fused_ranking(scores: dict[str, float], docs: list[Document], method: str, weight: float) -> list[str]:
    ids = [d.id for d in docs]
    fused = fuse_scores([scores[i] for i in ids], [d.score for d in docs], method=method, weight=weight)
    order = sorted(range(len(ids)), key=lambda i: -fused[i])
    return [ids[i] for i in order]


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
    from haystack_crossrerank.utils.extras import require

    module = require("haystack_integrations.components.rankers.sentence_transformers", "bench")
    peer = module.SentenceTransformersSimilarityRanker(model=model, top_k=options.depth, meta_fields_to_embed=["title"])
    row, _ = _rerank_row(
        f"+ SentenceTransformersSimilarityRanker ({label})", peer, subset, candidates, first_ms, options
    )
    row.note = "peer, its defaults (batch_size 16)"
    return row


def _check_pipeline(
    pipeline: Pipeline, stage: FirstStage, queries: list[tuple[str, str]], row: Row, note: str = ""
) -> str:
    """
    Run the shipped YAML pipeline (with this run's overrides) on a few reranked queries: its top 10 should equal
    the measured row's. A difference is written into the row's note and logged as an error, rather than
    raised, so that a long run's measurements are kept, and the table says the row is not the pipeline.
    """
    for query_id, text in queries:
        out = pipeline.run({**stage.inputs(text), "ranker": {"query": text, "top_k": 10}})
        got = [d.id for d in out["ranker"]["documents"]]
        if got != row.rankings[query_id][:10]:
            logger.error("The YAML pipeline ranks query %s differently from the row %r", query_id, row.name)
            differs = f"NOT the shipped YAML pipeline's ranking (query {query_id} differs)"
            return f"{note}; {differs}" if note else differs
    checked = f"the shipped YAML pipeline gives this ranking ({len(queries)} queries checked)"
    return f"{note}; {checked}" if note else checked


def plot_depths(
    options: BenchOptions,
    measured: list[Measured],
    queries: list[tuple[str, str]],
    candidates: dict[str, list[Document]],
    qrels: dict[str, dict[str, int]],
    template: CrossEncoderRanker,
    fusion: str | None,
    weight: float,
) -> dict[str, Any]:
    """
    nDCG@10 and rerank latency against depth for each passage mode (alone and fused), drawn to a PNG.

    nDCG@10 at depth d reranks each query's first d candidates with the scores already measured (fusion
    normalises over those d); latency is measured by running the ranker at each depth on the first
    `plot_queries` queries.

    :returns: The points per mode and the path of the PNG.
    """
    from haystack_crossrerank.utils.extras import require

    plt = require("matplotlib.pyplot", "bench")
    # the plot's fixed depths below the run's, the shipped pipeline's depth, and the run's own
    shipped = shipped_depth(first_stage(options.first_stage))
    depths = sorted({d for d in (*PLOT_DEPTHS, shipped) if d < options.depth} | {options.depth})
    sample = queries[: options.plot_queries]
    figure, left = plt.subplots(figsize=(7, 4.5))
    right = left.twinx()
    lines: dict[str, list[dict[str, Any]]] = {}
    for index, item in enumerate(measured):
        ranker = _ranker_like(
            template, model=options.models[0], top_k=options.depth, options=options, passages=item.mode
        )
        ranker.warm_up()
        points = []
        for depth in depths:
            cut = {q: docs[:depth] for q, docs in candidates.items()}
            alone = {q: _score_ranking(item.scores[q], docs) for q, docs in cut.items()}
            point: dict[str, Any] = {"depth": depth, "ndcg@10": _ndcg(alone, qrels)}
            if fusion is not None:
                fused = {q: _fused_ranking(item.scores[q], docs, fusion, weight) for q, docs in cut.items()}
                point["ndcg@10_fused"] = _ndcg(fused, qrels)
            times = []
            for query_id, text in sample:
                t0 = time.perf_counter()
                ranker.run(query=text, documents=candidates[query_id][:depth])
                times.append((time.perf_counter() - t0) * 1000)
            point["rerank_ms_p50"] = round(_percentile(times, 50), 1)
            points.append(point)
        lines[item.mode] = points
        colour = f"C{index}"
        left.plot(depths, [p["ndcg@10"] for p in points], "o-", color=colour, label=f"{item.mode}")
        if fusion is not None:
            left.plot(depths, [p["ndcg@10_fused"] for p in points], "o:", color=colour, label=f"{item.mode} + {fusion}")
        right.plot(depths, [p["rerank_ms_p50"] for p in points], "s--", color=colour, alpha=0.4)
    left.set_xlabel("candidates reranked (depth)")
    left.set_ylabel("nDCG@10 (lines with dots)")
    right.set_ylabel("rerank ms/query p50 (dashed, squares)")
    left.legend(loc="lower left", fontsize=8)
    left.set_title(f"{options.first_stage} + CrossEncoderRanker ({Path(options.models[0]).name})")
    figure.tight_layout()
    assert options.plot is not None
    Path(options.plot).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(options.plot, dpi=120)
    plt.close(figure)
    return {"path": options.plot, "points": lines}


def _score_ranking(scores: dict[str, float], docs: list[Document]) -> list[str]:
    ids = [d.id for d in docs]
    return sorted(ids, key=lambda i: -scores[i])


def _ndcg(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> float:
    return round(evaluate_rankings({q: qrels[q] for q in rankings}, rankings)["ndcg@10"], 4)


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
