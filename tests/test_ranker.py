"""CrossEncoderRanker: the Haystack contract, on the tiny model and on a recording scorer."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.core.errors import DeserializationError
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import ComponentDevice, Secret

from haystack_crossrerank import CrossEncoderRanker, load_pipeline
from haystack_crossrerank.ranking.activation import sigmoid
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer


class RecordingScorer:
    """Stands in for the model: returns preset logits by document text and records every call."""

    def __init__(self, logits: dict[str, float]) -> None:
        self.logits = logits
        self.calls: list[list[tuple[str, str]]] = []

    def score(self, pairs: list[tuple[str, str]], **_: Any) -> list[float]:
        self.calls.append(list(pairs))
        return [self.logits[text] for _, text in pairs]


def ranker_with(logits: dict[str, float], **kwargs: Any) -> tuple[CrossEncoderRanker, RecordingScorer]:
    ranker = CrossEncoderRanker(model="unused/model", **kwargs)
    scorer = RecordingScorer(logits)
    ranker._scorer = scorer  # type: ignore[assignment]
    return ranker, scorer


DOCS = [
    Document(id="a", content="the cat sat on the mat ."),
    Document(id="b", content="paris is the capital of france ."),
    Document(id="c", content="berlin is a large city in germany ."),
]


# ---------------------------------------------------------------- real model
def test_run_ranks_by_the_models_scores_highest_first(tiny_model: Path) -> None:
    ranker = CrossEncoderRanker(model=str(tiny_model), device=ComponentDevice.from_str("cpu"), precision="fp32")
    result = ranker.run(query="what is the capital of france ?", documents=DOCS)
    docs = result["documents"]
    expected_logits = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32").score(
        [("what is the capital of france ?", d.content or "") for d in DOCS]
    )
    expected = sorted(zip((sigmoid(v) for v in expected_logits), (d.id for d in DOCS), strict=True), reverse=True)
    assert [d.id for d in docs] == [doc_id for _, doc_id in expected]
    assert [d.score for d in docs] == pytest.approx([s for s, _ in expected], abs=1e-5)
    assert all(type(d.score) is float for d in docs)


def test_init_loads_nothing_and_warm_up_is_idempotent(tiny_model: Path) -> None:
    ranker = CrossEncoderRanker(model=str(tiny_model), device=ComponentDevice.from_str("cpu"))
    assert ranker.scorer is None
    ranker.warm_up()
    scorer = ranker.scorer
    assert scorer is not None and scorer.is_loaded
    ranker.warm_up()
    assert ranker.scorer is scorer


def test_run_warms_up_when_needed(tiny_model: Path) -> None:
    ranker = CrossEncoderRanker(model=str(tiny_model), device=ComponentDevice.from_str("cpu"))
    assert len(ranker.run(query="who sat on the mat ?", documents=DOCS)["documents"]) == 3
    assert ranker.scorer is not None


def test_empty_document_list_returns_empty_without_loading(tmp_path: Path) -> None:
    ranker = CrossEncoderRanker(model=str(tmp_path / "does-not-exist"))
    assert ranker.run(query="q", documents=[]) == {"documents": []}
    assert ranker.scorer is None


def test_run_async_gives_the_same_result_as_run(tiny_model: Path) -> None:
    ranker = CrossEncoderRanker(model=str(tiny_model), device=ComponentDevice.from_str("cpu"), top_k=2)
    sync = ranker.run(query="who sat on the mat ?", documents=DOCS)
    result = asyncio.run(ranker.run_async(query="who sat on the mat ?", documents=DOCS))
    assert [(d.id, d.score) for d in result["documents"]] == [(d.id, d.score) for d in sync["documents"]]


def test_missing_model_folder_fails_at_warm_up_not_init(tmp_path: Path) -> None:
    ranker = CrossEncoderRanker(model=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ranker.run(query="q", documents=DOCS)


# ---------------------------------------------------------------- texts sent to the model
def test_prefixes_suffixes_and_meta_fields_build_the_exact_texts() -> None:
    docs = [
        Document(id="x", content="body", meta={"title": "Title", "year": 2020}),
        Document(id="y", content=None, meta={"title": "Only title"}),
        Document(id="z", content="no meta", meta={"year": None}),
    ]
    texts = {"<d>2020 | Title | body</d>": 1.0, "<d>Only title | </d>": 2.0, "<d>no meta</d>": 3.0}
    ranker, scorer = ranker_with(
        texts,
        query_prefix="q: ",
        query_suffix="?",
        document_prefix="<d>",
        document_suffix="</d>",
        meta_fields_to_embed=["year", "title"],
        embedding_separator=" | ",
    )
    ranker.run(query="paris", documents=docs)
    assert scorer.calls == [
        [
            ("q: paris?", "<d>2020 | Title | body</d>"),
            ("q: paris?", "<d>Only title | </d>"),
            ("q: paris?", "<d>no meta</d>"),
        ]
    ]


def test_document_without_text_is_scored_as_empty_text_not_dropped() -> None:
    ranker, scorer = ranker_with({"": 5.0, "text": 1.0})
    docs = [Document(id="t", content="text"), Document(id="e", content=None)]
    result = ranker.run(query="q", documents=docs)["documents"]
    assert [d.id for d in result] == ["e", "t"]
    assert scorer.calls == [[("q", "text"), ("q", "")]]


# ---------------------------------------------------------------- scores, order, ties
def test_scale_score_applies_calibrated_sigmoid_else_raw_logit() -> None:
    logits = {"a": 2.0, "b": -1.0, "c": 0.0}
    docs = [Document(id=k, content=k) for k in logits]
    ranker, _ = ranker_with(logits, calibration_factor=0.5)
    scaled = ranker.run(query="q", documents=docs)["documents"]
    assert [(d.id, d.score) for d in scaled] == [
        ("a", pytest.approx(1 / (1 + math.exp(-1.0)))),
        ("c", pytest.approx(0.5)),
        ("b", pytest.approx(1 / (1 + math.exp(0.5)))),
    ]
    raw = ranker.run(query="q", documents=docs, scale_score=False)["documents"]
    assert [(d.id, d.score) for d in raw] == [("a", 2.0), ("c", 0.0), ("b", -1.0)]


def test_equal_scores_keep_input_order_and_negative_scores_sort_correctly() -> None:
    logits = {"p": 0.0, "q": -3.0, "r": 0.0, "s": -0.5, "t": 0.0}
    docs = [Document(id=k, content=k) for k in logits]
    ranker, _ = ranker_with(logits, scale_score=False)
    assert [d.id for d in ranker.run(query="q", documents=docs)["documents"]] == ["p", "r", "t", "s", "q"]


def test_nan_scores_sort_last() -> None:
    logits = {"a": float("nan"), "b": -10.0, "c": 1.0}
    docs = [Document(id=k, content=k) for k in logits]
    ranker, _ = ranker_with(logits, scale_score=False)
    assert [d.id for d in ranker.run(query="q", documents=docs)["documents"]] == ["c", "b", "a"]


def test_threshold_drops_below_then_top_k_applies() -> None:
    logits = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.5}
    docs = [Document(id=k, content=k) for k in logits]
    ranker, _ = ranker_with(logits, scale_score=False, score_threshold=1.0, top_k=10)
    assert [d.id for d in ranker.run(query="q", documents=docs)["documents"]] == ["a", "b", "c"]
    assert [d.id for d in ranker.run(query="q", documents=docs, top_k=2)["documents"]] == ["a", "b"]


def test_falsy_runtime_overrides_are_honoured() -> None:
    logits = {"a": -1.0, "b": -2.0}
    docs = [Document(id=k, content=k) for k in logits]
    ranker, _ = ranker_with(logits, scale_score=True, score_threshold=0.9)
    # score_threshold=0.0 must replace 0.9 (an `or` would keep 0.9 and return nothing)
    kept = ranker.run(query="q", documents=docs, score_threshold=0.0)["documents"]
    assert [d.id for d in kept] == ["a", "b"]
    # scale_score=False must replace True: raw logits come back
    raw = ranker.run(query="q", documents=docs, scale_score=False, score_threshold=-5.0)["documents"]
    assert [d.score for d in raw] == [-1.0, -2.0]


@pytest.mark.parametrize("top_k", [0, -1])
def test_run_with_top_k_not_positive_raises(top_k: int) -> None:
    ranker, _ = ranker_with({"a": 1.0})
    with pytest.raises(ValueError, match=f"`top_k` must be > 0, but got {top_k}"):
        ranker.run(query="q", documents=[Document(content="a")], top_k=top_k)


def test_init_with_top_k_zero_raises() -> None:
    with pytest.raises(ValueError, match="`top_k` must be > 0, but got 0"):
        CrossEncoderRanker(top_k=0)


# ---------------------------------------------------------------- inputs
def test_duplicates_are_scored_once_keeping_the_highest_incoming_score() -> None:
    docs = [
        Document(id="d", content="low", score=0.1),
        Document(id="e", content="other", score=0.5),
        Document(id="d", content="high", score=0.9),
        Document(id="d", content="none", score=None),
    ]
    ranker, scorer = ranker_with({"high": 1.0, "other": 2.0})
    result = ranker.run(query="q", documents=docs)["documents"]
    assert scorer.calls == [[("q", "high"), ("q", "other")]]
    assert [(d.id, d.content) for d in result] == [("e", "other"), ("d", "high")]


def test_callers_documents_are_not_mutated() -> None:
    docs = [Document(id="a", content="a", score=0.3, meta={"k": "v"}), Document(id="b", content="b")]
    before = [d.to_dict() for d in docs]
    ranker, _ = ranker_with({"a": 1.0, "b": 2.0})
    result = ranker.run(query="q", documents=docs)["documents"]
    assert [d.to_dict() for d in docs] == before
    assert all(out is not original for out in result for original in docs)


@pytest.mark.parametrize(
    ("query", "documents", "error", "message"),
    [
        (None, DOCS, TypeError, "`query` must be a str, but got NoneType None"),
        ("   ", DOCS, ValueError, "`query` must be a non-empty string, but got '   '"),
        ("q", "not a list", TypeError, "`documents` must be a list of Document, but got str"),
        ("q", [DOCS[0], {"content": "x"}], TypeError, r"`documents\[1\]` must be a Document, but got dict"),
    ],
)
def test_bad_inputs_raise_clear_errors(query: Any, documents: Any, error: type, message: str) -> None:
    ranker, scorer = ranker_with({})
    with pytest.raises(error, match=message):
        ranker.run(query=query, documents=documents)
    assert scorer.calls == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"top_k": "3"}, TypeError, "`top_k` must be an int, but got str '3'"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be > 0, but got 0"),
        ({"precision": "fp8"}, ValueError, "`precision` must be one of"),
        ({"scale_score": "yes"}, TypeError, "`scale_score` must be a bool"),
        ({"meta_fields_to_embed": "title"}, TypeError, "`meta_fields_to_embed` must be a list of str or None"),
        ({"device": "cpu"}, TypeError, "`device` must be a ComponentDevice or None, but got str"),
        ({"fusion": "sum"}, ValueError, "`fusion` must be None or one of"),
        ({"fusion_weight": 1.5}, ValueError, r"`fusion_weight` must be in \[0, 1\], but got 1.5"),
        ({"score_threshold": float("nan")}, ValueError, "`score_threshold` must be a number, but got NaN"),
    ],
)
def test_bad_init_parameters_raise(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        CrossEncoderRanker(**kwargs)


# ---------------------------------------------------------------- serialization
def test_to_dict_covers_every_init_parameter_with_defaults() -> None:
    assert CrossEncoderRanker().to_dict() == {
        "type": "haystack_crossrerank.ranker.CrossEncoderRanker",
        "init_parameters": {
            "model": "tomaarsen/reranker-distilroberta-base-stsb",
            "device": None,
            "token": {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False},
            "top_k": 10,
            "query_prefix": "",
            "query_suffix": "",
            "document_prefix": "",
            "document_suffix": "",
            "meta_fields_to_embed": [],
            "embedding_separator": "\n",
            "scale_score": True,
            "calibration_factor": 1.0,
            "score_threshold": None,
            "batch_size": None,
            "max_length": None,
            "precision": "auto",
            "model_kwargs": None,
            "tokenizer_kwargs": None,
            "fusion": None,
            "fusion_weight": 0.5,
            "max_batch_tokens": None,
            "passages": "document",
            "meta_placement": "passage",
            "aggregation": "max",
            "aggregation_weight": 0.5,
            "window_size": 3,
            "window_stride": 2,
            "max_passages": None,
            "backend": "auto",
        },
    }


def test_from_dict_round_trips_every_custom_parameter() -> None:
    import torch

    ranker = CrossEncoderRanker(
        model="some/model",
        device=ComponentDevice.from_str("cpu"),
        token=Secret.from_env_var("MY_TOKEN", strict=False),
        top_k=3,
        query_prefix="q:",
        query_suffix="?",
        document_prefix="d:",
        document_suffix="!",
        meta_fields_to_embed=["title"],
        embedding_separator=" - ",
        scale_score=False,
        calibration_factor=2.0,
        score_threshold=0.0,
        batch_size=8,
        max_length=128,
        precision="bf16",
        model_kwargs={"torch_dtype": torch.float16},
        tokenizer_kwargs={"use_fast": True},
        fusion="rrf",
        fusion_weight=0.7,
        max_batch_tokens=4096,
        passages="windows",
        meta_placement="prefix",
        aggregation="max_first",
        aggregation_weight=0.25,
        window_size=4,
        window_stride=1,
        max_passages=7,
    )
    data = ranker.to_dict()
    assert data["init_parameters"]["model_kwargs"] == {"torch_dtype": "torch.float16"}
    assert data["init_parameters"]["device"] == {"type": "single", "device": "cpu"}
    restored = CrossEncoderRanker.from_dict(data)
    assert restored.to_dict() == data
    assert restored.model_kwargs == {"torch_dtype": torch.float16}
    assert restored.device == ComponentDevice.from_str("cpu")
    assert restored.score_threshold == 0.0 and restored.scale_score is False
    assert (restored.passages, restored.meta_placement, restored.aggregation) == ("windows", "prefix", "max_first")
    assert (restored.aggregation_weight, restored.window_size, restored.window_stride) == (0.25, 4, 1)
    assert restored.max_passages == 7


def bm25_pipeline(model: str) -> Pipeline:
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=d.content) for d in DOCS])
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=3))
    pipeline.add_component(
        "ranker", CrossEncoderRanker(model=model, device=ComponentDevice.from_str("cpu"), precision="fp32", top_k=2)
    )
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def test_yaml_round_trip_of_a_bm25_ranker_pipeline(tiny_model: Path) -> None:
    pipeline = bm25_pipeline(str(tiny_model))
    text = pipeline.dumps()
    assert "type: haystack_crossrerank.ranker.CrossEncoderRanker" in text
    restored = Pipeline.loads(text, allowed_modules=["haystack_crossrerank"])
    assert restored.to_dict() == pipeline.to_dict()
    query = "capital city cat"
    out_a = pipeline.run({"retriever": {"query": query}, "ranker": {"query": query}})
    out_b = restored.run({"retriever": {"query": query}, "ranker": {"query": query}})
    assert [(d.content, d.score) for d in out_b["ranker"]["documents"]] == [
        (d.content, d.score) for d in out_a["ranker"]["documents"]
    ]
    assert len(out_b["ranker"]["documents"]) == 2


def test_loading_our_yaml_without_allowing_the_package_is_refused(tiny_model: Path) -> None:
    text = bm25_pipeline(str(tiny_model)).dumps()
    with pytest.raises(DeserializationError, match="haystack_crossrerank"):
        Pipeline.loads(text)


def test_load_pipeline_allows_only_this_package(tiny_model: Path) -> None:
    text = bm25_pipeline(str(tiny_model)).dumps()
    pipeline = load_pipeline(text, model="other/model")
    ranker = pipeline.get_component("ranker")
    assert isinstance(ranker, CrossEncoderRanker) and ranker.model == "other/model"
    hostile = text.replace("haystack_crossrerank.ranker.CrossEncoderRanker", "os.system")
    with pytest.raises(DeserializationError):
        load_pipeline(hostile)
