"""`crossrerank tune`: choose the ranker's passage and fusion settings, and the depth, on *training* queries.

Each (query, candidate) is scored once per passage variant (document; sentences with the title as a passage
or as a prefix; windows), through `CrossEncoderRanker.score_passages`, the ranker's own path. Every
combination of aggregation, fusion and depth is then evaluated from those scores with the same functions the
ranker applies (`passages.aggregate`, `fusion.fuse_scores`), so the grid costs one scoring pass per variant,
and what is chosen is exactly what the ranker computes. Test queries are never read.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from haystack import Document

from haystack_crossrerank.data.beir import load_beir
from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
from haystack_crossrerank.first_stage import first_stage, index_corpus, offline_embedder, query_pipeline, retrieve
from haystack_crossrerank.fusion import FUSION_METHODS, fuse_scores
from haystack_crossrerank.passages import aggregate
from haystack_crossrerank.pipelines import load_pipeline, pipeline_path
from haystack_crossrerank.progress import progress
from haystack_crossrerank.ranker import CrossEncoderRanker
from haystack_crossrerank.scoring import sigmoid

logger = logging.getLogger(__name__)

# (passages, meta_placement) pairs that need a scoring pass each.
VARIANTS: tuple[tuple[str, str], ...] = (
    ("document", "passage"),
    ("sentences", "passage"),
    ("sentences", "prefix"),
    ("windows", "passage"),
)
BLENDS = ("max_mean", "max_first")


@dataclass
class TuneOptions:
    """Settings of one tuning run (see `crossrerank tune --help`)."""

    data_dir: str
    model: str
    dataset: str = "scifact"
    split: str = "train"
    first_stages: list[str] = field(default_factory=lambda: ["bm25"])
    queries: int | None = 200
    seed: int = 42
    depths: list[int] = field(default_factory=lambda: [10, 20, 30, 50])
    variants: list[tuple[str, str]] = field(default_factory=lambda: list(VARIANTS))
    aggregations: list[str] = field(default_factory=lambda: ["max", "first", "mean", *BLENDS])
    aggregation_weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    fusions: list[str | None] = field(default_factory=lambda: [None, *FUSION_METHODS])
    fusion_weights: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 10)])
    # max_passages values tried: the first k passages are a prefix of all of them, so no extra scoring.
    max_passages: list[int | None] = field(default_factory=lambda: [None, 4, 8])
    # If set: passage scores are read from this JSON file when it exists, else written to it after scoring.
    scores_path: str | None = None
    precision: str = "auto"
    batch_size: int = 32
    embedder_model: str | None = None
    show_progress: bool = True


@dataclass(frozen=True)
class Setting:
    """One point of the grid: the ranker settings it stands for, and the depth."""

    passages: str
    meta_placement: str
    aggregation: str
    aggregation_weight: float
    fusion: str | None
    fusion_weight: float
    max_passages: int | None
    depth: int

    def ranker_settings(self) -> dict[str, Any]:
        """The `CrossEncoderRanker` init parameters this point sets."""
        return {k: v for k, v in asdict(self).items() if k != "depth"}


def run_tuning(options: TuneOptions) -> dict[str, Any]:
    """
    Score the training queries' candidates once per passage variant, evaluate the grid, print the best
    settings per first stage, and return the choice and the whole grid.

    :param options: The settings.
    :returns: `{"settings", "first_stages": {name: {"first_stage_ndcg@10", "choice", "choice_without_fusion",
        "grid"}}, "scoring_seconds"}`.
    :raises ValueError: If the split has no judged queries, or a setting is unknown.
    """
    stages = [first_stage(name) for name in options.first_stages]
    data = load_beir(options.data_dir, options.split, dataset=options.dataset)
    query_ids = sorted(q for q in data.queries if data.qrels.get(q))
    if not query_ids:
        raise ValueError(f"split {options.split!r} of {data.name} has no judged queries to tune on")
    if options.queries is not None and options.queries < len(query_ids):
        query_ids = sorted(random.Random(options.seed).sample(query_ids, options.queries))
    queries = {q: data.queries[q] for q in query_ids}
    qrels = {q: data.qrels[q] for q in query_ids}
    max_depth = max(options.depths)

    embedder = options.embedder_model or offline_embedder()
    index_corpus(data, "indexing_dense" if any(s.dense for s in stages) else "indexing_bm25", embedder)
    # Candidates per stage and depth, retrieved exactly as the shipped pipeline would at that depth.
    candidates: dict[str, dict[int, dict[str, list[Document]]]] = {}
    for stage in stages:
        candidates[stage.name] = {}
        for depth in options.depths:
            pipeline = query_pipeline(stage, depth, embedder)
            candidates[stage.name][depth] = {q: retrieve(pipeline, stage, t, depth) for q, t in queries.items()}
    union: dict[str, list[Document]] = {}
    for q in query_ids:
        seen: dict[str, Document] = {}
        for stage in stages:
            for depth in options.depths:
                for doc in candidates[stage.name][depth][q]:
                    seen.setdefault(doc.id, doc)
        union[q] = list(seen.values())
    logger.info(
        "Tuning on %d %s queries, %d distinct candidates (depth up to %d)",
        len(query_ids),
        options.split,
        sum(len(v) for v in union.values()),
        max_depth,
    )

    template = load_pipeline(pipeline_path("bm25_rerank"), model=options.model).get_component("ranker")
    assert isinstance(template, CrossEncoderRanker)
    passage_logits: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = {}
    timing: dict[str, float] = {}
    saved = _load_scores(options.scores_path)
    for mode, placement in options.variants:
        if f"{mode}/{placement}" in saved and all(q in saved[f"{mode}/{placement}"] for q in query_ids):
            passage_logits[(mode, placement)] = saved[f"{mode}/{placement}"]
            logger.info("Passage scores of %s/%s read from %s", mode, placement, options.scores_path)
            continue
        ranker = _variant_ranker(template, options, mode, placement)
        start = time.perf_counter()
        table: dict[str, dict[str, list[float]]] = {}
        for q in progress(query_ids, desc=f"scoring {mode}/{placement}", unit="query", enabled=options.show_progress):
            scored = ranker.score_passages(queries[q], union[q])
            table[q] = {doc.id: logits for doc, (_, logits) in zip(union[q], scored, strict=True)}
        passage_logits[(mode, placement)] = table
        timing[f"{mode}/{placement}"] = round(time.perf_counter() - start, 1)
    if options.scores_path and not saved:
        _save_scores(options.scores_path, passage_logits)

    result: dict[str, Any] = {
        "settings": {k: v for k, v in asdict(options).items() if k != "show_progress"},
        "queries": len(query_ids),
        "scoring_seconds": timing,
        "first_stages": {},
    }
    for stage in stages:
        per_depth = candidates[stage.name]
        baseline = _ndcg({q: [d.id for d in per_depth[max_depth][q]] for q in query_ids}, qrels)
        grid = [
            {**asdict(setting), "ndcg@10": _evaluate(setting, per_depth[setting.depth], passage_logits, qrels)}
            for setting in _grid(options)
        ]
        best = _best(grid)
        best_alone = _best([g for g in grid if g["fusion"] is None])
        result["first_stages"][stage.name] = {
            "first_stage_ndcg@10": baseline,
            "choice": best,
            "choice_without_fusion": best_alone,
            "grid": grid,
        }
        _print_grid(stage.name, baseline, grid, best, best_alone, len(query_ids))
    return result


def _variant_ranker(
    template: CrossEncoderRanker, options: TuneOptions, mode: str, placement: str
) -> CrossEncoderRanker:
    data = template.to_dict()
    data["init_parameters"].update(
        {
            "precision": options.precision,
            "batch_size": options.batch_size,
            "passages": mode,
            "meta_placement": placement,
            "max_passages": None,
        }
    )
    return CrossEncoderRanker.from_dict(data)


def _grid(options: TuneOptions) -> list[Setting]:
    settings = []
    for mode, placement in options.variants:
        aggregations: list[tuple[str, float]] = []
        for method in options.aggregations if mode != "document" else ["max"]:  # one passage: all the same
            weights = options.aggregation_weights if method in BLENDS else [0.5]
            aggregations.extend((method, w) for w in weights)
        fusions: list[tuple[str | None, float]] = []
        for fusion in options.fusions:
            fusions.extend((fusion, w) for w in (options.fusion_weights if fusion else [0.5]))
        caps = options.max_passages if mode != "document" else [None]
        for (method, a_weight), (fusion, f_weight), cap, depth in itertools.product(
            aggregations, fusions, caps, options.depths
        ):
            settings.append(Setting(mode, placement, method, a_weight, fusion, f_weight, cap, depth))
    return settings


def _evaluate(
    setting: Setting,
    candidates: dict[str, list[Document]],
    passage_logits: dict[tuple[str, str], dict[str, dict[str, list[float]]]],
    qrels: dict[str, dict[str, int]],
) -> float:
    """nDCG@10 of one setting, computed the way `CrossEncoderRanker.run` computes scores (scale_score on)."""
    table = passage_logits[(setting.passages, setting.meta_placement)]
    rankings = {}
    for q, docs in candidates.items():
        cap = setting.max_passages
        scores = [
            sigmoid(aggregate(table[q][d.id][:cap], setting.aggregation, setting.aggregation_weight)[0]) for d in docs
        ]
        if setting.fusion is not None:
            scores = fuse_scores(scores, [d.score for d in docs], method=setting.fusion, weight=setting.fusion_weight)
        order = sorted(range(len(docs)), key=lambda i: -scores[i] if not math.isnan(scores[i]) else math.inf)
        rankings[q] = [docs[i].id for i in order]
    return _ndcg(rankings, qrels)


def _best(grid: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest nDCG@10; among equals, the cheaper: smaller depth, then fewer passages, then the grid's order."""
    return max(grid, key=lambda g: (g["ndcg@10"], -g["depth"], -(g["max_passages"] or 1_000_000)))


