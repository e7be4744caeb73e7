"""Regenerate the benchmark tables of README.md and docs/ from the committed JSON results in benchmarks/results/.

A page holds each table between two marker lines, which this script keeps:

    <!-- BEGIN TABLE rerank_speed -->
    <!-- END TABLE rerank_speed -->

Between them it writes the table that `TABLES[name]` renders from its JSON file(s), and under it a line naming
each file with the command, commit and machine recorded in it (see `haystack_crossrerank.utils.provenance`).
Nothing else on the page changes.

    python benchmarks/tables.py            # rewrite the tables
    python benchmarks/tables.py --check    # change nothing; exit 1 naming each table that differs from its JSON

A table whose JSON file is missing, or lacks what the table reads, is an error (exit 1) in both modes; the
error names the command that writes the file.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKERS = re.compile(
    r"^<!-- BEGIN TABLE (?P<name>[\w.-]+) -->\n(?P<body>.*?)^<!-- END TABLE (?P=name) -->$", re.MULTILINE | re.DOTALL
)
BEGIN = re.compile(r"^<!-- BEGIN TABLE (?P<name>[\w.-]+) -->$", re.MULTILINE)

# The command that writes each result file (run from the repository root; the lead's runs record their own).
COMMANDS = {
    "bench_bm25.json": "crossrerank bench --data-dir ../shared/data --first-stage bm25 --depth 20 "
    "--json benchmarks/results/bench_bm25.json",
    "rerank_speed.json": "python benchmarks/rerank_speed.py --data-dir ../shared/data --queries 30 "
    "--rows peer_default,ours_auto,ours_fp32,peer_bf16,ours_openvino_int8",
    "train_speed.json": "python benchmarks/train_speed.py --data-dir ../shared/data",
    "serve_latency.json": "python benchmarks/serve_latency.py --data-dir ../shared/data --queries 30 --depths 20",
    "ray_speed.json": "python benchmarks/ray_speed.py --data-dir ../shared/data --queries 100",
    "thread_speed.json": "python benchmarks/thread_speed.py --data-dir ../shared/data",
    "serve_load.json": "python benchmarks/serve_load.py --data-dir ../shared/data --clients 1,4,16,64 "
    "--requests-per-client 1 --min-requests 16 --ray-replicas 1,2",
    "serve_startup.json": "python benchmarks/serve_startup.py --data-dir ../shared/data --datasets scifact,medquad "
    "--pipeline hybrid_rerank",
    "adapt_quality.json": "python benchmarks/adapt_quality.py --data-dir ../shared/data",
    "adapt_quality_medquad.json": "python benchmarks/adapt_quality.py --data-dir ../shared/data --datasets medquad "
    "--sample-queries 300 --json benchmarks/results/adapt_quality_medquad.json",
    "adapt_quality_seed43.json": "python benchmarks/adapt_quality.py --data-dir ../shared/data --datasets scifact "
    "--recorded-only --adapted scifact=DIR --json benchmarks/results/adapt_quality_seed43.json "
    "(DIR: crossrerank adapt --seed 43)",
    "adapt_quality_seed44.json": "python benchmarks/adapt_quality.py --data-dir ../shared/data --datasets scifact "
    "--recorded-only --adapted scifact=DIR --json benchmarks/results/adapt_quality_seed44.json "
    "(DIR: crossrerank adapt --seed 44)",
    "adapt_recipe.json": "python benchmarks/adapt_recipe.py --data-dir ../shared/data",
    "adapt_base_share.json": "python benchmarks/adapt_recipe.py --data-dir ../shared/data --adapted scifact=DIR "
    "--adapted medquad=DIR --json benchmarks/results/adapt_base_share.json (DIRs: crossrerank adapt --base-share 0.5)",
    "adapt_lr.json": "python benchmarks/adapt_recipe.py --data-dir ../shared/data --adapted scifact=DIR "
    "--adapted medquad=DIR --json benchmarks/results/adapt_lr.json (DIRs: crossrerank adapt --lr 1e-4)",
    "adapt_title_share.json": "python benchmarks/adapt_recipe.py --data-dir ../shared/data --adapted scifact=DIR "
    "--adapted medquad=DIR --json benchmarks/results/adapt_title_share.json "
    "(DIRs: crossrerank adapt --title-share 0.5)",
    "adapt_pairs_passage.json": "python benchmarks/adapt_recipe.py --data-dir ../shared/data --adapted scifact=DIR "
    "--adapted medquad=DIR --json benchmarks/results/adapt_pairs_passage.json "
    "(DIRs: crossrerank adapt --pairs passage)",
    "gpu_speed.json": "python benchmarks/gpu_speed.py --data-dir ../shared/data",
}


class TableError(Exception):
    """A table cannot be rendered: its JSON is missing, or lacks what the table reads."""


@dataclass(frozen=True)
class Result:
    """One loaded result file: where it is (as the page names it), its provenance and its results."""

    path: str
    provenance: dict[str, Any]
    data: dict[str, Any]


@dataclass(frozen=True)
class Table:
    """A table: the result files it reads, and the function that turns them (one `Result` each) into lines."""

    files: tuple[str, ...]
    render: Callable[..., list[str]]


# ---------------------------------------------------------------------------------------------- formatting
def rate(value: float | None) -> str:
    """Documents or pairs per second: 3 significant figures, up to whole numbers with thousands separators."""
    if value is None:
        return ""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def ms(value: float) -> str:
    """Milliseconds or seconds: whole numbers from 100 up, one decimal below."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def metric(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]


