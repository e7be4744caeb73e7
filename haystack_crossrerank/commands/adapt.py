"""`crossrerank adapt`: fine-tune a reranker on pseudo-queries made from a corpus, with no judgments read.

    crossrerank adapt --corpus ../shared/data/scifact --output models/scifact-adapted
    crossrerank tune --data-dir ../shared/data --model models/scifact-adapted

The work is :func:`haystack_crossrerank.training.adapt.adapt_reranker`'s; this module holds the flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from haystack_crossrerank.utils.hardware import TRAINING_PRECISIONS


def add_adapt_parser(subparsers: Any) -> argparse.ArgumentParser:
    """
    Add the `adapt` sub-command to an argparse sub-parsers object.

    :param subparsers: What `ArgumentParser.add_subparsers()` returned.
    :returns: The new sub-parser; its handler is :func:`cmd_adapt`.
    """
    parser = subparsers.add_parser(
        "adapt",
        help="adapt a reranker to a corpus without judgments (pseudo-queries from the corpus itself)",
        description="Fine-tune a cross-encoder on pseudo-queries made from the corpus (title -> body, sentence -> "
        "rest of the document) with negatives mined from a shipped first stage over it. No relevance judgment is "
        "read; the checkpoint is chosen on held-back pseudo-queries, and the base model is kept if it does better.",
    )
    parser.add_argument("--corpus", required=True, help="a BEIR folder or a JSON lines file of documents")
    parser.add_argument("--base", help="hub id or folder of the model to adapt (default: the built default model)")
    parser.add_argument("--output", required=True, metavar="DIR", help="the model folder to write")
    parser.add_argument(
        "--first-stage", choices=["bm25", "hybrid"], default="bm25", help="mines the negatives (default: bm25)"
    )
    parser.add_argument(
        "--minutes", type=float, default=25.0, help="time budget of the whole run, mining included (default 25)"
    )
    parser.add_argument(
        "--queries", metavar="FILE", help="user queries without judgments to mix in: one a line, or JSON lines"
    )
    parser.add_argument("--pseudo-queries", type=int, default=None, help="training pseudo-queries (default 2400)")
    parser.add_argument(
        "--title-share", type=float, default=None, help="share of title queries among titled documents (default 0.3)"
    )
    parser.add_argument(
        "--keep-span", type=float, default=None, help="share of span queries whose positive keeps it (default 0.1)"
    )
    parser.add_argument("--negatives", type=int, default=None, help="mined negatives per example (default 3)")
    parser.add_argument("--heldout", type=int, default=None, help="documents held back to choose by (default 100)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per pair (default 128)")
    parser.add_argument(
        "--pairs",
        choices=["document", "passage"],
        default=None,
        help="train on whole documents, or on each document's passage closest to the query (default document)",
    )
    parser.add_argument(
        "--base-share",
        type=float,
        default=None,
        help="the base model's share when the trained weights are averaged with it, 0 for none (default 0)",
    )
    parser.add_argument("--epochs", type=float, default=None, help="passes over the pseudo-queries (default 1)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-5)")
    parser.add_argument("--eval-steps", type=int, default=None, help="evaluate every N steps (default 75)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS, default="auto")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--json", help="write the summary to this JSON file")
    return parser


def cmd_adapt(args: argparse.Namespace) -> dict[str, Any]:
    """
    Run `crossrerank adapt` and print a summary.

    :param args: The parsed arguments of :func:`add_adapt_parser`.
    :returns: The summary (JSON-able).
    :raises SystemExit: If no `--base` is given and the default model is not built.
    """
    from haystack_crossrerank.commands.offline import built_model_dir
    from haystack_crossrerank.training.adapt import ADAPT_FILE, AdaptOptions, adapt_config, adapt_reranker

    base = args.base
    if base is None:
        base = str(built_model_dir("minilm"))
        if not (built_model_dir("minilm") / "config.json").is_file():
            raise SystemExit(
                f"no --base given and the default model is not built yet: run `crossrerank build-model` ({base})"
            )
    settings = {
        "queries": args.pseudo_queries,
        "title_share": args.title_share,
        "keep_span": args.keep_span,
        "negatives": args.negatives,
        "heldout": args.heldout,
        "max_length": args.max_length,
        "base_share": args.base_share,
        "pairs": args.pairs,
    }
    options = AdaptOptions(
        corpus=args.corpus,
        first_stage=args.first_stage,
        minutes=args.minutes,
        user_queries=args.queries,
        **{key: value for key, value in settings.items() if value is not None},
    )
    config = adapt_config(
        base,
        args.output,
        epochs=args.epochs,
        learning_rate=args.lr,
        eval_steps=args.eval_steps,
        seed=args.seed,
        precision=args.precision,
        overwrite=args.overwrite,
    )
    result = adapt_reranker(config, options)
    summary: dict[str, Any] = {
        "output": str(result.output_dir),
        "kept": result.kept,
        "steps": result.training.steps,
        "stopped_by_budget": result.stopped_by_budget,
        "seconds": round(result.seconds),
        **{f"heldout {name} {metric}": value for name, m in result.heldout.items() for metric, value in m.items()},
    }
    width = max(len(key) for key in summary)
    print("\nAdaptation finished")
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value:.4f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")
    settings = result.facts.get("ranker_settings") or {}
    if settings:
        print(f"\nRanker settings recorded for this model ({ADAPT_FILE}; `crossrerank serve` applies them):")
        for pipeline, values in settings.items():
            print(f"  {pipeline}: " + " ".join(f"--set {k}={'null' if v is None else v}" for k, v in values.items()))
    summary["ranker_settings"] = settings
    return summary
