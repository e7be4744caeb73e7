"""Evaluators: STS correlation through the scorer, and IR metrics checked against hand-computed values."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest

from haystack_crossrerank.evaluation import STSEvaluator, evaluate_rankings
from haystack_crossrerank.evaluation.retrieval import paired_gain


class FixedScorer:
    def __init__(self, scores: dict[tuple[str, str], float]) -> None:
        self.scores = scores
        self.calls: list[list[tuple[str, str]]] = []

    def predict(self, pairs: list[tuple[str, str]], batch_size: int | None = None) -> list[float]:
        self.calls.append(list(pairs))
        return [self.scores[p] for p in pairs]


def test_sts_evaluator_returns_pearson_and_spearman_and_appends_csv(tmp_path: Path) -> None:
    pairs = [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")]
    scorer = FixedScorer({("a", "b"): 0.1, ("c", "d"): 0.4, ("e", "f"): 0.3, ("g", "h"): 0.9})
    evaluator = STSEvaluator(pairs, [0.0, 0.5, 0.6, 1.0], name="toy", output_path=tmp_path / "sts.csv")
    metrics = evaluator(scorer, extra={"step": 7})  # type: ignore[arg-type]
    assert set(metrics) == {"toy_pearson", "toy_spearman"}
    assert metrics["toy_spearman"] == pytest.approx(0.8)  # ranks (1,3,2,4) vs (1,2,3,4)
    x, y = [0.1, 0.4, 0.3, 0.9], [0.0, 0.5, 0.6, 1.0]
    mx, my = sum(x) / 4, sum(y) / 4
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    pearson = cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert metrics["toy_pearson"] == pytest.approx(pearson)
    evaluator(scorer, extra={"step": 8})  # type: ignore[arg-type]
    rows = list(csv.DictReader((tmp_path / "sts.csv").open()))
    assert [r["step"] for r in rows] == ["7", "8"]
    assert evaluator.primary_metric_name == "toy_spearman"


def test_symmetric_evaluation_averages_both_orders() -> None:
    scorer = FixedScorer({("a", "b"): 0.2, ("b", "a"): 0.4, ("c", "d"): 0.9, ("d", "c"): 0.7})
    evaluator = STSEvaluator([("a", "b"), ("c", "d")], [0.0, 1.0], symmetric=True)
    assert evaluator.predict(scorer) == pytest.approx([0.3, 0.8])  # type: ignore[arg-type]
    assert scorer.calls == [[("a", "b"), ("c", "d")], [("b", "a"), ("d", "c")]]


def test_sts_evaluator_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length, but got 2 and 1"):
        STSEvaluator([("a", "b"), ("c", "d")], [1.0])
    with pytest.raises(ValueError, match="at least 2 pairs, but got 1"):
        STSEvaluator([("a", "b")], [1.0])


def test_ranking_metrics_match_hand_computed_values() -> None:
    qrels = {"q1": {"d1": 1, "d3": 2}, "q2": {"d9": 1}}
    rankings = {"q1": ["d2", "d3", "d1"], "q2": [f"x{i}" for i in range(10)] + ["d9"]}
    metrics = evaluate_rankings(qrels, rankings)
    # trec_eval (and so BEIR) uses the relevance itself as the gain: q1 has d3 (rel 2) at rank 2, d1 (rel 1) at 3
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    # q2: its one relevant document is at rank 11: nDCG@10 = 0, MRR@10 = 0, but Recall@100 = 1, MAP = 1/11
    assert metrics["ndcg@10"] == pytest.approx((dcg / idcg + 0.0) / 2)
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 0.0) / 2)
    assert metrics["recall@100"] == pytest.approx((1.0 + 1.0) / 2)
    assert metrics["map@100"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 11) / 2)


def test_unranked_query_counts_as_zero() -> None:
    metrics = evaluate_rankings({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": ["d1"]})
    assert metrics["ndcg@10"] == pytest.approx(0.5)
    assert metrics["mrr@10"] == pytest.approx(0.5)


def test_paired_gain_is_the_mean_per_query_difference_with_a_90_percent_interval() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d1": 1}, "q3": {"d1": 1}}
    first = {"q1": ["d2", "d1"], "q2": ["d1", "d2"], "q3": ["d2", "d1"]}
    # q1 moves its relevant document from rank 2 to 1 (nDCG 1/log2(3) -> 1), q2 keeps it first, q3 is not reranked
    reranked = {"q1": ["d1", "d2"], "q2": ["d1", "d2"]}
    found = paired_gain(qrels, first, reranked)
    gains = [1 - 1 / math.log2(3), 0.0]  # paired on the reranked queries only
    mean = sum(gains) / 2
    half = 1.6449 * statistics.stdev(gains) / math.sqrt(2)
    assert found["gain"] == pytest.approx(mean, abs=1e-4)
    assert found["gain_ci90"] == pytest.approx([mean - half, mean + half], abs=1e-4)
    assert paired_gain(qrels, first, {"q1": ["d1", "d2"]}) == {"gain": round(gains[0], 4), "gain_ci90": None}
    assert paired_gain(qrels, first, first)["gain_ci90"] == [0.0, 0.0]
