"""Score fusion: the formulas, missing retriever scores, and the ranker's use of them."""

from __future__ import annotations

import logging

import pytest
from haystack import Document

from haystack_crossrerank import CrossEncoderRanker
from haystack_crossrerank.ranking.fusion import fuse_scores


def test_minmax_is_a_weighted_sum_of_per_query_minmax_scores() -> None:
    fused = fuse_scores([0.0, 5.0, 10.0], [30.0, 10.0, 20.0], method="minmax", weight=0.25)
    # reranker -> [0, .5, 1]; retriever -> [1, 0, .5]
    assert fused == pytest.approx([0.75, 0.125, 0.625])


def test_zscore_normalises_by_mean_and_population_std() -> None:
    fused = fuse_scores([1.0, 3.0], [10.0, 10.0], method="zscore", weight=0.5)
    assert fused == pytest.approx([-0.5, 0.5])  # constant retriever side contributes 0


def test_rrf_uses_ranks_with_k_60() -> None:
    fused = fuse_scores([0.9, 0.1], [1.0, 2.0], method="rrf", weight=0.5)
    assert fused == pytest.approx([0.5 / 61 + 0.5 / 62, 0.5 / 62 + 0.5 / 61])


def test_missing_retriever_scores_get_the_lowest_value() -> None:
    assert fuse_scores([1.0, 0.0, 0.5], [2.0, None, 4.0], method="minmax", weight=0.0) == pytest.approx([0.0, 0.0, 1.0])
    ranks = fuse_scores([0.0, 0.0, 0.0], [None, 1.0, 2.0], method="rrf", weight=0.0)
    assert ranks == pytest.approx([1 / 63, 1 / 62, 1 / 61])


def test_no_retriever_scores_returns_reranker_scores_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert fuse_scores([0.3, 0.7], [None, None], method="zscore", weight=0.5) == [0.3, 0.7]
    assert "no document has a retriever score" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "max", "weight": 0.5}, "`method` must be one of"),
        ({"method": "rrf", "weight": -0.1}, r"`weight` must be in \[0, 1\], but got -0.1"),
    ],
)
def test_bad_fusion_settings_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fuse_scores([1.0], [1.0], **kwargs)


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same length, but got 2 and 1"):
        fuse_scores([1.0, 2.0], [1.0], method="minmax", weight=0.5)


def test_ranker_with_fusion_orders_by_the_fused_score() -> None:
    class Scorer:
        def score(self, pairs: list, **_: object) -> list[float]:
            return {"a": [0.0, 1.0, 2.0]}["a"][: len(pairs)]

    ranker = CrossEncoderRanker(model="unused/model", scale_score=False, fusion="minmax", fusion_weight=0.5)
    ranker._scorer = Scorer()  # type: ignore[assignment]
    docs = [
        Document(id="x", content="x", score=10.0),
        Document(id="y", content="y", score=0.0),
        Document(id="z", content="z", score=1.0),
    ]
    out = ranker.run(query="q", documents=docs)["documents"]
    # reranker minmax [0, .5, 1], retriever minmax [1, 0, .1]: fused x .5, y .25, z .55
    assert [d.id for d in out] == ["z", "x", "y"]
    assert [d.score for d in out] == pytest.approx([0.55, 0.5, 0.25])
