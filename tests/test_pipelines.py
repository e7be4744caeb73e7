"""The shipped YAML pipelines load the documented way and run on a small corpus built here."""

from __future__ import annotations

from pathlib import Path

import pytest
from haystack import Document, Pipeline
from haystack.core.errors import DeserializationError
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_crossrerank import CrossEncoderRanker, load_pipeline
from haystack_crossrerank.retrievers import BM25sRetriever, FaissEmbeddingRetriever
from haystack_crossrerank.retrievers.pipelines import PIPELINES_DIR, pipeline_path
from haystack_crossrerank.retrievers.stages import STORE_INDEX

CORPUS = [
    Document(id="paris", content="paris is the capital of france and a large city .", meta={"title": "paris"}),
    Document(id="berlin", content="berlin is the capital of germany .", meta={"title": "berlin"}),
    Document(id="cats", content="the cat sat on the mat .", meta={"title": "cats"}),
    Document(id="rome", content="rome is an old city in italy with a museum .", meta={"title": "rome"}),
]


@pytest.fixture
def bm25_store() -> InMemoryDocumentStore:
    store = InMemoryDocumentStore(index=STORE_INDEX)
    store.delete_all_documents()
    load_pipeline(pipeline_path("indexing_bm25")).run({"writer": {"documents": CORPUS}})
    return store


@pytest.fixture
def dense_store(minilm_path: Path) -> InMemoryDocumentStore:
    store = InMemoryDocumentStore(index=STORE_INDEX)
    store.delete_all_documents()
    indexing = load_pipeline(pipeline_path("indexing_dense"), overrides={"embedder": {"model": str(minilm_path)}})
    indexing.run({"embedder": {"documents": CORPUS}})
    return store


def test_every_shipped_yaml_is_refused_without_the_allow_list_and_loads_with_it() -> None:
    files = sorted(PIPELINES_DIR.glob("*.yaml"))
    assert {f.stem for f in files} >= {
        "bm25_rerank",
        "faiss_rerank",
        "hybrid_rerank",
        "indexing_bm25",
        "indexing_dense",
    }
    for path in files:
        text = path.read_text()
        if "haystack_crossrerank" in text:
            with pytest.raises(DeserializationError):
                Pipeline.loads(text)
        assert isinstance(Pipeline.loads(text, allowed_modules=["haystack_crossrerank"]), Pipeline)


def test_bm25_rerank_yaml_runs_and_reranks(bm25_store: InMemoryDocumentStore, tiny_model: Path) -> None:
    assert bm25_store.count_documents() == 4
    pipeline = load_pipeline(pipeline_path("bm25_rerank"), model=str(tiny_model))
    query = "capital city of france"
    out = pipeline.run({"retriever": {"query": query}, "ranker": {"query": query}}, include_outputs_from={"retriever"})
    retrieved = out["retriever"]["documents"]
    assert retrieved[0].id == "paris"  # BM25 finds the obvious match first
    assert {d.id for d in retrieved} == {"paris", "berlin", "rome"}  # no term of the query in "cats"
    ranked = out["ranker"]["documents"]
    assert sorted(d.id for d in ranked) == sorted(d.id for d in retrieved)
    assert [d.score for d in ranked] == sorted((d.score for d in ranked), reverse=True)
    assert isinstance(pipeline.get_component("ranker"), CrossEncoderRanker)


def test_faiss_rerank_yaml_runs(dense_store: InMemoryDocumentStore, tiny_model: Path, minilm_path: Path) -> None:
    pipeline = load_pipeline(
        pipeline_path("faiss_rerank"), model=str(tiny_model), overrides={"text_embedder": {"model": str(minilm_path)}}
    )
    query = "which city is the capital of germany?"
    out = pipeline.run(
        {"text_embedder": {"text": query}, "ranker": {"query": query}}, include_outputs_from={"retriever"}
    )
    assert out["retriever"]["documents"][0].id == "berlin"
    assert len(out["ranker"]["documents"]) == 4


