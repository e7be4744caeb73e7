"""`crossrerank index`: build a persistent first-stage index of a corpus, or add documents to one.

    crossrerank index --corpus ../shared/data/scifact --out indexes/scifact --first-stage hybrid
    crossrerank index --add --corpus more.jsonl --out indexes/scifact
    crossrerank serve --index indexes/scifact --pipeline hybrid_rerank

The documents are embedded by the shipped indexing pipeline's embedder (`indexing_dense.yaml`) and indexed by the
shipped query pipeline's retrievers with their settings: a pipeline loaded with the index ranks exactly as one
that indexed the corpus in memory. The folder's format is :mod:`haystack_crossrerank.retrievers.index`'s.

Ids: documents keep their corpus ids, and ids are unique in an index. A document without an id, or an id twice in
one corpus, is refused as the corpus is read (with file and line); `--add` refuses a corpus holding an id that the
index already has (naming it) rather than giving the document a new one, so that the id a result is reported under
is always the caller's. Give such documents other ids, or rebuild the index.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haystack_crossrerank.retrievers.bm25 import BM25sRetriever
    from haystack_crossrerank.retrievers.index import IndexSettings
    from haystack_crossrerank.retrievers.stages import FirstStage

logger = logging.getLogger(__name__)
FIRST_STAGES = ("bm25", "faiss", "hybrid")


def build_index(
    corpus: str | Path,
    out: str | Path,
    *,
    first_stage: str = "bm25",
    embedder: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """
    Index a corpus for a first stage and save the index, all or nothing
    (:func:`~haystack_crossrerank.retrievers.index.save_index`).

    :param corpus: A BEIR folder or a JSON lines file of documents
        (:func:`~haystack_crossrerank.data.beir.read_corpus`).
    :param out: The index folder to write.
    :param first_stage: `"bm25"`, `"faiss"` or `"hybrid"`: the dense ones also embed the documents and save a FAISS
        index (the index then serves all three query pipelines; a `"bm25"` one serves `bm25_rerank` only).
    :param embedder: The embedding model of the dense stages (default: the offline all-MiniLM-L6-v2).
    :param overwrite: Replace an existing index, once the new one is complete.
    :returns: A summary: `{"index", "first_stage", "documents", "added", "embedder", "corpus_sha256", "seconds"}`.
    :raises FileExistsError: If `out` exists and `overwrite` is not set (checked before any work).
    :raises ValueError: For an unknown first stage, an embedder given for `"bm25"`, or a malformed corpus.
    :raises FileNotFoundError: If the corpus does not exist.
    """
    from haystack_crossrerank.data.beir import read_corpus
    from haystack_crossrerank.retrievers import stages
    from haystack_crossrerank.retrievers.faiss import FaissEmbeddingRetriever
    from haystack_crossrerank.retrievers.index import (
        IndexSettings,
        bm25_settings,
        check_destination,
        embedder_settings,
        faiss_settings,
        save_index,
    )
    from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path

    started = time.perf_counter()
    stage = stages.first_stage(first_stage)
    if embedder is not None and not stage.dense:
        raise ValueError(
            f"an embedder is for the dense first stages (faiss, hybrid), but the first stage is {first_stage!r}"
        )
    out = check_destination(out, overwrite)
    rows = read_corpus(corpus)
    documents = stages.corpus_documents(rows)
    bm25 = _shipped_bm25(stage)
    settings = IndexSettings(stage.name, bm25_settings(bm25), corpus=_corpus_record(corpus, len(documents)))
    faiss_index = None
    if stage.dense:
        model = embedder or stages.offline_embedder()
        document_embedder = load_pipeline(pipeline_path(stage.indexing), overrides={"embedder": {"model": model}})
        query = load_pipeline(pipeline_path(f"{stage.name}_rerank"), overrides={"text_embedder": {"model": model}})
        dense = next(c for _, c in query.walk() if isinstance(c, FaissEmbeddingRetriever))
        documents = _embed(document_embedder.get_component("embedder"), documents)
        faiss_index = dense.build_index(documents)
        described = embedder_settings(
            document_embedder.get_component("embedder"), query.get_component("text_embedder"), faiss_index.d
        )
        settings = replace(settings, embedder=described, faiss=faiss_settings(dense, faiss_index.d))
    save_index(
        out, documents, settings, bm25_index=bm25.build_index(documents), faiss_index=faiss_index, overwrite=overwrite
    )
    return _summary(out, settings, len(documents), 0, started)


def add_to_index(
    corpus: str | Path, out: str | Path, *, first_stage: str | None = None, embedder: str | None = None
) -> dict[str, Any]:
    """
    Add a corpus's documents to an existing index, with the settings its manifest records, and save it again (all
    or nothing: the old index is replaced only once the new one is complete).

    :param corpus: The documents to add, as for :func:`build_index`; their ids must not be in the index yet.
    :param out: The index folder.
    :param first_stage: If given, it must be the index's.
    :param embedder: If given, it must be the index's.
    :returns: A summary, as :func:`build_index`'s (`added`: the documents added).
    :raises ValueError: If an id of the corpus is already in the index (naming it), or `first_stage` or
        `embedder` differ from the index's; or as :func:`~haystack_crossrerank.retrievers.index.load_index`.
    :raises FileNotFoundError: If the index or the corpus does not exist, or a file of the index is missing.
    """
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from haystack_crossrerank.data.beir import read_corpus
    from haystack_crossrerank.retrievers import stages
    from haystack_crossrerank.retrievers.bm25 import BM25sRetriever
    from haystack_crossrerank.retrievers.faiss import FaissEmbeddingRetriever
    from haystack_crossrerank.retrievers.index import DOCUMENT_KEYS, MODEL_KEYS, IndexSettings, load_index, save_index
    from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path

    started = time.perf_counter()
    index = load_index(out)
    settings = IndexSettings.from_manifest(index.manifest)
    recorded = {"first_stage": settings.first_stage, "embedder": (settings.embedder or {}).get("model")}
    for name, value in {"first_stage": first_stage, "embedder": embedder}.items():
        if value is not None and value != recorded[name]:
            raise ValueError(f"index '{out}' was built with {name} {recorded[name]!r}, but --add got {value!r}")
    rows = read_corpus(corpus)
    known = {d.id for d in index.documents}
    repeated = [doc_id for doc_id in rows if doc_id in known]
    if repeated:
        raise ValueError(
            f"{corpus}: {len(repeated)} document ids are already in index '{out}', e.g. {repeated[0]!r}: ids in an "
            "index must stay unique (give those documents other ids, or rebuild the index)"
        )
    added = stages.corpus_documents(rows)
    faiss_index = index.faiss
    if settings.embedder is not None and settings.faiss is not None and faiss_index is not None:
        recorded_embedder = {k: settings.embedder[k] for k in MODEL_KEYS} | {
            k: settings.embedder["document"][k] for k in DOCUMENT_KEYS
        }
        pipeline = load_pipeline(pipeline_path("indexing_dense"), overrides={"embedder": recorded_embedder})
        added = _embed(pipeline.get_component("embedder"), added)
        dense = FaissEmbeddingRetriever(document_store=InMemoryDocumentStore(), normalize=settings.faiss["normalize"])
        new_rows = dense.build_index(added)
        faiss_index.add(new_rows.reconstruct_n(0, new_rows.ntotal))
    documents = [*index.documents, *added]
    bm25 = BM25sRetriever(
        document_store=InMemoryDocumentStore(), **{k: v for k, v in settings.bm25.items() if k != "method"}
    )
    settings = replace(settings, added_corpora=[*settings.added_corpora, _corpus_record(corpus, len(added))])
    save_index(
        out, documents, settings, bm25_index=bm25.build_index(documents), faiss_index=faiss_index, overwrite=True
    )
    return _summary(Path(out), settings, len(documents), len(added), started)


def _shipped_bm25(stage: FirstStage) -> BM25sRetriever:
    """The BM25 retriever of the stage's query pipeline, else of `bm25_rerank.yaml` (a FAISS index serves it too)."""
    from haystack_crossrerank.retrievers.bm25 import BM25sRetriever
    from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path

    for name in dict.fromkeys([f"{stage.name}_rerank", "bm25_rerank"]):
        found = [c for _, c in load_pipeline(pipeline_path(name)).walk() if isinstance(c, BM25sRetriever)]
        if found:
            return found[0]
    raise ValueError("bm25_rerank.yaml has no BM25sRetriever")  # pragma: no cover - the shipped file has one


