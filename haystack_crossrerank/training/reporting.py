"""
What a training run shows: on a terminal, one bar over the training steps with the running loss and the last
evaluation's primary metric, and a bar over each evaluation's pairs below it; in any output, one log line per
evaluation ("epoch 1.78 step 400/1440: stsb-validation spearman 0.8708, pearson 0.8730 (loss 0.5451, 11.5s)").
This replaces the Trainer's default output (a printed dict per logging step, or its own bar that writes them).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from haystack_crossrerank.utils.progress import on_terminal, progress

logger = logging.getLogger(__name__)


class TrainingProgress(TrainerCallback):  # type: ignore[misc]
    """
    A `transformers.TrainerCallback`: the training bar (when `show_bar`) and one INFO line per evaluation.

    :param primary_metric: The evaluator's primary metric, e.g. `stsb-validation_spearman`: first in each line,
        and the metric in the bar.
    :param show_bar: Draw the training bar (on a terminal; a log file gets the evaluation lines only).
    """

    def __init__(self, primary_metric: str, *, show_bar: bool) -> None:
        self.primary_metric = primary_metric
        self.show_bar = show_bar
        self.bar: Any = None
        self.steps_done = 0
        self.loss: float | None = None
        self.metric: float | None = None
        self.evaluation_started: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar = progress(desc="training", unit="step", total=state.max_steps, enabled=self.show_bar)
        self.steps_done = state.global_step  # above 0 when resuming
        self.bar.update(self.steps_done)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.steps_done)
        self.steps_done = state.global_step
        if control.should_evaluate:  # the Trainer evaluates right after this step
            self.evaluation_started = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
            self._refresh_postfix()

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        values = {key.removeprefix("eval_"): value for key, value in (metrics or {}).items()}
        if isinstance(values.get(self.primary_metric), float):
            self.metric = values[self.primary_metric]
        details = [] if self.loss is None else [f"loss {self.loss:.4f}"]
        if self.evaluation_started is not None:
            details.append(f"{time.perf_counter() - self.evaluation_started:.1f}s")
            self.evaluation_started = None
        logger.info(
            "epoch %.2f step %d/%d: %s%s",
            state.epoch or 0.0,
            state.global_step,
            state.max_steps,
            metrics_line(values, self.primary_metric),
            f" ({', '.join(details)})" if details else "",
        )
        self._refresh_postfix()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def bar_postfix(self) -> str:
        """What the bar shows after its count: `loss=0.5451, spearman=0.8708`."""
        parts = [] if self.loss is None else [f"loss={self.loss:.4f}"]
        if self.metric is not None:
            parts.append(f"{self.primary_metric.rsplit('_', 1)[-1]}={self.metric:.4f}")
        return ", ".join(parts)

    def _refresh_postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.bar_postfix(), refresh=False)


def metrics_line(metrics: Mapping[str, Any], primary_metric: str) -> str:
    """
    Metrics as one readable phrase, the primary metric first and each evaluator's name said once:
    `stsb-validation spearman 0.8708, pearson 0.8730; stsb-test spearman 0.8512, pearson 0.8533`.

    :param metrics: `<evaluator>_<metric>` names to values (other values, such as the epoch, are left out).
    :param primary_metric: The metric to put first.
    :returns: The phrase.
    """
    numbers = {key: value for key, value in metrics.items() if isinstance(value, float) and key != "epoch"}
    first = primary_metric.rpartition("_")[2]  # each evaluator's figure of the same kind first; the rest in order
    names = sorted(numbers, key=lambda key: (key != primary_metric, key.rpartition("_")[2] != first))
    groups: dict[str, list[str]] = {}
    for key in names:
        evaluator, _, metric = key.rpartition("_")
        groups.setdefault(evaluator, []).append(f"{metric} {numbers[key]:.4f}")
    return "; ".join(f"{evaluator} {', '.join(parts)}".strip() for evaluator, parts in groups.items())


class EvaluationScorer(CrossEncoderScorer):
    """The scorer of the evaluations during training: on a terminal, a bar over its pairs below the training bar."""

    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        show_progress_bar: bool = False,
    ) -> list[float]:
        return super().score(
            pairs, batch_size=batch_size, max_length=max_length, show_progress_bar=show_progress_bar or on_terminal()
        )


def evaluation_lines_folded(*evaluators: Any) -> contextlib.AbstractContextManager[None]:
    """
    Within the block, the evaluators' own INFO lines and the scorer's ("Loaded cross-encoder ...") count as DEBUG:
    the trainer says what an evaluation found in one line of its own.

    :param evaluators: The evaluators; the loggers of their modules are the ones quietened.
    :returns: A context manager.
    """
    names = sorted({type(each).__module__ for each in evaluators} | {CrossEncoderScorer.__module__})
    return info_lines_as_debug(*names)


def log_lines_above_the_bar(bar_shown: bool) -> contextlib.AbstractContextManager[Any]:
    """While a bar is drawn on the terminal, log lines are written above it (through tqdm) instead of across it."""
    if not bar_shown:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


@contextlib.contextmanager
def info_lines_as_debug(*logger_names: str) -> Iterator[None]:
    """Within the block, the INFO lines of these loggers count as DEBUG (shown only where DEBUG is)."""

    def demote(record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    loggers = [logging.getLogger(name) for name in logger_names]
    for each in loggers:
        each.addFilter(demote)
    try:
        yield
    finally:
        for each in loggers:
            each.removeFilter(demote)