def need(data: dict[str, Any], *keys: str, where: str) -> Any:
    """`data[k1][k2]...`, or a TableError naming what is missing."""
    value: Any = data
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise TableError(f"{where} has no {'.'.join(keys)}")
        value = value[key]
    return value


# ---------------------------------------------------------------------------------------------- the tables
NAMES = {"scifact": "SciFact", "medquad": "MedQuAD", "bm25": "BM25", "faiss": "FAISS"}
PEER = "+ SentenceTransformersSimilarityRanker ("
SUBSET = re.compile(r"\+ CrossEncoderRanker \((?P<label>.+), document\) \[\d+-query subset\]")
SHIPPED = "the shipped YAML pipeline gives this ranking"


def bench_table(bench: Result) -> list[str]:
    rows = need(bench.data, "rows", where=bench.path)
    peers = {r["row"][len(PEER) : -1]: r for r in rows if r["row"].startswith(PEER)}
    table = []
    for row in rows:
        against = None
        if row["row"].startswith(PEER):
            against = 1.0
        elif (match := SUBSET.fullmatch(row["row"])) and match["label"] in peers and row["pairs_per_s"]:
            against = row["pairs_per_s"] / peers[match["label"]]["pairs_per_s"]
        latency = f"{ms(row['ms_p50'])} / {ms(row['ms_p95'])}"
        quality = [metric(row["ndcg@10"]), metric(row["mrr@10"])]
        table.append(
            [row["row"], row["queries"], *quality, latency, rate(row["pairs_per_s"]), ratio(against), row["note"]]
        )
    header = ["row", "queries", "nDCG@10", "MRR@10", "ms/query p50 / p95", "pairs/s", "× peer", "note"]
    settings = need(bench.data, "settings", where=bench.path)
    dataset, stage = (NAMES.get(v, v) for v in (bench.data["dataset"], settings["first_stage"]))
    caption = f"{dataset} {settings['split']}, {stage} top {settings['depth']}:"
    return [caption, "", *markdown(header, table)]


def rerank_speed_table(speed: Result) -> list[str]:
    rows = need(speed.data, "rows", where=speed.path)
    peer = next((r for r in rows if r["row"] == "peer_default"), None)
    table = [
        [
            row["engine"],
            rate(row["pairs_per_s"]),
            ratio(row["pairs_per_s"] / peer["pairs_per_s"] if peer else None),
            f"{ms(row['ms_p50'])} / {ms(row['ms_p95'])}",
            f"{row['peak_rss_mb']:,.0f}",
            metric(row["ndcg@10"]),
            metric(row.get("spearman_vs_fp32")),
        ]
        for row in rows
    ]
    header = ["engine", "docs/s", "× peer", "ms/query p50 / p95", "peak RSS MB", "nDCG@10", "Spearman vs fp32"]
    caption = (
        f"Model `{Path(speed.data['model']).name}`, {speed.data['queries']} SciFact test queries, BM25 top 100 "
        f"(title + abstract), our rows in passage mode `{speed.data['passages']}`:"
    )
    return [caption, "", *markdown(header, table)]


