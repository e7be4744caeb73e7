"""`crossrerank tune`: choose the ranker's passage and fusion settings, and the depth, on *training* queries.

Each (query, candidate) is scored once per passage variant (document; sentences with the title as a passage
or as a prefix; windows), through `CrossEncoderRanker.score_passages`, the ranker's own path. Every
combination of aggregation, fusion and depth is then evaluated from those scores with the same functions the
ranker applies (`passages.aggregate`, `fusion.fuse_scores`), so the grid costs one scoring pass per variant,
and what is chosen is exactly what the ranker computes. Test queries are never read.

How the choice is made (`selection`): `"mean"` takes the highest mean nDCG@10 over the training queries;
`"lcb"` (the default) takes the highest one-sided 90% lower confidence bound of the mean per-query gain over
the first stage (mean gain - 1.2816 * its standard error). The grid holds thousands of points, and the best
mean on a few hundred queries is partly luck: measured on SciFact, the FAISS setting with the best mean on 120
training claims (+0.042 there) lost 0.011 against FAISS alone on the test claims. The bound prefers a smaller gain
that holds across queries over a larger one carried by a few, which is what "never below the first stage"
asks for.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from haystack import Document

from haystack_crossrerank.data.beir import load_beir
from haystack_crossrerank.evaluation.retrieval import per_query_ndcg10, standard_error
from haystack_crossrerank.ranker import CrossEncoderRanker
from haystack_crossrerank.ranking.activation import sigmoid
from haystack_crossrerank.ranking.fusion import FUSION_METHODS, fuse_scores
from haystack_crossrerank.ranking.passages import aggregate
from haystack_crossrerank.retrievers.index import attach_index
from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path
from haystack_crossrerank.retrievers.stages import (
    check_document_count,
    first_stage,
    index_corpus,
    offline_embedder,
    query_pipeline,
    retrieve,
)
from haystack_crossrerank.utils.progress import progress

logger = logging.getLogger(__name__)

# (passages, meta_placement) pairs that need a scoring pass each.
VARIANTS: tuple[tuple[str, str], ...] = (
    ("document", "passage"),
    ("sentences", "passage"),
    ("sentences", "prefix"),
    ("windows", "passage"),
)
BLENDS = ("max_mean", "max_first")
SELECTIONS = ("lcb", "mean")
LCB_Z = 1.2816  # one-sided 90%


@dataclass
class TuneOptions:
    """Settings of one tuning run (see `crossrerank tune --help`)."""

    data_dir: str
    model: str
    dataset: str = "scifact"
    split: str = "train"
    first_stages: list[str] = field(default_factory=lambda: ["bm25"])
    queries: int | None = 200
    # Tune on exactly these query ids (e.g. a trained model's held-out ones) instead of a sample.
    query_ids: list[str] | None = None
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
    batch_size: int | None = None  # the scorer's default
    embedder_model: str | None = None
    # A saved index of the data set's corpus (`crossrerank index`) for the first stages, instead of indexing it here.
    index: str | None = None
    selection: str = "lcb"
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
    if options.selection not in SELECTIONS:
        raise ValueError(f"`selection` must be one of {list(SELECTIONS)}, but got {options.selection!r}")
    stages = [first_stage(name) for name in options.first_stages]
    data = load_beir(options.data_dir, options.split, dataset=options.dataset)
    query_ids = sorted(q for q in data.queries if data.qrels.get(q))
    if not query_ids:
        raise ValueError(f"split {options.split!r} of {data.name} has no judged queries to tune on")
    if options.query_ids is not None:
        unknown = sorted(set(options.query_ids) - set(query_ids))
        if unknown or not options.query_ids:
            raise ValueError(
                f"`query_ids` must name judged {options.split} queries of {data.name}, but got "
                f"{len(unknown)} that are not, e.g. {unknown[:3]}"
                if unknown
                else "`query_ids` must not be empty"
            )
        query_ids = sorted(set(options.query_ids))
    elif options.queries is not None and options.queries < len(query_ids):
        query_ids = sorted(random.Random(options.seed).sample(query_ids, options.queries))
    queries = {q: data.queries[q] for q in query_ids}
    qrels = {q: data.qrels[q] for q in query_ids}
    max_depth = max(options.depths)

    embedder = options.embedder_model or offline_embedder()
    if options.index is None:
        index_corpus(data, "indexing_dense" if any(s.dense for s in stages) else "indexing_bm25", embedder)
    else:
        check_document_count(options.index, len(data.corpus))
    # Candidates per stage and depth, retrieved exactly as the shipped pipeline would at that depth.
    candidates: dict[str, dict[int, dict[str, list[Document]]]] = {}
    for stage in stages:
        candidates[stage.name] = {}
        for depth in options.depths:
            pipeline = query_pipeline(stage, depth, embedder)
            if options.index is not None:
                attach_index(pipeline, options.index)
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
    scored_any = False
    for mode, placement in options.variants:
        key = f"{mode}/{placement}"
        table: dict[str, dict[str, list[float]]] = {q: saved[key][q] for q in query_ids if q in saved.get(key, {})}
        # A cached query is reused only if it holds every candidate it needs now.
        table = {q: v for q, v in table.items() if all(d.id in v for d in union[q])}
        missing = [q for q in query_ids if q not in table]
        if len(missing) < len(query_ids):
            logger.info("Passage scores of %s: %d queries read from %s", key, len(table), options.scores_path)
        if missing:
            ranker = _variant_ranker(template, options, mode, placement)
            start = time.perf_counter()
            for q in progress(missing, desc=f"scoring {key}", unit="query", enabled=options.show_progress):
                scored = ranker.score_passages(queries[q], union[q])
                table[q] = {doc.id: logits for doc, (_, logits) in zip(union[q], scored, strict=True)}
            timing[key] = round(time.perf_counter() - start, 1)
            saved.setdefault(key, {}).update({q: table[q] for q in missing})
            scored_any = True
        passage_logits[(mode, placement)] = table
    if options.scores_path and scored_any:
        _save_scores(options.scores_path, saved)

    result: dict[str, Any] = {
        "settings": {k: v for k, v in asdict(options).items() if k != "show_progress"},
        "queries": len(query_ids),
        "scoring_seconds": timing,
        "first_stages": {},
    }
    result["selection"] = options.selection
    for stage in stages:
        per_depth = candidates[stage.name]
        first = per_query_ndcg10(qrels, {q: [d.id for d in per_depth[max_depth][q]] for q in query_ids})
        baseline = round(statistics.fmean(first.values()), 4)
        grid = []
        for setting in _grid(options):
            per_query = per_query_ndcg10(qrels, _rankings(setting, per_depth[setting.depth], passage_logits))
            grid.append({**asdict(setting), **gain_summary(per_query, first)})
        best = _best(grid, options.selection)
        best_alone = _best([g for g in grid if g["fusion"] is None], options.selection)
        result["first_stages"][stage.name] = {
            "first_stage_ndcg@10": baseline,
            # False when no setting's lower bound is above 0: reranking this stage is not shown to help.
            "reliable_gain": best["gain_lcb"] is not None and best["gain_lcb"] > 0,
            "choice": best,
            "choice_without_fusion": best_alone,
            "grid": grid,
        }
        _print_grid(stage.name, baseline, grid, best, best_alone, len(query_ids), options.selection)
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


def _rankings(
    setting: Setting,
    candidates: dict[str, list[Document]],
    passage_logits: dict[tuple[str, str], dict[str, dict[str, list[float]]]],
) -> dict[str, list[str]]:
    """The ranked ids of one setting, computed the way `CrossEncoderRanker.run` computes scores (scale_score on)."""
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
    return rankings


def gain_summary(per_query: dict[str, float], first: dict[str, float]) -> dict[str, float | None]:
    """
    Mean nDCG@10, and the mean per-query gain over the first stage with its one-sided 90% lower bound
    (`None` with fewer than two queries: no spread to measure).

    :param per_query: nDCG@10 per query of the reranked lists.
    :param first: nDCG@10 per query of the first stage (the queries counted).
    :returns: `{"ndcg@10", "gain", "gain_lcb"}`, rounded to 4 places.
    """
    gains = [per_query[q] - first[q] for q in first]
    mean_gain = statistics.fmean(gains)
    error = standard_error(gains)
    bound = mean_gain - LCB_Z * error if error is not None else None
    return {
        "ndcg@10": round(statistics.fmean(per_query.values()), 4),
        "gain": round(mean_gain, 4),
        "gain_lcb": round(bound, 4) if bound is not None else None,
    }


def _best(grid: list[dict[str, Any]], selection: str = "lcb") -> dict[str, Any]:
    """
    The best point: the highest `gain_lcb` (selection `"lcb"`) or `ndcg@10` (`"mean"`); among equals, the
    other criterion, then the cheaper: smaller depth, then fewer passages, then the grid's order.
    """
    first, second = ("gain_lcb", "ndcg@10") if selection == "lcb" else ("ndcg@10", "gain_lcb")

    def key(g: dict[str, Any]) -> tuple[float, float, int, int]:
        value = [-math.inf if g[k] is None else g[k] for k in (first, second)]
        return value[0], value[1], -g["depth"], -(g["max_passages"] or 1_000_000)

    return max(grid, key=key)


def _load_scores(path: str | None) -> dict[str, dict[str, dict[str, list[float]]]]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return dict(json.load(handle))
    except FileNotFoundError:
        return {}


def _save_scores(path: str, scores: dict[str, dict[str, dict[str, list[float]]]]) -> None:
    """Write the cache whole to a temporary file, then rename: an interrupted write leaves the old cache."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # a new folder must not cost the minutes of scoring
    scratch = f"{path}.partial"
    with open(scratch, "w", encoding="utf-8") as handle:
        json.dump(scores, handle)
    os.replace(scratch, path)


