"""How much OpenVINO int8 changes the rankings, measured on SciFact *train* claims (never on test).

The int8 gate (`crossrerank quantize`) checks the Spearman correlation of int8 scores against fp32 on pairs; this
benchmark asks the question a user of the rankings asks: does int8 change the top 10, and what does that do to
nDCG@10? It takes --queries train claims that the calibration does not draw from, their BM25 top --depth
candidates, ranks them with the exact OpenVINO model (fp32) and with the int8 model of each recipe, in document
and in passage mode (sentence windows), and prints per recipe and mode: docs/s, nDCG@10 of fp32 and int8 and
their difference, the mean per-query |difference|, the queries whose nDCG@10 changed, the mean overlap of the two
top 10s and the mean per-query Spearman correlation.

Each recipe quantizes the model's OpenVINO export afresh (no gate, nothing written to the export cache), from the
same calibration pairs as `crossrerank quantize`; what a recipe keeps in floating point runs in bf16, as in the
shipped int8 model (OpenVINO's inference precision for int8 models on a CPU with bf16). Recipes:
- calibrated: what `crossrerank quantize --backend openvino --no-distil` makes (calibration alone);
- ffn2_float: also keeps every layer's feed-forward output projection (the MatMul after GELU) in floating point;
- smooth_quant_off: SmoothQuant off (NNCF's default strength is 0.95);
- installed: the int8 model that `crossrerank quantize` left in the export cache, as it is (on OpenVINO by
  default the distilled one, which takes about 20 minutes to make here, so it is not remade); the measured
  claims are checked against the distillation's too.

    python benchmarks/int8_fidelity.py --data-dir ../shared/data --json results/int8_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# name -> (keep_float, smooth_quant_alpha) for haystack_crossrerank.exported.int8.quantize_openvino
RECIPES: dict[str, tuple[Callable[[str], bool] | None, float | None]] = {
    "calibrated": (None, None),
    "ffn2_float": (lambda name: ".output.dense" in name and ".attention." not in name, None),
    "smooth_quant_off": (None, -1.0),
}
INSTALLED = "installed"
MODES = ("document", "windows")


def train_claims(data_dir: str, count: int, skip: int, seed: int) -> tuple[Any, list[str]]:
    """Train claims with relevance judgements, after the first `skip` of the calibration's shuffle."""
    from haystack_crossrerank.data.beir import load_beir

    data = load_beir(data_dir, "train", dataset="scifact")
    ids = sorted(data.queries)
    random.Random(seed).shuffle(ids)
    chosen = [q for q in ids[skip:] if data.qrels.get(q)][:count]
    if len(chosen) < count:
        sys.exit(f"SciFact train has {len(chosen)} judged claims after the first {skip}, but --queries is {count}")
    return data, chosen


def rank_all(ranker: Any, data: Any, candidates: dict[str, list[tuple[str, float]]]) -> tuple[dict, float]:
    """Every claim's candidates scored by a ranker: ({query: {doc: score}}, seconds)."""
    from haystack import Document

    scores: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for query_id, found in candidates.items():
        docs = [
            Document(id=doc_id, content=data.corpus[doc_id]["text"], meta={"title": data.corpus[doc_id]["title"]})
            for doc_id, _ in found
        ]
        ranked = ranker.run(query=data.queries[query_id], documents=docs)["documents"]
        scores[query_id] = {d.id: float(d.score) for d in ranked}
    return scores, time.perf_counter() - started


