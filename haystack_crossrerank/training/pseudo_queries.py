"""Training examples for a corpus without judgments: pseudo-queries made from its documents, negatives mined
from a first stage over the same corpus.

Two kinds of pseudo-query come from a document, no generative model needed:

- **title → body**: the title is the query; the positive is the body without its title. The negatives are
  shown without their titles too, so that a missing title is no sign of the positive, and a document with the
  same title (MedQuAD answers several questions about one topic) is never a negative.
- **span → rest** (the inverse cloze task, Lee et al., 2019): a sentence of the body (or, where no sentence
  has a usable length, a short run of words) is the query; the positive is the title with the rest of the
  body. In a share of the examples (`keep_span`, 10% as in that paper) the span is left in the positive,
  so that a word-for-word match still counts as evidence. A document holding the span word for word (a
  duplicate) is never a negative.

User queries (`--queries FILE`) have no judged positive. A query that names the document it was made from
(`doc_id`, as a query generator records it) has that document as its positive; any other takes the first
stage's top document as a stand-in (a pseudo-label: it teaches the corpus's queries and vocabulary, and the
first stage's idea of relevance with them).

Negatives are mined as retrieval training mines them (:mod:`haystack_crossrerank.training.mining`): from the
first stage's top candidates, the query's own document and the excluded ones removed, then the `skip_top`
highest-ranked of the rest left out (the likeliest to be relevant), then `negatives` sampled.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haystack_crossrerank.data.jsonl import json_object
from haystack_crossrerank.evaluation.rerank import document_text, text_ranker
from haystack_crossrerank.ranking.passages import document_passages, split_sentences

QUERY_KINDS = ("title", "span", "user")
# What a training pair holds beside the query: the whole document as document mode sends it, or the one passage
# of it (the title, or a sentence) that sentence mode would score, the one sharing most words with the query.
PAIR_UNITS = ("document", "passage")
# A sentence is a span query when it has this many words (fewer: too little to find its document by; more:
# a table or list read as one sentence). Otherwise a run of SPAN_WORDS words is taken from the body.
MIN_SPAN_WORDS = 5
MAX_SPAN_WORDS = 40
SPAN_WORDS = 16
# The positive of a span query keeps at least this many words of the body.
MIN_REST_WORDS = 10


@dataclass(frozen=True)
class PseudoQuery:
    """
    A query with the document it came from.

    :param text: The query (never empty).
    :param doc_id: The document whose version in `positive` is the query's positive.
    :param kind: `"title"`, `"span"` or `"user"`.
    :param positive: `{"title", "text"}`: the document as the positive shows it (without the title for a title
        query; without the span for a span query, unless it was kept).
    """

    text: str
    doc_id: str
    kind: str
    positive: dict[str, str]


def normalized(text: str) -> str:
    """Lower case, whitespace runs as one space: how titles and spans are compared."""
    return " ".join(text.lower().split())


def inverse_cloze(text: str, rng: random.Random) -> tuple[str, str] | None:
    """
    Cut a span out of a text: a random sentence of :data:`MIN_SPAN_WORDS` to :data:`MAX_SPAN_WORDS` words, else
    a random run of :data:`SPAN_WORDS` words.

    :param text: The body.
    :param rng: The random draws.
    :returns: `(span, rest)`, or `None` when the rest would keep fewer than :data:`MIN_REST_WORDS` words.
    """
    sentences = split_sentences(text)
    usable = [i for i, s in enumerate(sentences) if MIN_SPAN_WORDS <= len(s.split()) <= MAX_SPAN_WORDS]
    if len(sentences) > 1 and usable:
        chosen = rng.choice(usable)
        span, rest = sentences[chosen], " ".join(sentences[:chosen] + sentences[chosen + 1 :])
    else:
        words = text.split()
        if len(words) < SPAN_WORDS + MIN_REST_WORDS:
            return None
        start = rng.randrange(len(words) - SPAN_WORDS + 1)
        span, rest = " ".join(words[start : start + SPAN_WORDS]), " ".join(words[:start] + words[start + SPAN_WORDS :])
    return (span, rest) if len(rest.split()) >= MIN_REST_WORDS else None


def content_words(text: str) -> set[str]:
    """The words that count when a passage is matched to a query: lower case, four letters or more, or holding a
    digit (a rough stop-word filter that keeps names such as "p53")."""
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 4 or any(c.isdigit() for c in w)}


def closest_passage(query: str, doc: dict[str, str]) -> str:
    """
    The passage of a document, as sentence mode with the title as a passage of its own cuts it, that shares the
    most content words (:func:`content_words`) with the query; the earliest of equal ones.

    :param query: The query.
    :param doc: `{"title", "text"}` (an empty title is no passage).
    :returns: The passage's text.
    """
    words = content_words(query)
    passages = [p.text for p in document_passages(doc["text"], doc["title"], mode="sentences")]
    return max(enumerate(passages), key=lambda ip: (len(words & content_words(ip[1])), -ip[0]))[1]


def make_pseudo_queries(
    corpus: dict[str, dict[str, str]],
    doc_ids: Sequence[str],
    *,
    title_share: float,
    keep_span: float,
    seed: int,
) -> list[PseudoQuery]:
    """
    One pseudo-query per document: its title (with probability `title_share`, where it has a title), else a
    span of its body; a document that allows neither (no title, a body too short to cut) gives none.

    :param corpus: doc id -> `{"title", "text"}`.
    :param doc_ids: The documents to make queries from, in the order wanted.
    :param title_share: The probability of a title query for a document with a title (0 to 1).
    :param keep_span: The probability that a span query's positive keeps the span (0 to 1).
    :param seed: The seed of every random draw: the same arguments give the same queries.
    :returns: The queries, in the order of `doc_ids`.
    :raises ValueError: If a share is outside [0, 1].
    """
    for name, value in (("title_share", title_share), ("keep_span", keep_span)):
        if not 0 <= value <= 1:
            raise ValueError(f"`{name}` must be in [0, 1], but got {value!r}")
    rng = random.Random(seed)
    queries = []
    for doc_id in doc_ids:
        doc = corpus[doc_id]
        title, body = " ".join(doc["title"].split()), doc["text"]
        wants_title = rng.random() < title_share
        cut = None if (wants_title and title) else inverse_cloze(body, rng)
        if cut is not None:
            span, rest = cut
            shown = " ".join(body.split()) if rng.random() < keep_span else rest
            queries.append(PseudoQuery(span, doc_id, "span", {"title": doc["title"], "text": shown}))
        elif title and body.strip():
            queries.append(PseudoQuery(title, doc_id, "title", {"title": "", "text": body}))
    return queries


def read_user_queries(path: str | Path, corpus: dict[str, dict[str, str]]) -> list[tuple[str, str | None]]:
    """
    Read queries without judgments: one query a line, or JSON lines with `text` (or `query`) and, optionally,
    `doc_id` (the document the query was made from). Blank lines are skipped.

    :param path: The file. It is JSON lines when its first non-blank line starts with `{`.
    :param corpus: The corpus, to check the `doc_id`s against.
    :returns: `(query, doc_id or None)` in file order.
    :raises FileNotFoundError: If the file does not exist.
    :raises ValueError: On a malformed JSON line, a row without text, an unknown `doc_id`, or no query at all
        (each with file and line).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"queries file '{file}' does not exist: expected one query a line, or JSON lines")
    lines = file.read_text(encoding="utf-8").splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    found: list[tuple[str, str | None]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not first.startswith("{"):
            found.append((" ".join(line.split()), None))
            continue
        row = json_object(line, f"{file}:{number}")
        text = " ".join(str(row.get("text") or row.get("query") or "").split())
        doc_id = row.get("doc_id")
        if not text:
            raise ValueError(f"{file}:{number}: expected a non-empty `text` (or `query`), but got {line.strip()!r}")
        if doc_id is not None and str(doc_id) not in corpus:
            raise ValueError(f"{file}:{number}: `doc_id` {doc_id!r} is not a document of the corpus")
        found.append((text, None if doc_id is None else str(doc_id)))
    if not found:
        raise ValueError(f"{file}: expected at least one query, but the file holds none")
    return found


def user_pseudo_queries(
    queries: Sequence[tuple[str, str | None]],
    candidates: Sequence[list[str]],
    corpus: dict[str, dict[str, str]],
) -> list[tuple[PseudoQuery, list[str]]]:
    """
    User queries as pseudo-queries: the named document is the positive, else the first stage's top candidate.

    :param queries: `(text, doc_id or None)`, as :func:`read_user_queries` returns them.
    :param candidates: Each query's first-stage candidates (doc ids, best first).
    :param corpus: doc id -> `{"title", "text"}`.
    :returns: `(pseudo-query, its candidates)` for each user query that has a positive (a query without
        candidates and without `doc_id` has none and is left out).
    """
    made = []
    for (text, doc_id), found in zip(queries, candidates, strict=True):
        positive = doc_id if doc_id is not None else (found[0] if found else None)
        if positive is not None:
            made.append((PseudoQuery(text, positive, "user", dict(corpus[positive])), found))
    return made


def excluded(query: PseudoQuery, doc_id: str, corpus: dict[str, dict[str, str]]) -> bool:
    """
    Whether a document may not be a negative of a query: it is the query's document, or it shares the title
    of a title query, or it holds a span query word for word.
    """
    if doc_id == query.doc_id:
        return True
    if query.kind == "title":
        return normalized(corpus[doc_id]["title"]) == normalized(query.text)
    if query.kind == "span":
        return normalized(query.text) in normalized(corpus[doc_id]["text"])
    return False


def pseudo_examples(
    queries: Sequence[PseudoQuery],
    candidates: Sequence[list[str]],
    corpus: dict[str, dict[str, str]],
    *,
    negatives: int,
    skip_top: int,
    seed: int,
    pairs: str = "document",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """
    One training example per pseudo-query: `{"query", "documents"}`, the positive first, then `negatives`
    mined negatives, each as the ranker's document text (title, newline, text; a title query's without titles),
    or, with `pairs="passage"`, as its passage closest to the query (:func:`closest_passage`).

    :param queries: The pseudo-queries.
    :param candidates: Each query's first-stage candidates (doc ids, best first).
    :param corpus: doc id -> `{"title", "text"}`.
    :param negatives: Negatives per example.
    :param skip_top: Candidates left out at the top of each query's list, once the excluded ones are removed.
    :param seed: The seed of the sampling.
    :param pairs: One of :data:`PAIR_UNITS`.
    :returns: The examples, and statistics (`examples`, `by_kind`, `padded_with_random_negatives`).
    :raises ValueError: If the corpus is too small to give every query `negatives` negatives, or on an unknown
        `pairs`.
    """
    if pairs not in PAIR_UNITS:
        raise ValueError(f"`pairs` must be one of {list(PAIR_UNITS)}, but got {pairs!r}")
    rng = random.Random(seed)
    texts = text_ranker()
    ids = list(corpus)
    examples, padded = [], 0
    by_kind = dict.fromkeys(QUERY_KINDS, 0)
    for query, found in zip(queries, candidates, strict=True):
        pool = [d for d in found if not excluded(query, d, corpus)][skip_top:]
        if len(pool) < negatives:
            padded += 1
            allowed = [d for d in ids if d not in pool and not excluded(query, d, corpus)]
            if len(pool) + len(allowed) < negatives:
                raise ValueError(
                    f"a query needs {negatives} negatives, but the corpus has only {len(pool) + len(allowed)} "
                    f"documents that may be negatives of {query.text!r}"
                )
            pool += rng.sample(allowed, negatives - len(pool))
        chosen = rng.sample(pool, negatives)
        bare = query.kind == "title"
        shown = [query.positive] + [{**corpus[d], "title": ""} if bare else corpus[d] for d in chosen]
        if pairs == "passage":
            shown = [{"title": "", "text": closest_passage(query.text, doc)} for doc in shown]
        examples.append({"query": query.text, "documents": [document_text(doc, texts) for doc in shown]})
        by_kind[query.kind] += 1
    return examples, {"examples": len(examples), "by_kind": by_kind, "padded_with_random_negatives": padded}
