"""Passage-level scoring: splitting, windows, aggregation, and the ranker's passage modes."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from haystack import Document
from haystack.utils import ComponentDevice

from haystack_crossrerank import CrossEncoderRanker, load_pipeline
from haystack_crossrerank.ranking.activation import sigmoid
from haystack_crossrerank.ranking.passages import (
    MAX_PASSAGE_WORDS,
    Passage,
    aggregate,
    document_passages,
    sentence_windows,
    split_sentences,
)
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from tests.test_ranker import RecordingScorer
from tests.test_ranker import ranker_with as recording_ranker


# ---------------------------------------------------------------- sentence splitting
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Treatment reduced pain, e.g. in knees, by 30%. It also helped.",
            ["Treatment reduced pain, e.g. in knees, by 30%.", "It also helped."],
        ),
        (
            "As shown in Fig. 2, the effect was large. Smith et al. found the same.",
            ["As shown in Fig. 2, the effect was large.", "Smith et al. found the same."],
        ),
        (
            "Patients received 0.5 mg daily. The dose was safe.",
            ["Patients received 0.5 mg daily.", "The dose was safe."],
        ),
        (
            "The rate fell (p < 0.05) vs. controls. No harm was seen.",
            ["The rate fell (p < 0.05) vs. controls.", "No harm was seen."],
        ),
        ("no punctuation at all here just words", ["no punctuation at all here just words"]),
        ("  First line.\n\n  Second   line.  ", ["First line.", "Second line."]),
        ("", []),
        ("   \n ", []),
    ],
)
def test_split_sentences_handles_abbreviations_decimals_and_blank_text(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_a_very_long_sentence_is_cut_into_word_pieces_that_keep_every_word() -> None:
    words = [f"w{i}" for i in range(2 * MAX_PASSAGE_WORDS + 5)]
    pieces = split_sentences(" ".join(words))
    assert [len(p.split()) for p in pieces] == [MAX_PASSAGE_WORDS, MAX_PASSAGE_WORDS, 5]
    assert " ".join(pieces).split() == words


def test_windows_cover_every_sentence_with_the_given_size_and_stride() -> None:
    sentences = [f"s{i}." for i in range(6)]
    assert sentence_windows(sentences, 3, 2) == ["s0. s1. s2.", "s2. s3. s4.", "s4. s5."]
    assert sentence_windows(sentences, 2, 2) == ["s0. s1.", "s2. s3.", "s4. s5."]
    assert sentence_windows(sentences[:2], 3, 2) == ["s0. s1."]
    assert sentence_windows([], 3, 2) == []


def test_windows_stay_under_the_word_budget_and_skip_no_sentence() -> None:
    long = " ".join(["x"] * MAX_PASSAGE_WORDS)
    windows = sentence_windows([long, "a.", "b.", "c."], 3, 2)
    assert all(len(w.split()) <= MAX_PASSAGE_WORDS for w in windows)
    # the first window holds one sentence only, so the next starts one sentence later, not two
    assert windows == [long, "a. b. c."]


# ---------------------------------------------------------------- passages of a document
def test_document_mode_is_the_whole_text_with_the_meta_text_first() -> None:
    assert document_passages("One. Two.", "Title", mode="document") == [Passage("Title\nOne. Two.", "Title\nOne. Two.")]
    assert document_passages("One. Two.", "", mode="document") == [Passage("One. Two.", "One. Two.")]
    assert document_passages("", "Title", mode="document", separator=" | ") == [Passage("Title | ", "Title | ")]


def test_sentence_mode_with_the_title_as_its_own_passage_or_as_a_prefix() -> None:
    own = document_passages("One is here. Two is there.", "Title", mode="sentences")
    assert own == [
        Passage("Title", "Title"),
        Passage("One is here.", "One is here."),
        Passage("Two is there.", "Two is there."),
    ]
    prefixed = document_passages("One is here. Two is there.", "Title", mode="sentences", meta_placement="prefix")
    assert prefixed == [
        Passage("Title\nOne is here.", "One is here."),
        Passage("Title\nTwo is there.", "Two is there."),
    ]


def test_max_passages_keeps_the_first_passages_title_included() -> None:
    passages = document_passages("A one. B two. C three.", "T", mode="sentences", max_passages=2)
    assert [p.text for p in passages] == ["T", "A one."]


def test_an_empty_document_is_one_passage() -> None:
    assert document_passages("", "", mode="sentences") == [Passage("", "")]
    assert document_passages("", "Title", mode="windows") == [Passage("Title", "Title")]
    assert document_passages("  ", "Title", mode="sentences", meta_placement="prefix") == [Passage("Title", "Title")]


def test_bad_mode_and_placement_raise() -> None:
    with pytest.raises(ValueError, match=r"`passages` must be one of \['document', 'sentences', 'windows'\]"):
        document_passages("x", "", mode="paragraphs")
    with pytest.raises(ValueError, match="`meta_placement` must be one of"):
        document_passages("x", "", mode="sentences", meta_placement="suffix")


# ---------------------------------------------------------------- aggregation
@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("max", 3.0),
        ("first", 1.0),
        ("mean", 2.0),
        ("max_mean", 0.75 * 3.0 + 0.25 * 2.0),
        ("max_first", 0.5 * 3.0 + 0.5 * 1.0),
    ],
)
def test_aggregate_methods(method: str, expected: float) -> None:
    value, best = aggregate([1.0, 3.0, 2.0], method, 0.25 if method == "max_mean" else 0.5)
    assert value == pytest.approx(expected)
    assert best == 1


def test_aggregate_takes_the_earliest_of_equal_best_passages_and_ignores_nan() -> None:
    assert aggregate([2.0, 5.0, 5.0], "max") == (5.0, 1)
    assert aggregate([math.nan, 1.0, -2.0], "mean") == (-0.5, 1)
    value, best = aggregate([math.nan], "max")
    assert math.isnan(value) and best == 0


def test_aggregate_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="`aggregation` must be one of"):
        aggregate([1.0], "median")
    with pytest.raises(ValueError, match="at least one passage score"):
        aggregate([], "max")


# ---------------------------------------------------------------- the ranker's passage modes
def ranker_with(logits: dict[str, float], **kwargs: Any) -> tuple[CrossEncoderRanker, RecordingScorer]:
    """The ranker on a recording scorer; texts missing from `logits` score 0.0."""
    return recording_ranker(defaultdict(float, logits), **kwargs)


DOCS = [
    Document(id="a", content="Cats sit on mats. Dogs run fast.", meta={"title": "Pets"}),
    Document(id="b", content="Paris is in France. It has a tower.", meta={"title": "Cities"}),
]


def test_all_passages_of_all_documents_go_to_the_scorer_in_one_call_with_exact_texts() -> None:
    ranker, scorer = ranker_with(
        {}, passages="sentences", meta_fields_to_embed=["title"], query_prefix="q: ", document_prefix="d: "
    )
    ranker.run(query="where is paris", documents=DOCS)
    assert scorer.calls == [
        [
            ("q: where is paris", "d: Pets"),
            ("q: where is paris", "d: Cats sit on mats."),
            ("q: where is paris", "d: Dogs run fast."),
            ("q: where is paris", "d: Cities"),
            ("q: where is paris", "d: Paris is in France."),
            ("q: where is paris", "d: It has a tower."),
        ]
    ]


def test_prefix_placement_puts_the_title_before_every_sentence() -> None:
    ranker, scorer = ranker_with({}, passages="sentences", meta_fields_to_embed=["title"], meta_placement="prefix")
    ranker.run(query="q", documents=DOCS[:1])
    assert [text for _, text in scorer.calls[0]] == ["Pets\nCats sit on mats.", "Pets\nDogs run fast."]


def test_windows_send_windows_of_sentences() -> None:
    doc = Document(id="w", content="S one. S two. S three. S four.")
    ranker, scorer = ranker_with({}, passages="windows", window_size=2, window_stride=1)
    ranker.run(query="q", documents=[doc])
    assert [text for _, text in scorer.calls[0]] == ["S one. S two.", "S two. S three.", "S three. S four."]


def test_max_aggregation_ranks_by_the_best_passage_and_reports_it_in_meta() -> None:
    logits = {"Pets": 0.0, "Cats sit on mats.": -1.0, "Dogs run fast.": -2.0, "Cities": 1.0}
    logits |= {"Paris is in France.": 4.0, "It has a tower.": -3.0}
    ranker, _ = ranker_with(logits, passages="sentences", meta_fields_to_embed=["title"], aggregation="max")
    out = ranker.run(query="where is paris", documents=DOCS)["documents"]
    assert [d.id for d in out] == ["b", "a"]
    assert out[0].score == pytest.approx(sigmoid(4.0))
    assert out[0].meta == {
        "title": "Cities",
        "crossrerank_passage": "Paris is in France.",
        "crossrerank_passage_score": pytest.approx(sigmoid(4.0)),
    }
    assert out[1].meta["crossrerank_passage"] == "Pets"
    assert out[0].content == DOCS[1].content
    assert "crossrerank_passage" not in DOCS[1].meta  # the caller's Documents are untouched


def test_first_and_blend_aggregations_and_run_overrides() -> None:
    logits = {"Pets": 2.0, "Cats sit on mats.": -1.0, "Dogs run fast.": -1.0, "Cities": 0.0}
    logits |= {"Paris is in France.": 3.0, "It has a tower.": 0.0}
    ranker, _ = ranker_with(logits, passages="sentences", meta_fields_to_embed=["title"], scale_score=False)
    assert [d.id for d in ranker.run(query="q", documents=DOCS)["documents"]] == ["b", "a"]  # max: 3 vs 2
    first = ranker.run(query="q", documents=DOCS, aggregation="first")["documents"]
    assert [(d.id, d.score) for d in first] == [("a", 2.0), ("b", 0.0)]
    blend = CrossEncoderRanker(
        model="unused/model",
        passages="sentences",
        meta_fields_to_embed=["title"],
        scale_score=False,
        aggregation="max_mean",
        aggregation_weight=0.5,
    )
    blend._scorer = RecordingScorer(logits)  # type: ignore[assignment]
    scores = {d.id: d.score for d in blend.run(query="q", documents=DOCS)["documents"]}
    assert scores == {"a": pytest.approx(0.5 * 2.0 + 0.5 * 0.0), "b": pytest.approx(0.5 * 3.0 + 0.5 * 1.0)}


def test_max_passages_bounds_the_pairs_scored_and_can_be_overridden() -> None:
    ranker, scorer = ranker_with({}, passages="sentences", meta_fields_to_embed=["title"], max_passages=2)
    ranker.run(query="q", documents=DOCS)
    assert [text for _, text in scorer.calls[0]] == ["Pets", "Cats sit on mats.", "Cities", "Paris is in France."]
    ranker.run(query="q", documents=DOCS, max_passages=1)
    assert [text for _, text in scorer.calls[1]] == ["Pets", "Cities"]


def test_document_mode_sends_the_same_text_as_before_and_adds_no_meta() -> None:
    ranker, scorer = ranker_with({}, meta_fields_to_embed=["title"])
    out = ranker.run(query="q", documents=DOCS)["documents"]
    assert [text for _, text in scorer.calls[0]] == [ranker.document_text(d) for d in DOCS]
    assert scorer.calls[0][0][1] == "Pets\nCats sit on mats. Dogs run fast."
    assert all(set(d.meta) == {"title"} for d in out)
    sentences = ranker.run(query="q", documents=DOCS, passages="sentences")["documents"]
    assert all("crossrerank_passage" in d.meta for d in sentences)


def test_empty_content_is_scored_as_one_empty_or_title_passage() -> None:
    ranker, scorer = ranker_with({"T": 1.0}, passages="sentences", meta_fields_to_embed=["title"])
    out = ranker.run(query="q", documents=[Document(id="e", content=None, meta={"title": "T"}), Document(id="n")])
    assert [text for _, text in scorer.calls[0]] == ["T", ""]
    assert [d.id for d in out["documents"]] == ["e", "n"]
    assert out["documents"][1].meta["crossrerank_passage"] == ""


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"passages": "paragraphs"}, ValueError, r"`passages` must be one of \['document', 'sentences', 'windows'\]"),
        ({"passages": 3}, TypeError, "`passages` must be one of .* but got int 3"),
        ({"meta_placement": "suffix"}, ValueError, "`meta_placement` must be one of"),
        ({"aggregation": "median"}, ValueError, "`aggregation` must be one of"),
        ({"aggregation_weight": -0.1}, ValueError, r"`aggregation_weight` must be in \[0, 1\], but got -0.1"),
        ({"window_size": 0}, ValueError, "`window_size` must be > 0, but got 0"),
        ({"window_stride": 1.5}, TypeError, "`window_stride` must be an int, but got float 1.5"),
        ({"max_passages": 0}, ValueError, "`max_passages` must be > 0, but got 0"),
    ],
)
def test_bad_passage_parameters_raise(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        CrossEncoderRanker(**kwargs)


def test_bad_run_overrides_raise_before_scoring() -> None:
    ranker, scorer = ranker_with({})
    with pytest.raises(ValueError, match="`passages` must be one of"):
        ranker.run(query="q", documents=DOCS, passages="pages")
    with pytest.raises(ValueError, match="`aggregation` must be one of"):
        ranker.run(query="q", documents=DOCS, aggregation="min")
    with pytest.raises(ValueError, match="`max_passages` must be > 0, but got 0"):
        ranker.run(query="q", documents=DOCS, max_passages=0)
    assert scorer.calls == []


# ---------------------------------------------------------------- on the tiny model
def test_a_one_sentence_document_scores_the_same_in_every_mode(tiny_model: Path) -> None:
    doc = Document(id="one", content="paris is the capital of france .")
    scores = []
    for mode in ("document", "sentences", "windows"):
        for method in ("max", "first", "mean", "max_mean", "max_first"):
            ranker = CrossEncoderRanker(
                model=str(tiny_model),
                device=ComponentDevice.from_str("cpu"),
                precision="fp32",
                passages=mode,
                aggregation=method,
            )
            scores.append(ranker.run(query="what is the capital of france ?", documents=[doc])["documents"][0].score)
    assert scores == pytest.approx([scores[0]] * len(scores), abs=1e-6)


def test_windows_cover_a_document_longer_than_the_model_limit(tiny_model: Path) -> None:
    words = "the cat sat on the mat and the dog ran fast in the old city".split()
    sentences = [" ".join(words[i % 5 :] + words[: i % 5]) + " ." for i in range(60)]
    doc = Document(id="long", content=" ".join(sentences))
    ranker = CrossEncoderRanker(
        model=str(tiny_model), device=ComponentDevice.from_str("cpu"), precision="fp32", passages="windows"
    )
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32")
    scorer.load()
    passages = ranker.document_passages(doc)
    query = "who sat on the mat ?"
    whole = len(scorer.encode([(query, doc.content or "")])["input_ids"][0])
    assert whole == scorer.max_length  # as one document it is cut at the model's limit (64 tokens here)...
    lengths = [int(scorer.encode([(query, p.text)])["attention_mask"][0].sum()) for p in passages]
    assert max(lengths) < scorer.max_length  # ...as windows, no passage is cut
    assert " ".join(p.text for p in passages[::2]).split()[: len(words)] == (doc.content or "").split()[: len(words)]
    covered = {s for p in passages for s in split_sentences(p.text)}
    assert covered == set(sentences)
    assert len(ranker.run(query=query, documents=[doc])["documents"]) == 1


def test_yaml_round_trip_keeps_the_passage_settings(tmp_path: Path) -> None:
    from haystack import Pipeline

    pipeline = Pipeline()
    pipeline.add_component(
        "ranker",
        CrossEncoderRanker(
            model="some/model",
            passages="sentences",
            meta_placement="prefix",
            aggregation="max_first",
            aggregation_weight=0.3,
            max_passages=12,
            window_size=4,
            window_stride=3,
        ),
    )
    restored = load_pipeline(pipeline.dumps()).get_component("ranker")
    assert isinstance(restored, CrossEncoderRanker)
    assert restored.to_dict() == pipeline.get_component("ranker").to_dict()
