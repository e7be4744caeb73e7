"""Does adapting the reranker to a corpus (`crossrerank adapt`) help the shipped pipelines on that corpus's test set?

For each data set, the base model is adapted on the data set's corpus alone (no judgments, no queries read), or an
adapted model folder is taken (`--adapted NAME=DIR`, or an existing `<models-dir>/<base>-<name>-adapted`). Then each
shipped pipeline (`--first-stages`, at its own depth and ranker settings) is run by `crossrerank bench`'s
benchmark over the test queries with the base and with the adapted model, beside its first stage alone. The test
judgments are read only here, to measure. The table says plainly where a pipeline with the adapted model ranks
below its first stage alone.

    python benchmarks/adapt_quality.py --data-dir ../shared/data

writes `benchmarks/results/adapt_quality.json` (or --json) with the command, commit, versions and machine. With
`--hybrid-index scifact=DIR` (an index that `crossrerank index --first-stage hybrid` built from that corpus) the
hybrid rows load it instead of embedding the corpus again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("scifact", "medquad")
FIRST_STAGES = ("bm25", "hybrid")


def shipped_ranker(stage: str) -> dict[str, Any]:
    """The shipped `<stage>_rerank.yaml` ranker's init parameters."""
    import yaml

    from haystack_crossrerank.retrievers.pipelines import pipeline_path

    data = yaml.safe_load(pipeline_path(f"{stage}_rerank").read_text(encoding="utf-8"))
    return dict(data["components"]["ranker"]["init_parameters"])


def pipeline_row(rows: list[dict[str, Any]], model: str, ranker: dict[str, Any]) -> dict[str, Any]:
    """The benchmark row that the shipped pipeline gives with `model`: its passage mode, fused if it fuses."""
    label, mode, fusion = Path(model).name, ranker.get("passages", "document"), ranker.get("fusion")
    name = f"+ {label}, {mode}, {fusion} fusion" if fusion else f"+ CrossEncoderRanker ({label}, {mode})"
    return next(row for row in rows if row["row"] == name)


def compare(
    data_dir: str,
    dataset: str,
    stage: str,
    base: str,
    adapted: str,
    *,
    sample_queries: int | None,
    ranker_settings: dict[str, Any] | None = None,
    index: str | None = None,
    recipe: dict[str, Any] | None = None,
    recorded_only: bool = False,
) -> dict[str, Any]:
    """
    One data set and first stage: the first stage alone, and its shipped pipeline with each model; with `recipe`
    (the ranker settings recorded for the adapted model), also the adapted model run with those settings.

    :returns: `{"dataset", "first_stage", "depth", "queries", "first_stage_alone", "base", "adapted",
        "adapted_minus_first_stage", "base_minus_first_stage", "adapted_worse_than_first_stage"}`, each model's entry
        the row's `ndcg@10`, `mrr@10` and `recall@100`; with `recipe`, also `"adapted_recorded_settings"`,
        `"adapted_recorded"`, `"adapted_recorded_minus_first_stage"`, `"adapted_recorded_worse_than_first_stage"`.
        With `recorded_only` (and `recipe`), only the first stage and the adapted model with `recipe` are run:
        `"base"` and `"adapted"` are `None`.
    """
    from haystack_crossrerank.commands.benchmark import BenchOptions, run_benchmark
    from haystack_crossrerank.retrievers.stages import first_stage, shipped_depth

    ranker = shipped_ranker(stage)
    depth = shipped_depth(first_stage(stage))
    options = BenchOptions(
        data_dir=data_dir,
        dataset=dataset,
        split="test",
        first_stage=stage,
        depth=depth,
        models=[base, adapted],
        passages=[ranker.get("passages", "document")],
        peer=False,
        sample_queries=sample_queries,
        ranker_settings=ranker_settings or {},
        index=index,
    )
    if recorded_only and not recipe:
        raise ValueError("recorded_only needs the ranker settings recorded for the adapted model (recipe)")
    rows = [] if recorded_only else run_benchmark(options)["rows"]
    keys = ("ndcg@10", "mrr@10", "recall@100", "gain_ci90")  # gain_ci90: 90% interval of the gain over the first stage
    recipe_rows: list[dict[str, Any]] = []
    if recipe:  # the same pipeline, its ranker run with the settings recorded for an adapted model
        settings = {**(ranker_settings or {}), **recipe}
        passages = [recipe["passages"]]
        options = dataclasses.replace(options, models=[adapted], passages=passages, ranker_settings=settings)
        recipe_rows = run_benchmark(options)["rows"]
    first = (rows or recipe_rows)[0]  # the first stage alone comes first in either run
    alone: dict[str, Any] = {k: first.get(k) for k in keys[:3]}
    recorded: dict[str, Any] = {}
    if recipe:
        found: dict[str, Any] = {k: pipeline_row(recipe_rows, adapted, {**ranker, **recipe}).get(k) for k in keys}
        recorded = {
            "adapted_recorded_settings": recipe,
            "adapted_recorded": found,
            "adapted_recorded_minus_first_stage": round(found["ndcg@10"] - alone["ndcg@10"], 4),
            "adapted_recorded_worse_than_first_stage": found["ndcg@10"] < alone["ndcg@10"],
        }
    measured: dict[str, Any] = {"base": None, "adapted": None}
    if not recorded_only:
        base_row: dict[str, Any] = {k: pipeline_row(rows, base, ranker).get(k) for k in keys}
        adapted_row: dict[str, Any] = {k: pipeline_row(rows, adapted, ranker).get(k) for k in keys}
        measured = {
            "base": base_row,
            "adapted": adapted_row,
            "adapted_minus_first_stage": round(adapted_row["ndcg@10"] - alone["ndcg@10"], 4),
            "base_minus_first_stage": round(base_row["ndcg@10"] - alone["ndcg@10"], 4),
            "adapted_worse_than_first_stage": adapted_row["ndcg@10"] < alone["ndcg@10"],
        }
    return {
        "dataset": dataset,
        "first_stage": stage,
        "depth": depth,
        "queries": first["queries"],
        "first_stage_alone": alone,
        **measured,
        **recorded,
    }


