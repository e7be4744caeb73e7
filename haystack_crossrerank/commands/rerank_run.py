"""Batch reranking of run files: `crossrerank rerank-run`, in one process or on Ray Data.

A run is a TREC run file (`qid Q0 docid rank score tag`) or JSON lines of candidates (`query_id`, `doc_id`,
`score`); the texts come from a BEIR corpus and queries file. Each query's candidates go through a
:class:`CrossEncoderRanker` built with the settings of a shipped pipeline's ranker (passages, aggregation,
fusion with the run's scores), so a run reranks exactly as the component does; the output is a TREC run.

With Ray (`ray=True` or a cluster address), queries are read in shards of `shard_queries`; each shard goes
through `Dataset.map_batches` with the ranker held by a stateful actor per worker (`num_gpus` per actor on GPU
clusters), and its lines are written before the next shard is read, so memory stays bounded whatever the run's
size. A worker that dies is restarted and its batch retried (Ray Data's actor fault tolerance, bounded here by
`max_restarts`); the output does not depend on which worker scored what.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haystack import Document

from haystack_crossrerank.utils.extras import require

logger = logging.getLogger(__name__)

RUN_TAG = "crossrerank"


@dataclass
class RerankRunOptions:
    """
    What `crossrerank rerank-run` does.

    :param run: The first-stage run: TREC (`qid Q0 docid rank score tag`) or `.jsonl` candidates.
    :param corpus: A BEIR folder or corpus file (see :func:`haystack_crossrerank.data.beir.read_corpus`).
    :param queries: A BEIR `queries.jsonl` or its folder.
    :param model: The cross-encoder.
    :param output: The TREC run to write.
    :param qrels: A BEIR qrels `.tsv`; with it the metrics of the run and of its reranking are reported.
    :param depth: Candidates per query taken from the run (its best `depth`).
    :param pipeline: The shipped pipeline whose ranker settings are used.
    :param settings: Further ranker settings (e.g. `{"backend": "openvino"}`).
    :param ray: `None` (one process), `"local"` (a local Ray), or a cluster address (`auto`, `ray://...`).
    :param workers: Ray actors (each holds one model).
    :param num_gpus: GPUs per actor.
    :param shard_queries: Queries read, scored and written at a time on Ray.
    :param max_restarts: Restarts allowed per Ray actor.
    :param fault_once: Fault injection for tests: the first Ray batch that finds this file missing creates it
        and kills its own worker process, so that a test can check that the batch is retried.
    """

    run: str
    corpus: str
    queries: str
    model: str
    output: str
    qrels: str | None = None
    depth: int = 100
    pipeline: str = "bm25_rerank"
    settings: dict[str, Any] = field(default_factory=dict)
    ray: str | None = None
    workers: int = 2
    num_gpus: float = 0.0
    shard_queries: int = 256
    max_restarts: int = 3
    fault_once: str | None = None


def read_run(path: str | Path, depth: int | None = None) -> dict[str, list[tuple[str, float]]]:
    """
    Read a run: TREC lines `qid Q0 docid rank score tag`, or JSON lines with `query_id`, `doc_id`, `score`
    (`qid`, `docid` accepted). Each query's candidates come back best first (by rank in TREC, by score in JSON).

    :param path: The file (`.jsonl`/`.jsonl.gz` is read as JSON lines).
    :param depth: Keep each query's best `depth`.
    :returns: query id -> [(doc id, score)], queries in file order.
    :raises FileNotFoundError: If the file does not exist.
    :raises ValueError: On a malformed line, with file and line.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise FileNotFoundError(f"run '{source}' does not exist")
    rows: dict[str, list[tuple[float, str, float]]] = {}
    if source.name.endswith((".jsonl", ".jsonl.gz")):
        from haystack_crossrerank.data.jsonl import iter_jsonl

        for n, row in iter_jsonl(source):
            qid, docid, score = (
                row.get("query_id", row.get("qid")),
                row.get("doc_id", row.get("docid")),
                row.get("score"),
            )
            if qid is None or docid is None or not isinstance(score, (int, float)):
                raise ValueError(f"{source}:{n}: expected query_id, doc_id and a numeric score, but got {row!r}")
            rows.setdefault(str(qid), []).append((-float(score), str(docid), float(score)))
    else:
        with source.open(encoding="utf-8") as handle:
            for n, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 6:
                    raise ValueError(f"{source}:{n}: expected 6 fields 'qid Q0 docid rank score tag', got {line!r}")
                try:
                    rank, score = int(parts[3]), float(parts[4])
                except ValueError:
                    raise ValueError(f"{source}:{n}: rank must be an integer and score a number: {line!r}") from None
                rows.setdefault(parts[0], []).append((float(rank), parts[2], score))
    if not rows:
        raise ValueError(f"{source}: no candidates found")
    return {q: [(d, s) for _, d, s in sorted(c, key=lambda x: x[0])][:depth] for q, c in rows.items()}


