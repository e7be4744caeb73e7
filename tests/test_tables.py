"""benchmarks/tables.py: the docs' tables come from the committed JSON results, and `--check` catches any drift."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_tables", REPO / "benchmarks" / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


tables = _load_tables()

PROVENANCE: dict[str, Any] = {
    "command": "python benchmarks/x.py --data-dir ../shared/data",
    "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
    "packages": {"haystack-crossrerank": "0.1.0", "torch": "2.5.0"},
    "machine": {
        "cpu": "Test CPU",
        "logical_cores": 2,
        "memory_gib": 8.0,
        "gpu": None,
        "gpu_count": 0,
        "os": "Linux",
        "python": "3.11.7",
    },
    "timestamp": "2000-01-01T00:00:00+00:00",
}
SHIPPED_NOTE = "weight 0.3; the shipped YAML pipeline gives this ranking (3 queries checked)"


def _row(name: str, ndcg: float, pairs_per_s: float | None, note: str = "", queries: int = 300) -> dict[str, Any]:
    return {
        "row": name,
        "queries": queries,
        "ndcg@10": ndcg,
        "mrr@10": ndcg - 0.04,
        "ms_p50": 1454.2,
        "ms_p95": 2239.0,
        "pairs_per_s": pairs_per_s,
        "note": note,
    }


def results_fixture() -> dict[str, dict[str, Any]]:
    """One JSON document per result file, shaped as each benchmark writes it."""
    bench = {
        "settings": {"first_stage": "bm25", "split": "test", "depth": 20},
        "dataset": "scifact",
        "rows": [
            _row("bm25", 0.6762, None),
            _row("+ CrossEncoderRanker (m, document)", 0.3105, 36.9),
            _row("+ CrossEncoderRanker (m, document) [20-query subset]", 0.3301, 37.2, "same queries", 20),
            _row("+ SentenceTransformersSimilarityRanker (m)", 0.3301, 12.4, "peer, its defaults", 20),
            _row("+ m, sentences, minmax fusion", 0.6969, 140.0, SHIPPED_NOTE),
        ],
        "provenance": {**PROVENANCE, "command": "crossrerank bench --data-dir ../shared/data --depth 20"},
    }
    rerank_rows = [
        (
            "peer_default",
            "SentenceTransformersSimilarityRanker, defaults (batch 16)",
            12.1,
            8212.3,
            9544.0,
            1355.2,
            0.99999,
        ),
        ("ours_auto", "CrossEncoderRanker, defaults (backend auto, batch 8)", 37.2, 2725.4, 3013.0, 586.0, 0.99991),
        ("ours_fp32", "CrossEncoderRanker, torch fp32", 13.3, 7497.0, 8490.4, 1487.0, 1.0),
    ]
    rerank = {
        "model": "/models/minilm-l6-stsb-swap-b16",
        "queries": 30,
        "passages": "document",
        "rows": [
            {
                "row": r,
                "engine": e,
                "pairs_per_s": s,
                "ms_p50": p50,
                "ms_p95": p95,
                "peak_rss_mb": rss,
                "ndcg@10": 0.115,
            }
            | {"spearman_vs_fp32": rho}
            for r, e, s, p50, p95, rss, rho in rerank_rows
        ],
    }
    sts = {"stsb-validation_pearson": 0.8619, "stsb-validation_spearman": 0.8608, "stsb-test_pearson": 0.8303}
    train = {
        "base_model": "/models/all-MiniLM-L6-v2",
        "precision": "bf16",
        "rows": [
            {"trainer": "sentence-transformers CrossEncoderTrainer", "train_seconds": 604.2, "steps_per_second": 0.6}
            | sts
            | {"stsb-test_spearman": 0.8195},
            {"trainer": "haystack-crossrerank", "train_seconds": 326.1, "steps_per_second": 1.1}
            | sts
            | {"stsb-test_spearman": 0.8235},
        ],
    }
    serve = {
        "model": "/models/m",
        "rows": [
            {
                "depth": 20,
                "http_p50_ms": 1157.0,
                "http_p95_ms": 1509.0,
                "in_process_p50_ms": 1145.0,
                "in_process_p95_ms": 1486.0,
                "overhead_p50_ms": 12.0,
                "overhead_paired_p50_ms": 9.5,
                "scorer_share": 0.987,
            }
        ],
    }
    load_row = {"p50_ms": 700.0, "p95_ms": 900.0, "p99_ms": 990.0, "rankings_equal": True}
    load = {
        "pipeline": "bm25_rerank",
        "model": "/models/m",
        "source": ["--corpus", "../shared/data/scifact"],
        "queries": 64,
        "modes": [
            {"mode": mode, "rows": [{**load_row, "mode": mode, "clients": c, "throughput_per_s": t, "statuses": st}]}
            for mode, c, t, st in [
                ("batched", 16, 2.4, {"200": 16}),
                ("one_at_a_time", 16, 2.0, {"200": 16}),
                ("overload", 64, 1.3, {"200": 8, "503": 56}),
                ("ray_1_replicas", 16, 1.9, {"200": 16}),
                ("ray_2_replicas", 16, 1.7, {"200": 16}),
            ]
        ],
        "batched_speedup": {"16": 1.2},
        "ray_replicas_speedup": {"ray_2_replicas/ray_1_replicas": {"16": 1.7 / 1.9}},
    }
    startup = {
        "pipeline": "hybrid_rerank",
        "model": "/models/m",
        "rows": [
            {
                "dataset": "scifact",
                "documents": 5183,
                "index_build_s": 354.1,
                "corpus_startup_s": 420.0,
                "index_startup_s": 11.2,
                "speedup": 420.0 / 11.2,
                "answers_agree": True,
            }
        ],
    }
    metrics = {"ndcg@10": 0.7, "mrr@10": 0.6, "recall@100": 0.9}
    adapt = {
        "base": "/models/m",
        "sample_queries": 300,
        "adapted": {
            "scifact": {
                "model": "/models/m-scifact-adapted",
                "adaptation": {"result": {"kept": "adapted", "steps": 186, "planned_steps": 300, "seconds": 1415.0}},
            }
        },
        "comparisons": [
            {
                "dataset": "scifact",
                "first_stage": "hybrid",
                "depth": 20,
                "queries": 300,
                "first_stage_alone": {**metrics, "ndcg@10": 0.7},
                "base": {**metrics, "ndcg@10": 0.701},
                "adapted": {**metrics, "ndcg@10": 0.69},
                "base_minus_first_stage": 0.001,
                "adapted_minus_first_stage": -0.01,
                "adapted_worse_than_first_stage": True,
            }
        ],
    }
    recorded = {"fusion": "zscore", "fusion_weight": 0.1}
    adapt_recorded = {
        **adapt,
        "comparisons": [
            {
                **adapt["comparisons"][0],
                "adapted_recorded_settings": recorded,
                "adapted_recorded": {**metrics, "ndcg@10": 0.712, "gain_ci90": [-0.002, 0.026]},
                "adapted_recorded_minus_first_stage": 0.012,
                "adapted_recorded_worse_than_first_stage": False,
            }
        ],
    }
    gains = {"scifact": {"ndcg@10": 0.761, "gain": 0.0241, "gain_lcb": 0.0157}}
    gains["medquad"] = {"ndcg@10": 0.628, "gain": 0.0346, "gain_lcb": 0.0256}
    recipe = {
        "base": "/models/m",
        "data_sets": {
            name: {
                "model": f"/models/m-{name}-adapted",
                "queries": 200,
                "first_stages": {"bm25": {"first_stage_ndcg@10": first}},
            }
            for name, first in (("scifact", 0.7369), ("medquad", 0.5934))
        },
        "pipelines": {"bm25_rerank": {"choice": {"settings": recorded, "depth": 20, **gains}, "top": []}},
        "recipe": {"bm25_rerank": recorded},
    }
    lower = {"scifact": {"ndcg@10": 0.75, "gain": 0.0131, "gain_lcb": 0.0042}, "medquad": gains["medquad"]}
    variant = {**recipe, "pipelines": {"bm25_rerank": {"choice": {"settings": recorded, "depth": 20, **lower}}}}
    summary = {"queries": 100, "pairs": 3000, "reranked_ndcg@10": 0.7464}
    ray = {
        "model": "/models/m",
        "results": {
            "one process": {**summary, "pairs_per_s": 18.5, "seconds": 162.0},
            "Ray, 2 local workers": {**summary, "pairs_per_s": 17.7, "seconds": 169.0},
        },
        "ratio": 17.7 / 18.5,
        "identical": True,
    }
    threads = {
        "model": "/models/m",
        "engine": "openvino bf16, batch 8",
        "queries": 20,
        "depth": 20,
        "rounds": 3,
        "rows": [
            {"threads": 1, "docs_per_s": 36.0, "speedup": 1.0, "identical": True},
            {"threads": 4, "docs_per_s": 41.4, "speedup": 1.15, "identical": True},
        ],
    }
    run = {"train_seconds": 12.8, "eval_seconds_in_training": 1.2, "step_seconds": 11.6}
    spearman = {"stsb-validation_spearman": 0.8586, "stsb-test_spearman": 0.8271}
    rerank_row = {"ms_p50": 33.8, "ms_p95": 48.9, "ndcg@10": 0.1166, "spearman_vs_fp32": 0.9998}
    gpu = {
        "queries": 30,
        "depth": 100,
        "model": "ours (trained here)",
        "training": {
            "runs": {
                "peer": {**run, "train_seconds": 26.0, **spearman},
                "ours": {**run, **spearman},
                "ours_workers2_bf16eval": {"error": "RuntimeError('out of memory')"},
                "peer_again": {**run, "train_seconds": 14.9, **spearman},
            }
        },
        "rerank": {
            "peer_bs16": {**rerank_row, "engine": "CrossEncoder.rank, batch 16", "pairs_per_s": 947.0},
            "ours_defaults": {**rerank_row, "engine": "CrossEncoderScorer, defaults", "pairs_per_s": 2792.0},
            "peer_bs16_again": {**rerank_row, "engine": "CrossEncoder.rank, batch 16", "pairs_per_s": 986.0},
        },
        "onnx_cuda": {"skipped": "onnxruntime has no CUDAExecutionProvider"},
    }
    gpu_provenance = {**PROVENANCE, "machine": {**PROVENANCE["machine"], "gpu": "NVIDIA H200", "gpu_count": 1}}
    written = {
        "rerank_speed.json": ("rerank_speed", rerank, PROVENANCE),
        "train_speed.json": ("train_speed", train, PROVENANCE),
        "serve_latency.json": ("serve_latency", serve, PROVENANCE),
        "serve_load.json": ("serve_load", load, PROVENANCE),
        "serve_startup.json": ("serve_startup", startup, PROVENANCE),
        "adapt_quality.json": ("adapt_quality", seeded(adapt_recorded, 42, 0.012), PROVENANCE),
        "adapt_quality_seed43.json": ("adapt_quality", seeded(adapt_recorded, 43, 0.004), PROVENANCE),
        "adapt_quality_seed44.json": ("adapt_quality", seeded(adapt_recorded, 44, 0.011), PROVENANCE),
        "adapt_quality_medquad.json": ("adapt_quality", adapt, PROVENANCE),
        "adapt_recipe.json": ("adapt_recipe", recipe, PROVENANCE),
        "adapt_base_share.json": ("adapt_recipe", variant, PROVENANCE),
        "adapt_lr.json": ("adapt_recipe", recipe, PROVENANCE),
        "adapt_title_share.json": ("adapt_recipe", recipe, PROVENANCE),
        "adapt_pairs_passage.json": ("adapt_recipe", variant, PROVENANCE),
        "ray_speed.json": ("ray_speed", ray, PROVENANCE),
        "thread_speed.json": ("thread_speed", threads, PROVENANCE),
        "gpu_speed.json": ("gpu_speed", gpu, gpu_provenance),
    }
    documents = {f: {"name": n, "provenance": p, "results": r} for f, (n, r, p) in written.items()}
    return {"bench_bm25.json": bench, **documents}


def seeded(quality: dict[str, Any], seed: int, gain: float) -> dict[str, Any]:
    """An adapt_quality result of a model adapted with `seed` whose recorded settings gain `gain` (first stage 0.7)."""
    found = copy.deepcopy(quality)
    found["adapted"]["scifact"]["seed"] = seed
    found["comparisons"][0]["adapted_recorded"]["ndcg@10"] = round(0.7 + gain, 4)
    found["comparisons"][0]["adapted_recorded_minus_first_stage"] = gain
    return found


def make_repo(root: Path, pages: dict[str, str], files: dict[str, dict[str, Any]] | None = None) -> Path:
    """A repository layout in `root`: the pages, and the result files under benchmarks/results/."""
    results = root / "benchmarks" / "results"
    results.mkdir(parents=True)
    for name, document in (results_fixture() if files is None else files).items():
        (results / name).write_text(json.dumps(document), encoding="utf-8")
    for name, text in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(text.encode("utf-8"))
    return root


def markers(name: str, body: str = "") -> str:
    return f"<!-- BEGIN TABLE {name} -->\n{body}<!-- END TABLE {name} -->"


RERANK_SPEED_BLOCK = """
Model `minilm-l6-stsb-swap-b16`, 30 SciFact test queries, BM25 top 100 (title + abstract), our rows in passage mode `document`:

