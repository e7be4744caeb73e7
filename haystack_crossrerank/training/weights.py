"""Replacing a trained model folder's weights: with the base model's, or with their average with the base's.

`crossrerank adapt` uses both after training (:mod:`haystack_crossrerank.training.adapt`): the base model's weights
when the adapted model was not better on the held-back queries, and the average when `--base-share` is set. The
folder's config, tokenizer and card stay; only its `*.safetensors` files are replaced, each in one rename.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from haystack_crossrerank.training.base_model import load_for_training

logger = logging.getLogger(__name__)


def write_base_weights(base_model: str, folder: Path) -> None:
    """
    Put the base model's weights in place of the trained ones (same architecture, config and tokenizer).

    :param base_model: The model that training started from (hub id or folder).
    :param folder: The trained model's folder.
    """
    model, _ = load_for_training(base_model)
    _replace_weights(model, folder)


def interpolate_with_base(base_model: str, folder: Path, base_share: float) -> bool:
    """
    Replace the weights in `folder` by `base_share * base + (1 - base_share) * folder's` (weight-space ensembling).

    Fine-tuning from the base leaves both models in one basin, so the average of their weights is a model that keeps
    some of what the base knew (for the STS model: judging meaning across phrasings) beside what training taught; it
    costs nothing when reranking. A base without a trained one-logit head (a plain encoder) has nothing to average
    the head with, so the weights are then left as trained.

    :param base_model: The model that training started from (hub id or folder).
    :param folder: The trained model's folder; its `*.safetensors` are replaced.
    :param base_share: The base model's share, in (0, 1).
    :returns: Whether the weights were replaced.
    :raises ValueError: If `base_share` is outside (0, 1) or the two models' weights differ in names or shapes.
    """
    import torch
    import transformers

    from haystack_crossrerank.utils.progress import transformers_bars_off

    if not 0.0 < base_share < 1.0:
        raise ValueError(f"`base_share` must be in (0, 1), but got {base_share!r}")
    with transformers_bars_off():
        base, info = transformers.AutoModelForSequenceClassification.from_pretrained(
            base_model, num_labels=1, ignore_mismatched_sizes=True, output_loading_info=True
        )
        trained = transformers.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    if info.get("missing_keys") or info.get("mismatched_keys"):
        logger.warning(
            "the base model %s has no trained one-logit head to average with: the trained weights are kept as they are",
            base_model,
        )
        return False
    ours, theirs = trained.state_dict(), base.state_dict()
    if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
        raise ValueError(f"the weights of '{folder}' and of the base model {base_model} differ in names or shapes")
    with torch.no_grad():
        mixed = {
            k: (base_share * theirs[k].float() + (1 - base_share) * v.float()).to(v.dtype)
            if v.is_floating_point()
            else v
            for k, v in ours.items()
        }
    trained.load_state_dict(mixed)
    _replace_weights(trained, folder)
    logger.info("weights averaged with the base model's (base share %.2f)", base_share)
    return True


def _replace_weights(model: Any, folder: Path) -> None:
    """Save `model` beside `folder` and move its `*.safetensors` into it, each file in one rename."""
    with tempfile.TemporaryDirectory(dir=folder.parent) as temporary:
        model.save_pretrained(temporary, safe_serialization=True)
        for weights in Path(temporary).glob("*.safetensors"):
            os.replace(weights, folder / weights.name)