def build_ranker(options: RerankRunOptions) -> Any:
    """The ranker of `options.pipeline`, with the model, `top_k` = depth and the extra settings."""
    import yaml

    from haystack_crossrerank.ranker import CrossEncoderRanker
    from haystack_crossrerank.retrievers.pipelines import pipeline_path
    from haystack_crossrerank.utils.adapted import with_recorded_settings

    spec = yaml.safe_load(pipeline_path(options.pipeline).read_text(encoding="utf-8"))
    params = dict(spec["components"]["ranker"]["init_parameters"])
    # An adapted model's folder records the ranker settings it runs with; explicit settings win.
    params.update(model=options.model, top_k=options.depth)
    params.update(with_recorded_settings(options.model, options.pipeline, options.settings))
    return CrossEncoderRanker(**params)


def rerank_items(ranker: Any, items: list[dict[str, Any]]) -> list[str]:
    """
    Rerank prepared queries; one TREC block (one line per candidate, best first) per query.

    :param ranker: A :class:`CrossEncoderRanker`.
    :param items: `{"qid", "query", "doc_ids", "titles", "texts", "scores"}` per query.
    :returns: The blocks, in the items' order.
    """
    blocks = []
    for item in items:
        docs = [
            Document(id=str(d), content=str(t), meta={"title": str(h)}, score=float(s))
            for d, h, t, s in zip(item["doc_ids"], item["titles"], item["texts"], item["scores"], strict=True)
        ]
        ranked = ranker.run(query=str(item["query"]), documents=docs, top_k=len(docs))["documents"]
        blocks.append(
            "".join(f"{item['qid']} Q0 {d.id} {r} {d.score:.6f} {RUN_TAG}\n" for r, d in enumerate(ranked, start=1))
        )
    return blocks


def _check_run(
    run: dict[str, list[tuple[str, float]]], queries: dict[str, str], corpus: dict[str, dict[str, str]]
) -> None:
    """Every query and document of the run must have a text: checked before any scoring, not midway."""
    for qid, candidates in run.items():
        if qid not in queries:
            raise ValueError(f"query {qid!r} of the run is not in the queries file")
        missing = [d for d, _ in candidates if d not in corpus]
        if missing:
            raise ValueError(f"document {missing[0]!r} of query {qid!r} is not in the corpus")


def _items(
    run: dict[str, list[tuple[str, float]]], queries: dict[str, str], corpus: dict[str, dict[str, str]]
) -> Iterator[dict[str, Any]]:
    for qid, candidates in run.items():
        yield {
            "qid": qid,
            "query": queries[qid],
            "doc_ids": [d for d, _ in candidates],
            "titles": [corpus[d]["title"] for d, _ in candidates],
            "texts": [corpus[d]["text"] for d, _ in candidates],
            "scores": [s for _, s in candidates],
        }


