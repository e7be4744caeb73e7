"""A small end-to-end benchmark on a BEIR corpus built here, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from haystack import Document

from haystack_crossrerank.commands.benchmark import BenchOptions, run_benchmark
from haystack_crossrerank.commands.cli import main

DOCS = {
    "d1": ("paris", "paris is the capital of france ."),
    "d2": ("berlin", "berlin is the capital of germany ."),
    "d3": ("rome", "rome is an old city in italy ."),
    "d4": ("cats", "the cat sat on the mat ."),
    "d5": ("food", "bread and cheese and wine in france ."),
    "d6": ("trains", "a fast train from paris to berlin ."),
}
QUERIES = {"q1": "capital of france", "q2": "old city in italy", "q3": "cat on the mat", "q4": "train to berlin"}
QRELS = {"q1": "d1", "q2": "d3", "q3": "d4", "q4": "d6"}


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as handle:
        for doc_id, (title, text) in DOCS.items():
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for query_id, text in QUERIES.items():
            handle.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    rows = "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items())
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return folder


def test_bm25_benchmark_end_to_end_with_both_modes_fusion_and_peer(tmp_path: Path, tiny_model: Path) -> None:
    data = write_corpus(tmp_path / "toy")
    options = BenchOptions(
        data_dir=str(data),
        first_stage="bm25",
        depth=5,
        models=[str(tiny_model)],
        passages=["document", "sentences"],
        fusion="minmax",
        fusion_weight=0.5,
        peer_queries=2,
        precision="fp32",
        plot=str(tmp_path / "depth.png"),
        show_progress=False,
    )
    result = run_benchmark(options)
    rows = {r["row"]: r for r in result["rows"]}
    names = list(rows)
    label = tiny_model.name
    assert names == [
        "bm25",
        f"+ CrossEncoderRanker ({label}, document)",
        f"+ {label}, document, minmax fusion",
        f"+ CrossEncoderRanker ({label}, document) [2-query subset]",
        f"+ SentenceTransformersSimilarityRanker ({label})",
        f"+ CrossEncoderRanker ({label}, sentences)",
        f"+ {label}, sentences, minmax fusion",
    ]
    assert rows[names[0]]["queries"] == 4 and rows[names[3]]["queries"] == rows[names[4]]["queries"] == 2
    # BM25 finds each query's one relevant document first here
    assert rows["bm25"]["ndcg@10"] == pytest.approx(1.0) and rows["bm25"]["mrr@10"] == pytest.approx(1.0)
    # same model, same candidates: our ranker and the peer rank the subset identically
    for metric in ("ndcg@10", "mrr@10", "map@100"):
        assert rows[names[3]][metric] == pytest.approx(rows[names[4]][metric], abs=1e-4)
    assert rows[names[1]]["pairs_per_s"] > 0 and rows[names[5]]["pairs_per_s"] > 0
    # each row's gain over the first stage on its own queries: a full row's is its nDCG@10 difference
    assert rows["bm25"]["gain"] == 0.0 and rows["bm25"]["gain_ci90"] == [0.0, 0.0]
    for name in (names[1], names[2], names[5], names[6]):
        assert rows[name]["gain"] == pytest.approx(rows[name]["ndcg@10"] - rows["bm25"]["ndcg@10"], abs=2e-4)
        low, high = rows[name]["gain_ci90"]
        assert low <= rows[name]["gain"] <= high
    assert Path(result["plot"]["path"]).stat().st_size > 0
    points = result["plot"]["points"]
    assert set(points) == {"document", "sentences"}
    for mode, row, fused in (("document", names[1], names[2]), ("sentences", names[5], names[6])):
        assert [p["depth"] for p in points[mode]] == [5]  # the plot's depths (10, 20, 50, 100) below 5, then 5
        assert points[mode][0]["ndcg@10"] == rows[row]["ndcg@10"]  # at full depth, the plot is the row
        assert points[mode][0]["ndcg@10_fused"] == rows[fused]["ndcg@10"]


def test_bench_checks_the_shipped_pipeline_on_fewer_reranked_queries_than_three(
    tmp_path: Path, tiny_model: Path
) -> None:
    data = write_corpus(tmp_path / "toy")
    result = run_benchmark(
        BenchOptions(
            data_dir=str(data),
            depth=4,
            models=[str(tiny_model)],
            peer=False,
            precision="fp32",
            rerank_queries=1,
            show_progress=False,
        )
    )
    checked = [r for r in result["rows"] if "shipped YAML pipeline gives this ranking" in r["note"]]
    assert len(checked) == 1 and "(1 queries checked)" in checked[0]["note"]
    assert all(r["queries"] == 1 for r in result["rows"][1:])


def test_bench_rows_report_every_metric_and_timing_column(tmp_path: Path, tiny_model: Path) -> None:
    data = write_corpus(tmp_path / "toy")
    result = run_benchmark(
        BenchOptions(
            data_dir=str(data), depth=3, models=[str(tiny_model)], peer=False, precision="fp32", show_progress=False
        )
    )
    bm25 = result["rows"][0]
    assert set(bm25) >= {"ndcg@10", "mrr@10", "recall@100", "map@100", "ms_p50", "ms_p95", "wall_s"}


def test_cli_eval_sts_writes_json(tmp_path: Path, tiny_model: Path) -> None:
    from tests.test_training import write_small_stsb

    data = write_small_stsb(tmp_path / "data")
    out = tmp_path / "sts.json"
    assert (
        main(["eval-sts", "--model", str(tiny_model), "--data-dir", str(data), "--split", "test", "--json", str(out)])
        == 0
    )
    written = json.loads(out.read_text())
    assert set(written) >= {"stsb-test_pearson", "stsb-test_spearman", "model", "pairs"}
    assert written["pairs"] == 24


def test_cli_reports_a_missing_model_as_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_training import write_small_stsb

    data = write_small_stsb(tmp_path / "data")
    code = main(["eval-sts", "--model", str(tmp_path / "missing"), "--data-dir", str(data)])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_bench_on_a_toy_corpus(tmp_path: Path, tiny_model: Path) -> None:
    data = write_corpus(tmp_path / "toy")
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--data-dir",
            str(data),
            "--model",
            str(tiny_model),
            "--depth",
            "4",
            "--no-peer",
            "--passages",
            "document",
            "sentences",
            "--precision",
            "fp32",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["row"] for r in rows][:1] == ["bm25"]
    assert {r["row"].split(", ")[-1].rstrip(")") for r in rows if r["row"].startswith("+ CrossEncoderRanker")} == {
        "document",
        "sentences",
    }


def test_cli_eval_sts_on_a_users_pair_file_with_its_score_range(tmp_path: Path, tiny_model: Path) -> None:
    pairs = tmp_path / "mine.tsv"
    rows = ["sentence1\tsentence2\tscore"]
    rows += [f"the cat sat on the mat\tthe {w} sat on the mat\t{i % 6}" for i, w in enumerate(("cat", "dog", "car"))]
    rows += ["paris is old\tberlin is new\t0", "a red car\ta blue train\t1", "the music\tthe art\t2"]
    pairs.write_text("\n".join(rows) + "\n")
    out = tmp_path / "mine.json"
    argv = ["eval-sts", "--model", str(tiny_model), "--pairs", str(pairs), "--score-range", "0", "5"]
    assert main([*argv, "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["pairs"] == 6 and set(written) >= {"mine_pearson", "mine_spearman"}
    # scores outside the stated range are an error that names the file and line
    assert main(["eval-sts", "--model", str(tiny_model), "--pairs", str(pairs), "--score-range", "0", "1"]) == 2


def test_cli_bench_replaces_shipped_ranker_settings_and_counts_passages(tmp_path: Path, tiny_model: Path) -> None:
    data = write_corpus(tmp_path / "toy")
    out = tmp_path / "bench.json"
    argv = ["bench", "--data-dir", str(data), "--model", str(tiny_model), "--depth", "3", "--no-peer"]
    argv += ["--passages", "sentences", "--set", "aggregation=first", "--set", "max_passages=2", "--json", str(out)]
    assert main([*argv, "--precision", "fp32"]) == 0
    written = json.loads(out.read_text())
    shipped = written["settings"]["shipped_ranker"]
    assert (shipped["aggregation"], shipped["max_passages"]) == ("first", 2)  # the YAML ships max_first, null
    row = next(r for r in written["rows"] if r["row"].startswith("+ CrossEncoderRanker"))
    # each toy document is a title and one sentence: two pairs per candidate
    from haystack_crossrerank.retrievers.stages import bm25_candidates

    _, candidates = bm25_candidates(str(data), depth=3)
    assert row["pairs"] == 2 * sum(len(docs) for docs in candidates.values()) and row["pairs_per_s"] > 0
    with pytest.raises(SystemExit):
        main(["bench", "--set", "aggregation"])


def test_bench_fusion_flags_reach_the_checked_pipeline(tmp_path: Path, tiny_model: Path) -> None:
    import json

    from haystack_crossrerank.retrievers.pipelines import PIPELINES_DIR

    data = write_corpus(tmp_path / "toy")
    shipped_mode = json.loads((PIPELINES_DIR / "tuning.json").read_text())["first_stages"]["bm25"]["choice"]["passages"]
    options = BenchOptions(
        data_dir=str(data),
        depth=4,
        models=[str(tiny_model)],
        passages=[shipped_mode],  # the shipped BM25 mode, so the shipped pipeline is checked against this run
        fusion="rrf",
        fusion_weight=0.9,
        peer=False,
        precision="fp32",
        show_progress=False,
    )
    result = run_benchmark(options)
    assert (result["settings"]["shipped_ranker"]["fusion"], result["settings"]["shipped_ranker"]["fusion_weight"]) == (
        "rrf",
        0.9,
    )
    fused = next(r for r in result["rows"] if r["row"].endswith("rrf fusion"))
    assert "the shipped YAML pipeline gives this ranking" in fused["note"]


def test_a_pipeline_that_ranks_differently_is_noted_not_raised() -> None:
    from haystack_crossrerank.commands.benchmark import Row, _check_pipeline

    class Fixed:
        def run(self, data: dict) -> dict:
            return {"ranker": {"documents": [Document(id="b"), Document(id="a")]}}

    from haystack_crossrerank.retrievers.stages import first_stage

    row = Row(name="x", rankings={"q1": ["a", "b"]}, latencies_ms=[1.0], note="weight 0.5")
    note = _check_pipeline(Fixed(), first_stage("bm25"), [("q1", "text")], row, row.note)  # type: ignore[arg-type]
    assert note == "weight 0.5; NOT the shipped YAML pipeline's ranking (query q1 differs)"


def test_cli_bench_card_records_the_rows_in_the_model_card_and_a_rerun_replaces_them(
    tmp_path: Path, tiny_model: Path
) -> None:
    import shutil

    data = write_corpus(tmp_path / "toy")
    model, other = tmp_path / "my-model", tmp_path / "my-model-2"
    for folder in (model, other):
        shutil.copytree(tiny_model, folder)
        (folder / "README.md").write_text(f"# Cross-encoder: {folder.name}\n\n## Training log\nkept as it was\n")
    out = tmp_path / "bench.json"
    argv = ["bench", "--data-dir", str(data), "--model", str(model), "--depth", "3", "--no-peer", "--card"]
    argv += ["--passages", "sentences", "--precision", "fp32", "--json", str(out)]
    assert main(argv) == 0
    card = (model / "README.md").read_text()
    rows = json.loads(out.read_text())["rows"]
    assert card.startswith("# Cross-encoder: my-model\n\n## Training log\nkept as it was\n")
    assert "### toy test, bm25 top 3, 4 queries, passages sentences" in card
    assert "crossrerank bench --data-dir" in card and "--card" in card
    mine = next(r for r in rows if r["row"].startswith("+ CrossEncoderRanker"))
    assert f"| {mine['row']} | {mine['ndcg@10']} | {mine['mrr@10']} |" in card
    assert f"| bm25 | {rows[0]['ndcg@10']} |" in card

    # with two models, each card gets its own rows and none of the other's (names share a prefix on purpose)
    assert main([*argv, "--model", str(other)]) == 0
    card, card2 = (model / "README.md").read_text(), (other / "README.md").read_text()
    rows_of = {
        name: [line for line in text.splitlines() if line.startswith("| +")]
        for name, text in (("my-model", card), ("my-model-2", card2))
    }
    assert rows_of["my-model"] and all("my-model-2" not in line for line in rows_of["my-model"])
    assert rows_of["my-model-2"] and all("my-model-2" in line for line in rows_of["my-model-2"])

    # the same setting again replaces its section; another depth adds one beside it
    assert main(argv) == 0
    assert (model / "README.md").read_text().count("### toy test, bm25 top 3") == 1
    assert main([*argv[:6], "2", *argv[7:]]) == 0
    card = (model / "README.md").read_text()
    assert card.count("### toy test, bm25 top 3") == 1 and card.count("### toy test, bm25 top 2") == 1
    assert card.count("## Retrieval benchmark") == 1


def test_cli_bench_card_refuses_a_model_without_a_card_before_running(tmp_path: Path, tiny_model: Path) -> None:
    data = write_corpus(tmp_path / "toy")
    with pytest.raises(SystemExit, match="model card"):
        main(["bench", "--data-dir", str(data), "--model", str(tiny_model), "--no-peer", "--card"])


def test_record_benchmark_errors_name_what_was_expected(tmp_path: Path) -> None:
    from haystack_crossrerank.training.card import record_benchmark

    result = {"settings": {"split": "test", "first_stage": "bm25", "depth": 3, "passages": ["document"]}}
    result |= {"dataset": "toy", "rows": [{"row": "bm25", "queries": 4}, {"row": "+ CrossEncoderRanker (other, x)"}]}
    with pytest.raises(FileNotFoundError, match="model card"):
        record_benchmark(tmp_path, result, command="c", when="today")
    (tmp_path / "README.md").write_text("# card\n")
    with pytest.raises(ValueError, match="no row for"):
        record_benchmark(tmp_path, result, command="c", when="today")
    assert (tmp_path / "README.md").read_text() == "# card\n"
