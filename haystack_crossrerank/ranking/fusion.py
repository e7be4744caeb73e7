"""Combining the cross-encoder's score with the retriever's, per query."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

logger = logging.getLogger(__name__)

FUSION_METHODS: tuple[str, ...] = ("minmax", "zscore", "rrf")
RRF_K = 60


def fuse_scores(
    reranker_scores: Sequence[float],
    retriever_scores: Sequence[float | None],
    *,
    method: str,
    weight: float,
) -> list[float]:
    """
    Combine two scores per document, for one query.

    With `w = weight`:

    - `"minmax"`: `w * mm(reranker) + (1 - w) * mm(retriever)`, where `mm(x) = (x - min) / (max - min)`
      over this query's documents (0 when all are equal).
    - `"zscore"`: `w * z(reranker) + (1 - w) * z(retriever)`, where `z(x) = (x - mean) / std` over this
      query's documents (0 when all are equal).
    - `"rrf"`: `w / (60 + rank_reranker) + (1 - w) / (60 + rank_retriever)`, ranks counted from 1.

    A document that arrives without a retriever score gets the lowest normalised retriever score among
    the documents of the query (for `"rrf"`: the last retriever rank). If no document has one, the
    retriever side carries no information: a warning is logged and the reranker scores come back unchanged.

    :param reranker_scores: The cross-encoder's scores.
    :param retriever_scores: The incoming scores, `None` where a document had none.
    :param method: One of `"minmax"`, `"zscore"`, `"rrf"`.
    :param weight: The reranker's weight in [0, 1].
    :returns: The fused scores, in the input order.
    :raises ValueError: If the method is unknown, the weight is outside [0, 1] or the lengths differ.
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"`method` must be one of {list(FUSION_METHODS)}, but got {method!r}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"`weight` must be in [0, 1], but got {weight}")
    if len(reranker_scores) != len(retriever_scores):
        raise ValueError(
            f"reranker and retriever scores must have the same length, but got {len(reranker_scores)} "
            f"and {len(retriever_scores)}"
        )
    known = [s for s in retriever_scores if s is not None]
    if not known:
        logger.warning("Score fusion is on, but no document has a retriever score: using the reranker score alone")
        return [float(s) for s in reranker_scores]
    floor = min(known)
    retriever = [float(s) if s is not None else floor for s in retriever_scores]
    reranker = [float(s) for s in reranker_scores]
    if method == "rrf":
        # Missing retriever scores rank last (ties share the rank of the first of them).
        missing = {i for i, s in enumerate(retriever_scores) if s is None}
        ret_ranks = _ranks([-math.inf if i in missing else s for i, s in enumerate(retriever)])
        rer_ranks = _ranks(reranker)
        return [weight / (RRF_K + a) + (1.0 - weight) / (RRF_K + b) for a, b in zip(rer_ranks, ret_ranks, strict=True)]
    normalise = _minmax if method == "minmax" else _zscore
    return [weight * a + (1.0 - weight) * b for a, b in zip(normalise(reranker), normalise(retriever), strict=True)]


def _minmax(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    if high == low:
        return [0.0] * len(values)
    return [(v - low) / (high - low) for v in values]


def _zscore(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if std == 0.0:
        return [0.0] * len(values)
    return [(v - mean) / std for v in values]


def _ranks(values: list[float]) -> list[int]:
    """1-based ranks, highest value first; ties take the rank of the first of them in a stable order."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0] * len(values)
    previous: float | None = None
    rank = 0
    for position, index in enumerate(order, start=1):
        if values[index] != previous:
            rank = position
            previous = values[index]
        ranks[index] = rank
    return ranks