def rerank_run(options: RerankRunOptions) -> dict[str, Any]:
    """
    Rerank a run and write it; report pairs/s and, with qrels, the metrics before and after.

    :param options: What to rerank.
    :returns: A summary (queries, pairs, seconds, pairs/s, metrics).
    """
    from haystack_crossrerank.data.beir import read_corpus, read_queries

    run = read_run(options.run, options.depth)
    queries, corpus = read_queries(options.queries), read_corpus(options.corpus)
    _check_run(run, queries, corpus)
    items = _items(run, queries, corpus)
    output = Path(options.output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    started = time.perf_counter()
    with partial.open("w", encoding="utf-8") as out:
        if options.ray is None:
            ranker = build_ranker(options)
            ranker.warm_up()
            for item in items:
                out.write(rerank_items(ranker, [item])[0])
        else:
            for block in _ray_blocks(options, items):
                out.write(block)
    seconds = time.perf_counter() - started
    os.replace(partial, output)
    pairs = sum(len(c) for c in run.values())
    summary: dict[str, Any] = {
        "output": str(output),
        "queries": len(run),
        "pairs": pairs,
        "seconds": round(seconds, 2),
        "pairs_per_s": round(pairs / seconds, 2) if seconds > 0 else None,
        "engine": "ray" if options.ray is not None else "one process",
    }
    if options.qrels:
        summary.update(_metrics(options.qrels, run, read_run(output)))
    return summary


def _metrics(
    qrels_path: str, before: dict[str, list[tuple[str, float]]], after: dict[str, list[tuple[str, float]]]
) -> dict[str, float]:
    from haystack_crossrerank.data.beir import read_qrels
    from haystack_crossrerank.evaluation import evaluate_rankings

    qrels = read_qrels(Path(qrels_path))
    judged = {q: qrels[q] for q in before if q in qrels}
    result = {}
    for name, run in (("run", before), ("reranked", after)):
        metrics = evaluate_rankings(judged, {q: [d for d, _ in run[q]] for q in judged})
        result.update({f"{name}_{k}": round(v, 4) for k, v in metrics.items()})
    return result


class _RerankActor:
    """A Ray Data stateful UDF: one ranker per actor, loaded once."""

    def __init__(self, ranker_data: dict[str, Any], fault_once: str | None = None) -> None:
        from haystack_crossrerank.ranker import CrossEncoderRanker

        self.fault_once = fault_once
        self.ranker = CrossEncoderRanker.from_dict(ranker_data)
        self.ranker.warm_up()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.fault_once and not os.path.exists(self.fault_once):
            Path(self.fault_once).write_text(str(os.getpid()), encoding="utf-8")
            os._exit(1)  # the worker dies mid-run, as a killed process would
        items = [{key: batch[key][i] for key in batch} for i in range(len(batch["qid"]))]
        import numpy as np

        return {"qid": batch["qid"], "block": np.array(rerank_items(self.ranker, items), dtype=object)}


def _ray_blocks(options: RerankRunOptions, items: Iterator[dict[str, Any]]) -> Iterator[str]:
    """Shard by shard: score on Ray Data actors, then yield the blocks in the run's order."""
    ray = require("ray", "ray")
    require("ray.data", "ray")
    if not ray.is_initialized():
        if options.ray == "local":
            ray.init(num_cpus=max(options.workers, 1), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=options.ray, log_to_driver=False)
    ranker_data = build_ranker(options).to_dict()
    shard: list[dict[str, Any]] = []
    for item in items:
        shard.append(item)
        if len(shard) >= options.shard_queries:
            yield from _ray_shard(ray, options, ranker_data, shard)
            shard = []
    if shard:
        yield from _ray_shard(ray, options, ranker_data, shard)


def _ray_shard(
    ray: Any, options: RerankRunOptions, ranker_data: dict[str, Any], shard: list[dict[str, Any]]
) -> list[str]:
    import warnings

    with warnings.catch_warnings():
        # Actor restarts have no named parameter in `map_batches`; they go through `ray_remote_args`, which Ray
        # warns about (removed in 2.64, hence the `ray` extra's upper bound).
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        dataset = ray.data.from_items(shard).map_batches(
            _RerankActor,
            fn_constructor_kwargs={"ranker_data": ranker_data, "fault_once": options.fault_once},
            batch_size=4,
            batch_format="numpy",
            concurrency=options.workers,
            num_cpus=1,
            num_gpus=options.num_gpus or None,
            max_restarts=options.max_restarts,
            max_task_retries=options.max_restarts,
        )
    blocks = {str(row["qid"]): str(row["block"]) for row in dataset.iter_rows()}
    return [blocks[item["qid"]] for item in shard]
