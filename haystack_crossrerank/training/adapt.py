"""Adapting a reranker to a corpus without judgments (`crossrerank adapt`).

The examples are pseudo-queries made from the corpus itself with negatives mined from a shipped first stage
over the same corpus (:mod:`haystack_crossrerank.training.pseudo_queries`); the loss, the collator and the
trainer are those of retrieval training (:mod:`haystack_crossrerank.training.retrieval`). Nothing but the
corpus (and a `user_queries` file, if given) is read: no judgments, no queries of a data set.

The checkpoint is chosen without labels. `heldout` documents are kept out of training; each gives one span
query (its body without the span is what the index and the evaluation hold), and every `eval_steps` the model
reranks those queries' first-stage candidates: nDCG@10 (one relevant document, the query's own) picks the
checkpoint. At the end the adapted model is compared with the base model on the same queries, and the better
one is written, so a failed adaptation gives back the base model with a card that says so.

`minutes` bounds the whole command, reading and mining included: training stops early enough for the last
evaluation and the model folder to fit (three evaluations' time, as the base model's evaluation took, plus
half a minute), and the folder is written whole however early it stops.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from haystack_crossrerank.data.beir import BeirData, read_corpus
from haystack_crossrerank.evaluation.rerank import RerankEvaluator
from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
from haystack_crossrerank.training import reporting
from haystack_crossrerank.training.base_model import load_for_training
from haystack_crossrerank.training.losses import listwise_loss
from haystack_crossrerank.training.mining import first_stage_candidates
from haystack_crossrerank.training.pseudo_queries import (
    PAIR_UNITS,
    PseudoQuery,
    inverse_cloze,
    make_pseudo_queries,
    pseudo_examples,
    read_user_queries,
    user_pseudo_queries,
)
from haystack_crossrerank.training.retrieval import RetrievalCollator
from haystack_crossrerank.training.trainer import TrainConfig, TrainResult, train_cross_encoder
from haystack_crossrerank.training.weights import interpolate_with_base, write_base_weights
from haystack_crossrerank.utils.adapted import ADAPT_FILE

logger = logging.getLogger(__name__)

# The ranker settings an adapted model runs with in each shipped pipeline, recorded in its `adaptation.json`
# (`crossrerank serve` and `rerank-run` apply them). The shipped fusion weights were tuned for the STS model; an
# adapted model scores differently, and whoever adapts has no judgments to tune with. So this is one fixed recipe,
# chosen once by benchmarks/adapt_recipe.py on the *training* queries of SciFact and MedQuAD (each with its own
# adapted model): per pipeline, the setting whose worse 90% lower bound of the gain over the first stage, of the two
# sets, is highest (benchmarks/results/adapt_recipe.json; a test keeps the two equal).
ADAPTED_RANKER_SETTINGS: dict[str, dict[str, Any]] = {
    "bm25_rerank": {
        "passages": "sentences",
        "meta_placement": "passage",
        "aggregation": "max_first",
        "aggregation_weight": 0.5,
        "fusion": "minmax",
        "fusion_weight": 0.5,
        "max_passages": None,
    },
    "hybrid_rerank": {
        "passages": "sentences",
        "meta_placement": "passage",
        "aggregation": "max_first",
        "aggregation_weight": 0.25,
        "fusion": "zscore",
        "fusion_weight": 0.1,
        "max_passages": None,
    },
}
# The recipe over TrainConfig's defaults: retrieval training's batch and learning rate, one pass over the
# pseudo-queries, an evaluation every 75 steps, the best checkpoint kept.
ADAPT_PRESET: dict[str, Any] = {"epochs": 1.0, "batch_size": 8, "eval_steps": 75, "select_best": True}
SAVE_RESERVE_S = 30.0  # seconds kept back for loading the best checkpoint and writing the folder


@dataclass
class AdaptOptions:
    """
    What `crossrerank adapt` reads and makes. The defaults keep a 5,000-document corpus (SciFact) within the
    default 25 minutes on a 2-core CPU with the default MiniLM model: 2,400 pseudo-queries plan 300 steps, and
    the time budget ends training early where the machine is slower than that.

    :param corpus: A BEIR folder or a JSON lines file of documents
        (:func:`~haystack_crossrerank.data.beir.read_corpus`).
    :param first_stage: The shipped first stage that mines the negatives and gives the held-back candidates:
        `"bm25"` or `"hybrid"` (the `faiss` extra).
    :param minutes: The time budget of the whole run, reading and mining included.
    :param queries: The most training pseudo-queries, one per document (documents drawn with the seed).
    :param title_share: The share of title → body queries among documents with a title; the rest are span →
        rest queries.
    :param keep_span: The share of span queries whose positive keeps the span.
    :param user_queries: A file of queries without judgments, mixed in (see
        :func:`~haystack_crossrerank.training.pseudo_queries.read_user_queries`).
    :param negatives: Mined negatives per example.
    :param mine_depth: First-stage candidates the negatives come from.
    :param skip_top: Candidates at the top of each list that are never negatives.
    :param heldout: Documents held back for the label-free checkpoint choice (one span query each).
    :param eval_depth: First-stage candidates reranked per held-back query.
    :param max_length: Tokens per (query, document) pair in training and evaluation. 128 rather than retrieval
        training's 192: the adapted recipe scores sentences, and the shorter pairs let the planned steps fit the
        budget.
    :param embedder: The embedding model of the hybrid stage (default: the offline all-MiniLM-L6-v2).
    :param pairs: What a training pair holds beside the query (:data:`PAIR_UNITS`): the whole document, or its
        passage closest to the query, as the recorded sentence mode scores it; with `"passage"` the held-back
        queries score each candidate by its best passage too.
    :param base_share: The base model's share in the written weights: after training, each weight becomes
        `base_share * base + (1 - base_share) * trained` (weight-space ensembling, as in WiSE-FT), and that model
        is the one compared with the base on the held-back queries. 0 writes the trained weights as they are.
    """

    corpus: str
    first_stage: str = "bm25"
    minutes: float = 25.0
    queries: int = 2400
    title_share: float = 0.3
    keep_span: float = 0.1
    user_queries: str | None = None
    negatives: int = 3
    mine_depth: int = 100
    skip_top: int = 3
    heldout: int = 100
    eval_depth: int = 20
    max_length: int = 128
    embedder: str | None = None
    pairs: str = "document"
    base_share: float = 0.0

    def validate(self) -> None:
        """
        Check the settings.

        :raises ValueError: On a setting out of range or an unknown first stage.
        """
        if self.first_stage not in ("bm25", "hybrid"):
            raise ValueError(f"`first_stage` must be 'bm25' or 'hybrid', but got {self.first_stage!r}")
        if not self.minutes > 0:
            raise ValueError(f"`minutes` must be > 0, but got {self.minutes!r}")
        for name in ("queries", "negatives", "mine_depth", "heldout", "eval_depth", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be > 0, but got {getattr(self, name)}")
        if self.skip_top < 0:
            raise ValueError(f"`skip_top` must be >= 0, but got {self.skip_top}")
        if self.pairs not in PAIR_UNITS:
            raise ValueError(f"`pairs` must be one of {list(PAIR_UNITS)}, but got {self.pairs!r}")
        if not 0.0 <= self.base_share < 1.0:
            raise ValueError(f"`base_share` must be in [0, 1), but got {self.base_share!r}")


@dataclass
class AdaptResult:
    """
    What an adaptation produced.

    :param output_dir: The model folder.
    :param kept: `"adapted"`, or `"base"` when the base model did at least as well on the held-back queries.
    :param heldout: nDCG@10 and MRR@10 on the held-back pseudo-queries: `{"first_stage", "base", "adapted"}`.
    :param stopped_by_budget: Whether the time budget ended training before its planned steps.
    :param seconds: The whole run's wall time.
    :param facts: Everything `adaptation.json` records.
    :param training: The trainer's result.
    """

    output_dir: Path
    kept: str
    heldout: dict[str, dict[str, float]]
    stopped_by_budget: bool
    seconds: float
    facts: dict[str, Any]
    training: TrainResult = field(repr=False)


class TimeBudget(TrainerCallback):  # type: ignore[misc]
    """
    A `transformers.TrainerCallback` that ends training when another step would pass `deadline`; the step it
    stops at is evaluated and saved like a last step, so the best checkpoint can still be chosen.

    :param deadline: The latest end of training, on `clock`'s scale.
    :param clock: Seconds (default `time.perf_counter`).
    """

    def __init__(self, deadline: float, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.deadline = deadline
        self.clock = clock
        self.started = 0.0
        self.first_step = 0
        self.stopped_at: int | None = None
        self.planned_steps = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started, self.first_step, self.planned_steps = self.clock(), state.global_step, state.max_steps

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        now = self.clock()
        per_step = (now - self.started) / max(1, state.global_step - self.first_step)
        if now + per_step > self.deadline and state.global_step < state.max_steps and self.stopped_at is None:
            self.stopped_at = state.global_step
            control.should_training_stop = True
            control.should_evaluate = args.eval_strategy != "no"
            control.should_save = args.save_strategy != "no"
            logger.info("time budget reached: training stops at step %d of %d", state.global_step, state.max_steps)
        return control

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stopped_at is not None:
            return
        left = max(0.0, self.deadline - self.clock()) / 60
        logger.info("time budget: training may go on for %.1f more minutes", left)


def adapt_config(base_model: str, output_dir: str, **settings: Any) -> TrainConfig:
    """
    The run settings of an adaptation: :data:`ADAPT_PRESET` over :class:`TrainConfig`'s defaults.

    :param base_model: The model to adapt (hub id or folder).
    :param output_dir: The model folder to write.
    :param settings: Any other `TrainConfig` field; a `None` value keeps the preset.
    :returns: The config, its task `"adapt"`.
    """
    given = {key: value for key, value in settings.items() if value is not None}
    return TrainConfig(base_model=base_model, output_dir=output_dir, **{**ADAPT_PRESET, **given, "task": "adapt"})


def adapt_reranker(config: TrainConfig, options: AdaptOptions) -> AdaptResult:
    """
    Fine-tune a cross-encoder on pseudo-queries from a corpus, with no judgments read.

    :param config: Run settings: base model, output folder, seed, precision, ... (see :data:`ADAPT_PRESET`).
    :param options: The corpus, the pseudo-queries, the first stage and the time budget.
    :returns: The run's result.
    :raises FileExistsError: If the output folder exists and `config.overwrite` is not set (before any work).
    :raises FileNotFoundError: If the corpus or the queries file does not exist.
    :raises ValueError: On a bad setting, a malformed file, or a corpus too small for the held-back documents.
    """
    from transformers import AutoTokenizer

    started = time.perf_counter()
    options.validate()
    config.validate()
    if Path(config.output_dir).expanduser().exists() and not config.overwrite:
        raise FileExistsError(f"output folder '{config.output_dir}' exists; pass --overwrite to replace it")
    corpus = read_corpus(options.corpus)
    users = read_user_queries(options.user_queries, corpus) if options.user_queries else []
    heldout, training = _pseudo_queries(corpus, options, config.seed)
    indexed = {**corpus, **{q.doc_id: q.positive for q in heldout}}  # held-back documents without their span
    texts = [q.text for q in heldout] + [q.text for q in training] + [text for text, _ in users]
    found = first_stage_candidates(indexed, texts, options.first_stage, options.mine_depth, options.embedder)
    held_found = found[: len(heldout)]
    pairs = list(zip(training, found[len(heldout) : len(heldout) + len(training)], strict=True))
    pairs += user_pseudo_queries(users, found[len(heldout) + len(training) :], corpus)
    examples, stats = pseudo_examples(
        [q for q, _ in pairs],
        [c for _, c in pairs],
        corpus,
        negatives=options.negatives,
        skip_top=options.skip_top,
        seed=config.seed,
        pairs=options.pairs,
    )
    held = BeirData(
        "pseudo-heldout",
        indexed,
        {f"h{i}": q.text for i, q in enumerate(heldout)},
        {f"h{i}": {q.doc_id: 1} for i, q in enumerate(heldout)},
    )
    held_candidates = {f"h{i}": [(d, 0.0) for d in f[: options.eval_depth]] for i, f in enumerate(held_found)}
    mode = "sentences" if options.pairs == "passage" else "document"
    evaluator = RerankEvaluator(
        held, held_candidates, name="pseudo-heldout", max_length=options.max_length, passages=mode
    )
    first_alone = evaluate_rankings(held.qrels, {q: [d for d, _ in c] for q, c in held_candidates.items()})
    eval_started = time.perf_counter()
    base_metrics = _evaluate_base(config.base_model, evaluator)
    eval_seconds = time.perf_counter() - eval_started
    evaluations_after = 4 if options.base_share > 0 else 3  # the averaged model is evaluated once more
    budget = TimeBudget(started + options.minutes * 60 - evaluations_after * eval_seconds - SAVE_RESERVE_S)
    logger.info(
        "%d examples (%s) in %.0fs; the time budget leaves training %.1f minutes",
        len(examples),
        stats["by_kind"],
        time.perf_counter() - started,
        max(0.0, budget.deadline - time.perf_counter()) / 60,
    )
    facts = {**_facts(options, corpus, stats, len(heldout)), "seed": config.seed}
    config = dataclasses.replace(
        config, task="adapt", max_length=options.max_length, extra={**config.extra, **facts["card"]}
    )
    result = train_cross_encoder(
        config,
        examples,
        evaluator=evaluator,
        collator=RetrievalCollator(AutoTokenizer.from_pretrained(config.base_model), options.max_length, "listwise"),
        loss=listwise_loss,
        card_facts=facts["card_facts"],
        final_precision="auto",
        callbacks=[budget],
    )
    primary = evaluator.primary_metric_name
    heldout_metrics = {
        "first_stage": {key: round(first_alone[key], 4) for key in ("ndcg@10", "mrr@10")},
        "base": _short(base_metrics),
    }
    adapted_metrics = result.final_metrics
    if options.base_share > 0 and interpolate_with_base(config.base_model, result.output_dir, options.base_share):
        heldout_metrics["trained"] = _short(result.final_metrics)
        adapted_metrics = _evaluate_model(str(result.output_dir), evaluator, "the averaged model")
    heldout_metrics["adapted"] = _short(adapted_metrics)
    kept = "adapted" if adapted_metrics[primary] > base_metrics[primary] else "base"
    if kept == "base":
        logger.warning("the adapted model is not better than the base on the held-back queries: keeping the base")
        write_base_weights(config.base_model, result.output_dir)
    # The recipe is for adapted weights; a folder that kept the base model runs with the shipped settings.
    facts["ranker_settings"] = ADAPTED_RANKER_SETTINGS if kept == "adapted" else {}
    facts["result"] = {
        "kept": kept,
        "heldout": heldout_metrics,
        "stopped_by_budget": budget.stopped_at is not None,
        "steps": result.steps,
        "planned_steps": budget.planned_steps,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _record(result.output_dir, facts, config.base_model)
    return AdaptResult(
        result.output_dir,
        kept,
        heldout_metrics,
        budget.stopped_at is not None,
        time.perf_counter() - started,
        facts,
        result,
    )


def _pseudo_queries(
    corpus: dict[str, dict[str, str]], options: AdaptOptions, seed: int
) -> tuple[list[PseudoQuery], list[PseudoQuery]]:
    """The held-back span queries (one per held-back document, span always cut out) and the training ones."""
    ids = list(corpus)
    rng = random.Random(seed)
    rng.shuffle(ids)
    heldout: list[PseudoQuery] = []
    for doc_id in ids:
        if len(heldout) == options.heldout:
            break
        cut = inverse_cloze(corpus[doc_id]["text"], rng)
        if cut is not None:
            heldout.append(PseudoQuery(cut[0], doc_id, "span", {"title": corpus[doc_id]["title"], "text": cut[1]}))
    held_ids = {q.doc_id for q in heldout}
    rest = [d for d in ids if d not in held_ids][: options.queries]
    if len(heldout) < options.heldout or not rest:
        raise ValueError(
            f"`heldout` ({options.heldout}) must leave documents to train on and be at most the number of documents "
            f"long enough to cut a span from; this corpus has {len(corpus)} documents, {len(heldout)} held back"
        )
    training = make_pseudo_queries(
        corpus, rest, title_share=options.title_share, keep_span=options.keep_span, seed=seed + 1
    )
    return heldout, training


def _evaluate_base(base_model: str, evaluator: RerankEvaluator) -> dict[str, float]:
    """The base model on the held-back queries, scored as the trainer scores its final model."""
    return _evaluate_model(base_model, evaluator, "the base model")


def _evaluate_model(model_dir: str, evaluator: RerankEvaluator, label: str) -> dict[str, float]:
    """A model (hub id or folder) on the held-back queries, scored as the trainer scores its final model."""
    model, tokenizer = load_for_training(model_dir)
    with reporting.evaluation_lines_folded(evaluator):
        scorer = reporting.EvaluationScorer.from_model(model.eval(), tokenizer, precision="auto", batch_size=64)
        metrics = evaluator(scorer)
    logger.info(
        "%s on the held-back queries: %s", label, reporting.metrics_line(metrics, evaluator.primary_metric_name)
    )
    return metrics


def _short(metrics: dict[str, float]) -> dict[str, float]:
    return {key.rpartition("_")[2]: round(value, 4) for key, value in metrics.items()}


def _facts(options: AdaptOptions, corpus: dict[str, Any], stats: dict[str, Any], heldout: int) -> dict[str, Any]:
    """What the card and `adaptation.json` say about the data."""
    from haystack_crossrerank.retrievers.index import file_sha256

    source = Path(options.corpus).expanduser()
    files = [source / n for n in ("corpus.jsonl", "corpus.jsonl.gz")] if source.is_dir() else [source]
    path = next(f for f in files if f.is_file())
    digest = file_sha256(path)
    kinds = stats["by_kind"]
    described = (
        f"{kinds['title']} title → body, {kinds['span']} span → rest of the document (inverse cloze), "
        f"{kinds['user']} user queries"
    )
    corpus_line = f"{path.name} ({len(corpus)} documents, sha256 {digest})"
    return {
        "corpus": {"path": str(path), "documents": len(corpus), "sha256": digest},
        "options": dataclasses.asdict(options),
        "examples": stats,
        "heldout_documents": heldout,
        "card": {
            "adapted on": corpus_line,
            "pseudo-queries": described,
            "negatives": f"{options.negatives} per example from the {options.first_stage} first stage's top "
            f"{options.mine_depth}, the query's own document and duplicates removed, then the top "
            f"{options.skip_top} left out",
            "training pairs": "query and the passage of each document closest to it"
            if options.pairs == "passage"
            else "query and whole document",
            "time budget": f"{options.minutes} minutes",
            "max_length": options.max_length,
        },
        "card_facts": {
            "data": f"pseudo-queries from {corpus_line}, no relevance judgments read: {described}",
            "loss": "listwise softmax cross-entropy over 1 positive + negatives",
            "evaluation": f"{heldout} held-back documents of the same corpus, one span query each, "
            f"{options.first_stage} top {options.eval_depth} reranked"
            + (", each by its best passage" if options.pairs == "passage" else "")
            + " (nDCG@10 of the query's own document)",
        },
    }


def _record(folder: Path, facts: dict[str, Any], base_model: str) -> None:
    """Write `adaptation.json` and the card's adaptation section (each replaced whole)."""
    result = facts["result"]
    held = result["heldout"]
    lines = [
        "",
        "## Adaptation",
        f"- adapted on: {facts['card']['adapted on']}; no relevance judgments read",
        f"- training: {result['steps']} of {result['planned_steps']} planned steps"
        + ("; stopped by the time budget" if result["stopped_by_budget"] else ""),
        f"- whole run: {result['seconds']:.0f} s of a {facts['options']['minutes']}-minute budget",
        *(
            [f"- weights: {share:g} × the base model's + {1 - share:g} × the trained ones (the `trained` row)"]
            if "trained" in held and (share := facts["options"]["base_share"])
            else []
        ),
        "",
        "| held-back pseudo-queries | nDCG@10 | MRR@10 |",
        "|---|---|---|",
        *[f"| {name} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} |" for name, m in held.items()],
        "",
        f"Kept: the {result['kept']} model"
        + ("." if result["kept"] == "adapted" else f" (`{base_model}`): the adapted one was not better."),
        "",
        *_settings_lines(facts["ranker_settings"]),
    ]
    card = folder / "README.md"
    _replace_text(card, card.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(lines))
    _replace_text(folder / ADAPT_FILE, json.dumps(facts, indent=1, default=str) + "\n")


def _settings_lines(settings: dict[str, dict[str, Any]]) -> list[str]:
    """The card's lines on the ranker settings to run the model with (none for a folder that kept the base)."""
    if not settings:
        return []
    lines = [
        "### Ranker settings",
        "",
        f"Run this model with these `CrossEncoderRanker` settings (recorded in `{ADAPT_FILE}`; `crossrerank serve` "
        "and `crossrerank rerank-run` apply them, `--set` overrides):",
        "",
    ]
    for pipeline, values in settings.items():
        lines.append(f"- `{pipeline}`: " + ", ".join(f"`{k}={v}`" for k, v in values.items()))
    return [*lines, ""]


def _replace_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
