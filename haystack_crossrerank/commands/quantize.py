"""`crossrerank quantize`'s data: in-domain (query, text) pairs from a BEIR set's train queries, to calibrate the
exported int8 model, check it against fp32 (the gate) and distil it.

The exported backends take pairs and know nothing of BEIR, BM25 or the ranker; building the pairs is this
command's job.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from haystack import Document

from haystack_crossrerank.data.beir import load_beir
from haystack_crossrerank.evaluation.rerank import text_ranker
from haystack_crossrerank.training.mining import bm25_candidates_for


def _calibration_query_count(available: int, count: int, depth: int) -> int:
    # A document gives one whole-text pair and about four window pairs: 2 * count / 5 queries at depth 10 is
    # enough, with room to spare.
    return min(available, max(4, (2 * count) // max(depth, 1) + 8))


# The front of the seeded shuffle of a BEIR set's train queries is reserved: the calibration and gate pairs are
# drawn from its start (:func:`calibration_query_ids`), and the claims from position 100 on are left for measuring
# the int8 model. Distillation pairs (:func:`beir_distillation_pairs`) come from the queries after it.
RESERVED_QUERIES = 150


def _shuffled(query_ids: Iterable[str], seed: int) -> list[str]:
    ids = sorted(query_ids)
    random.Random(seed).shuffle(ids)
    return ids


def distillation_query_ids(query_ids: Iterable[str], *, count: int = 256, depth: int = 10, seed: int = 42) -> list[str]:
    """
    The train queries that :func:`beir_distillation_pairs` draws from: those after the reserved front of the
    shuffle (:data:`RESERVED_QUERIES`, or the calibration's draw for the same arguments where that is longer).

    :param query_ids: The train split's query ids.
    :param count: The calibration's pair count (as in :func:`beir_calibration_pairs`).
    :param depth: The calibration's depth.
    :param seed: The shuffle's seed, the calibration's.
    :returns: The query ids, in shuffled order.
    """
    ids = _shuffled(query_ids, seed)
    return ids[max(RESERVED_QUERIES, _calibration_query_count(len(ids), count, depth)) :]


def calibration_query_ids(query_ids: Iterable[str], *, count: int = 256, depth: int = 10, seed: int = 42) -> list[str]:
    """
    The train queries that :func:`beir_calibration_pairs` draws its calibration and held-out pairs from, for
    the same arguments: queries outside them are free for measuring the int8 model.

    :param query_ids: The train split's query ids.
    :param count: As in :func:`beir_calibration_pairs`.
    :param depth: As in :func:`beir_calibration_pairs`.
    :param seed: As in :func:`beir_calibration_pairs`.
    :returns: The drawn query ids, in the order they are drawn.
    """
    ids = _shuffled(query_ids, seed)
    return ids[: _calibration_query_count(len(ids), count, depth)]


def beir_calibration_pairs(
    data_dir: str | Path, *, dataset: str = "scifact", count: int = 256, depth: int = 10, seed: int = 42
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """
    In-domain calibration and held-out pairs from a BEIR set's *train* queries: each query with its BM25
    candidates, both as whole documents (title and text) and as the sentence windows the shipped pipelines
    score, so that int8 is calibrated and checked on what it will see. The two lists come from disjoint
    queries.

    :param data_dir: The BEIR folder (or one holding `<dataset>/`).
    :param dataset: The data set name.
    :param count: Pairs in each list.
    :param depth: BM25 candidates per query.
    :param seed: Shuffles the queries and the pairs.
    :returns: (calibration pairs, held-out pairs).
    :raises ValueError: If the train split has too few queries for two lists of `count` pairs.
    """

    data = load_beir(data_dir, "train", dataset=dataset)
    query_ids = sorted(data.queries)
    rng = random.Random(seed)
    rng.shuffle(query_ids)
    chosen = query_ids[: _calibration_query_count(len(query_ids), count, depth)]
    ranker = text_ranker()
    ranker.passages = "windows"
    candidates = bm25_candidates_for(data, chosen, depth)
    halves: list[list[tuple[str, str]]] = [[], []]
    for position, query_id in enumerate(chosen):
        query = data.queries[query_id]
        for doc_id, _ in candidates[query_id]:
            whole, windows = _document_texts(ranker, data.corpus[doc_id])
            halves[position % 2].extend((query, text) for text in [whole, *windows])
    if min(len(h) for h in halves) < count:
        raise ValueError(
            f"{dataset} train gives {len(halves[0])} and {len(halves[1])} pairs from {len(chosen)} queries, "
            f"but {count} are needed in each list: pass a smaller count"
        )
    return rng.sample(halves[0], count), rng.sample(halves[1], count)


def _document_texts(ranker: Any, doc: dict[str, str]) -> tuple[str, list[str]]:
    """A BEIR document as the shipped pipelines score it: the whole text (title and text) and its sentence windows."""
    document = Document(content=doc["text"], meta={"title": doc["title"]})
    return ranker.document_text(document), [p.text for p in ranker.document_passages(document)]


def beir_distillation_pairs(
    data_dir: str | Path,
    *,
    dataset: str = "scifact",
    queries: int | None = None,
    documents: int = 2,
    windows: int = 6,
    depth: int = 30,
    calibration_count: int = 256,
    seed: int = 42,
) -> list[tuple[str, str]]:
    """
    In-domain pairs to distil an int8 model on (:mod:`haystack_crossrerank.exported.distil`): train queries
    outside the calibration, the gate and the measured claims (:func:`distillation_query_ids`), each
    with a few of its BM25 candidates, as whole documents and as sentence windows (what the shipped pipelines
    score). No labels are read: the fp32 model's scores are the targets.

    :param data_dir: The BEIR folder (or one holding `<dataset>/`).
    :param dataset: The data set name.
    :param queries: At most this many queries; `None`: all of them.
    :param documents: Candidates per query, drawn from its BM25 top `depth`.
    :param windows: Sentence windows per candidate, drawn from its windows (all of them if it has fewer).
    :param depth: BM25 candidates to draw from.
    :param calibration_count: The calibration's pair count, so that its queries are left out whatever it is.
    :param seed: The shuffle's seed (the calibration's) and the draws'.
    :returns: (query, text) pairs.
    :raises ValueError: If no query is left after the reserved ones, or a count is not positive.
    """

    if documents < 1 or windows < 0 or depth < 1 or (queries is not None and queries < 1):
        raise ValueError(
            f"beir_distillation_pairs needs documents >= 1, windows >= 0, depth >= 1 and queries >= 1 or None, "
            f"but got documents={documents}, windows={windows}, depth={depth}, queries={queries}"
        )
    data = load_beir(data_dir, "train", dataset=dataset)
    chosen = distillation_query_ids(data.queries, count=calibration_count, seed=seed)[:queries]
    if not chosen:
        raise ValueError(
            f"{dataset} train has {len(data.queries)} queries, none after the {RESERVED_QUERIES} reserved for "
            "calibration, the gate and measuring: distillation needs more train queries"
        )
    ranker = text_ranker()
    ranker.passages = "windows"
    candidates = bm25_candidates_for(data, chosen, depth)
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    for query_id in chosen:
        query = data.queries[query_id]
        found = [doc_id for doc_id, _ in candidates[query_id]]
        for doc_id in rng.sample(found, min(documents, len(found))):
            whole, passages = _document_texts(ranker, data.corpus[doc_id])
            pairs.append((query, whole))
            pairs.extend((query, text) for text in rng.sample(passages, min(windows, len(passages))))
    return pairs
