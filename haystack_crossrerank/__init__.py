"""haystack-crossrerank: a cross-encoder reranker component for Haystack 3.

The names are re-exported lazily, so that `import haystack_crossrerank.ranking.scoring` (the scorer alone, for
example on a GPU machine without Haystack) does not import Haystack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ALLOWED_MODULES", "CrossEncoderRanker", "CrossEncoderScorer", "fuse_scores", "load_pipeline"]

_SOURCES = {
    "ALLOWED_MODULES": "haystack_crossrerank.retrievers.pipelines",
    "CrossEncoderRanker": "haystack_crossrerank.ranker",
    "CrossEncoderScorer": "haystack_crossrerank.ranking.scoring",
    "fuse_scores": "haystack_crossrerank.ranking.fusion",
    "load_pipeline": "haystack_crossrerank.retrievers.pipelines",
}

if TYPE_CHECKING:
    from haystack_crossrerank.ranker import CrossEncoderRanker
    from haystack_crossrerank.ranking.fusion import fuse_scores
    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
    from haystack_crossrerank.retrievers.pipelines import ALLOWED_MODULES, load_pipeline


def __getattr__(name: str) -> Any:
    if name in _SOURCES:
        return getattr(importlib.import_module(_SOURCES[name]), name)
    raise AttributeError(f"module 'haystack_crossrerank' has no attribute {name!r}")
