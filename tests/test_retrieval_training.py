"""Retrieval training: the losses, negative mining with its guard, the query split, and a real short run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from haystack_crossrerank.data.beir import BeirData
from haystack_crossrerank.training.losses import listwise_loss, pointwise_loss
from haystack_crossrerank.training.mining import mine_examples, split_queries
from haystack_crossrerank.training.retrieval import RetrievalOptions


def toy_data() -> BeirData:
    corpus = {
        f"d{i}": {"title": f"t{i}", "text": ("paris capital " * (i % 3)) + f"word{i} city france"} for i in range(30)
    }
    queries = {f"q{i}": f"paris capital city {i}" for i in range(10)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(10)}
    return BeirData("toy", corpus, queries, qrels)


def test_listwise_loss_is_cross_entropy_per_group() -> None:
    logits = torch.tensor([2.0, 0.0, 1.0, -1.0, 3.0])
    labels = torch.tensor([[0, 1], [0, 0], [0, 0], [1, 0], [1, 1]], dtype=torch.float32)
    expected = ((math.log(math.exp(2) + 1 + math.exp(1)) - 2.0) + (math.log(math.exp(-1) + math.exp(3)) - 3.0)) / 2
    assert float(listwise_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_pointwise_loss_uses_the_positive_flag() -> None:
    logits = torch.tensor([0.0, 0.0])
    labels = torch.tensor([[0, 1], [0, 0]], dtype=torch.float32)
    assert float(pointwise_loss(logits, labels)) == pytest.approx(math.log(2))


def test_split_is_seeded_and_disjoint() -> None:
    data = toy_data()
    train, validation = split_queries(data, 3, seed=42)
    assert len(validation) == 3 and len(train) == 7 and not set(train) & set(validation)
    assert split_queries(data, 3, seed=42) == (train, validation)
    with pytest.raises(ValueError, match=r"`validation_queries` must be in \[0, 9\], but got 10"):
        split_queries(data, 10, seed=42)


def test_mined_negatives_exclude_judged_documents_and_the_top_guard() -> None:
    data = toy_data()
    options = RetrievalOptions(data_dir="unused", negatives=3, mine_depth=20, skip_top=2)
    examples, stats = mine_examples(data, ["q1", "q2"], options, seed=0)
    assert stats["examples"] == 2 and len(examples[0]["documents"]) == 4
    from haystack_crossrerank.evaluation.rerank import document_text
    from haystack_crossrerank.training.mining import bm25_candidates_for

    top = bm25_candidates_for(data, ["q1"], 20)["q1"]
    guarded = [d for d, _ in top if d != "d1"][:2]
    texts = examples[0]["documents"]
    assert texts[0] == document_text(data.corpus["d1"])  # the positive comes first
    assert document_text(data.corpus["d1"]) not in texts[1:]
    assert not {document_text(data.corpus[d]) for d in guarded} & set(texts[1:])


@pytest.mark.slow
def test_short_real_retrieval_training_beats_the_untrained_head(tmp_path: Path, minilm_path: Path) -> None:
    from haystack_crossrerank.data.beir import load_beir
    from haystack_crossrerank.evaluation.rerank import RerankEvaluator
    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
    from haystack_crossrerank.training import TrainConfig
    from haystack_crossrerank.training.mining import bm25_candidates_for
    from haystack_crossrerank.training.retrieval import train_retrieval

    data_dir = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data_dir / "scifact").is_dir():
        pytest.skip("../shared/data/scifact is not beside the checkout")
    options = RetrievalOptions(
        data_dir=str(data_dir), negatives=3, validation_queries=40, eval_depth=10, max_length=128, train_limit=120
    )
    config = TrainConfig(
        base_model=str(minilm_path),
        output_dir=str(tmp_path / "m"),
        epochs=1,
        batch_size=4,
        learning_rate=3e-5,
        eval_steps=1000,
        select_best=False,
    )
    result = train_retrieval(config, options)
    train = load_beir(data_dir, "train")
    _, validation_ids = split_queries(train, 40, seed=42)
    heldout = json.loads((Path(result.output_dir) / "heldout_queries.json").read_text())
    assert heldout["query_ids"] == sorted(validation_ids) and heldout["dataset"] == "scifact"
    evaluator = RerankEvaluator(train, bm25_candidates_for(train, validation_ids, 10), name="v", max_length=128)
    torch.manual_seed(0)  # the untrained head is random: fix it so that the baseline is the same every run
    untrained = evaluator(CrossEncoderScorer(minilm_path, model_kwargs={"num_labels": 1}, precision="fp32"))
    trained = evaluator(CrossEncoderScorer(result.output_dir, precision="fp32"))
    print(f"held-back nDCG@10: untrained head {untrained['v_ndcg@10']:.4f}, trained {trained['v_ndcg@10']:.4f}")
    # measured here: untrained head 0.32 (seed 0), trained 0.41 after 30 steps: the floor asks for a clear gain
    assert trained["v_ndcg@10"] > untrained["v_ndcg@10"] + 0.03


def write_beir(folder: Path, data: BeirData) -> None:
    """A BEIR folder on disk (corpus.jsonl, queries.jsonl, qrels/train.tsv) holding `data`."""
    import json

    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for doc_id, doc in data.corpus.items():
            out.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
        for query_id, text in data.queries.items():
            out.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    rows = [f"{q}\t{d}\t{r}" for q, judged in data.qrels.items() for d, r in judged.items()]
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")


def other_toy_data() -> BeirData:
    corpus = {f"m{i}": {"title": f"disease {i}", "text": f"symptoms of disease {i} include fever"} for i in range(20)}
    queries = {f"mq{i}": f"What are the symptoms of disease {i} ?" for i in range(12)}
    qrels = {f"mq{i}": {f"m{i}": 1} for i in range(12)}
    return BeirData("other", corpus, queries, qrels)


def test_mixed_examples_come_from_the_other_set_in_the_asked_ratio(tmp_path: Path) -> None:
    from haystack_crossrerank.evaluation.rerank import document_text
    from haystack_crossrerank.training.mining import mix_examples

    write_beir(tmp_path / "other", other_toy_data())
    options = RetrievalOptions(data_dir=str(tmp_path), negatives=2, mine_depth=10, skip_top=1, mix={"other": 0.5})
    examples, stats = mix_examples(options, primary_examples=10, seed=0)
    assert len(examples) == 5 and stats["other"]["examples"] == 5 and stats["other"]["ratio"] == 0.5
    corpus_texts = {document_text(d) for d in other_toy_data().corpus.values()}
    for example in examples:
        assert example["query"].startswith("What are the symptoms of disease")
        assert len(example["documents"]) == 3 and set(example["documents"]) <= corpus_texts
        number = example["query"].split()[-2]
        assert example["documents"][0] == document_text(other_toy_data().corpus[f"m{number}"])  # its positive first
    assert mix_examples(options, primary_examples=10, seed=0)[0] == examples  # seeded
    zero = RetrievalOptions(data_dir=str(tmp_path), mix={"other": 0.0})
    assert mix_examples(zero, primary_examples=10, seed=0) == ([], {})


def test_mixing_more_than_a_set_holds_or_a_negative_ratio_is_refused(tmp_path: Path) -> None:
    from haystack_crossrerank.training.mining import mix_examples

    write_beir(tmp_path / "other", other_toy_data())
    too_many = RetrievalOptions(data_dir=str(tmp_path), negatives=2, mine_depth=10, mix={"other": 2.0})
    with pytest.raises(ValueError, match="other train has 12 .* fewer than the 20 asked"):
        mix_examples(too_many, primary_examples=10, seed=0)
    negative = RetrievalOptions(data_dir=str(tmp_path), mix={"other": -1.0})
    with pytest.raises(ValueError, match="a mixing ratio must be >= 0, but got -1.0 for 'other'"):
        mix_examples(negative, primary_examples=10, seed=0)


def test_training_text_is_what_the_ranker_sends_in_document_mode() -> None:
    from haystack import Document

    from haystack_crossrerank.evaluation.rerank import document_text
    from haystack_crossrerank.ranker import CrossEncoderRanker

    doc = {"title": "A title", "text": "Some abstract. Two sentences."}
    ranker = CrossEncoderRanker(model="unused", meta_fields_to_embed=["title"])
    assert document_text(doc) == ranker.document_text(Document(content=doc["text"], meta={"title": doc["title"]}))
    assert document_text(doc) == "A title\nSome abstract. Two sentences."


def test_mix_flag_parses_and_refuses_malformed_values() -> None:
    from haystack_crossrerank.commands.cli import parse_mix

    assert parse_mix(["medquad=1.5", "other=0"]) == {"medquad": 1.5, "other": 0.0}
    for bad in ["medquad", "=1", "medquad=x", "medquad=-1"]:
        with pytest.raises(SystemExit, match=f"--mix expects NAME=RATIO .* but got {bad!r}"):
            parse_mix([bad])
