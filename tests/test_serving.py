"""`crossrerank serve`: the real hayhooks server on 127.0.0.1, called over HTTP, with the tiny model."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import WORDS
from tests.serving_server import Server, start_server, write_corpus

pytest.importorskip("hayhooks")
httpx = pytest.importorskip("httpx")

QUERIES = [" ".join(random.Random(seed).choices(WORDS, k=4)) for seed in range(16)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("serve") / "corpus.jsonl")


@pytest.fixture(scope="module")
def served(corpus: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("server"), corpus, tiny_model)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(served: Server) -> str:
    return served.run_url


def _ask(url: str, query: str) -> list[dict]:
    response = httpx.post(url, json={"query": query}, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json()["result"])


def test_http_results_equal_the_in_process_pipeline(server: str, corpus: Path, tiny_model: Path) -> None:
    from haystack_crossrerank.commands.serving import ServedPipeline, ServeSettings

    with ServedPipeline(ServeSettings(corpus=str(corpus), model=str(tiny_model))) as local:
        for query in QUERIES[:4]:
            served = _ask(server, query)
            expected = local.run(query)
            assert [d["id"] for d in served] == [d["id"] for d in expected]
            assert [d["score"] for d in served] == pytest.approx([d["score"] for d in expected], abs=1e-6)
            assert len(served) == 10
            assert all("crossrerank_passage" in d["meta"] for d in served), "the highlight travels too"


def test_concurrent_requests_equal_sequential_ones(server: str) -> None:
    sequential = [_ask(server, q) for q in QUERIES]
    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent = list(pool.map(lambda q: _ask(server, q), QUERIES))
    assert concurrent == sequential
    assert len({tuple(d["id"] for d in r) for r in sequential}) > 1, "different queries, different rankings"


def test_requests_waiting_together_share_a_scorer_call_and_get_their_own_results(served: Server) -> None:
    alone = {q: _ask(served.run_url, q) for q in QUERIES[4:8]}
    before = served.metrics()
    # A slowed request holds the scorer for a second; the four sent meanwhile wait in the queue together.
    with ThreadPoolExecutor(max_workers=5) as pool:
        blocker = pool.submit(_ask, served.run_url, "zzslow " + QUERIES[0])
        time.sleep(0.3)
        waiting = {q: pool.submit(_ask, served.run_url, q) for q in QUERIES[4:8]}
        together = {q: future.result() for q, future in waiting.items()}
        blocker.result()
    after = served.metrics()
    assert together == alone, "each request gets exactly its own documents and scores"
    rounds = served.change(before, after, "crossrerank_batch_requests_count")
    alone_rounds = served.change(before, after, "crossrerank_batch_requests_bucket", le="1.0")
    assert rounds - alone_rounds >= 1, "at least one scorer call held the pairs of several requests"
    assert served.change(before, after, "crossrerank_requests_total", status="200") == 5


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"json": {}}, 422, "query"),
        ({"json": {"query": ""}}, 422, "`query` must be a non-empty string, but got ''"),
        ({"json": {"query": "   "}}, 422, "`query` must be a non-empty string"),
        ({"json": {"query": 5}}, 422, "valid string"),
        ({"json": {"query": "word " * 200_000}}, 413, "`query` must be at most 2048 characters, but got 1000000"),
    ],
)
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(
    server: str, request_kwargs: dict, status: int, message: str
) -> None:
    response = httpx.post(server, timeout=60, **request_kwargs)
    assert response.status_code == status, response.text
    assert message in response.text
    assert len(_ask(server, QUERIES[0])) == 10


def test_serving_unknown_pipeline_is_refused(corpus: Path, tiny_model: Path) -> None:
    from haystack_crossrerank.commands.serving import ServedPipeline, ServeSettings

    with pytest.raises(ValueError, match=r"pipeline must be one of \['bm25_rerank', 'faiss_rerank', 'hybrid_rerank'\]"):
        ServedPipeline(ServeSettings(corpus=str(corpus), pipeline="nope", model=str(tiny_model)))


def test_missing_corpus_says_what_was_expected(tmp_path: Path) -> None:
    from haystack_crossrerank.data.beir import read_corpus

    with pytest.raises(FileNotFoundError, match="expected a BEIR folder or a .jsonl file"):
        read_corpus(tmp_path / "absent.jsonl")
    (tmp_path / "dup.jsonl").write_text('{"_id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(ValueError, match=r"dup.jsonl:2: document id 'a' appears twice"):
        read_corpus(tmp_path / "dup.jsonl")


def test_an_adapted_model_is_served_with_its_recorded_settings(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from haystack_crossrerank.commands.serving import ServedPipeline, ServeSettings

    adapted = tmp_path / "adapted"
    shutil.copytree(tiny_model, adapted)
    recorded = {"aggregation": "max", "fusion": "zscore", "fusion_weight": 0.1}
    (adapted / "adaptation.json").write_text(json.dumps({"ranker_settings": {"bm25_rerank": recorded}}))
    settings = {"corpus": str(corpus), "model": str(adapted), "ranker": {"backend": "torch", "fusion_weight": 0.6}}
    with ServedPipeline(ServeSettings(**settings)) as served:  # type: ignore[arg-type]
        ranker = served.pipeline.get_component("ranker")
        assert (ranker.aggregation, ranker.fusion, ranker.fusion_weight) == ("max", "zscore", 0.6)
        assert len(served.run(QUERIES[0])) == 10
