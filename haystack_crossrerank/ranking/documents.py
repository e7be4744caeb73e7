"""The Documents a ranker receives: checking them, and keeping one per id."""

from __future__ import annotations

import math
from typing import Any

from haystack import Document

from haystack_crossrerank.ranking.passages import AGGREGATIONS, PASSAGE_MODES
from haystack_crossrerank.utils.checks import check_choice, check_int, check_number


def deduplicate_documents(documents: list[Document]) -> list[Document]:
    """
    Keep one Document per id: the one with the highest incoming score (a missing score counts as lowest).

    The survivors keep the position where their id first appeared, as Haystack's rankers do.

    :param documents: Documents, possibly with repeated ids.
    :returns: Documents with distinct ids.
    """
    best: dict[str, Document] = {}
    for doc in documents:
        kept = best.get(doc.id)
        if kept is None or _score_or_lowest(doc) > _score_or_lowest(kept):
            best[doc.id] = doc
    return list(best.values())


def _score_or_lowest(doc: Document) -> float:
    return doc.score if doc.score is not None else -math.inf


def check_inputs(query: Any, documents: Any) -> None:
    """
    :raises TypeError: If `query` is not a str, or `documents` is not a list of Documents (naming the first bad one).
    :raises ValueError: If `query` is empty or blank.
    """
    if not isinstance(query, str):
        raise TypeError(f"`query` must be a str, but got {type(query).__name__} {query!r}")
    if not query.strip():
        raise ValueError(f"`query` must be a non-empty string, but got {query!r}")
    if not isinstance(documents, list):
        raise TypeError(f"`documents` must be a list of Document, but got {type(documents).__name__}")
    for position, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise TypeError(f"`documents[{position}]` must be a Document, but got {type(doc).__name__} {doc!r}")


def check_overrides(
    top_k: Any, scale_score: Any, score_threshold: Any, passages: Any, aggregation: Any, max_passages: Any
) -> None:
    """
    Check the ranker's per-call overrides of its settings; `None` means "not overridden" for each.

    :raises TypeError: If an override has the wrong type.
    :raises ValueError: If `top_k` or `max_passages` is not > 0, or `passages` or `aggregation` is not a known one.
    """
    check_int("top_k", top_k, minimum=1, optional=True)
    if scale_score is not None and not isinstance(scale_score, bool):
        raise TypeError(f"`scale_score` must be a bool, but got {type(scale_score).__name__} {scale_score!r}")
    check_number("score_threshold", score_threshold, optional=True)
    if passages is not None:
        check_choice("passages", passages, PASSAGE_MODES)
    if aggregation is not None:
        check_choice("aggregation", aggregation, AGGREGATIONS)
    check_int("max_passages", max_passages, minimum=1, optional=True)
