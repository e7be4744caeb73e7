"""
Loading the model to fine-tune: a one-logit classification head, new when the checkpoint has none (or one with
another number of labels). A new head is expected when training from a base model, so it is said in one line
instead of transformers' loading table, which reads like an error to a newcomer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from haystack_crossrerank.utils.extras import require
from haystack_crossrerank.utils.progress import transformers_bars_off

logger = logging.getLogger(__name__)

# The logger that transformers writes its loading report to, and what marks that report (transformers 5 prints a
# "LOAD REPORT" table; transformers 4 wrote "Some weights ... were not used" / "... newly initialized" warnings).
_REPORT_LOGGER = "transformers.modeling_utils"
_REPORT_MARKERS = ("LOAD REPORT", "newly initialized", "were not used when initializing")


def load_for_training(base_model: str) -> tuple[Any, Any]:
    """
    Load a model with a one-logit sequence-classification head, and its tokenizer, for fine-tuning.

    A head the checkpoint lacks (or whose size differs) starts from random values and is announced in one INFO
    line; weights missing outside the head are a WARNING, since training would start them from random values too.

    :param base_model: Hub id or folder of the model.
    :returns: `(model, tokenizer)`.
    :raises OSError: If the model or the tokenizer cannot be read (from transformers).
    """
    transformers = require("transformers", "train")
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_model)
    with transformers_bars_off(), _loading_report_held() as held:
        try:
            model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                base_model, num_labels=1, ignore_mismatched_sizes=True, output_loading_info=True
            )
        except Exception:
            for report in held:  # the error may point at "the above report": show it after all
                logger.warning("%s", report)
            raise
    _announce_new_weights(model, base_model, info)
    return model, tokenizer


@contextlib.contextmanager
def _loading_report_held() -> Iterator[list[str]]:
    """Keep transformers' loading report out of the output within the block; the list receives its text."""
    held: list[str] = []

    def hold(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(marker in message for marker in _REPORT_MARKERS):
            held.append(message)
            return False
        return True

    report_logger = logging.getLogger(_REPORT_LOGGER)
    report_logger.addFilter(hold)
    try:
        yield held
    finally:
        report_logger.removeFilter(hold)


def _announce_new_weights(model: Any, base_model: str, info: dict[str, Any]) -> None:
    """One line for a new head; a warning for new weights elsewhere; the unused checkpoint weights at DEBUG."""
    new = set(info.get("missing_keys") or ()) | {key for key, *_ in info.get("mismatched_keys") or ()}
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    order = list(model.state_dict())
    in_order = sorted(new, key=lambda key: order.index(key) if key in order else len(order))
    head = [key for key in in_order if not key.startswith(prefix)]
    body = [key for key in in_order if key.startswith(prefix)]
    if head:
        logger.info(
            "new classification head initialised: %s (expected when training from a base model)", ", ".join(head)
        )
    if body:
        logger.warning(
            "%d weights of the model were not in '%s' and start from random values: %s",
            len(body),
            base_model,
            ", ".join(body[:8]) + (", ..." if len(body) > 8 else ""),
        )
    unused = sorted(info.get("unexpected_keys") or ())
    if unused:
        logger.debug("%d weights of '%s' are not used by the classifier: %s", len(unused), base_model, unused)
