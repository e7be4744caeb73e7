"""Evaluators that score through the shared `CrossEncoderScorer`, and ranking metrics."""

from haystack_crossrerank.evaluation.report import write_report
from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
from haystack_crossrerank.evaluation.sts import STSEvaluator

__all__ = ["STSEvaluator", "evaluate_rankings", "write_report"]