def _embed(document_embedder: Any, documents: list[Any]) -> list[Any]:
    document_embedder.warm_up()
    embedded = list(document_embedder.run(documents=documents)["documents"])
    logger.info("Embedded %d documents", len(embedded))
    return embedded


def _corpus_record(source: str | Path, count: int) -> dict[str, Any]:
    from haystack_crossrerank.retrievers.index import file_sha256

    path = Path(source).expanduser()
    if path.is_dir():
        path = next(path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).is_file())
    return {"path": str(path), "sha256": file_sha256(path), "documents": count}


def _summary(out: Path, settings: IndexSettings, documents: int, added: int, started: float) -> dict[str, Any]:
    return {
        "index": str(out),
        "first_stage": settings.first_stage,
        "documents": documents,
        "added": added,
        "embedder": (settings.embedder or {}).get("model"),
        "corpus_sha256": (settings.corpus or {}).get("sha256"),
        "seconds": round(time.perf_counter() - started, 2),
    }


def add_index_parser(subparsers: Any) -> argparse.ArgumentParser:
    """
    Add the `index` sub-command to an argparse sub-parsers object.

    :param subparsers: What `ArgumentParser.add_subparsers()` returned.
    :returns: The new sub-parser; its handler is :func:`cmd_index`.
    """
    parser = subparsers.add_parser(
        "index",
        help="build a persistent first-stage index of a corpus for `serve --index`, or add documents to one",
        description="Index a corpus once (BM25, and for faiss/hybrid the embeddings and a FAISS index) into a folder "
        "that `crossrerank serve --index` and load_pipeline(..., index=DIR) load instead of indexing again.",
    )
    parser.add_argument("--corpus", required=True, help="a BEIR folder or a JSON lines file of documents (to add)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the index folder")
    parser.add_argument("--first-stage", choices=FIRST_STAGES, help="default: bm25 (with --add: the index's)")
    parser.add_argument(
        "--embedder", help="embedding model of faiss/hybrid (default: the offline all-MiniLM-L6-v2; --add: the index's)"
    )
    parser.add_argument("--add", action="store_true", help="add the corpus to the index in --out (ids must be new)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index once the new one is built")
    parser.add_argument("--json", help="write the summary to this JSON file")
    return parser


def cmd_index(args: argparse.Namespace) -> dict[str, Any]:
    """
    Run `crossrerank index`: build an index (or add to one with `--add`) and print a summary.

    :param args: The parsed arguments of :func:`add_index_parser`.
    :returns: The summary (JSON-able).
    :raises ValueError: If `--add` and `--overwrite` are both given; or as :func:`build_index` and
        :func:`add_to_index` raise.
    """
    if args.add:
        if args.overwrite:
            raise ValueError("--add changes the index in place (all or nothing): --overwrite cannot be used with it")
        summary = add_to_index(args.corpus, args.out, first_stage=args.first_stage, embedder=args.embedder)
    else:
        summary = build_index(
            args.corpus,
            args.out,
            first_stage=args.first_stage or "bm25",
            embedder=args.embedder,
            overwrite=args.overwrite,
        )
    width = max(len(key) for key in summary)
    print("\nIndex" + (" (documents added)" if args.add else ""))
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}")
    return summary
