"""`crossrerank rerank-run`: TREC and JSONL runs, in one process and on a local Ray, with the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from haystack_crossrerank.commands.rerank_run import RerankRunOptions, read_run, rerank_run
from haystack_crossrerank.retrievers.pipelines import PIPELINES_DIR
from tests.conftest import WORDS


@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small BEIR set and a TREC run over it (12 queries x 8 candidates)."""
    rng = random.Random(3)
    folder = tmp_path_factory.mktemp("beir")
    corpus = [
        {"_id": f"d{i}", "title": " ".join(rng.choices(WORDS, k=3)), "text": " ".join(rng.choices(WORDS, k=30))}
        for i in range(30)
    ]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    queries = [{"_id": f"q{i}", "text": " ".join(rng.choices(WORDS, k=4))} for i in range(12)]
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    run_lines, qrels_lines = [], ["query-id\tcorpus-id\tscore"]
    for q in queries:
        docs = rng.sample(corpus, 8)
        run_lines += [f"{q['_id']} Q0 {d['_id']} {r} {10 - r * 0.5:.2f} bm25" for r, d in enumerate(docs, start=1)]
        qrels_lines.append(f"{q['_id']}\t{docs[rng.randrange(8)]['_id']}\t1")
    (folder / "run.trec").write_text("\n".join(run_lines) + "\n")
    (folder / "qrels.tsv").write_text("\n".join(qrels_lines) + "\n")
    return {"folder": folder, "run": folder / "run.trec", "qrels": folder / "qrels.tsv"}


def _options(beir: dict[str, Path], tiny_model: Path, output: Path, **kwargs: object) -> RerankRunOptions:
    settings: dict[str, object] = {"qrels": str(beir["qrels"]), **kwargs}
    return RerankRunOptions(
        run=str(beir["run"]),
        corpus=str(beir["folder"]),
        queries=str(beir["folder"] / "queries.jsonl"),
        model=str(tiny_model),
        output=str(output),
        **settings,  # type: ignore[arg-type]
    )


def test_one_process_reranks_as_the_component_does(beir: dict[str, Path], tiny_model: Path, tmp_path: Path) -> None:
    from haystack import Document

    from haystack_crossrerank.commands.rerank_run import build_ranker
    from haystack_crossrerank.data.beir import read_corpus, read_queries

    options = _options(beir, tiny_model, tmp_path / "out.trec")
    summary = rerank_run(options)
    assert summary["queries"] == 12 and summary["pairs"] == 96
    assert {"run_ndcg@10", "reranked_ndcg@10"} <= set(summary)
    written = read_run(tmp_path / "out.trec")
    corpus, queries, run = read_corpus(beir["folder"]), read_queries(beir["folder"]), read_run(beir["run"])
    ranker = build_ranker(options)
    shipped = json.loads((PIPELINES_DIR / "tuning.json").read_text())["first_stages"]["bm25"]["choice"]
    assert (ranker.fusion, ranker.passages) == (shipped["fusion"], shipped["passages"]), "the shipped settings"
    for qid in ("q0", "q7"):
        docs = [
            Document(id=d, content=corpus[d]["text"], meta={"title": corpus[d]["title"]}, score=s) for d, s in run[qid]
        ]
        expected = ranker.run(query=queries[qid], documents=docs, top_k=8)["documents"]
        assert [d for d, _ in written[qid]] == [d.id for d in expected]
        assert [s for _, s in written[qid]] == pytest.approx([d.score for d in expected], abs=1e-6)


def test_jsonl_candidates_give_the_same_output(beir: dict[str, Path], tiny_model: Path, tmp_path: Path) -> None:
    run = read_run(beir["run"])
    jsonl = tmp_path / "run.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"query_id": q, "doc_id": d, "score": s}) + "\n" for q, c in run.items() for d, s in c)
    )
    rerank_run(_options(beir, tiny_model, tmp_path / "a.trec"))
    from_jsonl = _options(beir, tiny_model, tmp_path / "b.trec")
    from_jsonl.run = str(jsonl)
    rerank_run(from_jsonl)
    assert (tmp_path / "a.trec").read_text() == (tmp_path / "b.trec").read_text()


def test_malformed_runs_say_where(tmp_path: Path) -> None:
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 two 0.4 tag\n")
    with pytest.raises(ValueError, match=r"bad.trec:2: rank must be an integer"):
        read_run(bad)
    bad.write_text("q1 d1 0.5\n")
    with pytest.raises(ValueError, match=r"bad.trec:1: expected 6 fields"):
        read_run(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_run(tmp_path / "absent.trec")


@pytest.mark.slow
def test_ray_output_is_identical_and_survives_a_killed_worker(
    beir: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    single = _options(beir, tiny_model, tmp_path / "single.trec", qrels=None)
    rerank_run(single)
    try:
        on_ray = rerank_run(_options(beir, tiny_model, tmp_path / "ray.trec", qrels=None, ray="local", shard_queries=5))
        assert on_ray["engine"] == "ray"
        assert (tmp_path / "ray.trec").read_text() == (tmp_path / "single.trec").read_text()

        marker = tmp_path / "killed-once"
        options = _options(beir, tiny_model, tmp_path / "ray2.trec", qrels=None, ray="local", shard_queries=5)
        options.fault_once = str(marker)
        rerank_run(options)
        assert marker.exists(), "a worker was killed mid-run"
        assert (tmp_path / "ray2.trec").read_text() == (tmp_path / "single.trec").read_text()
    finally:
        ray.shutdown()


def test_a_run_naming_unknown_texts_is_refused_before_any_scoring(
    beir: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.trec"
    # the unknown document is in the last query: the run must fail before the first query is scored
    bad.write_text(beir["run"].read_text() + "q11 Q0 no-such-doc 9 0.1 bm25\n")
    options = _options(beir, tiny_model, tmp_path / "out.trec", qrels=None)
    options.run = str(bad)
    options.model = str(tmp_path / "no-model-here")  # loading it would fail: scoring must not start
    with pytest.raises(ValueError, match="'no-such-doc' of query 'q11' is not in the corpus"):
        rerank_run(options)
    assert not (tmp_path / "out.trec").exists() and not (tmp_path / "out.trec.partial").exists()
    bad.write_text("q99 Q0 d1 1 0.5 bm25\n")
    with pytest.raises(ValueError, match="query 'q99' of the run is not in the queries file"):
        rerank_run(options)


def test_an_adapted_model_runs_with_its_recorded_settings_and_explicit_ones_win(
    beir: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    import shutil

    from haystack_crossrerank.commands.rerank_run import build_ranker

    adapted = tmp_path / "adapted"
    shutil.copytree(tiny_model, adapted)
    recorded = {"aggregation": "max", "fusion": "zscore", "fusion_weight": 0.1, "max_passages": None}
    (adapted / "adaptation.json").write_text(json.dumps({"ranker_settings": {"bm25_rerank": recorded}}))
    ranker = build_ranker(_options(beir, adapted, tmp_path / "a.trec"))
    assert {k: getattr(ranker, k) for k in recorded} == recorded
    ranker = build_ranker(_options(beir, adapted, tmp_path / "b.trec", settings={"fusion_weight": 0.7}))
    assert (ranker.fusion, ranker.fusion_weight) == ("zscore", 0.7)
    plain = build_ranker(_options(beir, tiny_model, tmp_path / "c.trec"))
    assert (plain.fusion, plain.fusion_weight) != ("zscore", 0.1), "a model without the file runs as shipped"
