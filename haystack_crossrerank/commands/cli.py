"""The `crossrerank` command line: train, evaluate, benchmark and demonstrate the reranker."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from haystack_crossrerank.commands.adapt import cmd_adapt
from haystack_crossrerank.commands.bundle import cmd_bundle
from haystack_crossrerank.commands.cli_parser import build_parser
from haystack_crossrerank.commands.index import cmd_index
from haystack_crossrerank.commands.offline import (
    build_default_model,
    built_model_dir,
    offline_base,
    offline_base_model,
)
from haystack_crossrerank.utils.paths import data_dir

logger = logging.getLogger("haystack_crossrerank.commands.cli")


# ---------------------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.training import TrainConfig

    if args.base_model:
        base = args.base_model
    elif args.task == "retrieval":
        # Measured: continuing from the STS-B cross-encoder beats a fresh head on the MiniLM base (README).
        # The retrieval recipe was chosen and measured from the seed-recipe model, so it starts from that one.
        base = str(build_default_model(base=args.base, recipe="seed", data_dir=args.data_dir))
    else:
        base = offline_base_model(args.base)
    config = TrainConfig.for_task(
        args.task,
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
        dataloader_workers=args.dataloader_workers,
        eval_precision=args.eval_precision,
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
            symmetric_eval=bool(args.symmetric_eval),
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
                **_given(
                    loss=args.loss,
                    negatives=args.negatives,
                    mine_depth=args.mine_depth,
                    validation_queries=args.validation_queries,
                    max_length=args.max_length,
                    eval_depth=args.eval_depth,
                ),
                mix=parse_mix(args.mix),
                train_limit=args.train_limit,
                eval_test=not args.no_test,
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


def _given(**values: Any) -> dict[str, Any]:
    """The flags that were set: an unset one (`None`) keeps the dataclass's default."""
    return {key: value for key, value in values.items() if value is not None}


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
    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer

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
    path = build_default_model(base=args.base, recipe=args.recipe, data_dir=args.data_dir, force=args.force)
    summary = {"base": args.base, "recipe": args.recipe or offline_base(args.base).recipe, "model": str(path)}
    _print_metrics("Default model", summary)
    return summary


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.commands.benchmark import BenchOptions, run_benchmark

    data_dir = resolve_data_dir(args.data_dir)
    if data_dir is None:
        raise SystemExit("crossrerank bench needs a BEIR folder: pass --data-dir (e.g. ../shared/data/scifact)")
    models = args.model or [str(_default_model_or_exit(build=True, data_dir=args.data_dir))]
    if args.card:  # checked before the (long) run, not after it
        missing = [m for m in models if not (Path(m) / "README.md").is_file()]
        if missing:
            raise SystemExit(f"--card needs model folders with a model card (README.md); none in: {missing}")
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
        index=args.index,
    )
    result = run_benchmark(options)
    if args.card:
        import datetime
        import shlex

        from haystack_crossrerank.training.card import record_benchmark

        command = "crossrerank " + shlex.join(args.argv)
        today = datetime.date.today().isoformat()
        for model in models:
            heading = record_benchmark(Path(model), result, command=command, when=today)
            print(f"recorded '{heading[4:]}' in {Path(model) / 'README.md'}")
    if args.json:  # the JSON names its command, commit, package versions and machine (benchmarks/tables.py)
        from haystack_crossrerank.utils.provenance import provenance

        result["provenance"] = provenance(["crossrerank", *args.argv])
    return result