def _load_scores(path: str | None) -> dict[str, dict[str, dict[str, list[float]]]]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return dict(json.load(handle))
    except FileNotFoundError:
        return {}


def _save_scores(path: str, scores: dict[tuple[str, str], dict[str, dict[str, list[float]]]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({f"{mode}/{placement}": table for (mode, placement), table in scores.items()}, handle)


def _ndcg(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> float:
    return round(evaluate_rankings({q: qrels[q] for q in rankings}, rankings)["ndcg@10"], 4)


def _print_grid(
    stage: str, baseline: float, grid: list[dict[str, Any]], best: dict[str, Any], best_alone: dict[str, Any], n: int
) -> None:
    print(f"\n{stage}: {n} training queries, first stage alone nDCG@10 {baseline:.4f} (at the largest depth)")
    columns = [
        "passages",
        "meta_placement",
        "aggregation",
        "aggregation_weight",
        "fusion",
        "fusion_weight",
        "max_passages",
        "depth",
    ]
    header = "  ".join(f"{c:<14}" for c in [*columns, "ndcg@10"])
    print("best per passage variant and fusion method:")
    print(header)
    seen = set()
    for row in sorted(grid, key=lambda g: -g["ndcg@10"]):
        key = (row["passages"], row["meta_placement"], row["fusion"])
        if key in seen:
            continue
        seen.add(key)
        print("  ".join(f"{_cell(row[c]):<14}" for c in [*columns, "ndcg@10"]))
    print(f"choice: {_describe(best)}")
    print(f"choice without fusion: {_describe(best_alone)}")


def _describe(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_cell(v)}" for k, v in row.items())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 or value != int(value) else str(value)
    return str(value)