def _print_grid(
    stage: str,
    baseline: float,
    grid: list[dict[str, Any]],
    best: dict[str, Any],
    best_alone: dict[str, Any],
    n: int,
    selection: str,
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
    metrics = ["ndcg@10", "gain", "gain_lcb"]
    header = "  ".join(f"{c:<14}" for c in [*columns, *metrics])
    by = "the 90% lower bound of the gain" if selection == "lcb" else "mean nDCG@10"
    sort_key = "gain_lcb" if selection == "lcb" else "ndcg@10"
    print(f"best per passage variant and fusion method (by {by}):")
    print(header)
    seen = set()
    for row in sorted(grid, key=lambda g: -(g[sort_key] if g[sort_key] is not None else -math.inf)):
        key = (row["passages"], row["meta_placement"], row["fusion"])
        if key in seen:
            continue
        seen.add(key)
        print("  ".join(f"{_cell(row[c]):<14}" for c in [*columns, *metrics]))
    print(f"choice: {_describe(best)}")
    print(f"choice without fusion: {_describe(best_alone)}")
    if best["gain_lcb"] is not None and best["gain_lcb"] <= 0:
        print(
            f"no setting lifts this first stage reliably (best 90% lower bound of the gain: {best['gain_lcb']:+.4f}); "
            "the choice is the one that risks least, and the first stage alone may serve as well"
        )


def _describe(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_cell(v)}" for k, v in row.items())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 or value != int(value) else str(value)
    return str(value)
