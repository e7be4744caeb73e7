"""STS-B fine-tuning: the seed model's recipe."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from haystack_crossrerank.data.sts import PairData, load_pair_file, load_sts
from haystack_crossrerank.evaluation.sts import STSEvaluator
from haystack_crossrerank.training.trainer import TrainConfig, TrainResult, train_cross_encoder


def train_sts(
    config: TrainConfig,
    *,
    data: str | Path | None = None,
    train_file: str | Path | None = None,
    train_limit: int | None = None,
    eval_test: bool = True,
    symmetric_eval: bool = False,
    eval_output: str | Path | None = None,
) -> TrainResult:
    """
    Fine-tune on STS-B (scores / 5) with binary cross-entropy, selecting on the validation split.

    :param config: Run settings (defaults: the seed's recipe).
    :param data: STS-B folder (see :func:`load_sts`); `None`: `$CROSSRERANK_DATA_DIR`, else the hub.
    :param train_file: Train on this pair file (CSV/TSV/JSONL, scores in [0, 1]) instead of STS-B train.
    :param train_limit: Use only the first N training pairs (quick runs, tests).
    :param eval_test: Score the final model on the test split once, for the card.
    :param symmetric_eval: Average both pair orders when evaluating.
    :param eval_output: A `.csv` that receives one row per validation run.
    :returns: The run's result.
    """
    train: PairData = load_pair_file(train_file) if train_file else load_sts("train", data)
    if train_limit is not None:
        train = train.head(train_limit)
    validation = STSEvaluator.from_data(
        load_sts("validation", data), name="stsb-validation", symmetric=symmetric_eval, output_path=eval_output
    )
    finals: list[Any] = []
    if eval_test:
        finals.append(STSEvaluator.from_data(load_sts("test", data), name="stsb-test", symmetric=symmetric_eval))
    config = dataclasses.replace(config, task="sts", extra={"symmetric_eval": symmetric_eval, **config.extra})

    try:
        rows: Any = train.to_dataset()
    except ImportError:  # `datasets` is optional for training itself (e.g. on a GPU machine without it)
        rows = train.to_rows()
    return train_cross_encoder(
        config,
        rows,
        evaluator=validation,
        final_evaluators=finals,
        card_facts={
            "data": f"STS-B train ({train.source}), scores / 5",
            "loss": "binary cross-entropy on the logit against score / 5 (BinaryCrossEntropyLoss)",
            "evaluation": "STS-B validation (checkpoint selection) and test (reported once)",
        },
    )