def compare(qrels: dict, exact: dict, quantized: dict) -> dict[str, float]:
    """Ranking agreement of two score tables over the same candidates."""
    from scipy.stats import spearmanr

    from haystack_crossrerank.evaluation.retrieval import per_query_ndcg10

    def ranking(scores: dict[str, float]) -> list[str]:
        return sorted(scores, key=lambda d: -scores[d])

    def top10(scores: dict[str, float]) -> set[str]:
        return set(ranking(scores)[:10])

    judged = {q: qrels[q] for q in exact}
    before = per_query_ndcg10(judged, {q: ranking(s) for q, s in exact.items()})
    after = per_query_ndcg10(judged, {q: ranking(s) for q, s in quantized.items()})
    deltas = [after[q] - before[q] for q in exact]
    return {
        "ndcg@10_fp32": statistics.fmean(before.values()),
        "ndcg@10_int8": statistics.fmean(after.values()),
        "delta": statistics.fmean(deltas),
        "mean_abs_delta_per_query": statistics.fmean(abs(d) for d in deltas),
        "queries_changed": sum(abs(d) > 1e-9 for d in deltas),
        "top10_overlap": statistics.fmean(len(top10(exact[q]) & top10(quantized[q])) / 10 for q in exact),
        "spearman_per_query": statistics.fmean(
            float(spearmanr([exact[q][d] for d in exact[q]], [quantized[q][d] for d in exact[q]])[0]) for q in exact
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--model", default=None, help="default: the project's built offline model")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=256, help="calibration pairs, as `crossrerank quantize`")
    parser.add_argument(
        "--skip", type=int, default=100, help="train claims (in the calibration's shuffle) left out; must cover its own"
    )
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, from {[*RECIPES, INSTALLED]}")
    parser.add_argument("--json", default="results/int8_fidelity.json")
    args = parser.parse_args()
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = sorted(set(recipes) - {*RECIPES, INSTALLED})
    if unknown:
        sys.exit(f"--recipes must name recipes from {[*RECIPES, INSTALLED]}, but got {unknown}")

    from haystack_crossrerank import CrossEncoderRanker
    from haystack_crossrerank.exported import (
        RuntimeSession,
        beir_calibration_pairs,
        calibration_query_ids,
        distillation_query_ids,
        int8_path,
        int8_report,
        model_file,
        quantize_openvino,
    )
    from haystack_crossrerank.offline import built_model_dir
    from haystack_crossrerank.scoring import EXPORTED_CPU_INT8_BATCH_SIZE
    from haystack_crossrerank.training.mining import bm25_candidates_for

    model = args.model or str(built_model_dir("minilm"))
    seed = 42  # the calibration's shuffle, so that --skip leaves its claims out
    data, claims = train_claims(args.data_dir, args.queries, args.skip, seed)
    drawn = set(calibration_query_ids(data.queries, count=args.pairs, seed=seed))
    if drawn & set(claims):
        sys.exit(
            f"--skip {args.skip} leaves {len(drawn & set(claims))} of the calibration's {len(drawn)} claims among "
            "the measured ones: pass a larger --skip"
        )
    distilled = set(distillation_query_ids(data.queries, count=args.pairs, seed=seed)) & set(claims)
    if distilled:
        sys.exit(
            f"{len(distilled)} of the measured claims are among the ones int8 distillation trains on "
            "(int8.RESERVED_QUERIES): pass a smaller --skip or --queries"
        )
    candidates = bm25_candidates_for(data, claims, args.depth)
    documents = sum(len(found) for found in candidates.values())
    calibration_pairs, _ = beir_calibration_pairs(args.data_dir, count=args.pairs, seed=seed)

    rankers = {}
    exact: dict[str, dict] = {}
    fp32_speed = {}
    for mode in MODES:
        rankers[mode] = CrossEncoderRanker(
            model=model,
            backend="openvino",
            precision="fp32",
            passages=mode,
            meta_fields_to_embed=["title"],
            top_k=args.depth,
        )
        rankers[mode].warm_up()
        exact[mode], seconds = rank_all(rankers[mode], data, candidates)
        fp32_speed[mode] = documents / seconds
        print(f"fp32, {mode}: {fp32_speed[mode]:.1f} docs/s", flush=True)
    scorer = rankers["document"].scorer
    assert scorer is not None and scorer.export_folder is not None
    calibration = [features for _, features in scorer._batches(calibration_pairs, 16, scorer.max_length)]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in recipes:
            if recipe == INSTALLED:
                installed = int8_report(scorer.export_folder, "openvino")
                if installed is None or not installed.passed:
                    sys.exit(f"no int8 model that passed the gate in {scorer.export_folder}: run crossrerank quantize")
                target, floating = int8_path(scorer.export_folder, "openvino"), None
                print(f"installed int8 model: {installed.method}, gate Spearman {installed.spearman}", flush=True)
            else:
                keep_float, alpha = RECIPES[recipe]
                target = Path(tmp) / recipe / "model.int8.xml"
                target.parent.mkdir()
                floating = quantize_openvino(
                    model_file(scorer.export_folder, "openvino"),
                    target,
                    calibration,
                    keep_float=keep_float,
                    smooth_quant_alpha=alpha,
                )
            for mode in MODES:
                # The fp32 ranker's scorer, with the int8 model in place of the exact one (same tokenization).
                mode_scorer = rankers[mode].scorer
                assert mode_scorer is not None
                mode_scorer.model = RuntimeSession("openvino", target, precision="int8")
                mode_scorer.precision, mode_scorer.batch_size = "int8", EXPORTED_CPU_INT8_BATCH_SIZE
                scores, seconds = rank_all(rankers[mode], data, candidates)
                row = {"recipe": recipe, "mode": mode, "floating_matmuls": None if floating is None else len(floating)}
                row |= {"docs_per_s": documents / seconds, **compare(data.qrels, exact[mode], scores)}
                rows.append(row)
                print(json.dumps(row), flush=True)

    print(f"\n{args.queries} SciFact train claims, BM25 top {args.depth}, model {model}; int8 against OpenVINO fp32")
    print(
        "recipe | mode | docs/s | nDCG@10 fp32 | int8 | delta | mean abs delta | claims whose nDCG@10 changed | "
        "top-10 overlap | Spearman per claim"
    )
    for row in rows:
        print(
            f"{row['recipe']} | {row['mode']} | {row['docs_per_s']:.1f} | {row['ndcg@10_fp32']:.4f} | "
            f"{row['ndcg@10_int8']:.4f} | {row['delta']:+.4f} | {row['mean_abs_delta_per_query']:.4f} | "
            f"{row['queries_changed']} | {row['top10_overlap']:.3f} | {row['spearman_per_query']:.4f}"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    report = {"model": model, "queries": args.queries, "depth": args.depth, "claims": claims}
    report |= {"fp32_docs_per_s": fp32_speed, "rows": rows}
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