def _trainers(train: Result) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = need(train.data, "rows", where=train.path)
    peer = next((r for r in rows if r["trainer"].startswith("sentence-transformers")), None)
    ours = next((r for r in rows if r["trainer"].startswith("haystack-crossrerank")), None)
    if peer is None or ours is None:
        raise TableError(f"{train.path} must hold both trainers' rows (run without --only)")
    return peer, ours


def train_speed_table(train: Result) -> list[str]:
    peer, _ = _trainers(train)
    table = [
        [
            row["trainer"],
            ms(row["train_seconds"]),
            ratio(row["train_seconds"] / peer["train_seconds"]),
            f"{row['steps_per_second']:.2f}",
            f"{metric(row['stsb-validation_pearson'])} / {metric(row['stsb-validation_spearman'])}",
            f"{metric(row['stsb-test_pearson'])} / {metric(row['stsb-test_spearman'])}",
        ]
        for row in need(train.data, "rows", where=train.path)
    ]
    header = ["trainer", "training s", "× peer", "steps/s", "validation Pearson / Spearman", "test Pearson / Spearman"]
    caption = f"Base `{Path(train.data['base_model']).name}`, precision {train.data['precision']}:"
    return [caption, "", *markdown(header, table)]


def serve_latency_table(serve: Result) -> list[str]:
    table = [
        [
            row["depth"],
            f"{ms(row['http_p50_ms'])} / {ms(row['http_p95_ms'])}",
            f"{ms(row['in_process_p50_ms'])} / {ms(row['in_process_p95_ms'])}",
            f"{row['overhead_p50_ms']:+.1f} ms ({row['overhead_p50_ms'] / row['in_process_p50_ms']:+.1%})",
            f"{row['overhead_paired_p50_ms']:+.1f} ms",
            f"{row['scorer_share']:.1%}",
        ]
        for row in need(serve.data, "rows", where=serve.path)
    ]
    header = [
        "depth",
        "HTTP p50 / p95 ms",
        "in process p50 / p95 ms",
        "difference of the p50s",
        "p50 of each query's difference",
        "in-process time in the scorer",
    ]
    return [f"Model `{Path(serve.data['model']).name}`, one request at a time:", "", *markdown(header, table)]


def ray_speed_table(ray: Result) -> list[str]:
    engines = need(ray.data, "results", where=ray.path)
    single = engines["one process"]
    table = [
        [
            name,
            rate(row["pairs_per_s"]),
            ratio(row["pairs_per_s"] / single["pairs_per_s"]),
            ms(row["seconds"]),
            metric(row.get("reranked_ndcg@10")),
            "" if row is single else "yes" if ray.data["identical"] else "**no**",
        ]
        for name, row in engines.items()
    ]
    header = ["engine", "documents/s", "× one process", "seconds", "reranked nDCG@10", "same output"]
    caption = (
        f"Model `{Path(ray.data['model']).name}`, {single['queries']} SciFact test queries ({single['pairs']} pairs):"
    )
    return [caption, "", *markdown(header, table)]


def thread_speed_table(threads: Result) -> list[str]:
    table = [
        [row["threads"], rate(row["docs_per_s"]), ratio(row["speedup"]), "yes" if row["identical"] else "**no**"]
        for row in need(threads.data, "rows", where=threads.path)
    ]
    header = ["threads", "documents/s", "× 1 thread", "rankings equal to one thread's"]
    data = threads.data
    caption = (
        f"One `CrossEncoderRanker` ({data['engine']}, model `{Path(data['model']).name}`), {data['queries']} "
        f"queries × BM25 top {data['depth']}, {data['rounds']} rounds:"
    )
    return [caption, "", *markdown(header, table)]


MODE_NAMES = {
    "batched": "batched (default)",
    "one_at_a_time": "one at a time (`--max-batch-requests 1`)",
    "overload": "batched, `--max-queue 8`",
}


def serve_mode_name(mode: str) -> str:
    """A serve_load mode's row label: `ray_2_replicas` -> "Ray Serve, 2 replicas (`--ray --replicas 2`)"."""
    if mode.startswith("ray_") and mode.endswith("_replicas"):
        count = mode.removeprefix("ray_").removesuffix("_replicas")
        return f"Ray Serve, {count} replica{'s' if count != '1' else ''} (`--ray --replicas {count}`)"
    return MODE_NAMES.get(mode, mode)


