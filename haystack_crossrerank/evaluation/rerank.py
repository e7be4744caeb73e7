"""Reranking evaluation on a BEIR set: the ranker's document text, and nDCG@10 of reranking fixed candidates."""

from __future__ import annotations

import logging
import math
from typing import Any

from haystack_crossrerank.data.beir import BeirData
from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
from haystack_crossrerank.ranking.passages import document_passages

# Passages scored per document in sentence mode (the title counts), to bound an evaluation's cost.
MAX_EVAL_PASSAGES = 16

logger = logging.getLogger(__name__)


def text_ranker() -> Any:
    """A ranker that is never warmed up (no weights load): it only builds the texts, as the shipped pipelines do."""
    from haystack_crossrerank.ranker import CrossEncoderRanker

    return CrossEncoderRanker(model="text-only", meta_fields_to_embed=["title"])


def document_text(doc: dict[str, str], ranker: Any = None) -> str:
    """
    The text the ranker pairs with a query in document mode (title, `"\\n"`, text), so training sees exactly
    what the ranker sends.

    :param doc: `{"title", "text"}`.
    :param ranker: From :func:`text_ranker` (made anew if not given).
    :returns: The text.
    """
    from haystack import Document

    ranker = ranker if ranker is not None else text_ranker()
    return str(ranker.document_text(Document(content=doc["text"], meta={"title": doc["title"]})))


class RerankEvaluator:
    """
    nDCG@10 (and MRR@10) of reranking fixed candidates with the scorer: each document scored whole (`passages=
    "document"`, as document mode sends it), or by its best passage (`"sentences"`: the title and each sentence,
    as sentence mode cuts it, the first :data:`MAX_EVAL_PASSAGES`).
    """

    def __init__(
        self,
        data: BeirData,
        candidates: dict[str, list[tuple[str, float]]],
        *,
        name: str,
        max_length: int | None = None,
        passages: str = "document",
    ) -> None:
        if passages not in ("document", "sentences"):
            raise ValueError(f"`passages` must be 'document' or 'sentences', but got {passages!r}")
        self.data = data
        self.candidates = candidates
        self.name = name
        self.max_length = max_length
        self.passages = passages

    @property
    def primary_metric_name(self) -> str:
        return f"{self.name}_ndcg@10"

    def __call__(self, scorer: Any, *, extra: dict[str, Any] | None = None) -> dict[str, float]:
        pairs, owners = [], []
        texts = text_ranker()
        for query_id, docs in self.candidates.items():
            for doc_id, _ in docs:
                for text in self._texts(self.data.corpus[doc_id], texts):
                    pairs.append((self.data.queries[query_id], text))
                    owners.append((query_id, doc_id))
        scores = scorer.score(pairs, max_length=self.max_length)  # for this evaluation only
        best: dict[tuple[str, str], float] = {}
        for owner, score in zip(owners, scores, strict=True):
            best[owner] = max(best.get(owner, -math.inf), float(score))
        per_query: dict[str, list[tuple[str, float]]] = {}
        for (query_id, doc_id), score in best.items():
            per_query.setdefault(query_id, []).append((doc_id, score))
        rankings = {q: [d for d, _ in sorted(v, key=lambda x: -x[1])] for q, v in per_query.items()}
        metrics = evaluate_rankings({q: self.data.qrels[q] for q in self.candidates}, rankings)
        result = {f"{self.name}_ndcg@10": metrics["ndcg@10"], f"{self.name}_mrr@10": metrics["mrr@10"]}
        logger.info("%s: nDCG@10 %.4f, MRR@10 %.4f", self.name, metrics["ndcg@10"], metrics["mrr@10"])
        return result

    def _texts(self, doc: dict[str, str], texts: Any) -> list[str]:
        if self.passages == "document":
            return [document_text(doc, texts)]
        found = document_passages(doc["text"], doc["title"], mode="sentences", max_passages=MAX_EVAL_PASSAGES)
        return [p.text for p in found]
