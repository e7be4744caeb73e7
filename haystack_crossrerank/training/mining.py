"""Training examples for retrieval: held-out queries, BM25 candidates through the shipped first stage, and mined
negatives, for the primary BEIR set and any mixed-in ones; and any shipped first stage's candidates for texts over
a corpus without queries (what `crossrerank adapt` mines from).

Against unjudged relevant documents (false negatives), the first `skip_top` non-positive candidates of each
query are not used: they are the likeliest to be relevant but unjudged. A fixed number of negatives per
positive is then sampled from the rest.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from haystack_crossrerank.data.beir import BeirData, load_beir
from haystack_crossrerank.evaluation.rerank import document_text, text_ranker
from haystack_crossrerank.utils.progress import progress


@dataclass
class RetrievalOptions:
    """
    Data and loss settings of retrieval training.

    :param data_dir: A BEIR folder, or a folder holding `<dataset>/`.
    :param dataset: The data set name.
    :param loss: `"listwise"` (softmax cross-entropy over a positive and its negatives) or `"bce"`.
    :param negatives: Negatives per positive.
    :param mine_depth: BM25 candidates mined per query.
    :param skip_top: Non-positive candidates at the top of each query's list that are never used as negatives.
    :param validation_queries: Training queries held out for validation.
    :param eval_depth: BM25 candidates reranked per validation query (30: the depth of `bm25_rerank.yaml`
        when the recipe was chosen and measured).
    :param max_length: Tokens per (query, document) pair in training and validation.
    :param train_limit: Use only the first N training queries (quick runs, tests).
    :param eval_test: Rerank the test queries' BM25 top-100 once at the end, for the card.
    :param mix: Other BEIR data sets (folders under `data_dir`) mixed into training: name -> examples per
        example of the primary set (e.g. `{"medquad": 1.0}`: as many MedQuAD examples as SciFact ones), from
        that set's train split, randomly chosen queries.
    """

    data_dir: str
    dataset: str = "scifact"
    loss: str = "listwise"
    negatives: int = 3
    mine_depth: int = 100
    skip_top: int = 3
    validation_queries: int = 100
    eval_depth: int = 30
    max_length: int = 192
    train_limit: int | None = None
    eval_test: bool = False
    mix: dict[str, float] = field(default_factory=dict)


def split_queries(data: BeirData, validation: int, seed: int) -> tuple[list[str], list[str]]:
    """
    Hold out `validation` training queries (a seeded shuffle); the rest train.

    :returns: (training query ids, validation query ids).
    """
    ids = sorted(data.queries)
    random.Random(seed).shuffle(ids)
    if not 0 <= validation < len(ids):
        raise ValueError(f"`validation_queries` must be in [0, {len(ids) - 1}], but got {validation}")
    return ids[validation:], ids[:validation]


def bm25_candidates_for(data: BeirData, query_ids: list[str], depth: int) -> dict[str, list[tuple[str, float]]]:
    """
    BM25 candidates (doc id, score) for the given queries: the first stage of `bm25_rerank.yaml`, run through
    `first_stage.py` as the benchmark and `crossrerank tune` run it.

    :returns: query id -> candidates, best first.
    """
    from haystack_crossrerank.retrievers.stages import first_stage, index_corpus, query_pipeline, retrieve

    stage = first_stage("bm25")
    index_corpus(data, stage.indexing)
    pipeline = query_pipeline(stage, depth)
    found = {}
    for query_id in query_ids:
        docs = retrieve(pipeline, stage, data.queries[query_id], depth)
        found[query_id] = [(str(d.id), float(d.score or 0.0)) for d in docs]
    return found


def mine_examples(
    data: BeirData, query_ids: list[str], options: RetrievalOptions, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """
    One training example per (query, positive): the positive and `negatives` mined negatives.

    :returns: The examples and statistics about the mining.
    """
    rng = random.Random(seed)
    texts = text_ranker()
    candidates = bm25_candidates_for(data, query_ids, options.mine_depth)
    examples = []
    short = 0
    for query_id in query_ids:
        positives = [d for d, rel in data.qrels[query_id].items() if rel > 0]
        pool = [d for d, _ in candidates[query_id] if d not in data.qrels[query_id]][options.skip_top :]
        if len(pool) < options.negatives:
            short += 1
            extra = [d for d in data.corpus if d not in data.qrels[query_id] and d not in pool]
            pool += rng.sample(extra, options.negatives - len(pool))
        for positive in positives:
            negatives = rng.sample(pool, options.negatives)
            examples.append(
                {
                    "query": data.queries[query_id],
                    "documents": [document_text(data.corpus[d], texts) for d in [positive, *negatives]],
                }
            )
    stats = {
        "queries": len(query_ids),
        "examples": len(examples),
        "negatives_per_positive": options.negatives,
        "mined_from": f"BM25 (bm25s, stemmed) top {options.mine_depth}, minus judged documents, minus the top "
        f"{options.skip_top} non-positive candidates",
        "queries_padded_with_random_negatives": short,
    }
    return examples, stats


def mix_examples(
    options: RetrievalOptions, primary_examples: int, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """
    Examples from the data sets of `options.mix`, `round(ratio * primary_examples)` from each, mined as the
    primary set's are (its own corpus and BM25 index), from randomly chosen training queries.

    :returns: The examples (all sets together) and statistics per set.
    :raises ValueError: On a negative ratio, or a set too small for the examples asked of it.
    """
    examples: list[dict[str, Any]] = []
    stats: dict[str, Any] = {}
    for name, ratio in sorted(options.mix.items()):
        if not ratio >= 0:
            raise ValueError(f"a mixing ratio must be >= 0, but got {ratio!r} for {name!r}")
        wanted = round(ratio * primary_examples)
        if wanted == 0:
            continue
        extra = load_beir(options.data_dir, "train", dataset=name)
        ids = sorted(q for q in extra.queries if extra.qrels.get(q))
        random.Random(seed).shuffle(ids)
        chosen, count = [], 0
        for query_id in ids:  # whole queries, until enough (query, positive) examples
            if count >= wanted:
                break
            chosen.append(query_id)
            count += sum(1 for rel in extra.qrels[query_id].values() if rel > 0)
        if count < wanted:
            raise ValueError(f"{name} train has {count} (query, positive) examples, fewer than the {wanted} asked")
        mined, mined_stats = mine_examples(extra, chosen, options, seed)
        examples.extend(mined[:wanted])
        stats[name] = {**mined_stats, "examples": min(wanted, len(mined)), "ratio": ratio}
    return examples, stats


def first_stage_candidates(
    corpus: dict[str, dict[str, str]], queries: Sequence[str], stage_name: str, depth: int, embedder: str | None = None
) -> list[list[str]]:
    """
    Index a corpus with a shipped first stage and retrieve each query's candidates, with a progress bar.

    :param corpus: doc id -> `{"title", "text"}`.
    :param queries: The query texts.
    :param stage_name: `"bm25"`, `"faiss"` or `"hybrid"`.
    :param depth: Candidates per query.
    :param embedder: The dense stages' embedding model (default: the offline all-MiniLM-L6-v2).
    :returns: Each query's candidate ids, best first, in the order of `queries`.
    """
    from haystack_crossrerank.retrievers.stages import first_stage, index_corpus, query_pipeline, retrieve

    stage = first_stage(stage_name)
    index_corpus(corpus, stage.indexing, embedder)
    pipeline = query_pipeline(stage, depth, embedder)
    bar = progress(queries, desc=f"{stage_name} candidates", unit="query")
    return [[str(d.id) for d in retrieve(pipeline, stage, text, depth)] for text in bar]