def adapted_model(
    data_dir: str, dataset: str, base: str, models_dir: Path, given: dict[str, str], minutes: float, first_stage: str
) -> tuple[str, dict[str, Any] | None]:
    """
    The adapted model for a data set: the folder given, else `<models-dir>/<base>-<dataset>-adapted`, adapted
    there first (on the corpus alone) if it does not exist yet.

    :returns: The folder, and its `adaptation.json` (`None` if it has none).
    """
    from haystack_crossrerank.data.beir import resolve_beir_folder
    from haystack_crossrerank.training.adapt import ADAPT_FILE, AdaptOptions, adapt_config, adapt_reranker

    folder = Path(given[dataset]) if dataset in given else models_dir / f"{Path(base).name}-{dataset}-adapted"
    if not (folder / "config.json").is_file():
        corpus = str(resolve_beir_folder(data_dir, dataset))
        options = AdaptOptions(corpus=corpus, minutes=minutes, first_stage=first_stage)
        adapt_reranker(adapt_config(base, str(folder)), options)
    facts = folder / ADAPT_FILE
    return str(folder), json.loads(facts.read_text(encoding="utf-8")) if facts.is_file() else None


def training_seed(model: str) -> int | None:
    """The seed the model folder was trained with (its `training_log.json`), `None` if it records none."""
    log = Path(model) / "training_log.json"
    if not log.is_file():
        return None
    return json.loads(log.read_text(encoding="utf-8")).get("config", {}).get("seed")


def adapted_settings(model: str, facts: dict[str, Any] | None, pipeline: str) -> dict[str, Any] | None:
    """
    The ranker settings to run an adapted model with in a pipeline: those its folder records, else, for a folder
    adapted before settings were recorded whose adaptation kept the adapted weights, today's recipe
    (`ADAPTED_RANKER_SETTINGS`, what `crossrerank adapt` records now); `None` for a folder that kept the base model.
    """
    from haystack_crossrerank.training.adapt import ADAPTED_RANKER_SETTINGS
    from haystack_crossrerank.utils.adapted import recorded_ranker_settings

    found = recorded_ranker_settings(model, pipeline)
    if found:
        return found
    if facts is not None and "ranker_settings" not in facts and facts.get("result", {}).get("kept") == "adapted":
        return dict(ADAPTED_RANKER_SETTINGS[pipeline])
    return None