def serve_load_table(load: Result) -> list[str]:
    data = load.data
    # Each ratio is against the mode it names: the batched server against one at a time, more Ray replicas
    # against the fewest.
    against = {"batched": ("one at a time", data.get("batched_speedup", {}))}
    for pair, ratios in data.get("ray_replicas_speedup", {}).items():
        mode, fewest = pair.split("/")
        against[mode] = (serve_mode_name(fewest).split(" (")[0].removeprefix("Ray Serve, "), ratios)
    table = []
    for mode in need(data, "modes", where=load.path):
        for row in mode["rows"]:
            statuses = ", ".join(f"{count}× {status}" for status, count in sorted(row["statuses"].items()))
            name, ratios = against.get(row["mode"], ("", {}))
            value = ratios.get(str(row["clients"]))
            table.append(
                [
                    serve_mode_name(row["mode"]),
                    row["clients"],
                    rate(row["throughput_per_s"]),
                    f"{ratio(value)} {name}" if value is not None else "",
                    f"{ms(row['p50_ms'])} / {ms(row['p95_ms'])} / {ms(row['p99_ms'])}",
                    statuses,
                    "yes" if row["rankings_equal"] else "**no**",
                ]
            )
    header = ["server", "clients", "answers/s", "throughput ratio", "p50 / p95 / p99 ms", "statuses", "rankings equal"]
    source = " ".join(data["source"]).replace("../shared/data/", "")
    caption = (
        f"`{data['pipeline']}` over `{source}`, model `{Path(data['model']).name}`, {data['queries']} SciFact test "
        "queries cycled:"
    )
    return [caption, "", *markdown(header, table)]


def serve_startup_table(startup: Result) -> list[str]:
    table = [
        [
            NAMES.get(row["dataset"], row["dataset"]),
            f"{row['documents']:,}",
            "(an existing index)" if row["index_build_s"] is None else ms(row["index_build_s"]),
            ms(row["corpus_startup_s"]),
            ms(row["index_startup_s"]),
            ratio(row["speedup"]),
            "yes" if row["answers_agree"] else "**no**",
        ]
        for row in need(startup.data, "rows", where=startup.path)
    ]
    header = [
        "data set",
        "documents",
        "index build s",
        "`serve --corpus` s",
        "`serve --index` s",
        "speed-up",
        "same answers",
    ]
    caption = f"`{startup.data['pipeline']}`, model `{Path(startup.data['model']).name}`, start-up to the first answer:"
    return [caption, "", *markdown(header, table)]


def recorded_cell(found: dict[str, Any], gain: float) -> str:
    """An adapted model's nDCG@10 with its recorded settings, its gain and, where recorded, the gain's interval."""
    ci = found.get("gain_ci90")  # results written before the interval was recorded lack it
    within = f"; 90% interval {ci[0]:+.4f} to {ci[1]:+.4f}" if ci else ""
    return f"{metric(found['ndcg@10'])} ({gain:+.4f}{within})"


def adapt_quality_table(adapt: Result) -> list[str]:
    table = []
    comparisons = need(adapt.data, "comparisons", where=adapt.path)
    recorded = any("adapted_recorded" in c for c in comparisons)
    for c in comparisons:
        worse = c["adapted_worse_than_first_stage"] or c.get("adapted_recorded_worse_than_first_stage", False)
        row = [
            NAMES.get(c["dataset"], c["dataset"]),
            f"`{c['first_stage']}_rerank` (top {c['depth']})",
            c["queries"],
            metric(c["first_stage_alone"]["ndcg@10"]),
            f"{metric(c['base']['ndcg@10'])} ({c['base_minus_first_stage']:+.4f})",
            f"{metric(c['adapted']['ndcg@10'])} ({c['adapted_minus_first_stage']:+.4f})",
        ]
        if recorded:
            found = c.get("adapted_recorded")
            row.append(recorded_cell(found, c["adapted_recorded_minus_first_stage"]) if found else "-")
        table.append([*row, "**yes**" if worse else "no"])
    header = ["test set", "pipeline", "queries", "first stage alone", "+ base model", "+ adapted model"]
    if recorded:
        header[-1] += ", shipped settings"
        header.append("+ adapted model, its recorded settings")
    header.append("adapted below first stage")
    adapted = adapt.data.get("adapted", {})
    kept = []
    for dataset, entry in adapted.items():
        result = (entry.get("adaptation") or {}).get("result")
        if result:
            kept.append(
                f"{NAMES.get(dataset, dataset)}: {result['steps']} of {result['planned_steps']} steps, "
                f"{result['seconds'] / 60:.1f} minutes in all, the {result['kept']} model kept"
            )
    settings = (
        "the pipeline's own depth; the models with its shipped ranker settings, the adapted one also with the "
        "settings its folder records"
        if recorded
        else "the pipeline's own depth and ranker settings"
    )
    caption = (
        f"nDCG@10 on each test set ({settings}; in brackets, against the first "
        f"stage alone), base model `{Path(adapt.data['base']).name}`, adapted on that test set's corpus alone"
    )
    caption += f" ({'; '.join(kept)}):" if kept else ":"
    return [caption, "", *markdown(header, table)]


