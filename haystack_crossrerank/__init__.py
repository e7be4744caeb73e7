"""haystack-crossrerank: a cross-encoder reranker component for Haystack 3."""

from haystack_crossrerank.fusion import fuse_scores
from haystack_crossrerank.pipelines import ALLOWED_MODULES, load_pipeline
from haystack_crossrerank.ranker import CrossEncoderRanker
from haystack_crossrerank.scoring import CrossEncoderScorer

__all__ = ["ALLOWED_MODULES", "CrossEncoderRanker", "CrossEncoderScorer", "fuse_scores", "load_pipeline"]
