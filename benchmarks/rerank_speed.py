"""Reranking speed on the CPU: our ranker in each precision against Haystack's peer and other engines.

The same model (the project's offline MiniLM cross-encoder, or --model) and the same BM25 top-100 SciFact
test candidates (title + abstract) for the first --queries queries go through each row. Each row runs in its
own process, so that its peak RSS is its own. Columns: pairs/s, ms/query p50 and p95, peak RSS, nDCG@10, and
the Spearman correlation of the scores against our fp32 scores; ratios against Haystack's
SentenceTransformersSimilarityRanker with its defaults.

    python benchmarks/rerank_speed.py --data-dir ../shared/data --queries 30 \
        --rows peer_default,ours_auto,ours_fp32,peer_bf16,ours_openvino_int8

writes `benchmarks/results/rerank_speed.json` (or --json) with the command, commit, versions and machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# Our rows' ranker settings (the rest are the ranker's defaults).
OURS: dict[str, dict[str, Any]] = {
    "ours_auto": {},
    "ours_fp32": {"backend": "torch", "precision": "fp32"},
    "ours_torch": {"backend": "torch"},
    "ours_torch_b32": {"backend": "torch", "batch_size": 32},
    "ours_bf16": {"backend": "torch", "precision": "bf16"},
    "ours_int8": {"backend": "torch", "precision": "int8"},
    "ours_onnx": {"backend": "onnx"},
    "ours_onnx_int8": {"backend": "onnx", "precision": "int8"},
    "ours_openvino": {"backend": "openvino"},
    "ours_openvino_b32": {"backend": "openvino", "batch_size": 32},
    "ours_openvino_int8": {"backend": "openvino", "precision": "int8"},
    "ours_openvino_int8_b32": {"backend": "openvino", "precision": "int8", "batch_size": 32},
    "ours_eager": {"backend": "torch", "model_kwargs": {"attn_implementation": "eager"}},
}
ROWS: dict[str, str] = {
    "ours_auto": "CrossEncoderRanker, defaults (backend auto: OpenVINO bf16 here, batch 8)",
    "ours_fp32": "CrossEncoderRanker, torch fp32",
    "ours_torch": "CrossEncoderRanker, torch (precision auto: bf16 here, batch 16)",
    "ours_torch_b32": "CrossEncoderRanker, torch, batch 32",
    "ours_bf16": "CrossEncoderRanker, torch bf16",
    "ours_int8": "CrossEncoderRanker, torch int8 (dynamic)",
    "ours_onnx": "CrossEncoderRanker, backend onnx (fp32)",
    "ours_onnx_int8": "CrossEncoderRanker, backend onnx, precision int8 (static, calibrated)",
    "ours_openvino": "CrossEncoderRanker, backend openvino (auto: bf16 here)",
    "ours_openvino_b32": "CrossEncoderRanker, backend openvino, batch 32",
    "ours_openvino_int8": "CrossEncoderRanker, backend openvino, precision int8 (NNCF, calibrated)",
    "ours_openvino_int8_b32": "CrossEncoderRanker, backend openvino, precision int8, batch 32",
    "ours_eager": "CrossEncoderRanker, torch with eager attention (not SDPA)",
    "peer_default": "SentenceTransformersSimilarityRanker, defaults (batch 16)",
    "peer_bs32": "SentenceTransformersSimilarityRanker, batch_size=32",
    "peer_bf16": "SentenceTransformersSimilarityRanker, batch_size=32, bf16 weights",
    "st_rank": "sentence-transformers CrossEncoder.rank (batch 32)",
    "transformers": "plain transformers (batch 32, unsorted, fp32)",
}


def load_candidates(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def run_row(name: str, model: str, payload: dict[str, Any], passages: str = "document") -> dict[str, Any]:
    """Rerank every query's candidates with one engine; return timings and per-query scores."""
    from haystack import Document

    queries: dict[str, str] = payload["queries"]
    candidates = {
        q: [Document(id=d["id"], content=d["text"], meta={"title": d["title"]}) for d in docs]
        for q, docs in payload["candidates"].items()
    }
    score: Callable[[str, list[Document]], dict[str, float]]
    int8_method = None
    if name in OURS:
        from haystack_crossrerank import CrossEncoderRanker

        ranker = CrossEncoderRanker(
            model=model, top_k=1000, meta_fields_to_embed=["title"], passages=passages, **OURS[name]
        )
        ranker.warm_up()
        scorer = ranker.scorer
        if scorer is not None and scorer.precision == "int8" and scorer.int8_report is not None:
            int8_method = scorer.int8_report.method  # "calibrated", or "distilled" (crossrerank quantize's default)
        score = lambda q, docs: {d.id: d.score or 0.0 for d in ranker.run(query=q, documents=docs)["documents"]}  # noqa: E731
    elif name.startswith("peer_"):
        from haystack_integrations.components.rankers.sentence_transformers import SentenceTransformersSimilarityRanker

        kwargs: dict[str, Any] = {"batch_size": 32} if name != "peer_default" else {}
        if name == "peer_bf16":
            kwargs["model_kwargs"] = {"dtype": "bfloat16"}
        peer = SentenceTransformersSimilarityRanker(model=model, top_k=1000, meta_fields_to_embed=["title"], **kwargs)
        peer.warm_up()
        score = lambda q, docs: {d.id: d.score or 0.0 for d in peer.run(query=q, documents=docs)["documents"]}  # noqa: E731
    elif name == "st_rank":
        from sentence_transformers import CrossEncoder

        encoder = CrossEncoder(model, device="cpu")

        def score(q: str, docs: list[Document]) -> dict[str, float]:
            texts = [f"{d.meta['title']}\n{d.content}" for d in docs]
            return {docs[r["corpus_id"]].id: float(r["score"]) for r in encoder.rank(q, texts, batch_size=32)}
    elif name == "transformers":
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        net = AutoModelForSequenceClassification.from_pretrained(model).eval()

        def score(q: str, docs: list[Document]) -> dict[str, float]:
            texts = [f"{d.meta['title']}\n{d.content}" for d in docs]
            out: list[float] = []
            with torch.inference_mode():
                for i in range(0, len(texts), 32):
                    batch = tokenizer(
                        [q] * len(texts[i : i + 32]),
                        texts[i : i + 32],
                        padding=True,
                        truncation="only_second",
                        max_length=512,
                        return_tensors="pt",
                    )
                    out.extend(torch.sigmoid(net(**batch).logits.view(-1)).tolist())
            return {d.id: s for d, s in zip(docs, out, strict=True)}
    else:
        raise ValueError(f"unknown row {name!r}; expected one of {sorted(ROWS)}")

    first = next(iter(queries))
    score(queries[first], candidates[first][:4])  # warm-up
    latencies: list[float] = []
    scores: dict[str, dict[str, float]] = {}
    pairs = 0
    for q, text in queries.items():
        t0 = time.perf_counter()
        scores[q] = score(text, candidates[q])
        latencies.append((time.perf_counter() - t0) * 1000)
        pairs += len(candidates[q])
    return {
        "row": name,
        "int8_method": int8_method,
        "pairs": pairs,
        "seconds": sum(latencies) / 1000,
        "latencies_ms": latencies,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "scores": scores,
    }


