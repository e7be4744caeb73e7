"""On a real STS-trained MiniLM and real SciFact *training* claims: passage mode beats document mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA


@pytest.mark.slow
def test_sentence_passages_beat_whole_documents_on_scifact_train_claims(short_trained_minilm: Path) -> None:
    if not (SHARED_DATA / "scifact").is_dir():
        pytest.skip("../shared/data/scifact is not beside the checkout")
    from haystack_crossrerank import CrossEncoderRanker
    from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
    from haystack_crossrerank.retrievers.stages import bm25_candidates

    data, candidates = bm25_candidates(str(SHARED_DATA), queries=None, depth=20, split="train")
    claims = sorted(q for q in data.queries if data.qrels.get(q))[:12]
    ndcg = {}
    for mode in ("document", "sentences"):
        ranker = CrossEncoderRanker(
            model=str(short_trained_minilm), meta_fields_to_embed=["title"], passages=mode, top_k=20
        )
        rankings = {
            q: [d.id for d in ranker.run(query=data.queries[q], documents=candidates[q])["documents"]] for q in claims
        }
        ndcg[mode] = evaluate_rankings({q: data.qrels[q] for q in claims}, rankings)["ndcg@10"]
    print(f"nDCG@10 on {len(claims)} SciFact train claims, BM25 top 20: {ndcg}")
    assert ndcg["sentences"] > ndcg["document"] + 0.1
