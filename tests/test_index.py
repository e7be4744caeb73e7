"""Persistent first-stage indexes: a loaded index ranks exactly as the in-memory one, a build is all or nothing, a
damaged or mismatched index is refused by name, `--add` keeps ids unique and the manifest true, and the command line
builds and serves one. The dense tests use a tiny random sentence-transformers model built here."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from haystack import Document, Pipeline

from haystack_crossrerank.commands.index import add_to_index, build_index
from haystack_crossrerank.data.beir import read_corpus
from haystack_crossrerank.retrievers.index import (
    DOCUMENTS,
    MANIFEST,
    IndexSettings,
    bm25_settings,
    file_sha256,
    load_index,
    read_manifest,
    save_index,
    verify_index,
)
from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path
from haystack_crossrerank.retrievers.stages import index_corpus
from tests.conftest import WORDS

QUERIES = [" ".join(random.Random(seed).choices(WORDS, k=4)) for seed in range(5)]
INPUTS = {
    "bm25_rerank": lambda q: {"retriever": {"query": q}},
    "faiss_rerank": lambda q: {"text_embedder": {"text": q}},
    "hybrid_rerank": lambda q: {"bm25": {"query": q}, "text_embedder": {"text": q}},
}


def _write_corpus(path: Path, ids: list[str], seed: int) -> Path:
    rng = random.Random(seed)
    rows = [
        {"_id": i, "title": " ".join(rng.choices(WORDS, k=3)), "text": " ".join(rng.choices(WORDS, k=12)) + "."}
        for i in ids
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", [f"d{i}" for i in range(30)], seed=1)


@pytest.fixture(scope="module")
def more(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("more") / "more.jsonl", [f"n{i}" for i in range(5)], seed=2)


@pytest.fixture(scope="module")
def embedder(tiny_embedder: Path) -> str:
    return str(tiny_embedder)


@pytest.fixture(scope="module")
def bm25_index(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bm25") / "index"
    build_index(corpus, out)
    return out


@pytest.fixture(scope="module")
def hybrid_index(corpus: Path, embedder: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hybrid") / "index"
    build_index(corpus, out, first_stage="hybrid", embedder=embedder)
    return out


def _pipeline(name: str, model: Path, embedder: str | None = None, ranker: bool = True, **kwargs: Any) -> Pipeline:
    overrides: dict[str, dict[str, Any]] = {"ranker": {"backend": "torch"}}
    if embedder is not None:
        overrides["text_embedder"] = {"model": embedder}
    pipeline = load_pipeline(pipeline_path(name), model=str(model), overrides=overrides, **kwargs)
    if not ranker:
        pipeline.remove_component("ranker")
    return pipeline


def _rankings(pipeline: Pipeline, name: str, stage_output: str) -> list[list[tuple[str, float | None]]]:
    """Per query: the first stage's candidates, then the ranker's documents (if it has one), as (id, score)."""
    found = []
    ranker = "ranker" in dict(pipeline.walk())
    for query in QUERIES:
        inputs = {**INPUTS[name](query), **({"ranker": {"query": query}} if ranker else {})}
        out = pipeline.run(inputs, include_outputs_from={stage_output})
        found.append([(d.id, d.score) for d in out[stage_output]["documents"]])
        if ranker:
            found.append([(d.id, d.score) for d in out["ranker"]["documents"]])
    return found


def _copy(index: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(index, tmp_path / "index"))


# ---------------------------------------------------------------------------------------------- round trips
def test_bm25_index_ranks_exactly_as_the_in_memory_pipeline(corpus: Path, bm25_index: Path, tiny_model: Path) -> None:
    index_corpus(read_corpus(corpus), "indexing_bm25")
    in_memory = _rankings(_pipeline("bm25_rerank", tiny_model), "bm25_rerank", "retriever")
    loaded = _rankings(_pipeline("bm25_rerank", tiny_model, index=bm25_index), "bm25_rerank", "retriever")
    assert loaded == in_memory
    assert sum(len(r) for r in loaded) > 0 and len({tuple(r) for r in loaded[::2]}) > 1


def test_hybrid_index_ranks_exactly_as_the_in_memory_pipeline(
    corpus: Path, hybrid_index: Path, embedder: str, tiny_model: Path
) -> None:
    index_corpus(read_corpus(corpus), "indexing_dense", embedder=embedder)
    for name, output, ranker in [("hybrid_rerank", "joiner", True), ("faiss_rerank", "retriever", False)]:
        in_memory = _rankings(_pipeline(name, tiny_model, embedder, ranker), name, output)
        loaded = _rankings(_pipeline(name, tiny_model, embedder, ranker, index=hybrid_index), name, output)
        assert loaded == in_memory, name
    # a hybrid index serves the BM25 pipeline too, without reading its FAISS index
    bm25 = _pipeline("bm25_rerank", tiny_model, index=hybrid_index)
    assert bm25.get_component("retriever").run(query=QUERIES[0])["documents"]


def test_the_manifest_records_corpus_settings_files_and_versions(
    corpus: Path, hybrid_index: Path, embedder: str
) -> None:
    manifest = read_manifest(hybrid_index)
    assert manifest["first_stage"] == "hybrid" and manifest["document_count"] == 30
    assert manifest["corpus"] == {"path": str(corpus), "sha256": file_sha256(corpus), "documents": 30}
    assert manifest["added_corpora"] == []
    assert manifest["bm25"] == {
        "method": "lucene",
        "k1": 0.9,
        "b": 0.4,
        "stemmer": "english",
        "stopwords": "en",
        "meta_fields_to_index": ["title"],
    }
    assert manifest["embedder"] == {
        "model": embedder,
        "revision": None,
        "truncate_dim": None,
        "precision": "float32",
        "dimension": 32,
        "document": {
            "prefix": "",
            "suffix": "",
            "normalize_embeddings": True,
            "meta_fields_to_embed": ["title"],
            "embedding_separator": "\n",
        },
        "query": {"prefix": "", "suffix": "", "normalize_embeddings": True},
    }
    assert manifest["faiss"] == {"type": "IndexFlatIP", "normalize": True, "dimension": 32}
    files = {f["path"]: f for f in manifest["files"]}
    assert {DOCUMENTS, "faiss.index", "bm25/params.index.json", "bm25/vocab.index.json"} <= set(files)
    for name, entry in files.items():
        assert entry == {
            "path": name,
            "size": (hybrid_index / name).stat().st_size,
            "sha256": file_sha256(hybrid_index / name),
        }
    assert {"haystack-ai", "bm25s", "faiss-cpu", "numpy"} <= set(manifest["packages"])
    first = json.loads((hybrid_index / DOCUMENTS).read_text().splitlines()[0])
    assert first == {
        "id": "d0",
        "content": read_corpus(corpus)["d0"]["text"],
        "meta": {"title": read_corpus(corpus)["d0"]["title"]},
    }


# ---------------------------------------------------------------------------------------------- all or nothing
def test_a_build_that_fails_while_writing_leaves_nothing(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bm25s

    def broken_save(self: Any, save_dir: str, **kwargs: Any) -> None:
        Path(save_dir).mkdir(parents=True)
        (Path(save_dir) / "params.index.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(bm25s.BM25, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        build_index(corpus, tmp_path / "index")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_index(
    corpus: Path, bm25_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bm25s

    index = _copy(bm25_index, tmp_path)
    before = (index / MANIFEST).read_bytes()
    monkeypatch.setattr(bm25s.BM25, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        build_index(corpus, index, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    assert (index / MANIFEST).read_bytes() == before
    verify_index(index)


def test_a_build_killed_mid_write_leaves_no_index_and_the_next_build_cleans_up(corpus: Path, tmp_path: Path) -> None:
    out, marker = tmp_path / "index", tmp_path / "marker"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path

        import bm25s

        from haystack_crossrerank.commands.index import build_index

        save = bm25s.BM25.save

        def slow_save(self, *args, **kwargs):
            save(self, *args, **kwargs)
            Path({str(marker)!r}).write_text("written")
            time.sleep(300)

        bm25s.BM25.save = slow_save
        build_index({str(corpus)!r}, {str(out)!r})
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the build never reached the slow write"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not out.exists()
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".index.partial-")]
    assert (partial / DOCUMENTS).is_file() and not (partial / MANIFEST).exists()
    build_index(corpus, out)  # the next build removes what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "marker"]
    verify_index(out)


def test_an_existing_index_is_replaced_only_with_overwrite_and_never_a_foreign_folder(
    corpus: Path, bm25_index: Path, tmp_path: Path
) -> None:
    index = _copy(bm25_index, tmp_path)
    with pytest.raises(FileExistsError, match=f"index folder '{index}' already exists: pass --overwrite"):
        build_index(corpus, index)
    build_index(corpus, index, overwrite=True)
    verify_index(index)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff")
    with pytest.raises(FileExistsError, match="exists and is not an index"):
        build_index(corpus, foreign, overwrite=True)
    assert (foreign / "cat.jpg").read_bytes() == b"\xff"


# ---------------------------------------------------------------------------------------------- refusals
def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


@pytest.mark.parametrize(
    ("damage", "name", "error", "message"),
    [
        (_flip_a_byte, "bm25/data.csc.index.npy", ValueError, r"file 'bm25/data.csc.index.npy' must have sha256 \w+"),
        (
            _truncate,
            DOCUMENTS,
            ValueError,
            r"file 'documents.jsonl' must have \d+ bytes as manifest.json says, but has",
        ),
        (Path.unlink, "bm25/vocab.index.json", FileNotFoundError, r"file 'bm25/vocab.index.json' is missing"),
        (Path.unlink, MANIFEST, FileNotFoundError, "has no manifest.json: build one with `crossrerank index`"),
        (lambda p: p.write_text("{"), MANIFEST, ValueError, "manifest.json is not valid JSON"),
    ],
)
def test_a_damaged_index_is_refused_naming_the_file(
    bm25_index: Path, tmp_path: Path, tiny_model: Path, damage: Any, name: str, error: type, message: str
) -> None:
    index = _copy(bm25_index, tmp_path)
    damage(index / name)
    with pytest.raises(error, match=message):
        _pipeline("bm25_rerank", tiny_model, index=index)


def test_a_damaged_faiss_index_is_refused(hybrid_index: Path, tmp_path: Path) -> None:
    index = _copy(hybrid_index, tmp_path)
    _flip_a_byte(index / "faiss.index")
    with pytest.raises(ValueError, match="file 'faiss.index' must have sha256"):
        load_index(index)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"text_embedder": {"model": "other/model"}},
            r"'text_embedder' `model`: the index has '.*st', but the pipeline has 'other/model'",
        ),
        (
            {"text_embedder": {"prefix": "query: "}},
            r"'text_embedder' `prefix`: the index has '', but the pipeline has 'query: '",
        ),
        (
            {"text_embedder": {"normalize_embeddings": False}},
            r"`normalize_embeddings`: the index has True, but the pipeline has False",
        ),
        ({"dense": {"normalize": False}}, r"'dense' `normalize`: the index has True, but the pipeline has False"),
        ({"bm25": {"k1": 1.2}}, r"'bm25' `k1`: the index has 0.9, but the pipeline has 1.2"),
        (
            {"bm25": {"meta_fields_to_index": []}},
            r"'bm25' `meta_fields_to_index`: the index has \['title'\], but the pipeline has \[\]",
        ),
    ],
)
def test_an_index_built_with_other_settings_is_refused_naming_the_setting(
    hybrid_index: Path, embedder: str, override: dict[str, dict[str, Any]], message: str
) -> None:
    overrides = {"text_embedder": {"model": embedder}}
    for name, params in override.items():
        overrides[name] = {**overrides.get(name, {}), **params}
    with pytest.raises(ValueError, match=f"index '{hybrid_index}' does not fit the pipeline: .*{message}"):
        load_pipeline(pipeline_path("hybrid_rerank"), overrides=overrides, index=hybrid_index)


def test_a_bm25_index_is_refused_by_a_dense_pipeline_and_a_pipeline_needs_a_retriever(bm25_index: Path) -> None:
    with pytest.raises(
        ValueError, match=r"\['dense'\] need a FAISS index, but the index was built for first stage 'bm25'"
    ):
        load_pipeline(pipeline_path("hybrid_rerank"), index=bm25_index)
    with pytest.raises(ValueError, match="the pipeline needs a BM25sRetriever or FaissEmbeddingRetriever"):
        load_pipeline(pipeline_path("indexing_bm25"), index=bm25_index)
    with pytest.raises(FileNotFoundError, match="does not exist: build one with `crossrerank index`"):
        load_pipeline(pipeline_path("bm25_rerank"), index=bm25_index.parent / "absent")


def test_save_index_refuses_repeated_ids_and_mismatched_parts(tmp_path: Path) -> None:
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from haystack_crossrerank.retrievers import BM25sRetriever

    retriever = BM25sRetriever(document_store=InMemoryDocumentStore())
    documents = [Document(id="a", content="one"), Document(id="a", content="two")]
    settings = IndexSettings("bm25", bm25_settings(retriever))
    with pytest.raises(ValueError, match="document id 'a' appears twice"):
        save_index(tmp_path / "i", documents, settings, bm25_index=retriever.build_index(documents))
    with pytest.raises(ValueError, match="the BM25 index must have 1 rows, but has 2"):
        save_index(tmp_path / "i", documents[:1], settings, bm25_index=retriever.build_index(documents))
    with pytest.raises(ValueError, match="first stage 'hybrid' needs a FAISS index"):
        save_index(
            tmp_path / "i",
            documents[:1],
            IndexSettings("hybrid", settings.bm25),
            bm25_index=retriever.build_index(documents[:1]),
        )
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- adding
def test_add_keeps_ids_unique_and_the_manifest_true(
    corpus: Path, more: Path, bm25_index: Path, tmp_path: Path, tiny_model: Path
) -> None:
    index = _copy(bm25_index, tmp_path)
    summary = add_to_index(more, index)
    assert summary["documents"] == 35 and summary["added"] == 5
    manifest = verify_index(index)
    assert manifest["document_count"] == 35
    assert manifest["corpus"]["sha256"] == file_sha256(corpus)
    assert manifest["added_corpora"] == [{"path": str(more), "sha256": file_sha256(more), "documents": 5}]
    ids = [d.id for d in load_index(index).documents]
    assert ids == [f"d{i}" for i in range(30)] + [f"n{i}" for i in range(5)]
    # the same as indexing both corpora in memory
    index_corpus({**read_corpus(corpus), **read_corpus(more)}, "indexing_bm25")
    in_memory = _rankings(_pipeline("bm25_rerank", tiny_model), "bm25_rerank", "retriever")
    assert _rankings(_pipeline("bm25_rerank", tiny_model, index=index), "bm25_rerank", "retriever") == in_memory
    # an id already in the index is refused by name, and the index is left as it was
    before = (index / MANIFEST).read_bytes()
    clash = _write_corpus(tmp_path / "clash.jsonl", ["x1", "n3"], seed=4)
    with pytest.raises(ValueError, match=r"clash.jsonl: 1 document ids are already in index .*, e.g. 'n3'"):
        add_to_index(clash, index)
    assert (index / MANIFEST).read_bytes() == before


def test_add_to_a_hybrid_index_embeds_the_new_documents_with_the_recorded_embedder(
    more: Path, hybrid_index: Path, embedder: str, tmp_path: Path, tiny_model: Path
) -> None:
    index = _copy(hybrid_index, tmp_path)
    old = load_index(index).faiss.reconstruct_n(0, 30)
    with pytest.raises(ValueError, match="was built with embedder '.*', but --add got 'other/model'"):
        add_to_index(more, index, embedder="other/model")
    add_to_index(more, index)
    loaded = load_index(index)
    assert loaded.faiss.ntotal == 35 and loaded.manifest["embedder"]["model"] == embedder
    assert (loaded.faiss.reconstruct_n(0, 30) == old).all()
    dense = _pipeline("faiss_rerank", tiny_model, embedder, index=index)
    dense.remove_component("ranker")
    new = read_corpus(more)["n2"]
    found = dense.run({"text_embedder": {"text": f"{new['title']}\n{new['text']}"}})
    assert found["retriever"]["documents"][0].id == "n2"  # a new document is found by its own text


# ---------------------------------------------------------------------------------------------- the command line
def test_the_index_command_builds_refuses_overwrites_and_adds(
    corpus: Path, more: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from haystack_crossrerank.commands.cli import main

    out = tmp_path / "index"
    assert main(["index", "--corpus", str(corpus), "--out", str(out), "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["documents"] == 30
    assert main(["index", "--corpus", str(corpus), "--out", str(out)]) == 2
    assert "already exists: pass --overwrite" in capsys.readouterr().err
    assert main(["index", "--corpus", str(corpus), "--out", str(out), "--overwrite"]) == 0
    assert main(["index", "--add", "--corpus", str(more), "--out", str(out)]) == 0
    assert "added" in capsys.readouterr().out
    assert verify_index(out)["document_count"] == 35
    assert main(["index", "--corpus", str(corpus), "--out", str(tmp_path / "x"), "--embedder", "m"]) == 2
    assert "an embedder is for the dense first stages" in capsys.readouterr().err


def test_served_pipeline_from_an_index_answers_as_from_the_corpus(
    corpus: Path, hybrid_index: Path, embedder: str, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from haystack_crossrerank.commands.serving import ServedPipeline, ServeSettings
    from haystack_crossrerank.retrievers import stages

    monkeypatch.setattr(stages, "offline_embedder", lambda: embedder)  # what --corpus embeds with
    settings = {"pipeline": "hybrid_rerank", "model": str(tiny_model), "ranker": {"backend": "torch"}}
    from_corpus = ServedPipeline(ServeSettings(corpus=str(corpus), **settings))
    from_index = ServedPipeline(ServeSettings(index=str(hybrid_index), **settings))
    for query in QUERIES[:4]:
        assert from_index.run(query) == from_corpus.run(query)
    with pytest.raises(ValueError, match="give one of `corpus` and `index`"):
        ServeSettings()
    with pytest.raises(ValueError, match="give one of `corpus` and `index`"):
        ServeSettings(corpus=str(corpus), index=str(hybrid_index))


@pytest.mark.slow
def test_hybrid_index_with_the_offline_minilm_ranks_exactly_as_in_memory(
    corpus: Path, tmp_path: Path, tiny_model: Path, minilm_path: Path
) -> None:
    out = tmp_path / "index"
    build_index(corpus, out, first_stage="hybrid", embedder=str(minilm_path))
    index_corpus(read_corpus(corpus), "indexing_dense", embedder=str(minilm_path))
    in_memory = _rankings(_pipeline("hybrid_rerank", tiny_model, str(minilm_path)), "hybrid_rerank", "joiner")
    loaded = _pipeline("hybrid_rerank", tiny_model, str(minilm_path), index=out)
    assert _rankings(loaded, "hybrid_rerank", "joiner") == in_memory
    assert read_manifest(out)["embedder"]["dimension"] == 384


@pytest.mark.slow
def test_crossrerank_serve_with_an_index_answers_over_http_as_in_process(
    hybrid_index: Path, embedder: str, tiny_model: Path, tmp_path: Path
) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("hayhooks")
    from haystack_crossrerank.commands.serving import ServedPipeline, ServeSettings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [sys.executable, "-m", "haystack_crossrerank.commands.cli", "serve", "--index", str(hybrid_index)]
    command += ["--pipeline", "hybrid_rerank", "--model", str(tiny_model), "--port", str(port)]
    log = tmp_path / "server.log"
    env = {**os.environ, "CROSSRERANK_HOME": str(tmp_path / "home")}
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/hybrid_rerank/run"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.post(url, json={"query": QUERIES[0]}, timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not answer within 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        local = ServedPipeline(ServeSettings(index=str(hybrid_index), pipeline="hybrid_rerank", model=str(tiny_model)))
        for query in QUERIES[:3]:
            served = httpx.post(url, json={"query": query}, timeout=60).json()["result"]
            expected = local.run(query)
            assert [d["id"] for d in served] == [d["id"] for d in expected]
            assert [d["score"] for d in served] == pytest.approx([d["score"] for d in expected], abs=1e-6)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_retrievers_refuse_an_index_whose_rows_differ_from_the_documents() -> None:
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from haystack_crossrerank.retrievers import BM25sRetriever, FaissEmbeddingRetriever

    documents = [
        Document(id="a", content="paris city", embedding=[1.0, 0.0]),
        Document(id="b", content="rome city", embedding=[0.0, 1.0]),
    ]
    bm25 = BM25sRetriever(document_store=InMemoryDocumentStore())
    with pytest.raises(ValueError, match=r"the BM25 index must have one row per Document \(1\), but has 2"):
        bm25.use_index(bm25.build_index(documents), documents[:1])
    dense = FaissEmbeddingRetriever(document_store=InMemoryDocumentStore())
    with pytest.raises(ValueError, match=r"the FAISS index must have one row per Document \(1\), but has 2"):
        dense.use_index(dense.build_index(documents), documents[:1])
    with pytest.raises(ValueError, match="1 of 1 Documents have no embedding"):
        dense.build_index([Document(id="c", content="x")])
    dense.use_index(dense.build_index(documents), documents)
    assert [d.id for d in dense.run(query_embedding=[0.9, 0.1])["documents"]] == ["a", "b"]
    assert dense.run(query_embedding=[0.9, 0.1])["documents"][0].embedding is None


# ---------------------------------------------------------------------------------------------- the benchmark
def _beir_folder(corpus: Path, folder: Path, keep: int | None = None) -> Path:
    """A BEIR folder around the corpus (its first `keep` rows), with the test queries judged on their BM25 top."""
    folder.mkdir()
    rows = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "corpus.jsonl").write_text("".join(rows[:keep]), encoding="utf-8")
    queries = {f"q{i}": text for i, text in enumerate(QUERIES)}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (folder / "qrels").mkdir()
    judged = "".join(f"{q}\td{3 * i}\t1\n" for i, q in enumerate(queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + judged)
    return folder


def test_the_benchmark_on_a_saved_index_measures_what_it_measures_on_the_corpus(
    corpus: Path, hybrid_index: Path, embedder: str, tiny_model: Path, tmp_path: Path
) -> None:
    from haystack_crossrerank.commands.benchmark import BenchOptions, run_benchmark

    settings = {"data_dir": str(_beir_folder(corpus, tmp_path / "beir")), "first_stage": "hybrid", "depth": 8}
    settings |= {"models": [str(tiny_model)], "peer": False, "precision": "fp32", "show_progress": False}
    settings |= {"embedder_model": embedder, "ranker_settings": {"backend": "torch"}}
    on_corpus = run_benchmark(BenchOptions(**settings))
    on_index = run_benchmark(BenchOptions(**settings, index=str(hybrid_index)))
    assert on_index["index_seconds"] == 0.0  # nothing indexed: the retrievers read the saved index
    keys = ("row", "queries", "ndcg@10", "mrr@10", "recall@100")
    assert [{k: r[k] for k in keys} for r in on_index["rows"]] == [{k: r[k] for k in keys} for r in on_corpus["rows"]]
    assert any("the shipped YAML pipeline gives this ranking" in r["note"] for r in on_index["rows"])
    # an index of another corpus is refused before anything runs
    smaller = _beir_folder(corpus, tmp_path / "smaller", keep=20)
    with pytest.raises(ValueError, match="holds 30 documents, but the data set's corpus has 20"):
        run_benchmark(BenchOptions(**{**settings, "data_dir": str(smaller)}, index=str(hybrid_index)))


def test_tune_on_a_saved_index_tunes_as_on_the_corpus(
    corpus: Path, hybrid_index: Path, embedder: str, tiny_model: Path, tmp_path: Path
) -> None:
    from haystack_crossrerank.commands.tuning import TuneOptions, run_tuning

    data = _beir_folder(corpus, tmp_path / "beir")
    (data / "qrels" / "train.tsv").write_text((data / "qrels" / "test.tsv").read_text())
    settings: dict[str, Any] = {"data_dir": str(data), "model": str(tiny_model), "first_stages": ["bm25", "hybrid"]}
    settings |= {"depths": [8], "variants": [("sentences", "passage")], "aggregations": ["max"], "queries": None}
    settings |= {"fusion_weights": [0.3], "max_passages": [None], "embedder_model": embedder, "show_progress": False}
    on_corpus = run_tuning(TuneOptions(**settings))
    on_index = run_tuning(TuneOptions(**settings, index=str(hybrid_index)))
    for stage in ("bm25", "hybrid"):
        assert on_index["first_stages"][stage]["grid"] == on_corpus["first_stages"][stage]["grid"]
        assert on_index["first_stages"][stage]["first_stage_ndcg@10"] > 0
    smaller = _beir_folder(corpus, tmp_path / "smaller", keep=20)
    (smaller / "qrels" / "train.tsv").write_text((data / "qrels" / "test.tsv").read_text())
    with pytest.raises(ValueError, match="holds 30 documents, but the data set's corpus has 20"):
        run_tuning(TuneOptions(**{**settings, "data_dir": str(smaller)}, index=str(hybrid_index)))
