"""The scorer: real scoring through the real code path on a tiny random model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from haystack_crossrerank.ranking.pair_encoding import longest_first
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from haystack_crossrerank.utils.hardware import model_max_length, resolve_device, resolve_precision

PAIRS = [
    ("what is the capital of france ?", "paris is the capital of france ."),
    ("what is the capital of france ?", "berlin is a large city in germany ."),
    ("who sat on the mat ?", "the cat sat on the mat ."),
    ("who sat on the mat ?", ""),
    ("what is the capital of france ?", "the old museum is in rome . " * 5),
]


def reference_logits(folder: Path, pairs: list[tuple[str, str]], max_length: int) -> list[float]:
    """Plain transformers, one pair per call (batched form, so an empty text stays a pair), truncating the text."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    out = []
    with torch.inference_mode():
        for query, text in pairs:
            features = tokenizer([query], [text], truncation="only_second", max_length=max_length, return_tensors="pt")
            out.append(float(model(**features).logits[0, 0]))
    return out


def test_score_matches_plain_transformers_in_input_order(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", batch_size=2)
    got = scorer.score(PAIRS)
    expected = reference_logits(tiny_model, PAIRS, scorer.max_length)
    assert got == pytest.approx(expected, abs=1e-4)
    assert all(isinstance(v, float) for v in got)
    assert len({round(v, 4) for v in got}) > 1  # the model really distinguishes the pairs


def test_encode_matches_tokenizer_pair_encoding_with_truncation(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", max_length=16)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    features = scorer.encode(PAIRS)
    for row, (query, text) in enumerate(PAIRS):
        ref = tokenizer([query], [text], truncation="only_second", max_length=16)
        ref = {key: value[0] for key, value in ref.items()}
        n = int(features["attention_mask"][row].sum())
        assert features["input_ids"][row, :n].tolist() == ref["input_ids"]
        assert features["token_type_ids"][row, :n].tolist() == ref["token_type_ids"]
        assert features["input_ids"][row, n:].tolist() == [0] * (features["input_ids"].shape[1] - n)


def test_long_text_is_cut_and_query_kept(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", max_length=12)
    query = "what is the capital of france ?"  # 7 tokens
    ids = scorer.encode([(query, "paris " * 50)])["input_ids"][0].tolist()
    assert len(ids) == 12
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    assert ids[1:8] == tokenizer(query, add_special_tokens=False)["input_ids"]
    assert ids[8] == tokenizer.sep_token_id and ids[-1] == tokenizer.sep_token_id


def test_query_longer_than_the_limit_falls_back_tolongest_first(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", max_length=10)
    long_query = "city " * 40
    features = scorer.encode([(long_query, "paris is old ."), ("what is paris ?", "paris is old .")])
    assert features["input_ids"].shape[1] == 10
    first = features["input_ids"][0].tolist()
    # 7 budget tokens: the query keeps 4 and the 4-token text keeps 3, as `longest_first` splits them
    assert first.count(3) == 2  # two [SEP]
    assert first.index(3) == 5 and len(first[first.index(3) + 1 : -1]) == 3
    scores = scorer.score([(long_query, "paris is old .")])
    assert len(scores) == 1 and scores[0] == scores[0]  # a real number, not a crash or NaN


def test_longest_first_arithmetic() -> None:
    # the same split as the tokenizers library's `longest_first` truncation
    assert longest_first(40, 4, 7) == (4, 3)
    assert longest_first(3, 3, 10) == (3, 3)
    assert longest_first(5, 5, 7) == (3, 4)
    assert longest_first(100, 1, 7) == (6, 1)


def test_results_do_not_depend_on_batch_size_or_order(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32")
    one = scorer.score(PAIRS, batch_size=1)
    many = scorer.score(PAIRS, batch_size=64)
    reversed_scores = scorer.score(list(reversed(PAIRS)), batch_size=3)
    assert many == pytest.approx(one, abs=1e-4)
    assert list(reversed(reversed_scores)) == pytest.approx(one, abs=1e-4)


def test_token_budget_batches_hold_at_most_the_budget(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", max_batch_tokens=40, batch_size=16)
    plain = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32")
    pairs = PAIRS * 4
    scorer.load()
    widths = [(len(idx), feats["input_ids"].shape[1]) for idx, feats in scorer._batches(pairs, 16, scorer.max_length)]
    assert sum(n for n, _ in widths) == len(pairs)
    assert all(n * w <= 40 or n == 1 for n, w in widths)
    assert scorer.score(pairs) == pytest.approx(plain.score(pairs), abs=1e-4)


def test_empty_pairs_return_empty_list_without_loading(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu")
    assert scorer.score([]) == []
    assert not scorer.is_loaded


def test_bad_pairs_raise_type_error(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu")
    with pytest.raises(TypeError, match=r"pair 1 must be a \(query, text\) tuple of two strings, but got"):
        scorer.score([("a", "b"), ("a", None)])  # type: ignore[list-item]


def test_load_is_idempotent(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu")
    scorer.load()
    model = scorer.model
    scorer.load()
    assert scorer.model is model


def test_max_length_defaults_to_model_limit_and_is_clamped(tiny_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu")
    scorer.load()
    assert scorer.max_length == 64
    clamped = CrossEncoderScorer(tiny_model, device="cpu", max_length=1000)
    with caplog.at_level(logging.WARNING, logger="haystack_crossrerank.ranking.scoring"):
        clamped.load()
    assert clamped.max_length == 64
    assert "max_length=1000 exceeds the 64 tokens" in caplog.text


def test_roberta_style_limit_subtracts_the_padding_offset() -> None:
    class Config:
        model_type = "roberta"
        max_position_embeddings = 514
        pad_token_id = 1

    class Tokenizer:
        model_max_length = 1_000_000_000_000

    assert model_max_length(Config(), Tokenizer()) == 512
    Config.model_type = "bert"
    Config.max_position_embeddings = 512
    Tokenizer.model_max_length = 256
    assert model_max_length(Config(), Tokenizer()) == 256


def test_two_label_model_is_rejected_with_its_name(tiny_model_two_labels: Path) -> None:
    with pytest.raises(ValueError, match="must have exactly one output label, but its config has num_labels=2"):
        CrossEncoderScorer(tiny_model_two_labels, device="cpu").load()


def test_num_labels_kwarg_puts_a_one_logit_head_on_a_two_label_model(tiny_model_two_labels: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model_two_labels, device="cpu", model_kwargs={"num_labels": 1})
    assert len(scorer.score(PAIRS[:2])) == 2


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"Cross-encoder folder '{missing}' does not exist"):
        CrossEncoderScorer(missing).load()


def test_folder_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="has no config.json"):
        CrossEncoderScorer(tmp_path).load()


def test_corrupt_checkpoint_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_model.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(OSError, match=f"Could not load the weights of cross-encoder '{broken}'"):
        CrossEncoderScorer(broken, device="cpu").load()


def test_unknown_hub_id_offline_is_a_clear_error() -> None:
    with pytest.raises(OSError, match="Could not read the config of cross-encoder 'nobody/no-such-model'"):
        CrossEncoderScorer("nobody/no-such-model").load()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "`batch_size` must be > 0, but got 0"),
        ({"batch_size": 2.5}, TypeError, "`batch_size` must be an int, but got float 2.5"),
        ({"max_length": -1}, ValueError, "`max_length` must be > 0, but got -1"),
        ({"precision": "int4"}, ValueError, "`precision` must be one of"),
    ],
)
def test_bad_settings_are_rejected(tiny_model: Path, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        CrossEncoderScorer(tiny_model, **kwargs)


def test_device_and_precision_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(None).type in ("cpu", "mps")
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    with pytest.raises(ValueError, match="`device` must be a torch device"):
        resolve_device("gpu-please")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precisions_agree_with_fp32_on_cpu(tiny_model: Path, precision: str) -> None:
    reference = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32").score(PAIRS)
    got = CrossEncoderScorer(tiny_model, device="cpu", precision=precision).score(PAIRS)
    spread = max(reference) - min(reference)
    assert max(abs(a - b) for a, b in zip(got, reference, strict=True)) < 0.05 * spread


def test_predict_applies_the_saved_sentence_transformers_activation(tiny_model: Path, tmp_path: Path) -> None:
    identity = tmp_path / "identity"
    identity.mkdir()
    for item in tiny_model.iterdir():
        (identity / item.name).write_bytes(item.read_bytes())
    config = json.loads((identity / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity"}
    (identity / "config.json").write_text(json.dumps(config))
    logits = CrossEncoderScorer(identity, device="cpu").score(PAIRS[:2])
    assert CrossEncoderScorer(identity, device="cpu").predict(PAIRS[:2]) == pytest.approx(logits)
    sig = CrossEncoderScorer(tiny_model, device="cpu").predict(PAIRS[:2])
    assert sig == pytest.approx([float(torch.sigmoid(torch.tensor(v))) for v in logits], abs=1e-6)


def test_a_per_call_max_length_cuts_that_call_only(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32")
    long_text = " ".join(["the cat sat on the mat ."] * 10)
    pairs = [("who sat on the mat ?", long_text)]
    full = scorer.score(pairs)
    short = scorer.score(pairs, max_length=16)  # 3 special tokens + 6 of the query leave 7 of the text
    limit = scorer.max_length
    assert short == pytest.approx(scorer.score([("who sat on the mat ?", " ".join(long_text.split()[:7]))]), abs=1e-5)
    assert short != pytest.approx(full, abs=1e-5)
    assert scorer.max_length == limit and scorer.score(pairs) == pytest.approx(full, abs=1e-6)
    with pytest.raises(ValueError, match="`max_length` must be > 0, but got 0"):
        scorer.score(pairs, max_length=0)


def test_rerank_evaluator_leaves_the_shared_scorers_limit_alone(tiny_model: Path) -> None:
    from haystack_crossrerank.data.beir import BeirData
    from haystack_crossrerank.evaluation.rerank import RerankEvaluator

    data = BeirData(
        name="toy",
        corpus={
            "d1": {"title": "cats", "text": " ".join(["the cat sat on the mat ."] * 10)},
            "d2": {"title": "", "text": "a dog"},
        },
        queries={"q1": "who sat on the mat ?"},
        qrels={"q1": {"d1": 1}},
    )
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32")
    scorer.load()
    limit = scorer.max_length
    RerankEvaluator(data, {"q1": [("d1", 1.0), ("d2", 0.5)]}, name="v", max_length=16)(scorer)
    assert scorer.max_length == limit  # a later (test) evaluation runs at the model's own limit


def test_training_precision_follows_the_inference_policy_and_refuses_int8() -> None:
    from haystack_crossrerank.utils.hardware import training_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert training_precision("auto") == resolve_precision("auto", device)
    assert training_precision("fp32") == "fp32"
    with pytest.raises(
        ValueError, match=r"training `precision` must be one of \['auto', 'fp32', 'fp16', 'bf16'\], but got 'int8'"
    ):
        training_precision("int8")


def test_batch_size_defaults_to_16_for_torch_on_the_cpu_and_can_be_set(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", backend="torch")
    assert scorer.requested_batch_size is None
    scorer.load()
    assert scorer.batch_size == 16
    chosen = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", batch_size=5)
    chosen.load()
    assert chosen.batch_size == 5


def test_default_batch_size_is_larger_on_an_accelerator() -> None:
    from haystack_crossrerank.utils.hardware import default_batch_size

    assert default_batch_size(torch.device("cpu")) == 16
    assert default_batch_size(torch.device("cpu"), "openvino") == default_batch_size(torch.device("cpu"), "onnx") == 8
    assert default_batch_size(torch.device("cpu"), "openvino", "int8") == 4
    assert default_batch_size(torch.device("cuda", 0), "openvino") == 128
    assert default_batch_size(torch.device("cuda", 0)) == 128
    assert default_batch_size(torch.device("mps")) == 128


def test_padding_matches_the_tokenizer(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    scorer = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", batch_size=8)
    features = scorer.encode(PAIRS)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    expected = tokenizer(
        [q for q, _ in PAIRS], [t for _, t in PAIRS], padding=True, truncation="only_second", return_tensors="pt"
    )
    assert features["input_ids"].tolist() == expected["input_ids"].tolist()
    assert features["attention_mask"].tolist() == expected["attention_mask"].tolist()
    if "token_type_ids" in expected:
        assert features["token_type_ids"].tolist() == expected["token_type_ids"].tolist()