def summarise(results: list[dict[str, Any]], payload: dict[str, Any]) -> list[dict[str, Any]]:
    from scipy.stats import spearmanr

    from haystack_crossrerank.evaluation import evaluate_rankings

    by_name = {r["row"]: r for r in results}
    reference = by_name.get("ours_fp32")
    peer = by_name.get("peer_default")
    table = []
    for result in results:
        rankings = {q: sorted(s, key=lambda d: -s[d]) for q, s in result["scores"].items()}
        ndcg = evaluate_rankings(payload["qrels"], rankings)["ndcg@10"]
        row: dict[str, Any] = {
            "row": result["row"],
            "engine": ROWS[result["row"]] + (f" [{result['int8_method']}]" if result.get("int8_method") else ""),
            "pairs_per_s": result["pairs"] / result["seconds"],
            "ms_p50": statistics.median(result["latencies_ms"]),
            "ms_p95": statistics.quantiles(result["latencies_ms"], n=20)[18],
            "peak_rss_mb": result["peak_rss_mb"],
            "ndcg@10": ndcg,
        }
        if reference is not None:
            keys = [(q, d) for q in reference["scores"] for d in reference["scores"][q]]
            row["spearman_vs_fp32"] = float(
                spearmanr([reference["scores"][q][d] for q, d in keys], [result["scores"][q][d] for q, d in keys])[0]
            )
        if peer is not None:
            row["speed_vs_peer"] = row["pairs_per_s"] / (peer["pairs"] / peer["seconds"])
        table.append(row)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--model", default=None, help="default: the project's built offline model")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {list(ROWS)}")
    parser.add_argument(
        "--passages",
        default="document",
        choices=["document", "sentences", "windows"],
        help="our rows' passage mode (the peer rows always score whole documents)",
    )
    parser.add_argument("--json", default=str(RESULTS / "rerank_speed.json"), help="default: %(default)s")
    parser.add_argument("--child", nargs=3, metavar=("ROW", "CANDIDATES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        row, candidates_path, out = args.child
        payload = load_candidates(Path(candidates_path))
        Path(out).write_text(json.dumps(run_row(row, args.model, payload, args.passages)))
        return

    from haystack_crossrerank.commands.offline import built_model_dir
    from haystack_crossrerank.retrievers.stages import bm25_candidates
    from haystack_crossrerank.utils.provenance import write_result

    model = args.model or str(built_model_dir("minilm"))
    if not (Path(model) / "config.json").is_file() and Path(model).exists() is False:
        sys.exit(f"model {model} not found: run `crossrerank build-model` or pass --model")
    data, found = bm25_candidates(args.data_dir, queries=args.queries, depth=100)
    payload = {
        "queries": dict(data.queries),
        "qrels": {q: data.qrels[q] for q in data.queries},
        "candidates": {
            q: [{"id": d.id, "title": d.meta.get("title", ""), "text": d.content} for d in docs]
            for q, docs in found.items()
        },
    }
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        candidates_path = Path(tmp) / "candidates.json"
        candidates_path.write_text(json.dumps(payload))
        for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
            out = Path(tmp) / f"{row}.json"
            command = [sys.executable, __file__, "--model", model, "--passages", args.passages]
            command += ["--child", row, str(candidates_path), str(out)]
            print(f"running {row} ...", flush=True)
            done = subprocess.run(command, check=False)
            if done.returncode != 0:
                print(f"  {row} failed (exit {done.returncode})", flush=True)
                continue
            results.append(json.loads(out.read_text()))
    table = summarise(results, payload)
    pairs = sum(len(v) for v in payload["candidates"].values())
    print(
        f"\n{len(payload['queries'])} SciFact test queries, BM25 top-100 ({pairs} documents), model {model}, "
        f"our rows in passage mode {args.passages!r}"
    )
    header = ["row", "docs/s", "p50 ms", "p95 ms", "RSS MB", "nDCG@10", "Spearman vs fp32", "x peer"]
    print(" | ".join(header))
    for row in table:
        print(
            f"{row['engine']} | {row['pairs_per_s']:.1f} | {row['ms_p50']:.0f} | {row['ms_p95']:.0f} | "
            f"{row['peak_rss_mb']:.0f} | {row['ndcg@10']:.4f} | {row.get('spearman_vs_fp32', float('nan')):.4f} | "
            f"{row.get('speed_vs_peer', float('nan')):.2f}"
        )
    report = {"model": model, "queries": args.queries, "passages": args.passages, "rows": table}
    print(f"wrote {write_result(args.json, 'rerank_speed', report)}")


if __name__ == "__main__":
    main()