def test_hybrid_rerank_yaml_joins_without_duplicates(
    dense_store: InMemoryDocumentStore, tiny_model: Path, minilm_path: Path
) -> None:
    pipeline = load_pipeline(
        pipeline_path("hybrid_rerank"), model=str(tiny_model), overrides={"text_embedder": {"model": str(minilm_path)}}
    )
    query = "an old museum in italy"
    out = pipeline.run(
        {"bm25": {"query": query}, "text_embedder": {"text": query}, "ranker": {"query": query}},
        include_outputs_from={"joiner"},
    )
    joined = [d.id for d in out["joiner"]["documents"]]
    assert len(joined) == len(set(joined)) == 4
    assert {d.id for d in out["ranker"]["documents"]} == set(joined)


def test_overrides_must_name_existing_components() -> None:
    with pytest.raises(ValueError, match="override names component 'nope'"):
        load_pipeline(pipeline_path("bm25_rerank"), overrides={"nope": {"top_k": 1}})


def test_missing_pipeline_file_lists_the_shipped_ones() -> None:
    with pytest.raises(FileNotFoundError, match="bm25_rerank.yaml"):
        pipeline_path("nope")


def test_retrievers_round_trip_and_validate() -> None:
    store = InMemoryDocumentStore(index="round-trip")
    bm25 = BM25sRetriever(document_store=store, top_k=5, meta_fields_to_index=["title"])
    assert BM25sRetriever.from_dict(bm25.to_dict()).to_dict() == bm25.to_dict()
    dense = FaissEmbeddingRetriever(document_store=store, top_k=3)
    assert FaissEmbeddingRetriever.from_dict(dense.to_dict()).to_dict() == dense.to_dict()
    with pytest.raises(ValueError, match="`top_k` must be > 0, but got 0"):
        BM25sRetriever(document_store=store, top_k=0)
    with pytest.raises(TypeError, match="`top_k` must be an int, but got float 2.0"):
        FaissEmbeddingRetriever(document_store=store, top_k=2.0)


def test_faiss_retriever_refuses_documents_without_embeddings() -> None:
    store = InMemoryDocumentStore()
    store.write_documents([Document(content="no embedding")])
    with pytest.raises(ValueError, match="1 of 1 Documents in the store have no embedding"):
        FaissEmbeddingRetriever(document_store=store).run(query_embedding=[0.1, 0.2])


def test_bm25_query_with_no_known_term_returns_nothing() -> None:
    store = InMemoryDocumentStore()
    store.write_documents(CORPUS)
    assert BM25sRetriever(document_store=store).run(query="zzzz qqqq")["documents"] == []


def test_shipped_query_pipelines_carry_the_tuned_settings() -> None:
    """The YAML files say what `crossrerank tune` chose on training queries (pipelines/tuning.json), no more."""
    import json

    import yaml

    from haystack_crossrerank.retrievers.pipelines import PIPELINES_DIR
    from haystack_crossrerank.retrievers.stages import FIRST_STAGES, shipped_depth

    tuning = json.loads((PIPELINES_DIR / "tuning.json").read_text())
    assert set(tuning["first_stages"]) == set(FIRST_STAGES)
    for name, stage in FIRST_STAGES.items():
        choice = tuning["first_stages"][name]["choice"]
        data = yaml.safe_load((PIPELINES_DIR / f"{name}_rerank.yaml").read_text())
        ranker = data["components"]["ranker"]["init_parameters"]
        for key in ("passages", "meta_placement", "aggregation", "aggregation_weight", "fusion", "fusion_weight"):
            assert ranker[key] == choice[key], (name, key)
        assert ranker["max_passages"] == choice["max_passages"]
        assert shipped_depth(stage) == choice["depth"]
        for component in stage.depth_components:
            assert data["components"][component]["init_parameters"]["top_k"] == choice["depth"], (name, component)
        # the choice is the one the lower-bound rule makes, and did not lose to the first stage on those queries
        assert tuning["selection"].startswith("lcb") and choice["gain"] >= 0
        assert choice["ndcg@10"] >= tuning["first_stages"][name]["first_stage_ndcg@10"]
