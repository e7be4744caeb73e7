"""Passage-level scoring: cut a document into the units a cross-encoder was trained on, and turn the units'
scores back into one score per document.

A model trained on STS-B sentence pairs scores a whole abstract against a one-sentence query as noise, but
scores the title and the sentences well (see the README's benchmark). The ranker therefore scores each
document as a list of passages and aggregates: :func:`document_passages` builds the passages and
:func:`aggregate` combines their scores. The tuning command uses the same two functions, so that what is
tuned is what runs.

Sentences come from `sentencex` (offline, no model download). Measured on 2,000 SciFact abstracts against
`pysbd` and `blingfire`: all three split "e.g.", "Fig. 2", "et al.", "i.e.", "vs." and "0.5 mg" correctly;
sentencex took 0.012 ms per abstract, blingfire 0.094 ms, pysbd 9.4 ms (about 1 s per query at depth 100,
as much as the scoring itself). pysbd is the most careful (it also splits before sentences that start in
lower case, such as gene names: sentencex merges those in 113 of the 2,000 abstracts), which costs at most a
slightly longer passage, so sentencex is the one used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PASSAGE_MODES: tuple[str, ...] = ("document", "sentences", "windows")
META_PLACEMENTS: tuple[str, ...] = ("passage", "prefix")
AGGREGATIONS: tuple[str, ...] = ("max", "first", "mean", "max_mean", "max_first")
# A "sentence" longer than this (text without punctuation, tables, lists) is cut into pieces of this many
# words, so that no passage is silently truncated by the model's 512-token limit: 160 words is about 200-260
# word-piece tokens of English or scientific text, which leaves room for the query.
MAX_PASSAGE_WORDS = 160


@dataclass(frozen=True)
class Passage:
    """
    One unit of a document that is scored against the query.

    :param text: The text sent to the model (with the title in front when meta fields are prefixed).
    :param highlight: The part of the document this passage shows to a reader (the sentence, window or title).
    """

    text: str
    highlight: str


def split_sentences(text: str) -> list[str]:
    """
    Split text into sentences with `sentencex` (English rules), cutting very long ones into word pieces.

    :param text: Any text; may be empty or have no punctuation at all.
    :returns: The sentences in document order, stripped, none empty; `[]` for blank text.
    """
    from sentencex import segment

    sentences: list[str] = []
    for piece in segment("en", text):
        sentence = " ".join(piece.split())
        if sentence:
            sentences.extend(_cap_words(sentence, MAX_PASSAGE_WORDS))
    return sentences


def sentence_windows(sentences: Sequence[str], size: int, stride: int) -> list[str]:
    """
    Sliding windows of consecutive sentences that together cover every sentence.

    A window holds up to `size` sentences and at most :data:`MAX_PASSAGE_WORDS` words (always at least one
    sentence); the next window starts `stride` sentences later, or right after a window that held fewer
    sentences than `stride`, so that no sentence is skipped.

    :param sentences: The document's sentences.
    :param size: The most sentences in one window (> 0).
    :param stride: How many sentences the window moves (> 0).
    :returns: The windows' texts, in document order.
    """
    windows: list[str] = []
    start = 0
    while start < len(sentences):
        taken, words = 0, 0
        while start + taken < len(sentences) and taken < size:
            length = len(sentences[start + taken].split())
            if taken and words + length > MAX_PASSAGE_WORDS:
                break
            taken, words = taken + 1, words + length
        windows.append(" ".join(sentences[start : start + taken]))
        if start + taken >= len(sentences):
            break
        start += min(stride, taken)
    return windows


def document_passages(
    content: str,
    meta_text: str,
    *,
    mode: str,
    meta_placement: str = "passage",
    separator: str = "\n",
    window_size: int = 3,
    window_stride: int = 2,
    max_passages: int | None = None,
) -> list[Passage]:
    """
    The passages one document is scored as.

    - `"document"`: one passage, the meta text and the content joined by `separator` (the whole document).
    - `"sentences"`: each sentence of the content; `"windows"`: windows of sentences (:func:`sentence_windows`).

    In the last two, the meta text (the values of `meta_fields_to_embed`, such as a title) is either a passage
    of its own, first (`meta_placement="passage"`), or put before every passage (`"prefix"`). A document with
    no text gets one passage: its meta text, or the empty string.

    :param content: The document's text.
    :param meta_text: The embedded meta values, already joined (may be empty).
    :param mode: One of :data:`PASSAGE_MODES`.
    :param meta_placement: One of :data:`META_PLACEMENTS`.
    :param separator: Joins the meta text and the content (or each passage, when prefixed).
    :param window_size: Sentences per window (`"windows"` only).
    :param window_stride: Sentences the window moves (`"windows"` only).
    :param max_passages: Keep only the first this many passages (the meta passage counts); `None` keeps all.
    :returns: At least one passage.
    :raises ValueError: On an unknown mode or placement.
    """
    if mode not in PASSAGE_MODES:
        raise ValueError(f"`passages` must be one of {list(PASSAGE_MODES)}, but got {mode!r}")
    if meta_placement not in META_PLACEMENTS:
        raise ValueError(f"`meta_placement` must be one of {list(META_PLACEMENTS)}, but got {meta_placement!r}")
    if mode == "document":
        whole = separator.join([meta_text, content]) if meta_text else content
        return [Passage(whole, whole)]
    sentences = split_sentences(content)
    units = sentences if mode == "sentences" else sentence_windows(sentences, window_size, window_stride)
    if not meta_text:
        passages = [Passage(unit, unit) for unit in units]
    elif meta_placement == "passage":
        passages = [Passage(meta_text, meta_text), *(Passage(unit, unit) for unit in units)]
    else:
        passages = [Passage(meta_text + separator + unit, unit) for unit in units] or [Passage(meta_text, meta_text)]
    if not passages:
        passages = [Passage("", "")]
    return passages[:max_passages] if max_passages is not None else passages


def aggregate(scores: Sequence[float], method: str, weight: float = 0.5) -> tuple[float, int]:
    """
    One document score from its passages' scores (logits), and the position of the best passage.

    - `"max"`: the best passage (MaxP); `"first"`: the first passage (the title when it is a passage of its
      own); `"mean"`: the average;
    - `"max_mean"`: `(1 - weight) * max + weight * mean`; `"max_first"`: `(1 - weight) * max + weight * first`.

    NaN scores are ignored (a document whose passages are all NaN scores NaN).

    :param scores: The passages' scores, in document order (at least one).
    :param method: One of :data:`AGGREGATIONS`.
    :param weight: The weight of the mean or of the first passage in the blends, in [0, 1].
    :returns: `(document score, index of the highest-scoring passage)`.
    :raises ValueError: On an unknown method or an empty list.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"`aggregation` must be one of {list(AGGREGATIONS)}, but got {method!r}")
    if not scores:
        raise ValueError("a document needs at least one passage score, but got none")
    valid = [(s, i) for i, s in enumerate(scores) if not math.isnan(s)]
    if not valid:
        return math.nan, 0
    best_score, best = max(valid, key=lambda pair: (pair[0], -pair[1]))  # the earliest of equal bests
    first = scores[0] if not math.isnan(scores[0]) else best_score
    mean = sum(s for s, _ in valid) / len(valid)
    if method == "max":
        value = best_score
    elif method == "first":
        value = first
    elif method == "mean":
        value = mean
    elif method == "max_mean":
        value = (1.0 - weight) * best_score + weight * mean
    else:
        value = (1.0 - weight) * best_score + weight * first
    return value, best


def _cap_words(sentence: str, limit: int) -> list[str]:
    words = sentence.split()
    if len(words) <= limit:
        return [sentence]
    return [" ".join(words[i : i + limit]) for i in range(0, len(words), limit)]
