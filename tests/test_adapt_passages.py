"""`crossrerank adapt --pairs passage`: each training pair holds the passage of a document closest to the query, and
the held-back queries score each candidate by its best passage."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from haystack_crossrerank.data.beir import BeirData
from haystack_crossrerank.evaluation.rerank import MAX_EVAL_PASSAGES, RerankEvaluator
from haystack_crossrerank.training.pseudo_queries import (
    PseudoQuery,
    closest_passage,
    content_words,
    pseudo_examples,
)
from tests.test_adapt import recorded_run, tiny_adapt_flags, toy_corpus, write_beir_bait

DOC = {
    "title": "Tumour suppressor p53 in mice",
    "text": "Mice were bred for ten weeks. Loss of p53 raised tumour rates sharply. The cages were cleaned daily.",
}


def test_content_words_drop_short_words_but_keep_names_with_digits() -> None:
    assert content_words("The loss of p53 in a BC1 mouse") == {"loss", "p53", "bc1", "mouse"}


def test_the_closest_passage_is_the_title_or_the_sentence_sharing_most_words() -> None:
    assert closest_passage("tumour rates after loss of p53", DOC) == "Loss of p53 raised tumour rates sharply."
    assert closest_passage("suppressor p53 mice", DOC) == "Tumour suppressor p53 in mice"
    assert closest_passage("cages cleaned", {**DOC, "title": ""}) == "The cages were cleaned daily."
    # nothing shared: the first passage (the title where there is one)
    assert closest_passage("zebra", DOC) == DOC["title"]


def test_passage_pairs_hold_one_passage_of_each_document() -> None:
    corpus = {**toy_corpus(10), "p": DOC}
    cut = "Loss of p53 raised tumour rates sharply."
    rest = DOC["text"].replace(cut + " ", "")
    span = PseudoQuery(cut, "p", "span", {"title": DOC["title"], "text": rest})
    title = PseudoQuery(DOC["title"], "p", "title", {"title": "", "text": DOC["text"]})
    ranked = [f"d{i}" for i in range(10)]
    kwargs: dict[str, Any] = {"negatives": 3, "skip_top": 0, "seed": 0}
    whole, _ = pseudo_examples([span, title], [ranked, ranked], corpus, **kwargs)
    cut_out, stats = pseudo_examples([span, title], [ranked, ranked], corpus, pairs="passage", **kwargs)
    assert stats["examples"] == 2
    for example, documents in zip(cut_out, whole, strict=True):
        assert len(example["documents"]) == 4
        for passage, document in zip(example["documents"], documents["documents"], strict=True):
            assert "\n" not in passage and passage in document  # one passage of the same document
    # the span query's positive is the rest of its document: the title shares most words with the span
    assert cut_out[0]["documents"][0] == DOC["title"]
    # a title query's documents come without titles, so its positive is a sentence of the body
    assert cut_out[1]["documents"][0] == "Loss of p53 raised tumour rates sharply."
    with pytest.raises(ValueError, match=re.escape("`pairs` must be one of ['document', 'passage'], but got 'x'")):
        pseudo_examples([span], [ranked], corpus, pairs="x", **kwargs)


class KeywordScorer:
    """Scores a pair by how many times the text holds the keyword (and remembers the texts it saw)."""

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        self.texts: list[str] = []

    def score(self, pairs: list[tuple[str, str]], max_length: int | None = None) -> list[float]:
        self.texts += [text for _, text in pairs]
        return [float(text.lower().count(self.keyword)) for _, text in pairs]


def test_the_sentence_evaluator_ranks_each_document_by_its_best_passage() -> None:
    corpus = {
        # the keyword twice in the whole document, but never twice in one passage
        "spread": {"title": "Keyword", "text": "Nothing here. Keyword again."},
        # once
        "one": {"title": "Alpha", "text": "Beta gamma. Keyword here. Delta."},
        # twice in one sentence: the only best passage worth 2
        "twice": {"title": "Omega", "text": "Keyword and keyword. Epsilon."},
    }
    data = BeirData("toy", corpus, {"q": "keyword"}, {"q": {"twice": 1}})
    candidates = {"q": [("spread", 0.0), ("one", 0.0), ("twice", 0.0)]}
    scorer = KeywordScorer("keyword")
    metrics = RerankEvaluator(data, candidates, name="h", passages="sentences")(scorer)
    assert metrics["h_ndcg@10"] == 1.0 and metrics["h_mrr@10"] == 1.0
    assert {"Keyword and keyword.", "Alpha", "Nothing here."} <= set(scorer.texts)
    assert not [t for t in scorer.texts if "\n" in t]  # no whole document was scored
    # document mode scores each document whole: "spread" ties "twice" and comes first, so nDCG@10 is below 1
    whole = KeywordScorer("keyword")
    assert RerankEvaluator(data, candidates, name="h")(whole)["h_mrr@10"] == 0.5
    assert len(whole.texts) == 3 and all("\n" in t for t in whole.texts)
    with pytest.raises(ValueError, match="`passages` must be 'document' or 'sentences', but got 'windows'"):
        RerankEvaluator(data, candidates, name="h", passages="windows")


def test_the_sentence_evaluator_scores_at_most_its_passage_limit_per_document() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    data = BeirData("toy", {"long": {"title": "t", "text": text}}, {"q": "x"}, {"q": {"long": 1}})
    scorer = KeywordScorer("x")
    RerankEvaluator(data, {"q": [("long", 0.0)]}, name="h", passages="sentences")(scorer)
    assert len(scorer.texts) == MAX_EVAL_PASSAGES


def test_adapt_with_passage_pairs_trains_and_chooses_on_passages_and_records_them(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from haystack_crossrerank.training import adapt

    made: list[dict[str, Any]] = []
    modes: list[str] = []
    real_examples, real_evaluator = adapt.pseudo_examples, adapt.RerankEvaluator

    def examples_spy(*args: Any, **kwargs: Any) -> Any:
        examples, stats = real_examples(*args, **kwargs)
        made.extend(examples)
        return examples, stats

    def evaluator_spy(*args: Any, **kwargs: Any) -> RerankEvaluator:
        evaluator = real_evaluator(*args, **kwargs)
        modes.append(evaluator.passages)
        return evaluator

    monkeypatch.setattr(adapt, "pseudo_examples", examples_spy)
    monkeypatch.setattr(adapt, "RerankEvaluator", evaluator_spy)
    data = write_beir_bait(tmp_path / "beir", toy_corpus(24))
    out = tmp_path / "adapted"
    status, opened = recorded_run(
        ["adapt", "--corpus", str(data), "--output", str(out), "--pairs", "passage", *tiny_adapt_flags(tiny_model)]
    )
    assert status == 0 and not [p for p in opened if "qrels" in p]
    # every document of every example is one passage (a whole document is "title\ntext"), and the held-back
    # queries are scored by best passage
    assert made and all("\n" not in text for example in made for text in example["documents"])
    assert modes == ["sentences"]
    facts = json.loads((out / "adaptation.json").read_text())
    assert facts["options"]["pairs"] == "passage"
    assert facts["card"]["training pairs"] == "query and the passage of each document closest to it"
    assert "each by its best passage" in facts["card_facts"]["evaluation"]
    card = (out / "README.md").read_text()
    assert "query and the passage of each document closest to it" in card


def test_an_unknown_pair_unit_is_refused() -> None:
    from haystack_crossrerank.training.adapt import AdaptOptions

    with pytest.raises(ValueError, match=re.escape("`pairs` must be one of ['document', 'passage'], but got 'x'")):
        AdaptOptions(corpus="x", pairs="x").validate()
