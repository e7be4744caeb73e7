"""The `crossrerank` command line: train, evaluate, benchmark and demonstrate the reranker."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from haystack_crossrerank.hardware import PRECISIONS, TRAINING_PRECISIONS
from haystack_crossrerank.offline import (
    OFFLINE_BASES,
    build_default_model,
    built_model_dir,
    offline_base_model,
    resolve_data_dir,
)
from haystack_crossrerank.paths import DATA_DIR_ENV

logger = logging.getLogger("haystack_crossrerank.cli")


# ---------------------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.training import TrainConfig

    if args.base_model:
        base = args.base_model
    elif args.task == "retrieval":
        # Measured: continuing from the STS-B cross-encoder beats a fresh head on the MiniLM base (README).
        base = str(build_default_model(base=args.base, data_dir=args.data_dir))
    else:
        base = offline_base_model(args.base)
    config = TrainConfig(
        base_model=base,
        output_dir=args.output,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        seed=args.seed,
        precision=args.precision,
        eval_steps=args.eval_steps,
        select_best=args.select_best,
        swap_pairs=args.swap_pairs,
        max_length=args.max_length,
        overwrite=args.overwrite,
        resume=args.resume,
        save_checkpoints=not args.no_checkpoints,
    )
    data_dir = resolve_data_dir(args.data_dir)
    if args.task == "sts":
        from haystack_crossrerank.training import train_sts

        result = train_sts(
            config,
            data=data_dir,
            train_file=args.train_file,
            train_limit=args.train_limit,
            eval_test=not args.no_test,
            symmetric_eval=args.symmetric_eval,
        )
    else:
        from haystack_crossrerank.training.retrieval import RetrievalOptions, train_retrieval

        if data_dir is None:
            raise SystemExit("--task retrieval needs a BEIR folder: pass --data-dir (e.g. ../shared/data)")
        result = train_retrieval(
            config,
            RetrievalOptions(
                data_dir=data_dir,
                dataset=args.dataset,
                loss=args.loss,
                negatives=args.negatives,
                mine_depth=args.mine_depth,
                validation_queries=args.validation_queries,
                eval_depth=args.eval_depth,
                mix=parse_mix(args.mix),
                train_limit=args.train_limit,
                eval_test=not args.no_test,
                **({"max_length": args.max_length} if args.max_length else {}),
            ),
        )
    summary = {
        "output": str(result.output_dir),
        "train_seconds": round(result.train_seconds, 1),
        "steps": result.steps,
        "precision": result.precision,
        **result.final_metrics,
    }
    _print_metrics("Training finished", summary)
    return summary


def parse_mix(values: list[str]) -> dict[str, float]:
    """`["medquad=1.0"]` -> `{"medquad": 1.0}`; a malformed value exits with what was expected."""
    mix: dict[str, float] = {}
    for value in values:
        name, sep, ratio = value.partition("=")
        try:
            number = float(ratio)
        except ValueError:
            number = math.nan
        if not sep or not name or not number >= 0:
            raise SystemExit(f"--mix expects NAME=RATIO with a ratio >= 0 (e.g. medquad=1.0), but got {value!r}")
        mix[name] = number
    return mix


def cmd_eval_sts(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.data.sts import load_pair_file, load_sts
    from haystack_crossrerank.evaluation.sts import STSEvaluator
    from haystack_crossrerank.scoring import CrossEncoderScorer

    model = args.model or str(_default_model_or_exit())
    if args.pairs:
        data = load_pair_file(args.pairs, score_range=(args.score_range[0], args.score_range[1]))
        name, title = Path(args.pairs).stem, f"pairs in {args.pairs}"
    else:
        data = load_sts(args.split, resolve_data_dir(args.data_dir))
        name, title = f"stsb-{data_split_name(args.split)}", f"STS-B {args.split}"
    evaluator = STSEvaluator.from_data(data, name=name, symmetric=args.symmetric)
    scorer = CrossEncoderScorer(model, device=args.device, precision=args.precision, batch_size=args.batch_size)
    start = time.perf_counter()
    metrics: dict[str, Any] = dict(evaluator(scorer))
    metrics.update({"model": model, "pairs": len(data), "precision": scorer.precision, "seconds": 0.0})
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    _print_metrics(title, metrics)
    return metrics


def data_split_name(split: str) -> str:
    from haystack_crossrerank.data.sts import normalise_split

    return normalise_split(split)


def cmd_build_default_model(args: argparse.Namespace) -> dict[str, Any]:
    path = build_default_model(base=args.base, data_dir=args.data_dir, force=args.force)
    summary = {"base": args.base, "model": str(path)}
    _print_metrics("Default model", summary)
    return summary


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.benchmark import BenchOptions, run_benchmark

    data_dir = resolve_data_dir(args.data_dir)
    if data_dir is None:
        raise SystemExit("crossrerank bench needs a BEIR folder: pass --data-dir (e.g. ../shared/data/scifact)")
    models = args.model or [str(_default_model_or_exit(build=True, data_dir=args.data_dir))]
    options = BenchOptions(
        data_dir=data_dir,
        dataset=args.dataset,
        split=args.split,
        first_stage=args.first_stage,
        depth=args.depth,
        models=models,
        passages=args.passages,
        fusion=args.fusion,
        fusion_weight=args.fusion_weight,
        plot_queries=args.plot_queries,
        ranker_settings=dict(args.set or []),
        peer=not args.no_peer,
        peer_queries=args.peer_queries,
        max_queries=args.max_queries,
        sample_queries=args.sample_queries,
        rerank_queries=args.rerank_queries,
        precision=args.precision,
        batch_size=args.batch_size,
        plot=args.plot,
    )
    return run_benchmark(options)


def cmd_tune(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.tuning import TuneOptions, run_tuning

    data_dir = resolve_data_dir(args.data_dir)
    if data_dir is None:
        raise SystemExit("crossrerank tune needs a BEIR folder: pass --data-dir (e.g. ../shared/data)")
    model = args.model or str(_default_model_or_exit(build=True, data_dir=args.data_dir))
    options = TuneOptions(
        data_dir=data_dir,
        model=model,
        dataset=args.dataset,
        split=args.split,
        first_stages=args.first_stage or ["bm25"],
        queries=args.queries if args.queries > 0 else None,
        seed=args.seed,
        depths=args.depths,
        precision=args.precision,
        batch_size=args.batch_size,
        scores_path=args.scores,
        selection=args.selection,
        query_ids=_query_ids(args.query_ids) if args.query_ids else None,
    )
    if args.variants:
        options.variants = [_variant(v) for v in args.variants]
    return run_tuning(options)


def _query_ids(path: str) -> list[str]:
    """Query ids from a file: a JSON list, an object with `query_ids` (a model's held-out file), or one id a line."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, (dict, list)):  # not JSON, or a single bare id such as 42
        return [line.strip() for line in text.splitlines() if line.strip()]
    ids = value.get("query_ids") if isinstance(value, dict) else value
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise SystemExit(
            f"--query-ids {path}: expected a JSON list of ids or an object with `query_ids`, but got {text[:80]!r}"
        )
    return ids


def _variant(value: str) -> tuple[str, str]:
    mode, _, placement = value.partition("/")
    return mode, placement or "passage"


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.demo import run_demo

    data_dir = resolve_data_dir(args.data_dir)
    model = Path(args.model) if args.model else build_default_model(data_dir=data_dir)
    return run_demo(model, data_dir=data_dir, queries=args.queries, examine=args.examine)


def cmd_quantize(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import asdict

    from haystack_crossrerank.onnx_backend import INT8_MIN_SPEARMAN, beir_calibration_pairs
    from haystack_crossrerank.scoring import CrossEncoderScorer

    data_dir = resolve_data_dir(args.data_dir)
    if data_dir is None:
        raise SystemExit("crossrerank quantize calibrates on a BEIR set's train queries: pass --data-dir")
    model = args.model or str(_default_model_or_exit(data_dir=args.data_dir))
    calibration, held = beir_calibration_pairs(data_dir, dataset=args.dataset, count=args.pairs, seed=args.seed)
    scorer = CrossEncoderScorer(model, backend=args.backend, precision="fp32", device="cpu")
    report = scorer.calibrate_int8(calibration, held)
    summary: dict[str, Any] = {"model": model, "export": str(scorer.onnx_folder), **asdict(report)}
    title = f"int8 calibration, {args.backend} ({args.dataset} train; gate: Spearman >= {INT8_MIN_SPEARMAN})"
    _print_metrics(title, summary)
    if not report.passed:
        print(
            f"\nrefused: the int8 scores correlate {report.spearman:.4f} with fp32 (< {INT8_MIN_SPEARMAN}); "
            f"precision 'int8' on backend {args.backend!r} falls back to the exact fp32 model",
            file=sys.stderr,
        )
    return summary


def _default_model_or_exit(*, build: bool = False, data_dir: str | None = None) -> Path:
    path = built_model_dir("minilm")
    if (path / "config.json").is_file():
        return path
    if build:
        return build_default_model(data_dir=data_dir)
    raise SystemExit(f"no --model given and the default model is not built yet: run `crossrerank build-model` ({path})")


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    print(f"\n{title}")
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}")


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossrerank", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a cross-encoder (STS-B recipe, or retrieval)")
    train.add_argument("--task", choices=["sts", "retrieval"], default="sts")
    train.add_argument(
        "--base-model",
        help="hub id or folder (default: sts: the offline all-MiniLM-L6-v2; retrieval: the built STS-B model)",
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
        help="retrieval: BM25 candidates per validation query (default: shipped)",
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
    train.add_argument("--json", help="write the summary to this JSON file")
    train.set_defaults(func=cmd_train)

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
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=False)
    ev.add_argument("--json", help="write the metrics to this JSON file")
    ev.set_defaults(func=cmd_eval_sts)

    build = sub.add_parser("build-model", help="build an offline STS-B cross-encoder into the cache")
    build.add_argument(
        "--base",
        choices=sorted(OFFLINE_BASES),
        default="minilm",
        help="; ".join(f"{b.name}: {b.description}" for b in OFFLINE_BASES.values()),
    )
    build.add_argument("--data-dir")
    build.add_argument("--force", action="store_true")
    build.add_argument("--json")
    build.set_defaults(func=cmd_build_default_model)

    quantize = sub.add_parser(
        "quantize", help="export to ONNX and calibrate a static int8 copy, kept only if it passes the accuracy gate"
    )
    quantize.add_argument("--model", help="hub id or folder (default: the built default model)")
    quantize.add_argument("--backend", choices=["openvino", "onnx"], default="openvino", help="the runtime")
    quantize.add_argument("--data-dir", help=f"folder with the BEIR set (default: ${DATA_DIR_ENV}, ../shared/data)")
    quantize.add_argument("--dataset", default="scifact", help="BEIR set whose train queries give the pairs")
    quantize.add_argument("--pairs", type=int, default=256, help="calibration pairs, and as many held-out pairs")
    quantize.add_argument("--seed", type=int, default=42)
    quantize.add_argument("--json", help="write the report to this JSON file")
    quantize.set_defaults(func=cmd_quantize)

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
    bench.add_argument("--batch-size", type=int, default=32)
    bench.add_argument("--plot", help="PNG: nDCG@10 and latency against depth")
    bench.add_argument("--json", help="write the table to this JSON file")
    bench.set_defaults(func=cmd_bench)

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
    tune.add_argument("--batch-size", type=int, default=32)
    tune.add_argument(
        "--scores", help="JSON cache of the passage scores: cached queries are read, the others scored and added"
    )
    tune.add_argument(
        "--selection",
        choices=["lcb", "mean"],
        default="lcb",
        help="choose by the 90%% lower bound of the per-query gain over the first stage (default), or by the mean",
    )
    tune.add_argument("--json", help="write the choice and the whole grid to this JSON file")
    tune.set_defaults(func=cmd_tune)

    demo = sub.add_parser("demo", help="the main job: build the default model if needed, evaluate, rerank")
    demo.add_argument("--data-dir")
    demo.add_argument("--model", help="a cross-encoder folder (default: the built default model)")
    demo.add_argument("--queries", type=int, default=2, help="claims to show")
    demo.add_argument("--examine", type=int, default=30, help="claims run through the pipeline")
    demo.add_argument("--json")
    demo.set_defaults(func=cmd_demo)
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # Haystack logs every component run at INFO: too much for a command line
        logging.getLogger("haystack").setLevel(logging.WARNING)
    _apply_task_defaults(args)
    try:
        result = args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError, OSError) as error:
        print(f"crossrerank {args.command}: error: {error}", file=sys.stderr)
        return 2
    if getattr(args, "json", None):
        from haystack_crossrerank.evaluation.report import write_report

        write_report(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


def _apply_task_defaults(args: argparse.Namespace) -> None:
    """Fill the unset training flags with the chosen task's defaults."""
    if args.command != "train":
        return
    from haystack_crossrerank.training.defaults import task_defaults

    for key, value in task_defaults(args.task).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
