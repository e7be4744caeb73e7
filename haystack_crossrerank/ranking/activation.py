"""The activation a cross-encoder's scores pass through: the one its config names (sentence-transformers' convention),
sigmoid by default."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "torch.nn.modules.activation.Sigmoid": torch.sigmoid,
    "torch.nn.Sigmoid": torch.sigmoid,
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.Identity": lambda x: x,
    "torch.nn.modules.activation.Tanh": torch.tanh,
    "torch.nn.Tanh": torch.tanh,
}


def activation_from_config(config: Any, model_name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    settings = getattr(config, "sentence_transformers", None)
    path = settings.get("activation_fn") if isinstance(settings, dict) else None
    path = path or getattr(config, "sbert_ce_default_activation_function", None)
    if path is None:
        return torch.sigmoid
    if path in _ACTIVATIONS:
        return _ACTIVATIONS[path]
    logger.warning("Cross-encoder '%s' names an unknown activation %r; using sigmoid", model_name, path)
    return torch.sigmoid


def sigmoid(value: float) -> float:
    """A numerically safe logistic function on a Python float."""
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    e = math.exp(value)
    return e / (1.0 + e)
