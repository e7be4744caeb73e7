"""The main job, end to end on the offline default: the project's cross-encoder scores STS-B and reranks
BM25 candidates for SciFact claims through the shipped `bm25_rerank.yaml` pipeline (passages and fusion)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from haystack_crossrerank.data.beir import load_beir
from haystack_crossrerank.data.sts import load_sts
from haystack_crossrerank.evaluation.sts import STSEvaluator
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path

logger = logging.getLogger(__name__)


def run_demo(model: Path, *, data_dir: str | None, queries: int = 2, examine: int = 30) -> dict[str, Any]:
    """
    Evaluate `model` on STS-B test, then run the shipped `bm25_rerank.yaml` pipeline on SciFact test claims:
    show claims whose relevant abstract the reranker moved up, with the sentence that matched, and count how
    often it moved the relevant abstract up, down or not at all.

    :param model: A cross-encoder folder.
    :param data_dir: The folder with `stsb/` and `scifact/` (or `None` for the hub).
    :param queries: How many claims to show.
    :param examine: How many claims (in file order) to run.
    :returns: The STS-B metrics and the reranked results.
    """
    start = time.perf_counter()
    sts = STSEvaluator.from_data(load_sts("test", data_dir), name="stsb-test")(
        CrossEncoderScorer(model, precision="fp32", batch_size=64)
    )
    print(
        f"\nSTS-B test with {model}: pearson {sts['stsb-test_pearson']:.4f}, spearman {sts['stsb-test_spearman']:.4f}"
    )

    from haystack_crossrerank.retrievers.stages import corpus_documents, first_stage, index_corpus

    data = load_beir(data_dir or "hub", "test", dataset="scifact")
    index_corpus(data, first_stage("bm25").indexing)
    pipeline = load_pipeline(pipeline_path("bm25_rerank"), model=str(model))
    ranker = pipeline.get_component("ranker")
    settings = {k: getattr(ranker, k) for k in ("passages", "aggregation", "fusion", "fusion_weight")}
    print(f"\nSciFact test claims through pipelines/bm25_rerank.yaml (ranker settings: {settings})")
    titles = {doc.id: doc.meta.get("title") or "" for doc in corpus_documents(data.corpus)}
    moves = {"up": 0, "down": 0, "same": 0}
    shown: list[dict[str, Any]] = []
    examined = list(data.queries.items())[:examine]
    for query_id, text in examined:
        # top_k above the retriever's depth: the whole reranked list, to see where the relevant abstract went
        out = pipeline.run(
            {"retriever": {"query": text}, "ranker": {"query": text, "top_k": 10_000}},
            include_outputs_from={"retriever"},
        )
        before = [d.id for d in out["retriever"]["documents"]]
        ranked = [d.id for d in out["ranker"]["documents"]]
        relevant = [d for d in data.qrels[query_id] if d in before]
        if not relevant:
            continue
        old, new = min(before.index(d) for d in relevant), min(ranked.index(d) for d in relevant)
        moves["up" if new < old else "down" if new > old else "same"] += 1
        if new < old and len(shown) < queries:
            print(f"\nclaim {query_id}: {text}")
            print(f"  relevant abstract {relevant[0]} ({titles[relevant[0]][:70]}): BM25 rank {old + 1} -> {new + 1}")
            for rank, doc in enumerate(out["ranker"]["documents"][:3], start=1):
                mark = "*" if doc.id in data.qrels[query_id] else " "
                print(f"  {rank}.{mark} {doc.score:.3f}  [{doc.id}] {titles[doc.id][:70]}")
                if "crossrerank_passage" in doc.meta:
                    print(f"        matched: {doc.meta['crossrerank_passage'][:150]}")
            shown.append({"query_id": query_id, "bm25_rank": old + 1, "reranked_rank": new + 1, "top": ranked[0]})
    print(
        f"\nOf the first {len(examined)} test claims, {sum(moves.values())} have a relevant abstract among BM25's"
        f" candidates: the reranker moved the best relevant abstract up for {moves['up']}, down for"
        f" {moves['down']} and left it for {moves['same']}. `crossrerank bench` measures the whole test set."
    )
    return {
        "model": str(model),
        **sts,
        "queries": shown,
        "moves": moves,
        "seconds": round(time.perf_counter() - start, 1),
    }
