"""A BM25 retriever on `bm25s` (sparse-matrix BM25, stemming and stop words), over a Haystack document store."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_crossrerank.utils.checks import check_int
from haystack_crossrerank.utils.extras import require

logger = logging.getLogger(__name__)


@component
class BM25sRetriever:
    """
    Retrieves Documents by BM25 with `bm25s`: Lucene's BM25 variant, an English Snowball stemmer and stop
    words by default, as Anserini's BEIR baselines use (title and text in one field).

    The index is built from the document store's Documents at `warm_up()` (or the first `run()`), and rebuilt
    if the number of Documents in the store changes. Put Documents in the store with an indexing pipeline
    (for example `DocumentWriter` into an `InMemoryDocumentStore` with the same `index` name), or give it a
    saved index with :meth:`use_index` (see :mod:`haystack_crossrerank.retrievers.index`).

    Usage example:

    ```python
    from haystack import Document
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack_crossrerank.retrievers import BM25sRetriever

    store = InMemoryDocumentStore()
    store.write_documents([Document(content="Paris is the capital of France."),
                           Document(content="Berlin is the capital of Germany.")])
    retriever = BM25sRetriever(document_store=store, top_k=1)
    print(retriever.run(query="capital of France")["documents"][0].content)
    # Paris is the capital of France.
    ```

    :param document_store: The store to index.
    :param top_k: How many Documents to return.
    :param k1: BM25 term-frequency saturation (Anserini's BEIR default: 0.9).
    :param b: BM25 length normalisation (Anserini's BEIR default: 0.4).
    :param stemmer: A PyStemmer language (e.g. `"english"`), or `None` for no stemming.
    :param stopwords: A stop-word list name understood by bm25s (e.g. `"en"`), or `None`.
    :param meta_fields_to_index: Meta fields whose values are indexed before the content (e.g. `["title"]`).
    """

    def __init__(
        self,
        *,
        document_store: InMemoryDocumentStore,
        top_k: int = 10,
        k1: float = 0.9,
        b: float = 0.4,
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        meta_fields_to_index: list[str] | None = None,
    ) -> None:
        if not isinstance(document_store, InMemoryDocumentStore):
            raise TypeError(
                f"`document_store` must be an InMemoryDocumentStore, but got {type(document_store).__name__}"
            )
        check_int("top_k", top_k, minimum=1)
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, but got k1={k1}, b={b}")
        self.document_store = document_store
        self.top_k = top_k
        self.k1 = k1
        self.b = b
        self.stemmer = stemmer
        self.stopwords = stopwords
        self.meta_fields_to_index = list(meta_fields_to_index or [])
        self._index: Any = None
        self._documents: list[Document] = []
        self._stemmer: Any = None
        self._given_index = False

    def warm_up(self) -> None:
        """Build the index from the store (again, if the store's size changed); keep an index given by `use_index`."""
        if self._given_index:
            return
        count = self.document_store.count_documents()
        if self._index is not None and count == len(self._documents):
            return
        documents = self.document_store.filter_documents()
        self._index = self.build_index(documents)
        self._documents = documents
        self._stemmer = self._make_stemmer()
        logger.info("BM25 index built over %d documents", len(documents))

    def build_index(self, documents: list[Document]) -> Any:
        """
        A bm25s index over Documents, in their order, with this retriever's settings: what `warm_up()` builds
        from the store. The retriever itself is not changed.

        :param documents: The Documents; row `i` of the index is `documents[i]`.
        :returns: The `bm25s.BM25` index.
        """
        bm25s = require("bm25s", "bench")
        index = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        if documents:
            tokens = bm25s.tokenize(
                [self._text(d) for d in documents],
                stopwords=self.stopwords,
                stemmer=self._make_stemmer(),
                show_progress=False,
            )
            index.index(tokens, show_progress=False)
        return index

    def use_index(self, index: Any, documents: list[Document]) -> None:
        """
        Answer from a built index (e.g. a saved one) instead of indexing the store; the store is not read again.

        :param index: A `bm25s.BM25` index built with this retriever's settings (see :meth:`build_index`).
        :param documents: The Documents of its rows, in order.
        :raises ValueError: If the index has a different number of rows than `documents`.
        """
        rows = int(index.scores["num_docs"])
        if rows != len(documents):
            raise ValueError(f"the BM25 index must have one row per Document ({len(documents)}), but has {rows}")
        self._stemmer = self._make_stemmer()
        self._index, self._documents, self._given_index = index, list(documents), True

    def _make_stemmer(self) -> Any:
        return None if self.stemmer is None else require("Stemmer", "bench").Stemmer(self.stemmer)

    def _text(self, document: Document) -> str:
        meta = [str(document.meta[k]) for k in self.meta_fields_to_index if document.meta.get(k) is not None]
        return " ".join([*meta, document.content or ""])

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None) -> dict[str, list[Document]]:
        """
        Retrieve the best-matching Documents.

        :param query: The query.
        :param top_k: Overrides `top_k` for this call.
        :returns: `{"documents": [...]}`, best first, with their BM25 scores.
        :raises ValueError: If `top_k` is not > 0.
        """
        k = top_k if top_k is not None else self.top_k
        if k <= 0:
            raise ValueError(f"`top_k` must be > 0, but got {k}")
        self.warm_up()
        if not self._documents:
            return {"documents": []}
        bm25s = require("bm25s", "bench")
        tokens = bm25s.tokenize(
            [query], stopwords=self.stopwords, stemmer=self._stemmer, show_progress=False, return_ids=False
        )
        tokens = [[t for t in tokens[0] if t in self._index.vocab_dict]]
        if not tokens[0]:
            return {"documents": []}
        k = min(k, len(self._documents))
        indices, scores = self._index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        found = [
            replace(self._documents[int(i)], score=float(s))
            for i, s in zip(indices[0], scores[0], strict=True)
            if float(s) > 0.0
        ]
        return {"documents": found}

    def to_dict(self) -> dict[str, Any]:
        """Serialize, including the document store's settings."""
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            top_k=self.top_k,
            k1=self.k1,
            b=self.b,
            stemmer=self.stemmer,
            stopwords=self.stopwords,
            meta_fields_to_index=self.meta_fields_to_index,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BM25sRetriever:
        """Build from `to_dict()` output."""
        params = dict(data.get("init_parameters", {}))
        params["document_store"] = InMemoryDocumentStore.from_dict(params["document_store"])
        return default_from_dict(cls, {**data, "init_parameters": params})
