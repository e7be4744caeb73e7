"""The `crossrerank` command line's arguments: one sub-parser per command (the commands are in `cli.py`)."""

from __future__ import annotations

import argparse
from typing import Any

from haystack_crossrerank.commands.adapt import add_adapt_parser
from haystack_crossrerank.commands.bundle import add_bundle_parser
from haystack_crossrerank.commands.index import add_index_parser
from haystack_crossrerank.commands.offline import BUILD_RECIPES, OFFLINE_BASES
from haystack_crossrerank.utils.hardware import PRECISIONS, TRAINING_PRECISIONS
from haystack_crossrerank.utils.paths import DATA_DIR_ENV

BATCH_HELP = "pairs per forward pass (default: the scorer's, by backend and device; see the README's Speed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossrerank", description="Train, evaluate, benchmark and demonstrate the cross-encoder reranker."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a cross-encoder (STS-B recipe, or retrieval)")
    train.add_argument("--task", choices=["sts", "retrieval"], default="sts")
    train.add_argument(
        "--base-model",
        help="hub id or folder (default: sts: the offline all-MiniLM-L6-v2; retrieval: the seed-recipe STS-B model "
        "built from --base, e.g. minilm-l6-stsb, built if absent)",
    )
    train.add_argument(
        "--base",
        choices=sorted(OFFLINE_BASES),
        default="minilm",
        help="offline base when --base-model is not given: minilm (fast) or mpnet (offline-mpnet extra)",
    )
    train.add_argument("--output", required=True, help="the model folder to write")
    train.add_argument(
        "--data-dir", help=f"folder with stsb/ and/or BEIR data (default: ${DATA_DIR_ENV}, ../shared/data)"
    )
    train.add_argument("--train-file", help="STS: train on this CSV/TSV/JSONL pair file instead of STS-B train")
    train.add_argument("--dataset", default="scifact", help="retrieval: BEIR data set folder under --data-dir")
    train.add_argument("--epochs", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--warmup-ratio", type=float, default=0.1)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--precision", choices=TRAINING_PRECISIONS, default="auto")
    train.add_argument("--eval-steps", type=int, default=None)
    train.add_argument("--select-best", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--swap-pairs", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--symmetric-eval", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--max-length", type=int, default=None)
    train.add_argument("--train-limit", type=int, help="use only the first N training pairs / queries")
    train.add_argument("--loss", choices=["bce", "listwise"], default=None, help="retrieval: the loss")
    train.add_argument("--negatives", type=int, default=None, help="retrieval: mined negatives per positive")
    train.add_argument("--mine-depth", type=int, default=None, help="retrieval: BM25 depth negatives come from")
    train.add_argument("--validation-queries", type=int, default=None, help="retrieval: held-out train queries")
    train.add_argument(
        "--eval-depth",
        type=int,
        default=None,
        help="retrieval: BM25 candidates per validation query (default: 30)",
    )
    train.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="NAME=RATIO",
        help="retrieval: mix in another BEIR set's train split, RATIO examples per primary example (repeatable)",
    )
    train.add_argument("--no-test", action="store_true", help="do not score the test split at the end")
    train.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    train.add_argument(
        "--no-checkpoints", action="store_true", help="do not write resumable checkpoints (faster; no --resume)"
    )
    train.add_argument(
        "--dataloader-workers",
        type=int,
        default=None,
        help="processes that tokenize batches beside the loop (default 0; see the README's Training section)",
    )
    train.add_argument(
        "--eval-precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="precision of the evaluations during training (default: bf16 on a bf16 CPU run, else fp32)",
    )
    train.add_argument("--json", help="write the summary to this JSON file")

    ev = sub.add_parser("eval-sts", help="Pearson/Spearman of a model on STS-B or on any scored pair file")
    ev.add_argument("--model", help="hub id or folder (default: the built default model)")
    ev.add_argument("--split", default="validation", help="STS-B split: train, validation (dev) or test")
    ev.add_argument(
        "--pairs", help="evaluate this CSV/TSV/JSONL file of (sentence1, sentence2, score) instead of STS-B"
    )
    ev.add_argument(
        "--score-range",
        nargs=2,
        type=float,
        default=[0.0, 1.0],
        metavar=("LOW", "HIGH"),
        help="the range of the --pairs file's scores (default 0 1; STS-B's raw scores are 0 5)",
    )
    ev.add_argument("--data-dir", help=f"folder with stsb/ (default: ${DATA_DIR_ENV}, ../shared/data, else the hub)")
    ev.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ev.add_argument("--device", default=None)
    ev.add_argument("--batch-size", type=int, default=None, help=BATCH_HELP)
    ev.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=False)
    ev.add_argument("--json", help="write the metrics to this JSON file")

    build = sub.add_parser("build-model", help="build an offline STS-B cross-encoder into the cache")
    build.add_argument(
        "--base",
        choices=sorted(OFFLINE_BASES),
        default="minilm",
        help="; ".join(f"{b.name}: {b.description}" for b in OFFLINE_BASES.values()),
    )
    build.add_argument(
        "--recipe",
        choices=sorted(BUILD_RECIPES),
        default=None,
        help="default: "
        + ", ".join(f"{b.recipe} for {b.name}" for b in OFFLINE_BASES.values())
        + "; "
        + "; ".join(f"{r.name}: {r.description}" for r in BUILD_RECIPES.values()),
    )
    build.add_argument("--data-dir")
    build.add_argument("--force", action="store_true")
    build.add_argument("--json")

    quantize = sub.add_parser(
        "quantize", help="export the model and make a static int8 copy, kept only if it passes the accuracy gate"
    )
    quantize.add_argument("--model", help="hub id or folder (default: the built default model)")
    quantize.add_argument("--backend", choices=["openvino", "onnx"], default="openvino", help="the runtime")
    quantize.add_argument("--data-dir", help=f"folder with the BEIR set (default: ${DATA_DIR_ENV}, ../shared/data)")
    quantize.add_argument("--dataset", default="scifact", help="BEIR set whose train queries give the pairs")
    quantize.add_argument("--pairs", type=int, default=256, help="calibration pairs, and as many held-out pairs")
    quantize.add_argument("--seed", type=int, default=42)
    quantize.add_argument(
        "--distil",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after calibration, train the int8 model against the fp32 model's scores on other train queries' "
        "pairs (quantization-aware distillation; OpenVINO only, its default there: about 20 minutes for MiniLM "
        "on 2 CPU cores, ranks closer to fp32 at the same speed); --no-distil: calibration alone, a minute",
    )
    quantize.add_argument("--distil-queries", type=int, help="distil on at most this many train queries (default: all)")
    quantize.add_argument("--distil-epochs", type=int, default=1)
    quantize.add_argument("--distil-lr", type=float, default=1e-5, help="distillation learning rate")
    quantize.add_argument("--json", help="write the report to this JSON file")

    bench = sub.add_parser("bench", help="retrieval benchmark: first stage, reranked, and the peer")
    bench.add_argument("--data-dir", help="BEIR folder, or a folder holding it (default: ../shared/data)")
    bench.add_argument("--dataset", default="scifact")
    bench.add_argument("--split", default="test")
    bench.add_argument("--first-stage", choices=["bm25", "faiss", "hybrid"], default="bm25")
    bench.add_argument("--depth", type=int, default=100, help="candidates reranked per query")
    bench.add_argument("--model", action="append", help="cross-encoder(s) to rerank with (repeatable)")
    bench.add_argument(
        "--passages",
        nargs="+",
        choices=["document", "sentences", "windows"],
        help="passage modes measured side by side (default: document and the shipped pipeline's mode)",
    )
    bench.add_argument(
        "--fusion",
        choices=["minmax", "zscore", "rrf"],
        default=None,
        help="fusion rows (default: the shipped pipeline's fusion, if any)",
    )
    bench.add_argument("--fusion-weight", type=float, default=None, help="default: the shipped pipeline's")
    bench.add_argument("--plot-queries", type=int, default=20, help="queries timed per depth for the plot")
    bench.add_argument(
        "--set",
        action="append",
        type=_ranker_setting,
        metavar="KEY=VALUE",
        help="replace one of the shipped ranker's settings, e.g. --set aggregation=max --set max_passages=null",
    )
    bench.add_argument("--no-peer", action="store_true", help="skip the SentenceTransformersSimilarityRanker rows")
    bench.add_argument("--peer-queries", type=int, default=20, help="queries for the (slow) peer rows")
    bench.add_argument("--max-queries", type=int, default=None, help="use only the first N queries")
    bench.add_argument(
        "--sample-queries", type=int, default=None, help="a seeded random sample of N queries (for grouped files)"
    )
    bench.add_argument(
        "--rerank-queries", type=int, default=None, help="rerank only the first N queries (first stage: all)"
    )
    bench.add_argument("--precision", choices=PRECISIONS, default="auto")
    bench.add_argument("--batch-size", type=int, default=None, help=BATCH_HELP)
    bench.add_argument("--plot", help="PNG: nDCG@10 and latency against depth")
    bench.add_argument(
        "--index", help="a saved index of the data set's corpus (`crossrerank index`) instead of indexing it here"
    )
    bench.add_argument("--json", help="write the table to this JSON file")
    bench.add_argument(
        "--card",
        action="store_true",
        help="also write this model's rows into each --model folder's model card (README.md), one section per setting",
    )

    tune = sub.add_parser(
        "tune", help="choose passage, aggregation, fusion and depth settings on a BEIR set's training queries"
    )
    tune.add_argument("--data-dir", help="BEIR folder, or a folder holding it (default: ../shared/data)")
    tune.add_argument("--dataset", default="scifact")
    tune.add_argument("--split", default="train", help="the qrels split to tune on (never the test split)")
    tune.add_argument(
        "--first-stage", action="append", choices=["bm25", "faiss", "hybrid"], help="repeatable (default: bm25)"
    )
    tune.add_argument("--model", help="cross-encoder (default: the built default model)")
    tune.add_argument("--queries", type=int, default=200, help="training queries sampled (seeded); 0 for all")
    tune.add_argument(
        "--query-ids",
        help="tune on exactly these queries: a file with one id a line, a JSON list, or a retrieval-trained model's "
        "heldout_queries.json (its held-out training queries)",
    )
    tune.add_argument("--seed", type=int, default=42)
    tune.add_argument("--depths", type=_int_list, default=[10, 20, 30, 50], help="comma-separated, e.g. 10,20,50")
    tune.add_argument(
        "--variants",
        nargs="+",
        help="passage variants to score, as MODE/PLACEMENT (default: document sentences/passage "
        "sentences/prefix windows/passage)",
    )
    tune.add_argument("--precision", choices=PRECISIONS, default="auto")
    tune.add_argument("--batch-size", type=int, default=None, help=BATCH_HELP)
    tune.add_argument(
        "--scores", help="JSON cache of the passage scores: cached queries are read, the others scored and added"
    )
    tune.add_argument(
        "--selection",
        choices=["lcb", "mean"],
        default="lcb",
        help="choose by the 90%% lower bound of the per-query gain over the first stage (default), or by the mean",
    )
    tune.add_argument(
        "--index", metavar="DIR", help="a saved index of the data set's corpus (`crossrerank index`), not indexed again"
    )
    tune.add_argument("--json", help="write the choice and the whole grid to this JSON file")

    demo = sub.add_parser("demo", help="the main job: build the default model if needed, evaluate, rerank")
    demo.add_argument("--data-dir")
    demo.add_argument("--model", help="a cross-encoder folder (default: the built default model)")
    demo.add_argument("--queries", type=int, default=2, help="claims to show")
    demo.add_argument("--examine", type=int, default=30, help="claims run through the pipeline")
    demo.add_argument("--json")
    serve = sub.add_parser("serve", help="serve a shipped query pipeline over HTTP with hayhooks (serve extra)")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="a BEIR folder or a JSON lines file of documents, indexed at start")
    source.add_argument("--index", metavar="DIR", help="an index written by `crossrerank index`, loaded instead")
    serve.add_argument("--pipeline", default="bm25_rerank", choices=["bm25_rerank", "faiss_rerank", "hybrid_rerank"])
    serve.add_argument("--model", help="hub id or folder (default: the built default model)")
    serve.add_argument("--depth", type=int, help="candidates the first stage retrieves (default: the pipeline's)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=1416)
    serve.add_argument(
        "--set", type=_ranker_setting, action="append", metavar="KEY=VALUE", help="another ranker setting"
    )
    serve.add_argument(
        "--max-queue", type=int, default=64, help="requests waiting for the scorer; beyond: 503 (default %(default)s)"
    )
    serve.add_argument(
        "--timeout-s",
        type=float,
        default=30.0,
        help="a request's deadline in seconds; past it: 504 (default %(default)s)",
    )
    serve.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="the longest the scorer waits for other requests' pairs (default %(default)s)",
    )
    serve.add_argument(
        "--max-batch-requests",
        type=int,
        help="the most requests whose pairs share a scorer call (default: no limit; 1: one request at a time)",
    )
    serve.add_argument(
        "--max-batch-tokens", type=int, help="the most padded tokens per forward pass (default: the ranker's)"
    )
    serve.add_argument("--qrels", help="a BEIR qrels .tsv: the search page marks judged documents and shows nDCG@10")
    serve.add_argument(
        "--queries", help="the judged queries' texts for --qrels: a BEIR queries.jsonl (default: the --corpus folder's)"
    )
    serve.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="serve replicas on Ray Serve (ray extra; default: $RAY_ADDRESS, else a local Ray)",
    )
    serve.add_argument("--replicas", type=int, help="Ray Serve replicas, each loading the pipeline (default 2)")
    rerank = sub.add_parser("rerank-run", help="rerank a TREC run (or JSONL candidates), in one process or on Ray")
    rerank.add_argument("--run", required=True, help="TREC run (qid Q0 docid rank score tag) or .jsonl candidates")
    rerank.add_argument("--corpus", required=True, help="a BEIR folder or corpus .jsonl[.gz]")
    rerank.add_argument("--queries", required=True, help="a BEIR queries.jsonl (or its folder)")
    rerank.add_argument("--model", help="hub id or folder (default: the built default model)")
    rerank.add_argument("--output", required=True, help="the TREC run to write")
    rerank.add_argument("--qrels", help="a BEIR qrels .tsv: report the metrics before and after")
    rerank.add_argument("--depth", type=int, default=100, help="candidates per query taken from the run")
    rerank.add_argument("--pipeline", default="bm25_rerank", help="the shipped pipeline whose ranker settings apply")
    rerank.add_argument(
        "--set", type=_ranker_setting, action="append", metavar="KEY=VALUE", help="another ranker setting"
    )
    rerank.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data (default: $RAY_ADDRESS, else local)",
    )
    rerank.add_argument("--workers", type=int, default=2, help="Ray actors, one model each")
    rerank.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per Ray actor")
    rerank.add_argument("--json", help="write the summary to this JSON file")
    add_bundle_parser(sub)
    add_index_parser(sub)
    add_adapt_parser(sub)
    return parser


def _ranker_setting(value: str) -> tuple[str, Any]:
    import yaml

    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as aggregation=max, but got {value!r}")
    return key.strip(), yaml.safe_load(raw)


def _int_list(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 10,20,50, but got {value!r}"
        ) from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, but got {value!r}")
    return numbers
