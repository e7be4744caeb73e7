"""Two rankers in a row after BM25: does an STS model's passage score add to a retrieval model's?

The first ranker (A) fuses its score with BM25's; the second (B) fuses its own with A's output, as two
`CrossEncoderRanker` components chained in a pipeline would (each with `fusion` on, the first with
`top_k=None`). Both rankers' settings and both fusion weights are chosen on B's held-out *training* queries
(`heldout_queries.json` in a retrieval-trained model's folder), by the same one-sided 90% lower bound of the
gain over BM25 that `crossrerank tune` uses; then the choice is scored once on the test queries. Passage scores
are computed once per model through `CrossEncoderRanker.score_passages` (the ranker's own path) and cached in
JSON files, and every grid point is computed from them with the functions the ranker applies.

    python benchmarks/chain_rerank.py grid --a MODEL_A:sentences/passage --b MODEL_B:windows/passage \
        --json results/chain_grid.json
    python benchmarks/chain_rerank.py test --choice results/chain_grid.json --json results/chain_test.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

# Passage aggregations tried for ranker A; ranker B keeps the setting tuned for it alone and one without a cap.
Aggregation = tuple[str, float, int | None]  # method, weight, max_passages
A_AGGREGATIONS: list[Aggregation] = [("max_mean", 0.25, None), ("max_mean", 0.5, None), ("max_mean", 0.75, None)]
A_AGGREGATIONS += [("max_first", 0.5, None), ("max", 0.5, None), ("max_mean", 0.25, 8)]
B_AGGREGATIONS: list[Aggregation] = [("max_mean", 0.25, 8), ("max_mean", 0.25, None)]
FUSIONS = ["zscore", "minmax"]
WEIGHTS = [round(0.1 * i, 1) for i in range(1, 10)]
DEPTHS = (10, 20, 30)


def candidates(data_dir: str, split: str, ids: list[str], depth: int) -> tuple[Any, dict[str, list[Any]]]:
    from haystack_crossrerank.data.beir import load_beir
    from haystack_crossrerank.first_stage import first_stage, index_corpus, query_pipeline, retrieve

    data = load_beir(data_dir, split, dataset="scifact")
    stage = first_stage("bm25")
    index_corpus(data, stage.indexing)
    pipeline = query_pipeline(stage, depth)
    return data, {q: retrieve(pipeline, stage, data.queries[q], depth) for q in ids}


def passage_scores(spec: str, cache: Path, data: Any, found: dict[str, list[Any]]) -> dict[str, dict[str, list]]:
    """Raw passage logits per query and document for `MODEL:MODE/PLACEMENT`, read from or added to `cache`."""
    from haystack_crossrerank.pipelines import load_pipeline, pipeline_path
    from haystack_crossrerank.progress import progress
    from haystack_crossrerank.ranker import CrossEncoderRanker

    model, variant = spec.rsplit(":", 1)
    saved = json.loads(cache.read_text()) if cache.is_file() else {}
    table = saved.setdefault(f"{model}:{variant}", {})
    missing = [q for q in found if q not in table or not all(d.id in table[q] for d in found[q])]
    if missing:
        template = load_pipeline(pipeline_path("bm25_rerank"), model=model).get_component("ranker")
        assert isinstance(template, CrossEncoderRanker)
        settings = template.to_dict()
        mode, placement = variant.split("/")
        settings["init_parameters"].update({"passages": mode, "meta_placement": placement, "max_passages": None})
        ranker = CrossEncoderRanker.from_dict(settings)
        for q in progress(missing, desc=f"scoring {Path(model).name} {variant}", unit="query"):
            scored = ranker.score_passages(data.queries[q], found[q])
            table[q] = {doc.id: logits for doc, (_, logits) in zip(found[q], scored, strict=True)}
        cache.write_text(json.dumps(saved))
    return table


def chained_ranking(docs: list[Any], a: list[float], b: list[float], point: dict[str, Any]) -> list[str]:
    from haystack_crossrerank.fusion import fuse_scores

    first = fuse_scores(a, [d.score for d in docs], method=point["a_fusion"], weight=point["a_weight"])
    final = fuse_scores(b, first, method=point["b_fusion"], weight=point["b_weight"])
    return [docs[i].id for i in sorted(range(len(docs)), key=lambda i: -final[i])]


def document_scores(table: dict, q: str, docs: list[Any], aggregation: tuple[str, float, int | None]) -> list[float]:
    from haystack_crossrerank.passages import aggregate
    from haystack_crossrerank.scoring import sigmoid

    method, weight, cap = aggregation
    return [sigmoid(aggregate(table[q][d.id][:cap], method, weight)[0]) for d in docs]


def grid(args: argparse.Namespace) -> None:
    from haystack_crossrerank.evaluation.retrieval import per_query_ndcg10
    from haystack_crossrerank.tuning import gain_summary

    model_b = args.b.rsplit(":", 1)[0]
    ids = sorted(json.loads((Path(model_b) / "heldout_queries.json").read_text())["query_ids"])
    data, found = candidates(args.data_dir, "train", ids, max(DEPTHS))
    table_a = passage_scores(args.a, Path(args.cache), data, found)
    table_b = passage_scores(args.b, Path(args.cache), data, found)
    qrels = {q: data.qrels[q] for q in ids}
    first = per_query_ndcg10(qrels, {q: [d.id for d in found[q]] for q in ids})
    rows: list[dict[str, Any]] = []
    for depth in DEPTHS:
        docs = {q: found[q][:depth] for q in ids}
        scores_b = {agg: {q: document_scores(table_b, q, docs[q], agg) for q in ids} for agg in B_AGGREGATIONS}
        for agg_a in A_AGGREGATIONS:
            scores_a = {q: document_scores(table_a, q, docs[q], agg_a) for q in ids}
            for agg_b, fa, wa, fb, wb in itertools.product(B_AGGREGATIONS, FUSIONS, WEIGHTS, FUSIONS, WEIGHTS):
                point = {"depth": depth, "a_aggregation": agg_a, "b_aggregation": agg_b}
                point |= {"a_fusion": fa, "a_weight": wa, "b_fusion": fb, "b_weight": wb}
                rankings = {q: chained_ranking(docs[q], scores_a[q], scores_b[agg_b][q], point) for q in ids}
                rows.append(point | gain_summary(per_query_ndcg10(qrels, rankings), first))
    best = max(
        rows, key=lambda r: (r["gain_lcb"] if r["gain_lcb"] is not None else -math.inf, r["ndcg@10"], -r["depth"])
    )
    print(f"{len(ids)} held-out training queries, BM25 nDCG@10 {statistics.fmean(first.values()):.4f}")
    print(f"choice: {best}")
    Path(args.json).write_text(json.dumps({"a": args.a, "b": args.b, "choice": best, "grid": rows}, indent=1))


def test(args: argparse.Namespace) -> None:
    from haystack_crossrerank.data.beir import load_beir
    from haystack_crossrerank.evaluation.retrieval import per_query_ndcg10

    chosen = json.loads(Path(args.choice).read_text())
    point = chosen["choice"]
    split = load_beir(args.data_dir, "test", dataset="scifact")
    ids = sorted(q for q in split.queries if split.qrels.get(q))
    data, found = candidates(args.data_dir, "test", ids, point["depth"])
    table_a = passage_scores(chosen["a"], Path(args.cache), data, found)
    table_b = passage_scores(chosen["b"], Path(args.cache), data, found)
    qrels = {q: data.qrels[q] for q in ids}
    rankings = {
        q: chained_ranking(
            found[q],
            document_scores(table_a, q, found[q], tuple(point["a_aggregation"])),
            document_scores(table_b, q, found[q], tuple(point["b_aggregation"])),
            point,
        )
        for q in ids
    }
    bm25 = statistics.fmean(per_query_ndcg10(qrels, {q: [d.id for d in found[q]] for q in ids}).values())
    chained = statistics.fmean(per_query_ndcg10(qrels, rankings).values())
    print(f"{len(ids)} test queries at depth {point['depth']}: BM25 {bm25:.4f}, chained {chained:.4f}")
    result = {
        "choice": point,
        "queries": len(ids),
        "bm25_ndcg@10": round(bm25, 4),
        "chained_ndcg@10": round(chained, 4),
    }
    Path(args.json).write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["grid", "test"])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--a", help="first ranker, MODEL:MODE/PLACEMENT (grid)")
    parser.add_argument("--b", help="second ranker, a retrieval-trained model folder:MODE/PLACEMENT (grid)")
    parser.add_argument("--choice", help="the grid's JSON (test)")
    parser.add_argument("--cache", default="results/chain_scores.json", help="passage scores, read and added to")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    if args.step == "grid" and not (args.a and args.b):
        parser.error("grid needs --a and --b")
    if args.step == "test" and not args.choice:
        parser.error("test needs --choice")
    grid(args) if args.step == "grid" else test(args)


if __name__ == "__main__":
    main()
