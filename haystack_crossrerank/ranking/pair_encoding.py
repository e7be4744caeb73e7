"""Pair encoding: (query, text) pairs to padded, length-sorted model inputs, as numpy arrays.

Each distinct query is tokenized once and the texts in one call; the pair is joined with the tokenizer's own
special tokens, cutting the text (never the query, unless the query alone is too long); pairs are sorted by
length so that batches pad little. The scorer sends the batches to whichever runtime runs the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class PairEncoder:
    """
    Encodes (query, text) pairs with a model's fast tokenizer.

    :param tokenizer: A `transformers` fast tokenizer.
    :param model_name: The model's name, for error messages.
    :raises OSError: If the tokenizer is not a fast one, or cannot build sentence pairs.
    """

    def __init__(self, tokenizer: Any, model_name: str) -> None:
        from tokenizers import Tokenizer

        if getattr(tokenizer, "backend_tokenizer", None) is None:
            raise OSError(f"Cross-encoder '{model_name}' has no fast (tokenizers) tokenizer, which is required")
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        if backend.post_processor is None:
            raise OSError(f"The tokenizer of cross-encoder '{model_name}' cannot build sentence pairs")
        self._backend = backend
        self.special_tokens: int = backend.post_processor.num_special_tokens_to_add(True)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._use_token_types = "token_type_ids" in tokenizer.model_input_names
        # `batches` pads to a width that is a multiple of this (never past `width_limit`, the model's positions,
        # nor past the token budget), so that a runtime that prepares kernels per input shape meets few shapes;
        # 1 pads to the longest pair only, as `collate` alone always does.
        self.pad_to_multiple = 1
        self.width_limit: int | None = None

    def _join(self, query_text: str, query: Any, text: Any, max_length: int) -> Any:
        """
        Join a query and a text encoding into one pair encoding.

        The text is cut to fit (`only_second`). If the query alone fills the budget, both sides are cut,
        the longer first (`longest_first`), on a fresh copy of the query since the cached one is shared.
        """
        budget = max_length - self.special_tokens
        len_q, len_t = len(query.ids), len(text.ids)
        if len_q + len_t > budget:
            if len_q < budget:
                text.truncate(budget - len_q)
            else:
                keep_q, keep_t = longest_first(len_q, len_t, budget)
                query = self._backend.encode(query_text, add_special_tokens=False)
                query.truncate(keep_q)
                text.truncate(keep_t)
        return self._backend.post_processor.process(query, text, add_special_tokens=True)

    def encode(self, pairs: Sequence[tuple[str, str]], cache: dict[str, Any], max_length: int) -> list[Any]:
        """Tokenize each distinct query once (kept in `cache`) and the texts in one call, then join them."""
        texts = self._backend.encode_batch([t for _, t in pairs], add_special_tokens=False)
        joined = []
        for (query, _), text in zip(pairs, texts, strict=True):
            encoded = cache.get(query)
            if encoded is None:
                encoded = cache[query] = self._backend.encode(query, add_special_tokens=False)
            joined.append(self._join(query, encoded, text, max_length))
        return joined

    def batches(
        self, pairs: Sequence[tuple[str, str]], size: int, max_length: int, max_batch_tokens: int | None = None
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """
        Yield (input positions, features) per batch, longest pairs first; pairs are tokenized in windows so
        memory stays bounded.

        :param pairs: (query, text) pairs.
        :param size: The most pairs per batch.
        :param max_length: The most tokens per pair.
        :param max_batch_tokens: If set, the most padded tokens per batch too.
        """
        window = max(size * 32, 2048)
        cache: dict[str, Any] = {}
        for start in range(0, len(pairs), window):
            encodings = self.encode(pairs[start : start + window], cache, max_length)
            lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
            order = np.argsort(-lengths, kind="stable")
            for batch in split_by_budget(order, lengths, size, max_batch_tokens):
                yield batch + start, self.collate([encodings[i] for i in batch], rounded=True, budget=max_batch_tokens)

    def collate(
        self, encodings: list[Any], *, rounded: bool = False, budget: int | None = None
    ) -> dict[str, np.ndarray]:
        """
        Pad encodings into `input_ids`, `attention_mask` and, where the model uses them, `token_type_ids`.

        :param encodings: Pair encodings.
        :param rounded: Pad to a multiple of `pad_to_multiple` (within `width_limit` and `budget`), not just to
            the longest encoding.
        :param budget: The most padded tokens the batch may hold.
        """
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
        width = int(lengths.max())
        if rounded and self.pad_to_multiple > 1:
            wider = -(-width // self.pad_to_multiple) * self.pad_to_multiple
            if wider <= (self.width_limit or wider) and (budget is None or wider * len(encodings) <= budget):
                width = wider
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : lengths[row]] = encoding.ids
        features = {"input_ids": ids, "attention_mask": (np.arange(width) < lengths[:, None]).astype(np.int64)}
        if self._use_token_types:
            types = np.zeros((len(encodings), width), dtype=np.int64)
            for row, encoding in enumerate(encodings):
                types[row, : lengths[row]] = encoding.type_ids
            features["token_type_ids"] = types
        return features


def longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """How many tokens of each side survive `longest_first` truncation, split as the tokenizers library does."""
    if len_a + len_b <= budget:
        return len_a, len_b
    swap = len_a > len_b
    small, large = (len_b, len_a) if swap else (len_a, len_b)
    keep_large = small if small > budget else max(small, budget - small)
    keep_small = small
    if keep_small + keep_large > budget:
        keep_small = budget // 2
        keep_large = keep_small + budget % 2
    keep_small, keep_large = min(keep_small, small), min(keep_large, large)
    return (keep_large, keep_small) if swap else (keep_small, keep_large)


def split_by_budget(order: np.ndarray, lengths: np.ndarray, size: int, max_tokens: int | None) -> Iterator[np.ndarray]:
    """Cut length-sorted (longest first) positions into batches of at most `size` pairs and `max_tokens` tokens."""
    if max_tokens is None:
        for start in range(0, len(order), size):
            yield order[start : start + size]
        return
    start = 0
    while start < len(order):
        width = int(lengths[order[start]])  # the longest pair of the batch comes first
        count = max(1, min(size, max_tokens // max(width, 1)))
        yield order[start : start + count]
        start += count


def check_pairs(pairs: Sequence[tuple[str, str]]) -> None:
    """
    :raises TypeError: If `pairs` is not a list of (str, str) pairs; the message names the first bad one.
    """
    if not isinstance(pairs, Sequence) or isinstance(pairs, str):
        raise TypeError(f"`pairs` must be a list of (query, text) string pairs, but got {type(pairs).__name__}")
    for position, pair in enumerate(pairs):
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or not isinstance(pair[0], str)
            or not isinstance(pair[1], str)
        ):
            raise TypeError(f"pair {position} must be a (query, text) tuple of two strings, but got {pair!r}")
