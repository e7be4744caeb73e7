"""What an adapted model folder (`crossrerank adapt`) says about how to use it, read without importing training code."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from haystack_crossrerank.utils.paths import looks_like_local_path

logger = logging.getLogger(__name__)

ADAPT_FILE = "adaptation.json"  # written into an adapted model's folder


def recorded_ranker_settings(model: str | Path, pipeline: str) -> dict[str, Any]:
    """
    The ranker settings that an adapted model's `adaptation.json` records for a shipped pipeline.

    :param model: A model folder or hub id (a hub id, or a folder without the file, records nothing).
    :param pipeline: A shipped pipeline's name, e.g. `"hybrid_rerank"`.
    :returns: The `CrossEncoderRanker` init parameters; empty if none are recorded (not an adapted model, or one
        whose adaptation kept the base model).
    :raises ValueError: If the file exists but is not valid JSON or its `ranker_settings` is not a mapping of
        pipelines to mappings.
    """
    if not looks_like_local_path(str(model)):
        return {}
    path = Path(model).expanduser() / ADAPT_FILE
    if not path.is_file():
        return {}
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("ranker_settings") or {}
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"'{path}' must be a JSON object written by `crossrerank adapt`: {error}") from error
    if not isinstance(recorded, dict) or not all(isinstance(v, dict) for v in recorded.values()):
        raise ValueError(
            f"'{path}': `ranker_settings` must map pipeline names to ranker settings, but got {recorded!r}"
        )
    return dict(recorded.get(pipeline, {}))


def with_recorded_settings(model: str | Path, pipeline: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """
    The ranker settings to run an adapted model with in a pipeline: those its folder records, then `given` over them.

    :param model: The model folder or hub id.
    :param pipeline: The shipped pipeline's name.
    :param given: Settings given explicitly (e.g. `--set`); they win.
    :returns: The merged settings (just `given` for a model that records none).
    """
    recorded = recorded_ranker_settings(model, pipeline)
    if recorded:
        taken = {k: v for k, v in recorded.items() if k not in (given or {})}
        if taken:
            listed = ", ".join(f"{k}={v}" for k, v in taken.items())
            logger.info("Using the adapted model's ranker settings for %s (its %s): %s", pipeline, ADAPT_FILE, listed)
    return {**recorded, **(given or {})}
