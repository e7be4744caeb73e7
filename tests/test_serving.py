"""`crossrerank serve`: the real hayhooks server on 127.0.0.1, called over HTTP, with the tiny model."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import WORDS

pytest.importorskip("hayhooks")
httpx = pytest.importorskip("httpx")

QUERIES = [" ".join(random.Random(seed).choices(WORDS, k=4)) for seed in range(16)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("serve") / "corpus.jsonl"
    rows = [
        {
            "_id": f"d{i}",
            "title": " ".join(rng.choices(WORDS, k=3)),
            "text": ". ".join(" ".join(rng.choices(WORDS, k=8)) for _ in range(4)) + ".",
        }
        for i in range(40)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(corpus: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "CROSSRERANK_HOME": str(tmp_path_factory.mktemp("home"))}
    command = [sys.executable, "-m", "haystack_crossrerank.commands.cli", "serve", "--corpus", str(corpus)]
    command += ["--model", str(tiny_model), "--port", str(port)]
    log = tmp_path_factory.mktemp("log") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/bm25_rerank/run"
    deadline = time.monotonic() + 180
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.post(url, json={"query": "paris"}, timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ask(url: str, query: str) -> list[dict]:
    response = httpx.post(url, json={"query": query}, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json()["result"])


def test_http_results_equal_the_in_process_pipeline(server: str, corpus: Path, tiny_model: Path) -> None:
    from haystack_crossrerank.commands.serving import ServedPipeline, ServeSettings

    local = ServedPipeline(ServeSettings(corpus=str(corpus), model=str(tiny_model)))
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
