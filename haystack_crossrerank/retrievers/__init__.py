"""First-stage retrievers for the pipelines: BM25 (bm25s) and dense (FAISS), and the dense query embedder."""

from haystack_crossrerank.retrievers.bm25 import BM25sRetriever
from haystack_crossrerank.retrievers.embedder import ExportedTextEmbedder
from haystack_crossrerank.retrievers.faiss import FaissEmbeddingRetriever

__all__ = ["BM25sRetriever", "ExportedTextEmbedder", "FaissEmbeddingRetriever"]
