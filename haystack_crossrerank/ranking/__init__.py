"""The scoring engine below the component: pair encoding, passages, fusion, devices and the scorer."""

from haystack_crossrerank.ranking.fusion import FUSION_METHODS, fuse_scores
from haystack_crossrerank.ranking.passages import Passage, aggregate, document_passages
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer

__all__: list[str] = [
    "FUSION_METHODS",
    "CrossEncoderScorer",
    "Passage",
    "aggregate",
    "document_passages",
    "fuse_scores",
]