def adapt_recipe_table(recipe: Result) -> list[str]:
    sets = list(need(recipe.data, "data_sets", where=recipe.path))
    table = []
    for pipeline, found in need(recipe.data, "pipelines", where=recipe.path).items():
        choice = found["choice"]
        settings = ", ".join(f"{k}={v}" for k, v in choice["settings"].items())
        cells = []
        for name in sets:
            first = recipe.data["data_sets"][name]["first_stages"][pipeline.removesuffix("_rerank")]
            got = choice[name]
            cells.append(
                f"{metric(first['first_stage_ndcg@10'])} → {metric(got['ndcg@10'])} "
                f"({got['gain']:+.4f}; bound {got['gain_lcb']:+.4f})"
            )
        table.append([f"`{pipeline}`", settings, *cells])
    queries = {NAMES.get(n, n): recipe.data["data_sets"][n]["queries"] for n in sets}
    columns = [f"{NAMES.get(n, n)} train: first stage → adapted" for n in sets]
    header = ["pipeline", "recorded ranker settings", *columns]
    caption = (
        "The ranker settings `crossrerank adapt` records for an adapted model, chosen on training queries ("
        + ", ".join(f"{n}: {q}" for n, q in queries.items())
        + "; each set with the model adapted on its own corpus) by the best worse-of-the-two 90% lower bound of the "
        "per-query nDCG@10 gain over the first stage:"
    )
    return [caption, "", *markdown(header, table)]


# The recipe variants tried on the training queries, each file adapt_recipe.py's output for models adapted so.
ADAPT_VARIANTS = {
    "adapt_recipe.json": "the recipe (learning rate 5e-5, trained weights)",
    "adapt_base_share.json": "`--base-share 0.5`",
    "adapt_lr.json": "`--lr 1e-4`",
    "adapt_title_share.json": "`--title-share 0.5`",
    "adapt_pairs_passage.json": "`--pairs passage`",
}


def adapt_variants_table(*variants: Result) -> list[str]:
    table = []
    for variant in variants:
        sets = list(need(variant.data, "data_sets", where=variant.path))
        cells = []
        for found in need(variant.data, "pipelines", where=variant.path).values():
            choice = found["choice"]
            cells += [f"{metric(choice[n]['ndcg@10'])} ({choice[n]['gain_lcb']:+.4f})" for n in sets]
        table.append([ADAPT_VARIANTS[Path(variant.path).name], *cells])
    pipelines = list(variants[0].data["pipelines"])
    sets = list(variants[0].data["data_sets"])
    header = ["adapted with", *[f"`{p}`, {NAMES.get(n, n)} train" for p in pipelines for n in sets]]
    caption = (
        "nDCG@10 on the training queries at each variant's own recipe choice (in brackets, the 90% lower bound of "
        "the gain over the first stage), each set with the model adapted on its own corpus:"
    )
    return [caption, "", *markdown(header, table)]


