"""Retrieval training: fine-tune a reranker on a BEIR data set's relevance judgments with mined negatives.

Positives are the judged documents of each training query. Negatives are mined from our own first stage
(`first_stage.py`: the BM25 stage of `bm25_rerank.yaml`): the top `mine_depth` candidates minus the judged
positives. Documents are paired with queries as the text the ranker sends in document mode
(`CrossEncoderRanker.document_text`: title, newline, abstract). Other BEIR data sets can be mixed in (`mix`:
data set -> examples per example of the primary set), each mined the same way over its own corpus.
Against unjudged relevant documents (false negatives), the first `skip_top` non-positive candidates of each
query are not used: they are the likeliest to be relevant but unjudged. A fixed number of negatives per
positive is then sampled from the rest.

Two losses: the seed's pointwise binary cross-entropy (positive 1, negative 0), and a listwise softmax
cross-entropy over one positive and its negatives. Part of the training queries is held out as a
validation split (reranking their BM25 candidates, nDCG@10) for checkpoint selection and every setting; the
test queries are not read here unless `eval_test` asks for the final report.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from haystack_crossrerank.data.beir import BeirData, load_beir
from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
from haystack_crossrerank.training.card import write_model_card
from haystack_crossrerank.training.trainer import TrainConfig, TrainResult, collate_micro_batches, train_cross_encoder

logger = logging.getLogger(__name__)

LOSSES = ("bce", "listwise")
HELDOUT_FILE = "heldout_queries.json"  # written into the model folder: the training queries held out


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
    :param eval_depth: BM25 candidates reranked per validation query (`None`: the depth `bm25_rerank.yaml`
        ships with).
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
    eval_depth: int | None = None
    max_length: int = 192
    train_limit: int | None = None
    eval_test: bool = False
    mix: dict[str, float] = field(default_factory=dict)


def text_ranker() -> Any:
    """A ranker that is never warmed up (no weights load): it only builds the texts, as the shipped pipelines do."""
    from haystack_crossrerank.ranker import CrossEncoderRanker

    return CrossEncoderRanker(model="text-only", meta_fields_to_embed=["title"])


def document_text(doc: dict[str, str], ranker: Any = None) -> str:
    """
    The text the ranker pairs with a query in document mode (title, `"\\n"`, text), so training sees exactly
    what the ranker sends.

    :param doc: `{"title", "text"}`.
    :param ranker: From :func:`text_ranker` (made anew if not given).
    :returns: The text.
    """
    from haystack import Document

    ranker = ranker if ranker is not None else text_ranker()
    return str(ranker.document_text(Document(content=doc["text"], meta={"title": doc["title"]})))


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
    from haystack_crossrerank.first_stage import first_stage, index_corpus, query_pipeline, retrieve

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


class RetrievalCollator:
    """Turns examples into length-sorted micro-batches; labels carry (example index, is positive)."""

    def __init__(self, tokenizer: Any, max_length: int, loss: str) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.loss = loss

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        queries, texts, labels = [], [], []
        for group, row in enumerate(rows):
            for position, text in enumerate(row["documents"]):
                queries.append(row["query"])
                texts.append(text)
                labels.append([float(group), 1.0 if position == 0 else 0.0])
        encoded = self.tokenizer(queries, texts, truncation="only_second", max_length=self.max_length)
        return collate_micro_batches(self.tokenizer, encoded, labels)


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


class RerankEvaluator:
    """nDCG@10 (and MRR@10) of reranking fixed BM25 candidates with the scorer."""

    def __init__(
        self,
        data: BeirData,
        candidates: dict[str, list[tuple[str, float]]],
        *,
        name: str,
        max_length: int | None = None,
    ) -> None:
        self.data = data
        self.candidates = candidates
        self.name = name
        self.max_length = max_length

    @property
    def primary_metric_name(self) -> str:
        return f"{self.name}_ndcg@10"

    def __call__(self, scorer: Any, *, extra: dict[str, Any] | None = None) -> dict[str, float]:
        pairs, owners = [], []
        texts = text_ranker()
        for query_id, docs in self.candidates.items():
            for doc_id, _ in docs:
                pairs.append((self.data.queries[query_id], document_text(self.data.corpus[doc_id], texts)))
                owners.append((query_id, doc_id))
        scores = scorer.score(pairs, max_length=self.max_length)  # for this evaluation only
        per_query: dict[str, list[tuple[str, float]]] = {}
        for (query_id, doc_id), score in zip(owners, scores, strict=True):
            per_query.setdefault(query_id, []).append((doc_id, score))
        rankings = {q: [d for d, _ in sorted(v, key=lambda x: -x[1])] for q, v in per_query.items()}
        metrics = evaluate_rankings({q: self.data.qrels[q] for q in self.candidates}, rankings)
        result = {f"{self.name}_ndcg@10": metrics["ndcg@10"], f"{self.name}_mrr@10": metrics["mrr@10"]}
        logger.info("%s: nDCG@10 %.4f, MRR@10 %.4f", self.name, metrics["ndcg@10"], metrics["mrr@10"])
        return result


def train_retrieval(config: TrainConfig, options: RetrievalOptions) -> TrainResult:
    """
    Fine-tune a reranker on a BEIR training split's judgments with mined negatives.

    :param config: Run settings (base model, output, epochs, batch size in examples, lr, ...).
    :param options: Data, negatives and loss.
    :returns: The run's result.
    :raises ValueError: On an unknown loss or too many validation queries.
    """
    from transformers import AutoTokenizer

    if options.loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {list(LOSSES)}, but got {options.loss!r}")
    data = load_beir(options.data_dir, "train", dataset=options.dataset)
    train_ids, validation_ids = split_queries(data, options.validation_queries, config.seed)
    if options.train_limit is not None:
        train_ids = train_ids[: options.train_limit]
    eval_depth = options.eval_depth
    if eval_depth is None:
        from haystack_crossrerank.first_stage import first_stage, shipped_depth

        eval_depth = shipped_depth(first_stage("bm25"))
    examples, stats = mine_examples(data, train_ids, options, config.seed)
    validation_candidates = bm25_candidates_for(data, validation_ids, eval_depth)
    mixed, mix_stats = mix_examples(options, len(examples), config.seed)
    primary_examples = len(examples)
    examples = examples + mixed
    validation = RerankEvaluator(
        data, validation_candidates, name="retrieval-validation", max_length=options.max_length
    )
    bm25_alone = evaluate_rankings(
        {q: data.qrels[q] for q in validation_ids}, {q: [d for d, _ in v] for q, v in validation_candidates.items()}
    )
    logger.info("BM25 alone on the validation queries: nDCG@10 %.4f", bm25_alone["ndcg@10"])
    finals: list[Any] = []
    if options.eval_test:
        test = load_beir(options.data_dir, "test", dataset=options.dataset)
        finals.append(RerankEvaluator(test, bm25_candidates_for(test, list(test.queries), 100), name="test-bm25top100"))
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    config.task = "retrieval"
    config.extra.update(
        {
            "loss": options.loss,
            "negatives per positive": options.negatives,
            "negatives": stats["mined_from"],
            "training queries": len(train_ids),
            "mixed in": {
                name: f"{v['examples']} examples ({v['queries']} queries, ratio {v['ratio']})"
                for name, v in mix_stats.items()
            }
            or "nothing",
            "validation queries": f"{len(validation_ids)} held-out training queries, BM25 top {eval_depth}",
            "max_length": options.max_length,
            "BM25 alone on the validation queries (nDCG@10)": round(bm25_alone["ndcg@10"], 4),
        }
    )

    def card(folder: Path, facts: dict[str, Any]) -> None:
        # The held-out queries, so that later choices for this model (e.g. `crossrerank tune --query-ids`) are
        # made on queries it was not trained on.
        (folder / HELDOUT_FILE).write_text(
            json.dumps({"dataset": data.name, "split": "train", "query_ids": sorted(validation_ids)}, indent=1) + "\n",
            encoding="utf-8",
        )
        write_model_card(
            folder,
            {
                **facts,
                "data": f"{data.name} train judgments ({len(train_ids)} queries, {primary_examples} examples)"
                + "".join(f" + {name} train ({v['examples']} examples)" for name, v in mix_stats.items()),
                "loss": "listwise softmax cross-entropy over 1 positive + negatives"
                if options.loss == "listwise"
                else "binary cross-entropy, positives 1 and negatives 0",
                "evaluation": f"{len(validation_ids)} held-out {data.name} training queries (BM25 top "
                f"{eval_depth} reranked, nDCG@10)",
            },
        )

    logger.info("Retrieval training data: %s; mixed in: %s", stats, mix_stats)
    return train_cross_encoder(
        config,
        examples,
        evaluator=validation,
        primary_metric=validation.primary_metric_name,
        final_evaluators=finals,
        collator=RetrievalCollator(tokenizer, options.max_length, options.loss),
        loss=listwise_loss if options.loss == "listwise" else pointwise_loss,
        card_writer=card,
        final_precision="auto",
    )