def print_table(comparisons: list[dict[str, Any]]) -> list[str]:
    """Print one line per data set and pipeline; returns the warnings (the adapted model below the first stage)."""
    print(
        "\ndata set | pipeline | queries | first stage nDCG@10 | + base model | + adapted model | adapted - first stage"
        " | + adapted model, its settings | its settings - first stage"
    )
    warnings = []
    for c in comparisons:
        recorded = c.get("adapted_recorded")
        shipped = (
            f"{c['base']['ndcg@10']:.4f} | {c['adapted']['ndcg@10']:.4f} | {c['adapted_minus_first_stage']:+.4f} | "
            if c.get("base")
            else "- | - | - | "  # --recorded-only
        )
        print(
            f"{c['dataset']} | {c['first_stage']}_rerank (top {c['depth']}) | {c['queries']} | "
            f"{c['first_stage_alone']['ndcg@10']:.4f} | "
            + shipped
            + (f"{recorded['ndcg@10']:.4f} | {c['adapted_recorded_minus_first_stage']:+.4f}" if recorded else "- | -")
            + (f" (90%: {ci[0]:+.4f} to {ci[1]:+.4f})" if (ci := (recorded or {}).get("gain_ci90")) else "")
        )
        for key, label in (("adapted", "the adapted model"), ("adapted_recorded", "the adapted model's settings")):
            if c.get(f"{key}_worse_than_first_stage"):
                warnings.append(
                    f"WORSE: on {c['dataset']} test, {c['first_stage']}_rerank with {label} ranks below its "
                    f"first stage alone ({c[key]['ndcg@10']:.4f} < {c['first_stage_alone']['ndcg@10']:.4f})"
                )
    for line in warnings:
        print(line)
    if not warnings:
        print("With the adapted model, no pipeline ranks below its first stage alone.")
    return warnings


def parse_adapted(values: list[str]) -> dict[str, str]:
    """`["scifact=DIR"]` -> `{"scifact": "DIR"}`."""
    found = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise argparse.ArgumentTypeError(f"expected NAME=DIR (e.g. scifact=models/a), but got {value!r}")
        found[name] = folder
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--first-stages", nargs="+", choices=FIRST_STAGES, default=list(FIRST_STAGES))
    parser.add_argument("--base", help="the model adapted and compared (default: the project's built offline model)")
    parser.add_argument("--adapted", action="append", default=[], metavar="NAME=DIR", help="an adapted model to take")
    parser.add_argument(
        "--hybrid-index",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a saved hybrid index of a data set's corpus (`crossrerank index --first-stage hybrid`), so that the "
        "hybrid rows do not embed the corpus again",
    )
    parser.add_argument("--models-dir", default=None, help="where adapted models are made (default: beside --base)")
    parser.add_argument("--minutes", type=float, default=25.0, help="adaptation time budget (default %(default)s)")
    parser.add_argument("--mine-with", choices=FIRST_STAGES, default="bm25", help="adapt's --first-stage")
    parser.add_argument(
        "--sample-queries", type=int, default=300, help="a seeded sample of test queries per set (default 300)"
    )
    parser.add_argument(
        "--shipped-only",
        action="store_true",
        help="run the adapted model with the shipped ranker settings only, not also with those recorded for it",
    )
    parser.add_argument(
        "--recorded-only",
        action="store_true",
        help="run only the adapted model with the settings recorded for it (no base model, no shipped settings): "
        "for more adapted models of one corpus, e.g. other seeds",
    )
    parser.add_argument("--json", default=str(RESULTS / "adapt_quality.json"), help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.shipped_only and args.recorded_only:
        parser.error("--shipped-only and --recorded-only exclude each other")
    given = parse_adapted(args.adapted)
    indexes = parse_adapted(args.hybrid_index)

    from haystack_crossrerank.commands.offline import built_model_dir
    from haystack_crossrerank.utils.provenance import write_result

    base = args.base or str(built_model_dir("minilm"))
    if not (Path(base) / "config.json").is_file():
        sys.exit(f"model {base} not found: run `crossrerank build-model` or pass --base")
    models_dir = Path(args.models_dir) if args.models_dir else Path(base).parent
    comparisons, adaptations = [], {}
    for dataset in args.datasets:
        model, facts = adapted_model(args.data_dir, dataset, base, models_dir, given, args.minutes, args.mine_with)
        adaptations[dataset] = {"model": model, "adaptation": facts, "seed": training_seed(model)}
        for stage in args.first_stages:
            index = indexes.get(dataset) if stage == "hybrid" else None
            recipe = None if args.shipped_only else adapted_settings(model, facts, f"{stage}_rerank")
            if args.recorded_only and recipe is None:
                sys.exit(f"{model} records no ranker settings for {stage}_rerank: run it without --recorded-only")
            comparisons.append(
                compare(
                    args.data_dir,
                    dataset,
                    stage,
                    base,
                    model,
                    sample_queries=args.sample_queries,
                    index=index,
                    recipe=recipe,
                    recorded_only=args.recorded_only,
                )
            )
    warnings = print_table(comparisons)
    report = {"base": base, "sample_queries": args.sample_queries, "adapted": adaptations}
    results = {**report, "comparisons": comparisons, "warnings": warnings}
    print(f"wrote {write_result(args.json, 'adapt_quality', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
