"""The main job, end to end on the offline default: the project's cross-encoder scores STS-B and reranks
BM25 candidates for SciFact claims through the `bm25_rerank.yaml` pipeline."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from haystack_crossrerank.data.beir import load_beir
from haystack_crossrerank.data.sts import load_sts
from haystack_crossrerank.evaluation.sts import STSEvaluator
from haystack_crossrerank.pipelines import load_pipeline, pipeline_path
from haystack_crossrerank.scoring import CrossEncoderScorer

logger = logging.getLogger(__name__)


def run_demo(model: Path, *, data_dir: str | None, queries: int = 3) -> dict[str, Any]:
    """
    Evaluate `model` on STS-B test and rerank BM25's top 20 for a few SciFact test claims.

    :param model: A cross-encoder folder.
    :param data_dir: The folder with `stsb/` and `scifact/` (or `None` for the hub).
    :param queries: How many SciFact claims to show.
    :returns: The STS-B metrics and the reranked results.
    """
    start = time.perf_counter()
    sts = STSEvaluator.from_data(load_sts("test", data_dir), name="stsb-test")(
        CrossEncoderScorer(model, precision="fp32", batch_size=64)
    )
    print(
        f"\nSTS-B test with {model}: pearson {sts['stsb-test_pearson']:.4f}, spearman {sts['stsb-test_spearman']:.4f}"
    )

    from haystack import Document
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from haystack_crossrerank.first_stage import STORE_INDEX

    data = load_beir(data_dir or "hub", "test", dataset="scifact")
    InMemoryDocumentStore(index=STORE_INDEX).delete_all_documents()
    load_pipeline(pipeline_path("indexing_bm25")).run(
        {
            "writer": {
                "documents": [
                    Document(id=i, content=d["text"], meta={"title": d["title"]}) for i, d in data.corpus.items()
                ]
            }
        }
    )
    pipeline = load_pipeline(
        pipeline_path("bm25_rerank"), model=str(model), overrides={"retriever": {"top_k": 20}, "ranker": {"top_k": 3}}
    )
    shown = []
    for query_id, text in list(data.queries.items())[:queries]:
        out = pipeline.run(
            {"retriever": {"query": text}, "ranker": {"query": text}}, include_outputs_from={"retriever"}
        )
        bm25_top = [d.id for d in out["retriever"]["documents"][:3]]
        print(f"\nclaim {query_id}: {text}")
        print(f"  relevant: {sorted(data.qrels[query_id])}   BM25 top 3: {bm25_top}")
        for rank, doc in enumerate(out["ranker"]["documents"], start=1):
            title = (doc.meta.get("title") or "")[:70]
            print(f"  {rank}. {doc.score:.3f}  [{doc.id}] {title}")
        shown.append({"query_id": query_id, "reranked": [d.id for d in out["ranker"]["documents"]], "bm25": bm25_top})
    print(
        "\nThis model was trained on STS-B sentence pairs: it judges whether two sentences mean the same, which is"
        "\nnot the same as whether an abstract answers a claim. See `crossrerank bench` for what it does to"
        "\nretrieval, and `crossrerank train --task retrieval` for a reranker trained on relevance judgments."
    )
    return {"model": str(model), **sts, "queries": shown, "seconds": round(time.perf_counter() - start, 1)}
