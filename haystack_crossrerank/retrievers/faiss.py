"""A dense retriever on a FAISS index over the embeddings in a Haystack document store.

The official `faiss-haystack` integration pins `numpy<2` on Python < 3.13, which conflicts with the rest of
our dependency set (transformers, haystack-ai and sentence-transformers run on numpy 2), so this is a small
component of our own on `faiss-cpu`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_crossrerank.utils.checks import check_int
from haystack_crossrerank.utils.extras import require

logger = logging.getLogger(__name__)


@component
class FaissEmbeddingRetriever:
    """
    Retrieves Documents by inner product (cosine similarity for normalised embeddings) with an exact FAISS
    index (`IndexFlatIP`) built from the embeddings of the Documents in a store.

    The index is built at `warm_up()` (or the first `run()`) and rebuilt when the store's size changes.
    Documents need embeddings: write them with an embedder in an indexing pipeline. Or give it a saved index with
    :meth:`use_index` (see :mod:`haystack_crossrerank.retrievers.index`).

    Usage example:

    ```python
    from haystack import Document
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack_crossrerank.retrievers import FaissEmbeddingRetriever

    store = InMemoryDocumentStore()
    store.write_documents([Document(content="a", embedding=[1.0, 0.0]), Document(content="b", embedding=[0.0, 1.0])])
    retriever = FaissEmbeddingRetriever(document_store=store, top_k=1)
    print(retriever.run(query_embedding=[0.9, 0.1])["documents"][0].content)
    # a
    ```

    :param document_store: The store whose Documents carry embeddings.
    :param top_k: How many Documents to return.
    :param normalize: L2-normalise document and query embeddings (inner product becomes cosine).
    """

    def __init__(self, *, document_store: InMemoryDocumentStore, top_k: int = 10, normalize: bool = True) -> None:
        if not isinstance(document_store, InMemoryDocumentStore):
            raise TypeError(
                f"`document_store` must be an InMemoryDocumentStore, but got {type(document_store).__name__}"
            )
        check_int("top_k", top_k, minimum=1)
        self.document_store = document_store
        self.top_k = top_k
        self.normalize = normalize
        self._index: Any = None
        self._documents: list[Document] = []
        self._given_index = False

    def warm_up(self) -> None:
        """
        Build the FAISS index from the store's embeddings (again, if the store's size changed); keep an index
        given by `use_index`.
        """
        if self._given_index:
            return
        count = self.document_store.count_documents()
        if self._index is not None and count == len(self._documents):
            return
        documents = self.document_store.filter_documents()
        if not documents:
            self._index, self._documents = None, []
            return
        self._index = self._build(documents, "in the store ")
        self._documents = [replace(d, embedding=None) for d in documents]
        logger.info("FAISS index built over %d documents (dimension %d)", len(documents), self._index.d)

    def build_index(self, documents: list[Document]) -> Any:
        """
        A FAISS index over Documents' embeddings, in their order, with this retriever's settings: what
        `warm_up()` builds from the store. The retriever itself is not changed.

        :param documents: The Documents, each with an embedding; row `i` of the index is `documents[i]`.
        :returns: The `faiss.IndexFlatIP` index.
        :raises ValueError: If there are no Documents, or one has no embedding.
        """
        if not documents:
            raise ValueError("a FAISS index needs at least one Document, but got none")
        return self._build(documents, "")

    def use_index(self, index: Any, documents: list[Document]) -> None:
        """
        Answer from a built index (e.g. a saved one) instead of indexing the store; the store is not read again.

        :param index: A FAISS index built with this retriever's settings (see :meth:`build_index`).
        :param documents: The Documents of its rows, in order (their embeddings are not kept).
        :raises ValueError: If the index has a different number of rows than `documents`.
        """
        if int(index.ntotal) != len(documents):
            raise ValueError(
                f"the FAISS index must have one row per Document ({len(documents)}), but has {int(index.ntotal)}"
            )
        self._documents = [replace(d, embedding=None) if d.embedding is not None else d for d in documents]
        self._index, self._given_index = index, True

    def _build(self, documents: list[Document], where: str) -> Any:
        faiss = require("faiss", "faiss")
        missing = [d.id for d in documents if d.embedding is None]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(documents)} Documents {where}have no embedding "
                f"(e.g. id {missing[0]!r}); index them with an embedder first"
            )
        matrix = self._prepare(np.asarray([d.embedding for d in documents], dtype=np.float32))
        index = faiss.IndexFlatIP(matrix.shape[1])
        index.add(matrix)
        return index

    def _prepare(self, matrix: np.ndarray) -> np.ndarray:
        if self.normalize:
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(matrix, dtype=np.float32)

    @component.output_types(documents=list[Document])
    def run(self, query_embedding: list[float], top_k: int | None = None) -> dict[str, list[Document]]:
        """
        Retrieve the Documents nearest to the query embedding.

        :param query_embedding: The query's embedding.
        :param top_k: Overrides `top_k` for this call.
        :returns: `{"documents": [...]}`, best first, scored by inner product.
        :raises ValueError: If `top_k` is not > 0 or the embedding's dimension differs from the index's.
        """
        k = top_k if top_k is not None else self.top_k
        if k <= 0:
            raise ValueError(f"`top_k` must be > 0, but got {k}")
        self.warm_up()
        if self._index is None:
            return {"documents": []}
        query = self._prepare(np.asarray([query_embedding], dtype=np.float32))
        if query.shape[1] != self._index.d:
            raise ValueError(f"query embedding must have dimension {self._index.d}, but got {query.shape[1]}")
        scores, indices = self._index.search(query, min(k, len(self._documents)))
        found = [replace(self._documents[int(i)], score=float(s)) for i, s in zip(indices[0], scores[0], strict=True)]
        return {"documents": [d for d, i in zip(found, indices[0], strict=True) if i >= 0]}

    def to_dict(self) -> dict[str, Any]:
        """Serialize, including the document store's settings."""
        return default_to_dict(
            self, document_store=self.document_store.to_dict(), top_k=self.top_k, normalize=self.normalize
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaissEmbeddingRetriever:
        """Build from `to_dict()` output."""
        params = dict(data.get("init_parameters", {}))
        params["document_store"] = InMemoryDocumentStore.from_dict(params["document_store"])
        return default_from_dict(cls, {**data, "init_parameters": params})
