"""`crossrerank tune` on a toy BEIR set: the grid is evaluated as the ranker computes, on training queries only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from haystack import Document

from haystack_crossrerank import CrossEncoderRanker
from haystack_crossrerank.commands.cli import main
from haystack_crossrerank.commands.tuning import TuneOptions, run_tuning
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
    assert result["selection"] == "lcb" and choice["gain_lcb"] == max(g["gain_lcb"] for g in grid)
    assert bm25["reliable_gain"] == (choice["gain_lcb"] > 0)
    assert bm25["choice_without_fusion"]["fusion"] is None
    for row in grid:  # two queries: the bound lies below the mean gain, which is nDCG@10 minus the first stage's
        assert row["gain_lcb"] <= row["gain"]
        assert row["gain"] == pytest.approx(row["ndcg@10"] - bm25["first_stage_ndcg@10"], abs=2e-4)

    # Re-run the chosen setting through the ranker itself: the same nDCG@10 comes out.
    from haystack_crossrerank.data.beir import load_beir
    from haystack_crossrerank.evaluation.retrieval import evaluate_rankings
    from haystack_crossrerank.retrievers.stages import first_stage, index_corpus, query_pipeline, retrieve

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


def test_tune_writes_its_score_cache_into_a_folder_that_does_not_exist_yet(tmp_path: Path, tiny_model: Path) -> None:
    # The cache is written after all the scoring; a missing folder used to throw that work away at the end.
    data = write_train_split(tmp_path / "toy")
    cache = tmp_path / "new" / "nested" / "scores.json"
    run_tuning(small_options(data, tiny_model, scores_path=str(cache), variants=[("sentences", "passage")]))
    assert set(json.loads(cache.read_text())) == {"sentences/passage"}


def test_tune_reuses_cached_queries_and_scores_only_new_ones(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_train_split(tmp_path / "toy")
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq3\td4\t1\nq2\td2\t1\n")
    cache = tmp_path / "scores.json"
    variants = [("sentences", "passage")]
    run_tuning(small_options(data, tiny_model, scores_path=str(cache), queries=2, variants=variants))
    cached = set(json.loads(cache.read_text())["sentences/passage"])
    assert len(cached) == 2
    scored: list[str] = []
    original = CrossEncoderRanker.score_passages

    def counting(self, query, documents, **kwargs):  # type: ignore[no-untyped-def]
        scored.append(query)
        return original(self, query, documents, **kwargs)

    monkeypatch.setattr(CrossEncoderRanker, "score_passages", counting)
    full = run_tuning(small_options(data, tiny_model, scores_path=str(cache), queries=None, variants=variants))
    assert len(scored) == 1  # only the query the cache did not hold was scored
    monkeypatch.undo()
    assert full["queries"] == 3 and set(json.loads(cache.read_text())["sentences/passage"]) == {"q1", "q2", "q3"}
    fresh = run_tuning(small_options(data, tiny_model, queries=None, variants=variants))  # no cache at all
    assert full["first_stages"]["bm25"]["grid"] == fresh["first_stages"]["bm25"]["grid"]
    assert not (tmp_path / "scores.json.partial").exists()


def test_lcb_prefers_a_gain_that_holds_across_queries() -> None:
    from haystack_crossrerank.commands.tuning import _best, gain_summary

    first = {f"q{i}": 0.5 for i in range(10)}
    steady = gain_summary({q: 0.55 for q in first}, first)  # +0.05 on every query
    lucky = gain_summary({q: (1.0 if q in ("q0", "q1") else 0.45) for q in first}, first)  # +0.5 twice, -0.05 else
    assert lucky["gain"] > steady["gain"] and lucky["gain_lcb"] < steady["gain_lcb"]
    grid = [
        {**steady, "name": "steady", "depth": 10, "max_passages": None},
        {**lucky, "name": "lucky", "depth": 10, "max_passages": None},
    ]
    assert _best(grid, "lcb")["name"] == "steady" and _best(grid, "mean")["name"] == "lucky"
    with pytest.raises(ValueError, match=r"`selection` must be one of \['lcb', 'mean'\], but got 'best'"):
        run_tuning(TuneOptions(data_dir="unused", model="unused", selection="best"))


def test_tune_on_given_query_ids_only(tmp_path: Path, tiny_model: Path) -> None:
    data = write_train_split(tmp_path / "toy")
    result = run_tuning(small_options(data, tiny_model, query_ids=["q3"], variants=[("sentences", "passage")]))
    assert result["queries"] == 1
    grid = result["first_stages"]["bm25"]["grid"]
    assert all(g["gain_lcb"] is None for g in grid)  # one query: no spread, no bound; the mean decides
    assert result["first_stages"]["bm25"]["choice"]["ndcg@10"] == max(g["ndcg@10"] for g in grid)
    with pytest.raises(
        ValueError, match=r"must name judged train queries of toy, but got 1 that are not, e.g. \['q2'\]"
    ):
        run_tuning(small_options(data, tiny_model, query_ids=["q3", "q2"]))


def test_query_id_files_in_every_accepted_form(tmp_path: Path) -> None:
    from haystack_crossrerank.commands.cli import _query_ids

    forms = {
        "lines.txt": "12\n 7 \n\n",
        "single.txt": "12\n",
        "list.json": '["12", "7"]',
        "heldout.json": '{"dataset": "scifact", "query_ids": ["12", "7"]}',
    }
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
    assert _query_ids(str(tmp_path / "lines.txt")) == ["12", "7"]
    assert _query_ids(str(tmp_path / "single.txt")) == ["12"]
    assert _query_ids(str(tmp_path / "list.json")) == ["12", "7"]
    assert _query_ids(str(tmp_path / "heldout.json")) == ["12", "7"]
    (tmp_path / "bad.json").write_text('{"ids": [1, 2]}')
    with pytest.raises(SystemExit, match="expected a JSON list of ids or an object with `query_ids`"):
        _query_ids(str(tmp_path / "bad.json"))