| engine | docs/s | × peer | ms/query p50 / p95 | peak RSS MB | nDCG@10 | Spearman vs fp32 |
|---|---|---|---|---|---|---|
| SentenceTransformersSimilarityRanker, defaults (batch 16) | 12.1 | 1.00× | 8,212 / 9,544 | 1,355 | 0.1150 | 1.0000 |
| CrossEncoderRanker, defaults (backend auto, batch 8) | 37.2 | 3.07× | 2,725 / 3,013 | 586 | 0.1150 | 0.9999 |
| CrossEncoderRanker, torch fp32 | 13.3 | 1.10× | 7,497 / 8,490 | 1,487 | 0.1150 | 1.0000 |

`benchmarks/results/rerank_speed.json`: `python benchmarks/x.py --data-dir ../shared/data`, at commit `0123456789`, on Test CPU (2 logical cores, 8 GiB).

"""  # noqa: E501

HEADLINE_BLOCK = """
| measure | haystack-crossrerank | compared with | difference |
|---|---|---|---|
| [Retrieval quality](docs/benchmarks.md#retrieval-quality): SciFact test nDCG@10, the shipped BM25 pipeline (top 20) | 0.6969 | BM25 alone: 0.6762 | +0.0207 |
| [Reranking speed](docs/benchmarks.md#reranking-speed) on the CPU, documents/s at the defaults | 37.2 | Haystack's `SentenceTransformersSimilarityRanker`: 12.1 | 3.07× |

- `benchmarks/results/bench_bm25.json`: `crossrerank bench --data-dir ../shared/data --depth 20`, at commit `0123456789`, on Test CPU (2 logical cores, 8 GiB).
- `benchmarks/results/rerank_speed.json`: `python benchmarks/x.py --data-dir ../shared/data`, at commit `0123456789`, on Test CPU (2 logical cores, 8 GiB).

"""  # noqa: E501


def test_rerank_speed_table_is_rendered_exactly(tmp_path: Path) -> None:
    root = make_repo(tmp_path, {})
    assert tables.render("rerank_speed", root / "benchmarks" / "results", root) == RERANK_SPEED_BLOCK


def test_headline_table_reads_three_results_and_names_each_source(tmp_path: Path) -> None:
    root = make_repo(tmp_path, {})
    assert tables.render("headline", root / "benchmarks" / "results", root) == HEADLINE_BLOCK


def test_every_table_renders_from_its_benchmarks_json(tmp_path: Path) -> None:
    root = make_repo(tmp_path, {})
    for name in tables.TABLES:
        block = tables.render(name, root / "benchmarks" / "results", root)
        assert block.startswith("\n") and block.endswith(".\n\n"), name
        assert "|---|" in block, name
    gpu = tables.render("gpu_training", root / "benchmarks" / "results", root)
    # the peer's faster run is the reference; a failed run stays in the table with its error
    assert "| haystack-crossrerank, defaults | 12.8 (1.2 + 11.6) | 0.86× | 0.8586 / 0.8271 |" in gpu
    assert "failed" in gpu and "out of memory" in gpu
    assert "on Test CPU (2 logical cores, 8 GiB, NVIDIA H200)." in gpu
    bench = tables.render("bench_bm25", root / "benchmarks" / "results", root)
    assert "| 20 | 0.3301 | 0.2901 | 1,454 / 2,239 | 37.2 | 3.00× | same queries |" in bench


def test_serving_and_adaptation_tables_say_what_each_ratio_is_against(tmp_path: Path) -> None:
    root = make_repo(tmp_path, {})
    results = root / "benchmarks" / "results"
    latency = tables.render("serve_latency", results, root)
    assert "| 20 | 1,157 / 1,509 | 1,145 / 1,486 | +12.0 ms (+1.0%) | +9.5 ms | 98.7% |" in latency
    load = tables.render("serve_load", results, root)
    assert "| batched (default) | 16 | 2.40 | 1.20× one at a time | 700 / 900 / 990 | 16× 200 | yes |" in load
    assert "| Ray Serve, 2 replicas (`--ray --replicas 2`) | 16 | 1.70 | 0.89× 1 replica |" in load
    assert "| Ray Serve, 1 replica (`--ray --replicas 1`) | 16 | 1.90 |  |" in load
    assert "| batched, `--max-queue 8` | 64 | 1.30 |  | 700 / 900 / 990 | 8× 200, 56× 503 | yes |" in load
    startup = tables.render("serve_startup", results, root)
    assert "| SciFact | 5,183 | 354 | 420 | 11.2 | 37.50× | yes |" in startup
    adapt = tables.render("adapt_quality_medquad", results, root)
    assert (
        "| SciFact | `hybrid_rerank` (top 20) | 300 | 0.7000 | 0.7010 (+0.0010) | 0.6900 (-0.0100) | **yes** |" in adapt
    )
    assert "SciFact: 186 of 300 steps, 23.6 minutes in all, the adapted model kept" in adapt
    assert "its recorded settings" not in adapt  # a result without those rows gets no such column
    both = tables.render("adapt_quality", results, root)
    assert "| + adapted model, shipped settings | + adapted model, its recorded settings |" in both
    assert "| 0.6900 (-0.0100) | 0.7120 (+0.0120; 90% interval -0.0020 to +0.0260) | **yes** |" in both
    seeds = tables.render("adapt_seeds", results, root)
    assert "| seed | `hybrid_rerank`: first stage → adapted | steps, minutes |" in seeds
    assert "| 43 | 0.7000 → 0.7040 (+0.0040; 90% interval -0.0020 to +0.0260) | 186, 23.6 |" in seeds
    assert "| all 3 | mean gain +0.0090 (from +0.0040 to +0.0120) |  |" in seeds
    assert seeds.count("- `benchmarks/results/adapt_quality") == 3  # each seed's source
    recipe = tables.render("adapt_recipe", results, root)
    assert "| `bm25_rerank` | fusion=zscore, fusion_weight=0.1 | 0.7369 → 0.7610 (+0.0241; bound +0.0157) |" in recipe
    assert "(SciFact: 200, MedQuAD: 200;" in recipe
    variants = tables.render("adapt_variants", results, root)
    assert "| adapted with | `bm25_rerank`, SciFact train | `bm25_rerank`, MedQuAD train |" in variants
    assert "| the recipe (learning rate 5e-5, trained weights) | 0.7610 (+0.0157) | 0.6280 (+0.0256) |" in variants
    assert "| `--base-share 0.5` | 0.7500 (+0.0042) | 0.6280 (+0.0256) |" in variants
    assert "| `--pairs passage` | 0.7500 (+0.0042) | 0.6280 (+0.0256) |" in variants
    assert variants.count("- `benchmarks/results/adapt_") == 5  # each variant's source


def test_writing_replaces_only_the_text_between_the_markers(tmp_path: Path) -> None:
    before = "# Title\n\nSome text, ünïcode and trailing spaces   \n\n"
    between = "\nA paragraph.\n\n"
    after = "\nThe rest\r\nwith a CRLF line and no final newline"
    page = before + markers("rerank_speed", "old table\n") + between + markers("thread_speed") + after
    root = make_repo(tmp_path, {"docs/benchmarks.md": page})

    assert tables.main(["--root", str(root)]) == 0
    written = (root / "docs" / "benchmarks.md").read_bytes().decode("utf-8")
    results = root / "benchmarks" / "results"
    expected = (
        before
        + markers("rerank_speed", tables.render("rerank_speed", results, root))
        + between
        + markers("thread_speed", tables.render("thread_speed", results, root))
        + after
    )
    assert written == expected
    assert tables.main(["--root", str(root), "--check"]) == 0
    assert tables.main(["--root", str(root)]) == 0  # a second run changes nothing
    assert (root / "docs" / "benchmarks.md").read_bytes().decode("utf-8") == expected


def test_check_fails_on_a_hand_edited_figure_and_writing_restores_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_repo(tmp_path, {"README.md": page_with("headline"), "docs/benchmarks.md": page_with("rerank_speed")})
    assert tables.main(["--root", str(root)]) == 0
    page = root / "docs" / "benchmarks.md"
    good = page.read_text(encoding="utf-8")
    page.write_text(good.replace("| 37.2 | 3.07× |", "| 39.0 | 3.07× |"), encoding="utf-8")
    capsys.readouterr()

    assert tables.main(["--root", str(root), "--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/benchmarks.md: table rerank_speed differs from its JSON" in err
    assert "README.md" not in err
    assert "39.0" in page.read_text(encoding="utf-8")  # --check changes nothing

    assert tables.main(["--root", str(root)]) == 0
    assert page.read_text(encoding="utf-8") == good


def page_with(name: str) -> str:
    return f"# Page\n\n{markers(name)}\nAfter.\n"


def test_a_missing_json_is_an_error_naming_the_file_and_its_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = results_fixture()
    del files["rerank_speed.json"]
    page = page_with("headline")
    root = make_repo(tmp_path, {"README.md": page}, files)

    assert tables.main(["--root", str(root), "--check"]) == 1
    err = capsys.readouterr().err
    assert "README.md: table headline: benchmarks/results/rerank_speed.json is missing" in err
    assert "python benchmarks/rerank_speed.py --data-dir ../shared/data" in err
    assert tables.main(["--root", str(root)]) == 1  # writing reports it too, and keeps the old text
    assert (root / "README.md").read_text(encoding="utf-8") == page


def test_results_without_provenance_unknown_tables_and_unpaired_markers_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = results_fixture()
    files["thread_speed.json"].pop("provenance")
    page = page_with("thread_speed") + markers("no_such_table") + "\n<!-- BEGIN TABLE ray_speed -->\n"
    root = make_repo(tmp_path, {"docs/benchmarks.md": page}, files)

    assert tables.main(["--root", str(root), "--check"]) == 1
    err = capsys.readouterr().err
    assert "table thread_speed: benchmarks/results/thread_speed.json records no provenance" in err
    assert "table no_such_table: no table is named 'no_such_table'" in err
    assert "table ray_speed: no END marker" in err


def test_a_result_that_lacks_what_the_table_reads_is_an_error(tmp_path: Path) -> None:
    files = copy.deepcopy(results_fixture())
    del files["rerank_speed.json"]["results"]["rows"][0]["ms_p95"]
    root = make_repo(tmp_path, {}, files)
    with pytest.raises(tables.TableError, match=r"rerank_speed.json lacks what table rerank_speed reads .*ms_p95"):
        tables.render("rerank_speed", root / "benchmarks" / "results", root)


def test_the_source_line_says_when_the_tree_was_dirty_or_not_a_checkout() -> None:
    dirty = {**PROVENANCE, "git": {"commit": "abcdef1234567890", "dirty": True}}
    line = tables.source_line(tables.Result("benchmarks/results/x.json", dirty, {}))
    assert line == (
        "`benchmarks/results/x.json`: `python benchmarks/x.py --data-dir ../shared/data`, at commit `abcdef1234` "
        "with uncommitted changes, on Test CPU (2 logical cores, 8 GiB)."
    )
    assert "outside a git checkout" in tables.source_line(tables.Result("x.json", {**PROVENANCE, "git": None}, {}))


def test_the_repository_pages_match_their_committed_json(capsys: pytest.CaptureFixture[str]) -> None:
    """README.md and docs/ against benchmarks/results/: fails until every table's JSON is committed."""
    code = tables.main(["--check"])
    problems = capsys.readouterr().err
    assert code == 0, (
        "the benchmark tables of README.md and docs/ do not match benchmarks/results/ (run the commands named "
        "below, commit their JSON, then `python benchmarks/tables.py`):\n" + problems
    )
