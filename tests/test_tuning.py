"""`crossrerank tune` on a toy BEIR set: the grid is evaluated as the ranker computes, on training queries only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from haystack import Document

from haystack_crossrerank import CrossEncoderRanker
from haystack_crossrerank.cli import main
from haystack_crossrerank.tuning import TuneOptions, run_tuning
from tests.test_benchmark import write_corpus


def write_train_split(folder: Path) -> Path:
    write_corpus(folder)
    # Training qrels for two queries; the test qrels name a query that tuning must never see.
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq3\td4\t1\n")
    return folder


def small_options(data: Path, model: Path, **kwargs) -> TuneOptions:
    return TuneOptions(
        data_dir=str(data),
        model=str(model),
        depths=[2, 4],
        aggregations=["max", "first", "max_mean"],
        aggregation_weights=[0.5],
        fusion_weights=[0.3, 0.7],
        precision="fp32",
        show_progress=False,
        **kwargs,
    )


def test_tune_reports_every_setting_and_its_choice_matches_the_ranker(tmp_path: Path, tiny_model: Path) -> None:
    data = write_train_split(tmp_path / "toy")
    result = run_tuning(small_options(data, tiny_model))
    assert result["queries"] == 2
    bm25 = result["first_stages"]["bm25"]
    grid = bm25["grid"]
    # document: 1 aggregation, no cap; the three passage variants: 3 aggregations x 3 caps (None, 4, 8);
    # fusion: none + 3 methods x 2 weights; 2 depths
    assert len(grid) == (1 + 3 * 3 * 3) * (1 + 3 * 2) * 2
    choice = bm25["choice"]
    assert choice["ndcg@10"] == max(g["ndcg@10"] for g in grid)
    assert bm25["choice_without_fusion"]["fusion"] is None

    # Re-run the chosen setting through the ranker itself: the same nDCG@10 comes out.
    from haystack_crossrerank.data.beir import load_beir
    from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
    from haystack_crossrerank.first_stage import first_stage, index_corpus, query_pipeline, retrieve

    beir = load_beir(str(data), "train")
    stage = first_stage("bm25")
    index_corpus(beir, stage.indexing)
    pipeline = query_pipeline(stage, choice["depth"])
    settings = {
        k: choice[k] for k in ("passages", "meta_placement", "aggregation", "aggregation_weight", "max_passages")
    }
    ranker = CrossEncoderRanker(
        model=str(tiny_model),
        precision="fp32",
        meta_fields_to_embed=["title"],
        fusion=choice["fusion"],
        fusion_weight=choice["fusion_weight"],
        top_k=choice["depth"],
        **settings,
    )
    rankings = {}
    for q in ("q1", "q3"):
        docs: list[Document] = retrieve(pipeline, stage, beir.queries[q], choice["depth"])
        rankings[q] = [d.id for d in ranker.run(query=beir.queries[q], documents=docs)["documents"]]
    ndcg = evaluate_rankings({q: beir.qrels[q] for q in rankings}, rankings)["ndcg@10"]
    assert ndcg == pytest.approx(choice["ndcg@10"], abs=1e-4)


def test_tune_refuses_a_split_without_judgments(tmp_path: Path, tiny_model: Path) -> None:
    data = write_corpus(tmp_path / "toy")
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(ValueError, match="train.tsv: no judgments found"):
        run_tuning(small_options(data, tiny_model))


def test_cli_tune_writes_the_choice(tmp_path: Path, tiny_model: Path) -> None:
    data = write_train_split(tmp_path / "toy")
    out = tmp_path / "tune.json"
    argv = ["tune", "--data-dir", str(data), "--model", str(tiny_model), "--depths", "3", "--precision", "fp32"]
    code = main([*argv, "--variants", "sentences/passage", "document", "--json", str(out)])
    assert code == 0
    written = json.loads(out.read_text())
    assert {g["passages"] for g in written["first_stages"]["bm25"]["grid"]} == {"sentences", "document"}
    assert written["first_stages"]["bm25"]["choice"]["depth"] == 3


def test_cli_tune_rejects_bad_depths(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["tune", "--depths", "10,x"])
    assert "expected comma-separated integers such as 10,20,50, but got '10,x'" in capsys.readouterr().err


def test_tune_reuses_saved_passage_scores(tmp_path: Path, tiny_model: Path) -> None:
    data = write_train_split(tmp_path / "toy")
    cache = tmp_path / "scores.json"
    first = run_tuning(small_options(data, tiny_model, scores_path=str(cache)))
    assert cache.is_file() and set(json.loads(cache.read_text())) == {
        "document/passage",
        "sentences/passage",
        "sentences/prefix",
        "windows/passage",
    }
    again = run_tuning(small_options(data, Path("not/loaded"), scores_path=str(cache)))
    assert again["scoring_seconds"] == {}  # nothing scored: the model was never loaded
    assert again["first_stages"]["bm25"]["grid"] == first["first_stages"]["bm25"]["grid"]
