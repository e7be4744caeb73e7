"""Ranking metrics from trec_eval (through `pytrec_eval`), averaged over queries."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from haystack_crossrerank.utils.extras import require

METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@100")


def ranked_run(rankings: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """
    Turn ranked lists of document ids into a trec run whose scores encode the ranks exactly.

    trec_eval orders by score and breaks ties by document id, so passing raw scores could reorder tied
    documents; here the first document gets the highest score and every score is distinct.

    :param rankings: query id -> document ids, best first.
    :returns: query id -> {doc id: score}.
    """
    return {q: {d: float(len(ids) - rank) for rank, d in enumerate(ids)} for q, ids in rankings.items()}


def evaluate_rankings(
    qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """
    nDCG@10, MRR@10, Recall@100 and MAP@100 of ranked lists, averaged over the judged queries.

    A judged query with no ranking counts as 0 for every metric.

    :param qrels: query id -> {doc id: relevance}.
    :param rankings: query id -> document ids, best first.
    :returns: `{"ndcg@10": ..., "mrr@10": ..., "recall@100": ..., "map@100": ...}`.
    """
    pytrec_eval = require("pytrec_eval", "bench")
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    full = ranked_run({q: list(rankings.get(q, [])) for q in judged})
    top10 = ranked_run({q: list(rankings.get(q, []))[:10] for q in judged})
    deep = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100", "map_cut.100"}).evaluate(full)
    shallow = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    totals = dict.fromkeys(METRICS, 0.0)
    for q in judged:
        totals["ndcg@10"] += deep.get(q, {}).get("ndcg_cut_10", 0.0)
        totals["recall@100"] += deep.get(q, {}).get("recall_100", 0.0)
        totals["map@100"] += deep.get(q, {}).get("map_cut_100", 0.0)
        totals["mrr@10"] += shallow.get(q, {}).get("recip_rank", 0.0)
    return {name: value / len(judged) for name, value in totals.items()}


def per_query_ndcg10(qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """
    nDCG@10 of each judged query, from trec_eval as in :func:`evaluate_rankings` (their mean is its `ndcg@10`).

    :param qrels: query id -> {doc id: relevance}.
    :param rankings: query id -> document ids, best first.
    :returns: query id -> nDCG@10 (0 for a judged query with no ranking).
    """
    pytrec_eval = require("pytrec_eval", "bench")
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    full = ranked_run({q: list(rankings.get(q, [])) for q in judged})
    found = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10"}).evaluate(full)
    return {q: found.get(q, {}).get("ndcg_cut_10", 0.0) for q in judged}


CI90_Z = 1.6449  # two-sided 90%


def standard_error(values: Sequence[float]) -> float | None:
    """The standard error of the mean of `values` (`None` with fewer than two: no spread to measure)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def paired_gain(
    qrels: Mapping[str, Mapping[str, int]], first: Mapping[str, Sequence[str]], rankings: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """
    The mean per-query nDCG@10 gain of `rankings` over `first` on the queries of `rankings`, with its two-sided
    90% interval (normal approximation of the paired differences; `None` with fewer than two queries).

    :param qrels: query id -> {doc id: relevance}.
    :param first: The first stage's rankings (a superset of the queries of `rankings`).
    :param rankings: The rankings compared with it.
    :returns: `{"gain": ..., "gain_ci90": [low, high] or None}`, rounded to 4 places.
    """
    judged = {q: qrels[q] for q in rankings}
    after = per_query_ndcg10(judged, rankings)
    before = per_query_ndcg10(judged, {q: first[q] for q in rankings})
    gains = [after[q] - before[q] for q in judged]
    if not gains:
        return {"gain": None, "gain_ci90": None}
    mean, error = statistics.fmean(gains), standard_error(gains)
    interval = None if error is None else [round(mean - CI90_Z * error, 4), round(mean + CI90_Z * error, 4)]
    return {"gain": round(mean, 4), "gain_ci90": interval}
