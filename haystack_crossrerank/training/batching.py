"""Less padding in training without changing the recipe: a batch is scored in length-sorted micro-batches.

A batch of 64 STS-B pairs averages 27 tokens but is padded to its longest pair (80-125 tokens), so most of
the arithmetic is spent on padding. Here the batch is sorted by length and cut into micro-batches, each
padded to its own longest pair; the loss is still the mean over the whole batch and there is still one
optimizer step per batch, so the gradient is that of the recipe's batch. Measured on this project's 2-core
CPU with the MiniLM base (bf16): 1.8 s per step unchunked, 0.97 s in four equal micro-batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# The fixed cost of one extra forward call, in padded tokens (measured: 8 micro-batches cost as much as 4).
CALL_OVERHEAD_TOKENS = 160


def partition_by_length(lengths: Sequence[int], max_parts: int = 8) -> list[int]:
    """
    Cut a list of lengths, sorted ascending, into contiguous parts that minimise padded tokens plus a fixed
    cost per part.

    :param lengths: Token counts, sorted ascending.
    :param max_parts: The most parts.
    :returns: The end index (exclusive) of each part.
    """
    n = len(lengths)
    if n == 0:
        return []
    if any(lengths[i] > lengths[i + 1] for i in range(n - 1)):
        raise ValueError("`lengths` must be sorted ascending")
    inf = float("inf")
    # best[k][j]: least cost of the first j items in k parts; a part i..j-1 costs (j - i) * lengths[j - 1].
    best = [[inf] * (n + 1) for _ in range(max_parts + 1)]
    cut = [[0] * (n + 1) for _ in range(max_parts + 1)]
    best[0][0] = 0.0
    for k in range(1, max_parts + 1):
        for j in range(1, n + 1):
            width = lengths[j - 1]
            for i in range(k - 1, j):
                cost = best[k - 1][i] + (j - i) * width + CALL_OVERHEAD_TOKENS
                if cost < best[k][j]:
                    best[k][j] = cost
                    cut[k][j] = i
    parts = min(range(1, max_parts + 1), key=lambda k: best[k][n])
    ends: list[int] = []
    j = n
    for k in range(parts, 0, -1):
        ends.append(j)
        j = cut[k][j]
    return sorted(ends)


def forward_micro_batches(model: Any, chunks: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
    """
    The logits of every micro-batch, concatenated in chunk order.

    The word embeddings of all micro-batches are looked up in one call, so that their backward builds one
    dense embedding gradient per step rather than one per micro-batch (about 0.15 s per step saved here).

    :param model: A sequence-classification model.
    :param chunks: Model inputs (`input_ids`, `attention_mask`, optional `token_type_ids`) per micro-batch.
    :returns: A 1-D tensor of logits.
    """
    if len(chunks) == 1:
        return model(**chunks[0]).logits.view(-1)
    ids = torch.cat([c["input_ids"].reshape(-1) for c in chunks])
    embedded = model.get_input_embeddings()(ids)
    logits = []
    start = 0
    for chunk in chunks:
        shape = chunk["input_ids"].shape
        size = shape[0] * shape[1]
        inputs = {k: v for k, v in chunk.items() if k != "input_ids"}
        inputs["inputs_embeds"] = embedded[start : start + size].view(shape[0], shape[1], -1)
        start += size
        logits.append(model(**inputs).logits.view(-1))
    return torch.cat(logits)