def adapt_seeds_table(*runs: Result) -> list[str]:
    """The recipe unchanged, adapted with several seeds: each pipeline with the settings the folder records."""
    table: list[list[Any]] = []
    gains: dict[str, list[float]] = {}
    for run in runs:
        adapted = need(run.data, "adapted", where=run.path)
        dataset = next(iter(adapted))
        cells = []
        for c in need(run.data, "comparisons", where=run.path):
            gain = c["adapted_recorded_minus_first_stage"]
            gains.setdefault(c["first_stage"], []).append(gain)
            cells.append(f"{metric(c['first_stage_alone']['ndcg@10'])} → {recorded_cell(c['adapted_recorded'], gain)}")
        result = adapted[dataset]["adaptation"]["result"]
        table.append([adapted[dataset].get("seed"), *cells, f"{result['steps']}, {result['seconds'] / 60:.1f}"])
    means = [f"mean gain {statistics.fmean(g):+.4f} (from {min(g):+.4f} to {max(g):+.4f})" for g in gains.values()]
    table.append([f"all {len(runs)}", *means, ""])
    stages = [f"`{stage}_rerank`: first stage → adapted" for stage in gains]
    header = ["seed", *stages, "steps, minutes"]
    names = sorted({NAMES.get(d, d) for r in runs for d in r.data["adapted"]})
    queries = runs[0].data["comparisons"][0]["queries"]
    caption = (
        f"{', '.join(names)} test ({queries} queries), nDCG@10 with the model adapted by the unchanged recipe "
        "with each seed, run with the ranker settings its folder records (in brackets, the gain over the first "
        "stage alone and its 90% interval over the queries):"
    )
    return [caption, "", *markdown(header, table)]


GPU_RUNS = {
    "peer": "sentence-transformers CrossEncoderTrainer, first run",
    "ours": "haystack-crossrerank, defaults",
    "ours_workers2_bf16eval": "haystack-crossrerank, `--dataloader-workers 2 --eval-precision bf16`",
    "peer_again": "sentence-transformers CrossEncoderTrainer, second run",
}


def gpu_training_table(gpu: Result) -> list[str]:
    runs = need(gpu.data, "training", "runs", where=gpu.path)
    peers = [runs[k]["train_seconds"] for k in ("peer", "peer_again") if "train_seconds" in runs.get(k, {})]
    if not peers:
        raise TableError(f"{gpu.path} has no finished run of the peer's trainer")
    table = []
    for key, run in runs.items():
        if "error" in run:
            table.append([GPU_RUNS.get(key, key), "failed", "", "", cell(run["error"])])
            continue
        spearman = f"{metric(run['stsb-validation_spearman'])} / {metric(run['stsb-test_spearman'])}"
        seconds = f"{ms(run['train_seconds'])} ({ms(run['eval_seconds_in_training'])} + {ms(run['step_seconds'])})"
        table.append([GPU_RUNS.get(key, key), seconds, ratio(run["train_seconds"] / min(peers)), spearman])
    header = ["trainer", "training s (evaluation + steps)", "× peer's faster run", "validation / test Spearman"]
    gpu_name = gpu.provenance["machine"].get("gpu") or "GPU"
    return [f"{gpu_name}, STS-B seed recipe, bf16, after a warm-up run:", "", *markdown(header, table)]


def gpu_rerank_table(gpu: Result) -> list[str]:
    rows = dict(need(gpu.data, "rerank", where=gpu.path))
    peers = [rows[k]["pairs_per_s"] for k in ("peer_bs16", "peer_bs16_again") if k in rows]
    if not peers:
        raise TableError(f"{gpu.path} has no batch-16 row of the peer")
    peer = statistics.mean(peers)
    onnx = gpu.data.get("onnx_cuda", {})
    if "pairs_per_s" in onnx:
        rows["onnx_cuda"] = onnx
    table = [
        [
            row["engine"],
            rate(row["pairs_per_s"]),
            ratio(row["pairs_per_s"] / peer),
            f"{ms(row['ms_p50'])} / {ms(row['ms_p95'])}",
            metric(row["ndcg@10"]),
            metric(row.get("spearman_vs_fp32")),
        ]
        for row in rows.values()
    ]
    header = ["engine", "pairs/s", "× peer", "ms/query p50 / p95", "nDCG@10", "Spearman vs fp32"]
    gpu_name = gpu.provenance["machine"].get("gpu") or "GPU"
    caption = (
        f"{gpu_name}, model `{gpu.data['model']}`, {gpu.data['queries']} SciFact test queries, BM25 top "
        f"{gpu.data['depth']}; × peer against the mean of `CrossEncoder.rank`'s batch-16 runs ({rate(peer)} pairs/s)"
    )
    if "pairs_per_s" not in onnx:
        caption += f"; ONNX Runtime on CUDA: {onnx.get('skipped') or onnx.get('error') or 'not measured'}"
    return [caption + ":", "", *markdown(header, table)]