def cmd_tune(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.commands.tuning import TuneOptions, run_tuning

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
        index=args.index,
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
    from haystack_crossrerank.commands.demo import run_demo

    data_dir = resolve_data_dir(args.data_dir)
    model = Path(args.model) if args.model else build_default_model(data_dir=data_dir)
    return run_demo(model, data_dir=data_dir, queries=args.queries, examine=args.examine)


def cmd_quantize(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import asdict

    from haystack_crossrerank.commands.quantize import beir_calibration_pairs, beir_distillation_pairs
    from haystack_crossrerank.exported import INT8_MIN_SPEARMAN
    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer

    data_dir = resolve_data_dir(args.data_dir)
    if data_dir is None:
        raise SystemExit("crossrerank quantize calibrates on a BEIR set's train queries: pass --data-dir")
    model = args.model or str(_default_model_or_exit(data_dir=args.data_dir))
    distil = args.backend == "openvino" if args.distil is None else args.distil
    if distil and args.backend != "openvino":
        raise SystemExit(f"--distil makes OpenVINO int8 models only, but --backend is {args.backend}")
    calibration, held = beir_calibration_pairs(data_dir, dataset=args.dataset, count=args.pairs, seed=args.seed)
    distil_pairs, settings = None, None
    if distil:
        from haystack_crossrerank.exported.distil import DistilSettings

        settings = DistilSettings(epochs=args.distil_epochs, learning_rate=args.distil_lr, seed=args.seed)
        distil_pairs = beir_distillation_pairs(
            data_dir, dataset=args.dataset, queries=args.distil_queries, calibration_count=args.pairs, seed=args.seed
        )
    scorer = CrossEncoderScorer(model, backend=args.backend, precision="fp32", device="cpu")
    report = scorer.calibrate_int8(calibration, held, distil_pairs=distil_pairs, distil_settings=settings)
    summary: dict[str, Any] = {"model": model, "export": str(scorer.export_folder), **asdict(report)}
    summary.update({f"distillation_{k}": v for k, v in (summary.pop("distillation") or {}).items()})
    title = f"int8 calibration, {args.backend} ({args.dataset} train; gate: Spearman >= {INT8_MIN_SPEARMAN})"
    _print_metrics(title, summary)
    if not report.passed:
        print(
            f"\nrefused: the int8 scores correlate {report.spearman:.4f} with fp32 (< {INT8_MIN_SPEARMAN}); "
            f"precision 'int8' on backend {args.backend!r} falls back to the exact fp32 model",
            file=sys.stderr,
        )
    return summary


def cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.commands.serving import ServeSettings, serve

    if args.replicas is not None and args.ray is None:
        raise ValueError(f"`--replicas` needs `--ray` (replicas run on Ray Serve), but got --replicas {args.replicas}")
    if args.replicas is not None and args.replicas < 1:
        raise ValueError(f"`--replicas` must be >= 1, but got {args.replicas}")
    settings = ServeSettings(
        corpus=args.corpus,
        index=args.index,
        pipeline=args.pipeline,
        model=args.model,
        ranker=dict(args.set or []) or None,
        depth=args.depth,
        max_queue=args.max_queue,
        timeout_s=args.timeout_s,
        max_wait_ms=args.max_wait_ms,
        max_batch_requests=args.max_batch_requests,
        max_batch_tokens=args.max_batch_tokens,
        qrels=args.qrels,
        queries=args.queries,
    )
    print(f'serving {args.pipeline} on http://{args.host}:{args.port}/{args.pipeline}/run (POST {{"query": ...}})')
    print(f"search page: http://{args.host}:{args.port}/")
    if args.ray is not None:
        from haystack_crossrerank.commands.serving_ray import serve_ray

        replicas = 2 if args.replicas is None else args.replicas
        address = args.ray or os.environ.get("RAY_ADDRESS") or "local"  # --ray alone: $RAY_ADDRESS, else local
        serve_ray(settings, address=address, replicas=replicas, host=args.host, port=args.port)
        return {"pipeline": args.pipeline, "corpus": args.corpus, "index": args.index, "replicas": replicas}
    serve(settings, host=args.host, port=args.port)
    return {"pipeline": args.pipeline, "corpus": args.corpus, "index": args.index}


def cmd_rerank_run(args: argparse.Namespace) -> dict[str, Any]:
    from haystack_crossrerank.commands.rerank_run import RerankRunOptions, rerank_run

    ray = args.ray
    if ray == "":  # --ray without an address: $RAY_ADDRESS if set, else a local Ray
        ray = os.environ.get("RAY_ADDRESS") or "local"
    options = RerankRunOptions(
        run=args.run,
        corpus=args.corpus,
        queries=args.queries,
        model=args.model or str(_default_model_or_exit()),
        output=args.output,
        qrels=args.qrels,
        depth=args.depth,
        pipeline=args.pipeline,
        settings=dict(args.set or []),
        ray=ray,
        workers=args.workers,
        num_gpus=args.num_gpus,
    )
    summary = rerank_run(options)
    _print_metrics("Reranked run", summary)
    return summary


def resolve_data_dir(value: str | None) -> str | None:
    """The data folder by :func:`haystack_crossrerank.utils.paths.data_dir`'s policy, as a string (`None`: the hub)."""
    folder = data_dir(value)
    return str(folder) if folder is not None else None


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


COMMANDS = {
    "train": cmd_train,
    "eval-sts": cmd_eval_sts,
    "build-model": cmd_build_default_model,
    "quantize": cmd_quantize,
    "bench": cmd_bench,
    "tune": cmd_tune,
    "demo": cmd_demo,
    "serve": cmd_serve,
    "rerank-run": cmd_rerank_run,
    "bundle": cmd_bundle,
    "index": cmd_index,
    "adapt": cmd_adapt,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # Haystack logs every component run at INFO: too much for a command line
        logging.getLogger("haystack").setLevel(logging.WARNING)
    try:
        result = COMMANDS[args.command](args)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError, OSError, RuntimeError) as error:
        print(f"crossrerank {args.command}: error: {error}", file=sys.stderr)
        return 2
    if getattr(args, "json", None):
        from haystack_crossrerank.evaluation.report import write_report

        write_report(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
