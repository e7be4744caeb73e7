"""Retrieval training: fine-tune a reranker on a BEIR data set's relevance judgments with mined negatives.

Positives are the judged documents of each training query. Negatives are mined from our own first stage
(`first_stage.py`: the BM25 stage of `bm25_rerank.yaml`): the top `mine_depth` candidates minus the judged
positives. Documents are paired with queries as the text the ranker sends in document mode
(`CrossEncoderRanker.document_text`: title, newline, abstract). Other BEIR data sets can be mixed in (`mix`:
data set -> examples per example of the primary set), each mined the same way over its own corpus.
Mining lives in `mining.py`, the losses in `losses.py`, the reranking evaluator in `evaluation/rerank.py`.

Two losses: the seed's pointwise binary cross-entropy (positive 1, negative 0), and a listwise softmax
cross-entropy over one positive and its negatives. Part of the training queries is held out as a
validation split (reranking their BM25 candidates, nDCG@10) for checkpoint selection and every setting; the
test queries are not read here unless `eval_test` asks for the final report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from haystack_crossrerank.data.beir import load_beir
from haystack_crossrerank.evaluation.rerank import RerankEvaluator
from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
from haystack_crossrerank.training.losses import LOSSES, listwise_loss, pointwise_loss
from haystack_crossrerank.training.mining import (
    RetrievalOptions,
    bm25_candidates_for,
    mine_examples,
    mix_examples,
    split_queries,
)
from haystack_crossrerank.training.trainer import TrainConfig, TrainResult, collate_micro_batches, train_cross_encoder

logger = logging.getLogger(__name__)

HELDOUT_FILE = "heldout_queries.json"  # written into the model folder: the training queries held out


class RetrievalCollator:
    """
    Turns examples into length-sorted micro-batches (on a GPU: one padded batch, see
    :class:`~haystack_crossrerank.training.trainer.PairCollator`); labels carry (example index, is positive).
    """

    def __init__(self, tokenizer: Any, max_length: int, loss: str, *, micro_batches: bool | None = None) -> None:
        import torch

        self.tokenizer = tokenizer
        self.max_length = max_length
        self.loss = loss
        self.micro_batches = (not torch.cuda.is_available()) if micro_batches is None else micro_batches

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        queries, texts, labels = [], [], []
        for group, row in enumerate(rows):
            for position, text in enumerate(row["documents"]):
                queries.append(row["query"])
                texts.append(text)
                labels.append([float(group), 1.0 if position == 0 else 0.0])
        # The text is cut first, as the ranker cuts it; a query that alone fills `max_length` (a long span or user
        # query) is cut too, instead of stopping training with a truncation error.
        encoded = self.tokenizer(queries, texts, truncation="longest_first", max_length=self.max_length)
        return collate_micro_batches(self.tokenizer, encoded, labels, micro_batches=self.micro_batches)


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
    config = dataclasses.replace(
        config,
        task="retrieval",
        extra={
            **config.extra,
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
        },
    )

    card_facts = {
        "data": f"{data.name} train judgments ({len(train_ids)} queries, {primary_examples} examples)"
        + "".join(f" + {name} train ({v['examples']} examples)" for name, v in mix_stats.items()),
        "loss": "listwise softmax cross-entropy over 1 positive + negatives"
        if options.loss == "listwise"
        else "binary cross-entropy, positives 1 and negatives 0",
        "evaluation": f"{len(validation_ids)} held-out {data.name} training queries (BM25 top {eval_depth} reranked, "
        "nDCG@10)",
    }
    # The held-out queries, so that later choices for this model (e.g. `crossrerank tune --query-ids`) are made
    # on queries it was not trained on.
    heldout = {"dataset": data.name, "split": "train", "query_ids": sorted(validation_ids)}

    logger.info("Retrieval training data: %s; mixed in: %s", stats, mix_stats)
    return train_cross_encoder(
        config,
        examples,
        evaluator=validation,
        final_evaluators=finals,
        collator=RetrievalCollator(tokenizer, options.max_length, options.loss),
        loss=listwise_loss if options.loss == "listwise" else pointwise_loss,
        card_facts=card_facts,
        extra_files={HELDOUT_FILE: json.dumps(heldout, indent=1) + "\n"},
        final_precision="auto",
    )