def headline_table(bench: Result, speed: Result) -> list[str]:
    rows = need(bench.data, "rows", where=bench.path)
    first = rows[0]
    shipped = next((r for r in rows if SHIPPED in r["note"]), None)
    if shipped is None:
        raise TableError(f"{bench.path} has no row that is the shipped pipeline's ranking")
    speeds = {r["row"]: r for r in need(speed.data, "rows", where=speed.path)}
    if "ours_auto" not in speeds or "peer_default" not in speeds:
        raise TableError(f"{speed.path} must hold the rows ours_auto and peer_default")
    ours_speed, peer_speed = speeds["ours_auto"]["pairs_per_s"], speeds["peer_default"]["pairs_per_s"]
    settings = bench.data["settings"]
    dataset, stage = (NAMES.get(v, v) for v in (bench.data["dataset"], settings["first_stage"]))
    table = [
        [
            f"[Retrieval quality](docs/benchmarks.md#retrieval-quality): {dataset} {settings['split']} nDCG@10, "
            f"the shipped {stage} pipeline (top {settings['depth']})",
            metric(shipped["ndcg@10"]),
            f"{stage} alone: {metric(first['ndcg@10'])}",
            f"{shipped['ndcg@10'] - first['ndcg@10']:+.4f}",
        ],
        [
            "[Reranking speed](docs/benchmarks.md#reranking-speed) on the CPU, documents/s at the defaults",
            rate(ours_speed),
            f"Haystack's `SentenceTransformersSimilarityRanker`: {rate(peer_speed)}",
            ratio(ours_speed / peer_speed),
        ],
    ]
    return markdown(["measure", "haystack-crossrerank", "compared with", "difference"], table)


TABLES: dict[str, Table] = {
    "headline": Table(("bench_bm25.json", "rerank_speed.json"), headline_table),
    "bench_bm25": Table(("bench_bm25.json",), bench_table),
    "rerank_speed": Table(("rerank_speed.json",), rerank_speed_table),
    "train_speed": Table(("train_speed.json",), train_speed_table),
    "serve_latency": Table(("serve_latency.json",), serve_latency_table),
    "ray_speed": Table(("ray_speed.json",), ray_speed_table),
    "thread_speed": Table(("thread_speed.json",), thread_speed_table),
    "serve_load": Table(("serve_load.json",), serve_load_table),
    "serve_startup": Table(("serve_startup.json",), serve_startup_table),
    "adapt_quality": Table(("adapt_quality.json",), adapt_quality_table),
    "adapt_quality_medquad": Table(("adapt_quality_medquad.json",), adapt_quality_table),
    "adapt_seeds": Table(
        ("adapt_quality.json", "adapt_quality_seed43.json", "adapt_quality_seed44.json"), adapt_seeds_table
    ),
    "adapt_recipe": Table(("adapt_recipe.json",), adapt_recipe_table),
    "adapt_variants": Table(tuple(ADAPT_VARIANTS), adapt_variants_table),
    "gpu_training": Table(("gpu_speed.json",), gpu_training_table),
    "gpu_rerank": Table(("gpu_speed.json",), gpu_rerank_table),
}


# ---------------------------------------------------------------------------------------------- results and pages
def load(results: Path, name: str, root: Path) -> Result:
    """
    Read one result file: `{"name", "provenance", "results"}` (`write_result`), or `crossrerank bench`'s JSON,
    which keeps its own keys beside `provenance`.

    :raises TableError: If the file is missing, is not JSON, or has no provenance.
    """
    path = results / name
    shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    if not path.is_file():
        raise TableError(f"{shown} is missing; write it with: {COMMANDS.get(name, '(no known command)')}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TableError(f"{shown} is not JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("provenance"), dict):
        raise TableError(f"{shown} records no provenance; write it again with: {COMMANDS.get(name)}")
    data = document["results"] if "results" in document and "name" in document else document
    return Result(shown, document["provenance"], {k: v for k, v in data.items() if k != "provenance"})


