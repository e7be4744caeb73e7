"""The ranker settings an adapted model gets in each shipped pipeline: one fixed recipe, chosen on training queries.

A model adapted to a corpus (`crossrerank adapt`) scores differently from the STS model the shipped pipelines'
fusion settings were tuned for, and the user who adapts has no judgments to tune with. So the settings are
chosen once, here, and shipped in `haystack_crossrerank.training.adapt.ADAPTED_RANKER_SETTINGS`:

1. For each data set (SciFact, MedQuAD), its adapted model (adapted on that corpus alone) is tuned with
   `crossrerank tune`'s grid on a seeded sample of the set's *training* queries, over the shipped pipelines'
   first stages at their shipped depth. Test queries are never read.
2. For each pipeline, the setting with the highest *worst* 90% lower bound of the per-query gain over the first
   stage, across the data sets, is the recipe: a setting that holds on both rather than the best of either.

    python benchmarks/adapt_recipe.py --data-dir ../shared/data \\
        --hybrid-index scifact=DIR --hybrid-index medquad=DIR

writes `benchmarks/results/adapt_recipe.json` (or --json) with the command, commit, versions and machine. The
adapted models are `<models-dir>/<base>-<set>-adapted` (as benchmarks/adapt_quality.py makes them) or
`--adapted NAME=DIR`. `--scores-dir DIR` keeps each set's passage scores (`crossrerank tune --scores`), so a run
over the same queries and models scores nothing again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("scifact", "medquad")
STAGES = ("bm25", "hybrid")
SETTING_KEYS = ("passages", "meta_placement", "aggregation", "aggregation_weight", "fusion", "fusion_weight")


def setting_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """A grid row's ranker settings and depth, as a hashable key."""
    return tuple(row[k] for k in (*SETTING_KEYS, "max_passages", "depth"))


def joint_choice(grids: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """
    The setting with the highest worst-across-sets `gain_lcb` (ties: the higher worst gain, then the grid's order).

    :param grids: data set -> `crossrerank tune`'s grid of one first stage (the same settings in each).
    :returns: The chosen row (`settings`, and per set its `ndcg@10`, `gain`, `gain_lcb`), and every joint row.
    :raises ValueError: If the grids share no setting.
    """
    names = list(grids)
    by_set = {name: {setting_key(r): r for r in grid} for name, grid in grids.items()}
    shared = [k for k in by_set[names[0]] if all(k in by_set[n] for n in names)]
    if not shared:
        raise ValueError(f"the grids of {names} share no setting")
    rows = []
    for key in shared:
        first = by_set[names[0]][key]
        row: dict[str, Any] = {"settings": {k: first[k] for k in (*SETTING_KEYS, "max_passages")}, "depth": key[-1]}
        for name in names:
            found = by_set[name][key]
            row[name] = {k: found[k] for k in ("ndcg@10", "gain", "gain_lcb")}
        row["worst_gain_lcb"] = min(row[n]["gain_lcb"] for n in names)
        row["worst_gain"] = min(row[n]["gain"] for n in names)
        rows.append(row)
    best = max(rows, key=lambda r: (r["worst_gain_lcb"], r["worst_gain"]))
    return best, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--base", help="the base model the adapted ones came from (default: the built default model)")
    parser.add_argument("--adapted", action="append", default=[], metavar="NAME=DIR", help="an adapted model to take")
    parser.add_argument("--hybrid-index", action="append", default=[], metavar="NAME=DIR", help="a saved hybrid index")
    parser.add_argument("--models-dir", default=None, help="where the adapted models are (default: beside --base)")
    parser.add_argument("--queries", type=int, default=200, help="training queries sampled per set (seeded)")
    parser.add_argument("--scores-dir", help="keep and reuse each set's passage scores here")
    parser.add_argument("--json", default=str(RESULTS / "adapt_recipe.json"), help="default: %(default)s")
    args = parser.parse_args(argv)

    from adapt_quality import parse_adapted

    from haystack_crossrerank.commands.offline import built_model_dir
    from haystack_crossrerank.commands.tuning import TuneOptions, run_tuning
    from haystack_crossrerank.retrievers.stages import first_stage, shipped_depth
    from haystack_crossrerank.utils.adapted import ADAPT_FILE
    from haystack_crossrerank.utils.provenance import write_result

    given, indexes = parse_adapted(args.adapted), parse_adapted(args.hybrid_index)
    base = Path(args.base or built_model_dir("minilm"))
    models_dir = Path(args.models_dir) if args.models_dir else base.parent
    per_set: dict[str, Any] = {}
    grids: dict[str, dict[str, list[dict[str, Any]]]] = {stage: {} for stage in STAGES}
    for dataset in DATASETS:
        model = Path(given.get(dataset) or models_dir / f"{base.name}-{dataset}-adapted")
        if not (model / "config.json").is_file():
            sys.exit(f"adapted model {model} not found: run benchmarks/adapt_quality.py first, or pass --adapted")
        depths = sorted({shipped_depth(first_stage(stage)) for stage in STAGES})
        scores = str(Path(args.scores_dir) / f"{dataset}_scores.json") if args.scores_dir else None
        options = TuneOptions(
            data_dir=args.data_dir,
            model=str(model),
            dataset=dataset,
            first_stages=list(STAGES),
            queries=args.queries,
            depths=depths,
            variants=[("sentences", "passage")],
            index=indexes.get(dataset),
            scores_path=scores,
        )
        tuned = run_tuning(options)
        facts_file = model / ADAPT_FILE
        facts = json.loads(facts_file.read_text(encoding="utf-8")) if facts_file.is_file() else {}
        per_set[dataset] = {
            "model": str(model),
            # how the model was adapted: its options, and the held-back comparison, steps and seconds of the run
            "adaptation": {key: facts.get(key) for key in ("options", "result")},
            "queries": tuned["queries"],
            "first_stages": {
                stage: {k: v for k, v in found.items() if k != "grid"} for stage, found in tuned["first_stages"].items()
            },
        }
        for stage in STAGES:
            grids[stage][dataset] = tuned["first_stages"][stage]["grid"]

    recipe, choices = {}, {}
    print("\npipeline | recipe | " + " | ".join(f"{d} train nDCG@10 (gain, 90% bound)" for d in DATASETS))
    for stage in STAGES:
        best, rows = joint_choice(grids[stage])
        recipe[f"{stage}_rerank"] = best["settings"]
        choices[f"{stage}_rerank"] = {"choice": best, "top": sorted(rows, key=lambda r: -r["worst_gain_lcb"])[:10]}
        settings = ", ".join(f"{k}={v}" for k, v in best["settings"].items())
        cells = [f"{best[d]['ndcg@10']:.4f} ({best[d]['gain']:+.4f}, {best[d]['gain_lcb']:+.4f})" for d in DATASETS]
        print(f"{stage}_rerank | {settings} | " + " | ".join(cells))
    results = {"base": str(base), "data_sets": per_set, "pipelines": choices, "recipe": recipe}
    print(f"wrote {write_result(args.json, 'adapt_recipe', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
