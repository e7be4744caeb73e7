"""Pearson and Spearman correlation between a cross-encoder's scores and gold similarity scores."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from haystack_crossrerank.data.sts import PairData
from haystack_crossrerank.evaluation.report import write_report
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from haystack_crossrerank.utils.extras import require

logger = logging.getLogger(__name__)


class STSEvaluator:
    """
    Correlates a cross-encoder's scores with gold scores on sentence pairs (STS-B or any pair data set).

    Scores are the model's `predict` output (its saved activation, sigmoid by default), as
    sentence-transformers' `CrossEncoderCorrelationEvaluator` computes them. With `symmetric=True`, each pair
    is also scored in the other order and the two scores are averaged (STS is a symmetric task).

    Usage example:

    ```python
    from haystack_crossrerank import CrossEncoderScorer
    from haystack_crossrerank.data import load_sts
    from haystack_crossrerank.evaluation import STSEvaluator

    evaluator = STSEvaluator.from_data(load_sts("validation", "../shared/data"), name="stsb-validation")
    print(evaluator(CrossEncoderScorer("path/to/model")))
    # {'stsb-validation_pearson': 0.87..., 'stsb-validation_spearman': 0.87...}
    ```

    :param pairs: (sentence1, sentence2) pairs.
    :param gold: One gold score per pair.
    :param name: The prefix of the metric names.
    :param symmetric: Average the scores of both pair orders.
    :param batch_size: Pairs per forward pass (`None`: the scorer's).
    :param output_path: If set, each call appends a row to this `.csv` or rewrites this `.json`.
    """

    primary_metric = "spearman"

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        gold: Sequence[float],
        *,
        name: str = "sts",
        symmetric: bool = False,
        batch_size: int | None = None,
        output_path: str | Path | None = None,
    ) -> None:
        if len(pairs) != len(gold):
            raise ValueError(f"`pairs` and `gold` must have the same length, but got {len(pairs)} and {len(gold)}")
        if len(pairs) < 2:
            raise ValueError(f"correlation needs at least 2 pairs, but got {len(pairs)}")
        if any(not isinstance(g, (int, float)) or math.isnan(g) for g in gold):
            raise ValueError("`gold` must hold numbers only, but it holds a NaN or a non-number")
        self.pairs = list(pairs)
        self.gold = [float(g) for g in gold]
        self.name = name
        self.symmetric = symmetric
        self.batch_size = batch_size
        self.output_path = Path(output_path) if output_path is not None else None

    @classmethod
    def from_data(cls, data: PairData, **kwargs: Any) -> STSEvaluator:
        """
        Build an evaluator from loaded pair data.

        :param data: The pairs and gold scores.
        :param kwargs: Passed to the constructor (`name`, `symmetric`, ...).
        :returns: The evaluator.
        """
        return cls(data.pairs, data.score, **kwargs)

    @property
    def primary_metric_name(self) -> str:
        """The full name of the metric used to pick checkpoints, e.g. `stsb-validation_spearman`."""
        return f"{self.name}_{self.primary_metric}"

    def predict(self, scorer: CrossEncoderScorer) -> list[float]:
        """
        The scores the correlation is computed on.

        :param scorer: The scorer.
        :returns: One score per pair.
        """
        scores = scorer.predict(self.pairs, batch_size=self.batch_size)
        if self.symmetric:
            swapped = scorer.predict([(b, a) for a, b in self.pairs], batch_size=self.batch_size)
            scores = [(x + y) / 2.0 for x, y in zip(scores, swapped, strict=True)]
        return scores

    def __call__(self, scorer: CrossEncoderScorer, *, extra: dict[str, Any] | None = None) -> dict[str, float]:
        """
        Score the pairs and correlate.

        :param scorer: The scorer.
        :param extra: Columns added to the written row (for example the training step).
        :returns: `{"<name>_pearson": ..., "<name>_spearman": ...}`.
        """
        stats = require("scipy.stats", "train")
        start = time.perf_counter()
        scores = self.predict(scorer)
        pearson = float(stats.pearsonr(self.gold, scores)[0])
        spearman = float(stats.spearmanr(self.gold, scores)[0])
        metrics = {f"{self.name}_pearson": pearson, f"{self.name}_spearman": spearman}
        logger.info(
            "%s: pearson %.4f, spearman %.4f (%d pairs, %.1fs)",
            self.name,
            pearson,
            spearman,
            len(self.pairs),
            time.perf_counter() - start,
        )
        if self.output_path is not None:
            write_report(self.output_path, {**(extra or {}), **metrics})
        return metrics