def source_line(result: Result) -> str:
    """Which file, command, commit and machine a table's figures come from."""
    facts = result.provenance
    git = facts.get("git")
    if git is None:
        commit = "outside a git checkout"
    else:
        commit = f"at commit `{git['commit'][:10]}`" + (" with uncommitted changes" if git["dirty"] else "")
    box = facts.get("machine", {})
    parts = [f"{box.get('logical_cores')} logical cores"]
    if box.get("memory_gib"):
        parts.append(f"{box['memory_gib']:g} GiB")
    if box.get("gpu"):
        parts.append(box["gpu"] if box.get("gpu_count", 1) <= 1 else f"{box['gpu_count']} × {box['gpu']}")
    return f"`{result.path}`: `{facts.get('command')}`, {commit}, on {box.get('cpu')} ({', '.join(parts)})."


def render(name: str, results: Path, root: Path) -> str:
    """
    The text between a table's marker lines: a blank line, the table, a blank line, its source line(s), a blank line.

    :raises TableError: For an unknown table, a missing or incomplete result file.
    """
    if name not in TABLES:
        raise TableError(f"no table is named {name!r}; known: {sorted(TABLES)}")
    table = TABLES[name]
    loaded, missing = [], []
    for file in table.files:
        try:
            loaded.append(load(results, file, root))
        except TableError as error:
            missing.append(str(error))
    if missing:
        raise TableError("; ".join(missing))
    try:
        lines = table.render(*loaded)
    except (KeyError, TypeError, ZeroDivisionError, IndexError) as error:
        raise TableError(f"{', '.join(r.path for r in loaded)} lacks what table {name} reads ({error!r})") from error
    sources = [source_line(r) for r in loaded]
    footer = sources if len(sources) == 1 else [f"- {s}" for s in sources]
    return "\n" + "\n".join(lines) + "\n\n" + "\n".join(footer) + "\n\n"


@dataclass
class PageUpdate:
    """A page with its tables rendered again: the new text, the tables that changed, and the errors."""

    text: str
    changed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def update_page(text: str, render_table: Callable[[str], str]) -> PageUpdate:
    """
    Replace the text between each pair of marker lines with `render_table(name)`; everything else is kept byte
    for byte. A table that cannot be rendered keeps its old text and is reported.
    """
    update = PageUpdate(text)
    paired = {m["name"] for m in MARKERS.finditer(text)}
    update.errors += [f"table {m['name']}: no END marker" for m in BEGIN.finditer(text) if m["name"] not in paired]

    def replace(match: re.Match[str]) -> str:
        name, body = match["name"], match["body"]
        try:
            new = render_table(name)
        except TableError as error:
            update.errors.append(f"table {name}: {error}")
            return match[0]
        if new != body:
            update.changed.append(name)
        return f"<!-- BEGIN TABLE {name} -->\n{new}<!-- END TABLE {name} -->"

    update.text = MARKERS.sub(replace, text)
    return update


def pages(root: Path) -> list[Path]:
    """README.md and every page under docs/ that holds a table marker."""
    found = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in found if p.is_file() and BEGIN.search(p.read_text(encoding="utf-8"))]


def regenerate(root: Path, results: Path, *, check: bool) -> list[str]:
    """
    Render every page's tables; write the pages (unless `check`).

    :returns: The problems: a table that differs from its JSON (with `check`) or cannot be rendered.
    """
    problems = []
    for page in pages(root):
        shown = page.relative_to(root).as_posix()
        text = page.read_bytes().decode("utf-8")  # bytes: line endings are kept as they are
        update = update_page(text, lambda name: render(name, results, root))
        problems += [f"{shown}: {error}" for error in update.errors]
        if check:
            problems += [f"{shown}: table {name} differs from its JSON" for name in update.changed]
        elif update.text != text:
            page.write_bytes(update.text.encode("utf-8"))
            print(f"{shown}: rewrote {', '.join(update.changed)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this script's)")
    parser.add_argument("--results", type=Path, default=None, help="the JSON folder (default: ROOT/benchmarks/results)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    results = (args.results or root / "benchmarks" / "results").resolve()
    problems = regenerate(root, results, check=args.check)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems and args.check:
        print("write what is missing, then run `python benchmarks/tables.py`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
