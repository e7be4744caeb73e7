"""Retrieval losses over (example index, is positive) labels: listwise softmax cross-entropy and pointwise BCE."""

from __future__ import annotations

import torch

LOSSES = ("bce", "listwise")


def listwise_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each example's documents, the positive being the target."""
    logits = logits.view(-1).float()
    groups = labels[:, 0].long()
    positive = labels[:, 1] > 0.5
    count = int(groups.max().item()) + 1
    losses = []
    for group in range(count):
        member = groups == group
        losses.append(torch.logsumexp(logits[member], dim=0) - logits[member & positive].squeeze())
    return torch.stack(losses).mean()


def pointwise_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The seed's binary cross-entropy: positives 1, negatives 0."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.view(-1).float(), labels[:, 1].float())
