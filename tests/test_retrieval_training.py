"""Retrieval training: the losses, negative mining with its guard, the query split, and a real short run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from haystack_crossrerank.data.beir import BeirData
from haystack_crossrerank.training.retrieval import (
    RetrievalOptions,
    listwise_loss,
    mine_examples,
    pointwise_loss,
    split_queries,
)


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
    from haystack_crossrerank.training.retrieval import bm25_candidates_for, document_text

    top = bm25_candidates_for(data, ["q1"], 20)["q1"]
    guarded = [d for d, _ in top if d != "d1"][:2]
    texts = examples[0]["documents"]
    assert texts[0] == document_text(data.corpus["d1"])  # the positive comes first
    assert document_text(data.corpus["d1"]) not in texts[1:]
    assert not {document_text(data.corpus[d]) for d in guarded} & set(texts[1:])


@pytest.mark.slow
def test_short_real_retrieval_training_beats_the_untrained_head(tmp_path: Path, minilm_path: Path) -> None:
    from haystack_crossrerank.data.beir import load_beir
    from haystack_crossrerank.scoring import CrossEncoderScorer
    from haystack_crossrerank.training import TrainConfig
    from haystack_crossrerank.training.retrieval import RerankEvaluator, bm25_candidates_for, train_retrieval

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
    evaluator = RerankEvaluator(train, bm25_candidates_for(train, validation_ids, 10), name="v", max_length=128)
    torch.manual_seed(0)  # the untrained head is random: fix it so that the baseline is the same every run
    untrained = evaluator(CrossEncoderScorer(minilm_path, model_kwargs={"num_labels": 1}, precision="fp32"))
    trained = evaluator(CrossEncoderScorer(result.output_dir, precision="fp32"))
    print(f"held-back nDCG@10: untrained head {untrained['v_ndcg@10']:.4f}, trained {trained['v_ndcg@10']:.4f}")
    # measured here: untrained head 0.32 (seed 0), trained 0.41 after 30 steps: the floor asks for a clear gain
    assert trained["v_ndcg@10"] > untrained["v_ndcg@10"] + 0.03
