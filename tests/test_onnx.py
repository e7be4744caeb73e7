"""The exported backends (ONNX Runtime, OpenVINO) on the tiny model: exact scores, the export cache, the int8 gate."""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from haystack import Document

from haystack_crossrerank import exported
from haystack_crossrerank.commands import quantize
from haystack_crossrerank.exported import export, int8
from haystack_crossrerank.ranker import CrossEncoderRanker
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from tests.conftest import WORDS, build_tiny_cross_encoder

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
EXPORTED = ["onnx", "openvino"]

PAIRS = [
    ("what is the capital of france", "paris is the capital of france ."),
    ("what is the capital of france", "berlin is a large city in germany with an old wall and a tower ."),
    ("the cat", "the dog sat on the mat"),
    ("cancer drug trial", "patients in the trial show a decrease in risk"),
    ("red car", "a blue train ran fast from rome to madrid and the people live in a small old city"),
    ("wine", "cheese"),
] * 3


def random_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """Pairs of random words, short queries and texts of 4 to 40 words (the tiny model's vocabulary)."""
    rng = random.Random(seed)
    return [
        (" ".join(rng.choices(WORDS, k=rng.randint(2, 6))), " ".join(rng.choices(WORDS, k=rng.randint(4, 40))))
        for _ in range(count)
    ]


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test exports into its own cache, so that no test sees another's export."""
    monkeypatch.setenv("CROSSRERANK_EXPORT_DIR", str(tmp_path / "exported"))
    return tmp_path / "exported"


@pytest.fixture
def export_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records each real export, ONNX or OpenVINO (the cache is reused when this stays empty)."""
    calls: list[Path] = []

    def counting(real):  # type: ignore[no-untyped-def]
        def run(model, example, path):  # type: ignore[no-untyped-def]
            calls.append(path)
            return real(model, example, path)

        return run

    monkeypatch.setattr(export, "_export_to", counting(export._export_to))
    monkeypatch.setattr(export, "_convert_openvino", counting(export._convert_openvino))
    return calls


@pytest.mark.parametrize("backend", EXPORTED)
def test_exported_scores_match_torch_fp32(tiny_model: Path, cache_home: Path, backend: str) -> None:
    torch_scores = CrossEncoderScorer(tiny_model, precision="fp32", batch_size=4).score(PAIRS)
    scorer = CrossEncoderScorer(tiny_model, backend=backend, precision="fp32", batch_size=4)
    onnx_scores = scorer.score(PAIRS)
    assert scorer.precision == "fp32"
    assert np.max(np.abs(np.array(onnx_scores) - np.array(torch_scores))) < 1e-3
    # Different scores per pair, so the comparison means something.
    assert len({round(s, 3) for s in torch_scores}) >= 5
    assert scorer.export_folder is not None and scorer.export_folder.parent == cache_home
    manifest = json.loads((scorer.export_folder / "manifest.json").read_text())
    assert manifest["inputs"] == ["input_ids", "token_type_ids", "attention_mask"]
    assert sorted(manifest["sha256"]) == sorted(exported.EXPORT_FILES[backend])


def test_openvino_keeps_attention_as_one_fused_operation(tiny_model: Path, cache_home: Path) -> None:
    import openvino

    scorer = CrossEncoderScorer(tiny_model, backend="openvino", precision="fp32")
    scorer.load()
    assert scorer.export_folder is not None
    graph = openvino.Core().read_model(str(exported.model_file(scorer.export_folder, "openvino")))
    kinds = [op.get_type_name() for op in graph.get_ops()]
    assert kinds.count("ScaledDotProductAttention") == 2  # the tiny model's two layers
    assert "Softmax" not in kinds and int8.openvino_activation_matmuls(graph) == []


def test_openvino_finds_matmuls_between_activations() -> None:
    """Attention written out as MatMuls (a model whose attention does not convert to one fused operation) must
    stay in floating point in int8: those MatMuls are found, the ones with weights (direct or converted) not."""
    import openvino
    from openvino import opset13 as ops

    x = ops.parameter([2, 4, 8], openvino.Type.f32, name="x")
    weight = ops.constant(np.ones((8, 8), dtype=np.float32))
    half = ops.convert(ops.constant(np.ones((8, 8), dtype=np.float16)), openvino.Type.f32)
    projected = ops.matmul(x, weight, False, False)
    projected.set_friendly_name("with_weight")
    converted = ops.matmul(projected, half, False, False)
    converted.set_friendly_name("with_converted_weight")
    scores = ops.matmul(converted, x, False, True)
    scores.set_friendly_name("scores")
    values = ops.matmul(ops.softmax(scores, -1), x, False, False)
    values.set_friendly_name("values")
    graph = openvino.Model([values], [x])
    assert sorted(int8.openvino_activation_matmuls(graph)) == ["scores", "values"]


@pytest.mark.parametrize("backend", EXPORTED)
def test_export_is_reused_then_redone_for_a_changed_model(
    tmp_path: Path, cache_home: Path, export_calls: list, backend: str
) -> None:
    other = "onnx" if backend == "openvino" else "openvino"
    model = build_tiny_cross_encoder(tmp_path / "model", seed=1)
    first = CrossEncoderScorer(model, backend=backend, precision="fp32")
    first.score(PAIRS[:2])
    second = CrossEncoderScorer(model, backend=backend, precision="fp32")
    second.score(PAIRS[:2])
    assert len(export_calls) == 1, "the export is reused"
    assert second.export_folder == first.export_folder
    beside = CrossEncoderScorer(model, backend=other, precision="fp32")
    beside.score(PAIRS[:2])
    assert len(export_calls) == 2, "each backend has its own export"
    assert beside.export_folder != first.export_folder

    build_tiny_cross_encoder(model, seed=2)  # new weights in the same folder
    changed = CrossEncoderScorer(model, backend=backend, precision="fp32")
    changed_scores = changed.score(PAIRS)
    assert len(export_calls) == 3
    assert changed.export_folder != first.export_folder
    expected = CrossEncoderScorer(model, precision="fp32").score(PAIRS)
    assert np.max(np.abs(np.array(changed_scores) - np.array(expected))) < 1e-3


@pytest.mark.parametrize(
    ("backend", "damage"),
    [("onnx", "truncate"), ("openvino", "no_manifest"), ("openvino", "bad_manifest"), ("openvino", "truncate")],
)
def test_a_damaged_export_is_rebuilt_with_a_warning(
    tiny_model: Path,
    cache_home: Path,
    export_calls: list,
    caplog: pytest.LogCaptureFixture,
    backend: str,
    damage: str,
) -> None:
    first = CrossEncoderScorer(tiny_model, backend=backend, precision="fp32")
    expected = first.score(PAIRS)
    folder = first.export_folder
    assert folder is not None
    if damage == "truncate":  # the weights: OpenVINO's .bin, or the ONNX file itself
        damaged = folder / exported.EXPORT_FILES[backend][-1]
        data = damaged.read_bytes()
        damaged.write_bytes(data[: len(data) // 2])
    elif damage == "no_manifest":
        (folder / "manifest.json").unlink()
    else:
        (folder / "manifest.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="haystack_crossrerank.exported.export"):
        again = CrossEncoderScorer(tiny_model, backend=backend, precision="fp32")
        scores = again.score(PAIRS)
    assert len(export_calls) == 2
    assert "damaged" in caplog.text and str(folder) in caplog.text
    assert np.allclose(scores, expected, atol=1e-6)
    assert not list(cache_home.glob(".*")), "no temporary folder is left behind"


@pytest.mark.parametrize("backend", EXPORTED)
def test_int8_needs_a_calibration_first(tiny_model: Path, cache_home: Path, backend: str) -> None:
    with pytest.raises(ValueError, match=rf"no calibrated int8 {backend} model yet.*crossrerank quantize --backend"):
        CrossEncoderScorer(tiny_model, backend=backend, precision="int8").load()


@pytest.mark.parametrize("backend", EXPORTED)
def test_int8_calibration_passes_and_is_used(tiny_model: Path, cache_home: Path, backend: str) -> None:
    exact = CrossEncoderScorer(tiny_model, backend=backend, precision="fp32")
    exact_scores = exact.score(PAIRS)
    report = exact.calibrate_int8(random_pairs(64, seed=0), random_pairs(64, seed=1))
    assert report.passed and report.spearman >= exported.INT8_MIN_SPEARMAN
    assert report.calibration_pairs == 64 and report.held_pairs == 64
    assert exact.precision == "fp32", "a scorer asked for fp32 keeps scoring in fp32"
    # Attention stays in floating point (ONNX: its 4 MatMuls between activations; OpenVINO: the fused
    # operations, fed by no FakeQuantize), while the MatMuls with weights are quantized.
    assert exact.export_folder is not None
    if backend == "onnx":
        assert len(exported.activation_matmuls(exported.model_file(exact.export_folder, "onnx"))) == 4
    else:
        import openvino

        graph = openvino.Core().read_model(str(exported.int8_path(exact.export_folder, "openvino")))
        fake_quantized = {op.get_friendly_name() for op in graph.get_ops() if op.get_type_name() == "FakeQuantize"}
        attention = [op for op in graph.get_ops() if op.get_type_name() == "ScaledDotProductAttention"]
        # Layer 0: the inputs of Q/K/V, attention output, FFN in and out; the first-token layer 1: of K/V.
        assert len(fake_quantized) >= 5 and len(attention) == 2
        for op in attention:
            sources = {port.get_node().get_friendly_name() for port in op.input_values()}
            assert not sources & fake_quantized
        # The last layer runs on the first token only: its keys and values (every token) are int8, its query,
        # attention output and feed-forward projections and the head (one token) stay in floating point.
        fed = {
            op.get_friendly_name().split("/")[0].removeprefix("__module."): any(
                port.get_node().get_type_name() == "FakeQuantize" for port in op.input_values()
            )
            for op in graph.get_ops()
            if op.get_type_name() == "MatMul"
        }
        last = "bert.encoder.layer.1.first_token_layer."
        assert fed[last + "attention.self.key"] and fed[last + "attention.self.value"]
        assert fed["bert.encoder.layer.0.attention.self.query"] and fed["bert.encoder.layer.0.output.dense"]
        floating = ["attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense"]
        assert not any(fed[last + name] for name in floating)
        assert not fed["bert.pooler.dense"] and not fed["classifier"]

    quantized = CrossEncoderScorer(tiny_model, backend=backend, precision="int8")
    int8_scores = quantized.score(PAIRS)
    assert quantized.precision == "int8"
    assert quantized.int8_report == report
    assert int8_scores != exact_scores, "the int8 model really runs"
    assert exported.spearman(int8_scores, exact_scores) >= 0.9


def test_int8_gate_refuses_and_falls_back_to_fp32(
    tiny_model: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exact = CrossEncoderScorer(tiny_model, backend="onnx")
    exact_scores = exact.score(PAIRS)
    # No real int8 model misses 0.99 on the tiny model reliably, so the bar is put out of reach instead.
    monkeypatch.setattr(int8, "INT8_MIN_SPEARMAN", 1.5)
    report = exact.calibrate_int8(PAIRS[:6], PAIRS[6:12])
    assert not report.passed
    assert not exported.int8_path(exact.export_folder, "onnx").exists()  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="haystack_crossrerank.exported.int8"):
        fallback = CrossEncoderScorer(tiny_model, backend="onnx", precision="int8")
        scores = fallback.score(PAIRS)
    assert fallback.precision == "fp32"
    assert f"{report.spearman:.4f}" in caplog.text and "refused" in caplog.text
    assert np.allclose(scores, exact_scores, atol=1e-6)


def test_calibration_needs_the_onnx_backend_and_pairs(tiny_model: Path, cache_home: Path) -> None:
    with pytest.raises(ValueError, match="needs backend 'onnx' or 'openvino', but this scorer's backend is 'torch'"):
        CrossEncoderScorer(tiny_model, backend="torch").calibrate_int8(PAIRS, PAIRS)
    with pytest.raises(ValueError, match=r"backend is 'torch' \('auto' resolved to it here\)"):
        CrossEncoderScorer(tiny_model, precision="fp16").calibrate_int8(PAIRS, PAIRS)
    with pytest.raises(ValueError, match="needs calibration and held-out pairs, but got 0 and 3"):
        CrossEncoderScorer(tiny_model, backend="onnx").calibrate_int8([], PAIRS[:3])


@pytest.mark.parametrize(("backend", "module"), [("onnx", "onnxruntime"), ("openvino", "openvino")])
def test_missing_runtime_names_the_extra(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, backend: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"pip install 'haystack-crossrerank\[{backend}\]'"):
        CrossEncoderScorer(tiny_model, backend=backend).load()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"backend": "tensorrt"},
            r"`backend` must be one of \['auto', 'torch', 'onnx', 'openvino'\], but got 'tensorrt'",
        ),
        ({"backend": "onnx", "precision": "bf16"}, r"backend 'onnx' takes precision .* but got 'bf16'"),
        ({"backend": "openvino", "precision": "fp16"}, r"backend 'openvino' takes precision .* but got 'fp16'"),
        ({"backend": "onnx", "model_kwargs": {"num_labels": 1}}, r"takes no `model_kwargs`, but got \['num_labels'\]"),
    ],
)
def test_bad_backend_settings_are_refused(tiny_model: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CrossEncoderScorer(tiny_model, **kwargs)
    with pytest.raises(ValueError, match=message):
        CrossEncoderRanker(model=str(tiny_model), **kwargs)


@pytest.mark.parametrize("backend", EXPORTED)
def test_ranker_round_trip_ranks_like_torch(tiny_model: Path, cache_home: Path, backend: str) -> None:
    documents = [Document(id=str(i), content=text) for i, (_, text) in enumerate(PAIRS[:6])]
    ranker = CrossEncoderRanker(model=str(tiny_model), backend=backend, precision="fp32", top_k=6)
    data = ranker.to_dict()
    assert data["init_parameters"]["backend"] == backend
    restored = CrossEncoderRanker.from_dict(data)
    onnx_docs = restored.run(query="what is the capital of france", documents=documents)["documents"]
    torch_docs = CrossEncoderRanker(model=str(tiny_model), precision="fp32", top_k=6).run(
        query="what is the capital of france", documents=documents
    )["documents"]
    assert [d.id for d in onnx_docs] == [d.id for d in torch_docs]
    assert np.allclose([d.score for d in onnx_docs], [d.score for d in torch_docs], atol=1e-4)


def test_model_fingerprint_needs_weights(tmp_path: Path) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"config.json and a weight file"):
        exported.model_fingerprint(folder)


def test_spearman_handles_ties_and_constants() -> None:
    assert exported.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert exported.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert exported.spearman([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(5 / 6, abs=1e-9)  # scipy.stats.spearmanr
    assert np.isnan(exported.spearman([1, 1, 1], [1, 2, 3]))


def test_openvino_auto_precision_follows_the_cpu(tiny_model: Path, cache_home: Path) -> None:
    from haystack_crossrerank.utils.hardware import cpu_has_native_bf16

    scorer = CrossEncoderScorer(tiny_model, backend="openvino")
    scores = scorer.score(PAIRS)
    assert scorer.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    exact = CrossEncoderScorer(tiny_model, precision="fp32").score(PAIRS)
    assert exported.spearman(scores, exact) >= 0.99
    assert CrossEncoderScorer(tiny_model, backend="onnx").precision is None  # not loaded yet
    onnx_scorer = CrossEncoderScorer(tiny_model, backend="onnx")
    onnx_scorer.load()
    assert onnx_scorer.precision == "fp32"


def test_both_backends_keep_their_own_int8_model(tiny_model: Path, cache_home: Path) -> None:
    calibration, held = random_pairs(64, seed=0), random_pairs(64, seed=1)
    for backend in EXPORTED:  # the second calibration must not remove the first one's files
        assert (
            CrossEncoderScorer(tiny_model, backend=backend, precision="fp32").calibrate_int8(calibration, held).passed
        )
    for backend in EXPORTED:
        scorer = CrossEncoderScorer(tiny_model, backend=backend, precision="int8")
        scorer.load()
        assert scorer.precision == "int8", backend


@pytest.mark.parametrize(
    ("device", "precision", "model_kwargs", "installed", "expected"),
    [
        ("cpu", "auto", None, True, "openvino"),
        ("cpu", "int8", None, True, "openvino"),
        ("cpu", "auto", None, False, "torch"),  # openvino not installed
        ("cuda", "auto", None, True, "torch"),
        ("cpu", "fp16", None, True, "torch"),  # a precision OpenVINO does not take
        ("cpu", "auto", {"attn_implementation": "eager"}, True, "torch"),  # an export takes no model arguments
    ],
)
def test_auto_backend_resolution(
    monkeypatch: pytest.MonkeyPatch,
    device: str,
    precision: str,
    model_kwargs: dict | None,
    installed: bool,
    expected: str,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" and not installed else real(name, *a)
    )
    assert exported.resolve_backend("auto", device, precision, model_kwargs) == expected
    assert exported.resolve_backend("torch", device, precision, model_kwargs) == "torch"


def test_default_scorer_runs_openvino_on_the_cpu_with_small_padded_batches(tiny_model: Path, cache_home: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model)
    assert scorer.backend == "auto"
    scores = scorer.score(PAIRS)
    assert scorer.backend == "openvino" and scorer.batch_size == 8
    exact = CrossEncoderScorer(tiny_model, backend="torch", precision="fp32").score(PAIRS)
    assert exported.spearman(scores, exact) >= 0.99
    widths = {features["input_ids"].shape[1] for _, features in scorer._batches(PAIRS, 4, scorer.max_length)}
    assert widths and all(width % 16 == 0 for width in widths), widths
    # torch keeps exact widths: padding only helps runtimes that prepare kernels per shape.
    torch_scorer = CrossEncoderScorer(tiny_model, backend="torch")
    torch_scorer.load()
    torch_widths = {features["input_ids"].shape[1] for _, features in torch_scorer._batches(PAIRS, 4, 64)}
    assert any(width % 16 for width in torch_widths), torch_widths


def _tiny_classifier(kind: str):  # type: ignore[no-untyped-def]
    """A random 2-layer one-logit classifier: BERT, RoBERTa, or another layout (DistilBERT, MegatronBERT)."""
    import torch
    import transformers

    torch.manual_seed(0)
    size = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "num_labels": 1}
    if kind == "megatron-bert":  # BERT's module names, but LayerNorm before attention
        config = transformers.MegatronBertConfig(**size, num_hidden_layers=2, vocab_size=50)
        return transformers.MegatronBertForSequenceClassification(config).eval()
    if kind == "distilbert":
        shape = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}
        config = transformers.DistilBertConfig(vocab_size=50, num_labels=1, **shape)
        return transformers.DistilBertForSequenceClassification(config).eval()
    layers = {"num_hidden_layers": 2, "initializer_range": 0.2, "vocab_size": 50}
    if kind in ("roberta", "xlm-roberta"):
        config = transformers.RobertaConfig(**size, **layers, pad_token_id=1, max_position_embeddings=70)
        if kind == "xlm-roberta":
            config = transformers.XLMRobertaConfig(**config.to_dict())
            return transformers.XLMRobertaForSequenceClassification(config).eval()
        return transformers.RobertaForSequenceClassification(config).eval()
    if kind == "electra":
        config = transformers.ElectraConfig(**size, **layers, embedding_size=16)
        return transformers.ElectraForSequenceClassification(config).eval()
    return transformers.BertForSequenceClassification(transformers.BertConfig(**size, **layers)).eval()


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta", "electra"])
def test_first_token_last_layer_gives_the_same_logits(kind: str) -> None:
    """The exports compute the last layer for the first token only (the head reads nothing else): the same
    logits as the whole model, on a padded batch of different lengths."""
    import torch

    full = _tiny_classifier(kind)
    cut = _tiny_classifier(kind)
    assert export.first_token_last_layer(cut) is True
    assert export.first_token_last_layer(cut) is True  # already done: left as it is
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 50, (5, 24), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row, length in enumerate([24, 20, 9, 3, 15]):
        attention_mask[row, length:] = 0
        input_ids[row, length:] = 1 if "roberta" in kind else 0
    with torch.inference_mode():
        expected = full(input_ids=input_ids, attention_mask=attention_mask).logits
        got = cut(input_ids=input_ids, attention_mask=attention_mask).logits
        unpadded = cut(input_ids=input_ids[:1], attention_mask=attention_mask[:1]).logits
    assert got.shape == expected.shape == (5, 1)
    assert len({round(v, 3) for v in expected.view(-1).tolist()}) == 5  # distinct logits: a real comparison
    assert torch.allclose(got, expected, atol=1e-5), (got.view(-1), expected.view(-1))
    assert torch.allclose(unpadded, expected[:1], atol=1e-5)
    # The layer takes the model's 4-D mask, or a plain (batch, keys) one: the same rows either way.
    layer, hidden = cut.base_model.encoder.layer[-1], torch.randn(5, 24, 32, generator=generator)
    with torch.inference_mode():
        plain = layer(hidden, attention_mask)
        four_d = layer(hidden, attention_mask.bool()[:, None, None, :].expand(5, 1, 24, 24))
    assert plain.shape == (5, 1, 32) and torch.allclose(plain, four_d, atol=1e-6)


@pytest.mark.parametrize("kind", ["distilbert", "megatron-bert"])
def test_first_token_last_layer_leaves_other_layouts_whole(kind: str) -> None:
    import torch

    model = _tiny_classifier(kind)
    before = [name for name, _ in model.named_modules()]
    assert export.first_token_last_layer(model) is False
    assert [name for name, _ in model.named_modules()] == before
    with torch.inference_mode():
        assert model(input_ids=torch.tensor([[3, 4, 5]])).logits.shape == (1, 1)


def test_exports_record_the_first_token_last_layer(tiny_model: Path, cache_home: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, backend="openvino", precision="fp32")
    scorer.load()
    assert scorer.export_folder is not None
    manifest = json.loads((scorer.export_folder / "manifest.json").read_text())
    assert manifest["first_token_last_layer"] is True


def test_first_token_matmuls_are_the_one_token_ones() -> None:
    last = "__module.bert.encoder.layer.5.first_token_layer."
    names = [
        "__module.bert.encoder.layer.4.attention.self.query/aten::linear/MatMul",
        last + "attention.self.query/aten::linear/MatMul",
        last + "attention.self.key/aten::linear/MatMul",
        last + "attention.self.value/aten::linear/MatMul",
        last + "attention.output.dense/aten::linear/MatMul",
        last + "intermediate.dense/aten::linear/MatMul",
        last + "output.dense/aten::linear/MatMul",
        "__module.bert.pooler.dense/aten::linear/MatMul",
        "__module.classifier/aten::linear/MatMul",
    ]
    assert int8.first_token_matmuls(names) == [names[1], *names[4:]]
    whole = [name.replace("first_token_layer.", "") for name in names]
    assert int8.first_token_matmuls(whole) == [], "an export without the first-token layer keeps every MatMul"


def _fed_by_fake_quantize(path: Path) -> dict[str, bool]:
    """Each weight MatMul of an OpenVINO model (by its module name): is any input a FakeQuantize?"""
    import openvino

    graph = openvino.Core().read_model(str(path))
    return {
        op.get_friendly_name().split("/")[0].removeprefix("__module."): any(
            port.get_node().get_type_name() == "FakeQuantize" for port in op.input_values()
        )
        for op in graph.get_ops()
        if op.get_type_name() == "MatMul"
    }


def test_quantize_openvino_keeps_the_matmuls_asked_for_in_floating_point(tiny_model: Path, cache_home: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, backend="openvino", precision="fp32")
    scorer.load()
    assert scorer.export_folder is not None
    source = exported.model_file(scorer.export_folder, "openvino")
    calibration = [features for _, features in scorer._batches(random_pairs(32, seed=0), 16, scorer.max_length)]
    ffn_out = "bert.encoder.layer.0.output.dense"

    kept = int8.quantize_openvino(source, cache_home / "plain" / "model.int8.xml", calibration)
    assert _fed_by_fake_quantize(cache_home / "plain" / "model.int8.xml")[ffn_out]
    assert not any(ffn_out + "/" in name for name in kept)

    target = cache_home / "ffn" / "model.int8.xml"
    kept = int8.quantize_openvino(source, target, calibration, keep_float=lambda name: ffn_out + "/" in name)
    fed = _fed_by_fake_quantize(target)
    assert not fed[ffn_out], "the MatMul that keep_float accepts stays in floating point"
    assert fed["bert.encoder.layer.0.intermediate.dense"] and fed["bert.encoder.layer.0.attention.self.query"]
    assert [name for name in kept if ffn_out + "/" in name] == [f"__module.{ffn_out}/aten::linear/MatMul"]
    assert any("classifier" in name for name in kept), "with the first-token layer, the head stays in floating point"


def test_quantize_openvino_passes_the_smooth_quant_strength(
    tiny_model: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nncf

    scorer = CrossEncoderScorer(tiny_model, backend="openvino", precision="fp32")
    scorer.load()
    assert scorer.export_folder is not None
    source = exported.model_file(scorer.export_folder, "openvino")
    seen: list[object] = []

    def recording(model, dataset, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["advanced_parameters"])
        return model

    monkeypatch.setattr(nncf, "quantize", recording)
    int8.quantize_openvino(source, cache_home / "a" / "m.xml", [], smooth_quant_alpha=-1.0)
    int8.quantize_openvino(source, cache_home / "b" / "m.xml", [], smooth_quant_alpha=0.5)
    int8.quantize_openvino(source, cache_home / "c" / "m.xml", [])
    assert seen[0].smooth_quant_alphas.matmul == -1.0  # type: ignore[attr-defined]
    assert seen[1].smooth_quant_alphas.matmul == 0.5  # type: ignore[attr-defined]
    assert seen[2] is None, "without a strength, NNCF's own default applies"


def _tiny_beir(folder: Path, size: int, sentences: int = 1) -> dict[str, str]:
    """A BEIR folder of `size` train queries and documents (each of `sentences` sentences); returns the queries."""
    rng = random.Random(3)
    (folder / "qrels").mkdir(parents=True)
    docs = {f"d{i}": " ".join(" ".join(rng.choices(WORDS, k=12)) + " ." for _ in range(sentences)) for i in range(size)}
    queries = {f"q{i}": f"claim {i} " + " ".join(rng.choices(WORDS, k=3)) for i in range(size)}
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs.items())
    )
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    rows = "".join(f"q{i}\td{i}\t1\n" for i in range(size))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return queries


def test_calibration_query_ids_are_the_queries_the_calibration_pairs_come_from(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    queries = _tiny_beir(folder, 30)

    drawn = quantize.calibration_query_ids(queries, count=8, depth=2)
    assert len(drawn) == 2 * 8 // 2 + 8 and len(set(drawn)) == len(drawn)
    assert drawn != quantize.calibration_query_ids(queries, count=8, depth=2, seed=7), "the seed decides the draw"
    calibration, held = quantize.beir_calibration_pairs(folder, count=8, depth=2)
    used = {query for query, _ in calibration + held}
    assert used <= {queries[q] for q in drawn}
    assert len(used) > 1


def test_distillation_pairs_leave_out_the_reserved_queries(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    queries = _tiny_beir(folder, quantize.RESERVED_QUERIES + 12, sentences=8)
    reserved = set(quantize._shuffled(queries, 42)[: quantize.RESERVED_QUERIES])
    assert set(quantize.calibration_query_ids(queries)) < reserved, "the calibration and the gate draw from the front"
    free = quantize.distillation_query_ids(queries)
    assert len(free) == 12 and not set(free) & reserved
    # A calibration larger than the reserved front pushes distillation past its own queries.
    assert not set(quantize.distillation_query_ids(queries, count=1024)) & set(
        quantize.calibration_query_ids(queries, count=1024)
    )

    pairs = quantize.beir_distillation_pairs(folder, documents=2, windows=3, depth=5)
    texts = {queries[q] for q in free}
    assert {query for query, _ in pairs} == texts
    # Per query: 2 candidates, each as the whole text and 3 of its sentence windows.
    assert len(pairs) == 12 * 2 * 4
    few = quantize.beir_distillation_pairs(folder, queries=3, documents=1, windows=0, depth=5)
    assert len(few) == 3 and len({query for query, _ in few}) == 3
    assert few == quantize.beir_distillation_pairs(folder, queries=3, documents=1, windows=0, depth=5), "seeded draws"
    with pytest.raises(ValueError, match="documents >= 1.*documents=0"):
        quantize.beir_distillation_pairs(folder, documents=0)
    small = tmp_path / "small"
    _tiny_beir(small, 20)
    with pytest.raises(ValueError, match="none after the 150 reserved"):
        quantize.beir_distillation_pairs(small)


@pytest.mark.slow
def test_int8_distillation_trains_is_gated_and_is_used(tiny_model: Path, cache_home: Path) -> None:
    from haystack_crossrerank.exported.distil import DistilSettings

    exact = CrossEncoderScorer(tiny_model, backend="openvino", precision="fp32")
    exact_scores = exact.score(PAIRS)
    train = random_pairs(8, seed=2)  # one batch, seen every epoch: its loss must fall
    settings = DistilSettings(epochs=12, learning_rate=3e-5, warmup_ratio=0.0)
    report = exact.calibrate_int8(
        random_pairs(64, seed=0), random_pairs(64, seed=1), distil_pairs=train, distil_settings=settings
    )
    assert report.method == "distilled" and report.distillation is not None
    assert report.distillation["steps"] == 12 and report.distillation["pairs"] == 8
    assert report.distillation["loss_last_tenth"] < 0.8 * report.distillation["loss_first_tenth"], report.distillation
    assert report.passed, report
    assert exact.export_folder is not None
    stored = exported.int8_report(exact.export_folder, "openvino")
    assert stored == report, "the report, distillation figures included, is stored beside the export"

    # The same placement as post-training int8: weight MatMuls quantized, attention and (first-token layer)
    # the one-token projections and the head in floating point.
    fed = _fed_by_fake_quantize(exported.int8_path(exact.export_folder, "openvino"))
    fed = {name.removeprefix("__module."): value for name, value in fed.items()}
    last = "bert.encoder.layer.1.first_token_layer."
    assert fed["bert.encoder.layer.0.attention.self.query"] and fed["bert.encoder.layer.0.output.dense"]
    assert fed["bert.encoder.layer.0.intermediate.dense"] and fed["bert.encoder.layer.0.attention.output.dense"]
    assert fed[last + "attention.self.key"] and fed[last + "attention.self.value"]
    for name in ("attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense"):
        assert not fed[last + name], name
    assert not fed["bert.pooler.dense"] and not fed["classifier"]

    quantized = CrossEncoderScorer(tiny_model, backend="openvino", precision="int8")
    int8_scores = quantized.score(PAIRS)
    assert quantized.precision == "int8" and quantized.int8_report == report
    assert int8_scores != exact_scores, "the int8 model really runs"
    assert exported.spearman(int8_scores, exact_scores) >= 0.9


def test_distillation_needs_openvino_and_pairs(tiny_model: Path, cache_home: Path) -> None:
    from haystack_crossrerank.exported.distil import DistilSettings

    onnx = CrossEncoderScorer(tiny_model, backend="onnx", precision="fp32")
    with pytest.raises(ValueError, match="distillation makes OpenVINO models.*backend is 'onnx'"):
        onnx.calibrate_int8(PAIRS[:6], PAIRS[6:12], distil_pairs=PAIRS[:4])
    openvino = CrossEncoderScorer(tiny_model, backend="openvino", precision="fp32")
    with pytest.raises(ValueError, match=r"distil_pairs=\[\]"):
        openvino.calibrate_int8(PAIRS[:6], PAIRS[6:12], distil_pairs=[])
    with pytest.raises(ValueError, match="`distil_batch_size` must be > 0, but got 0"):
        openvino.calibrate_int8(PAIRS[:6], PAIRS[6:12], distil_pairs=PAIRS[:4], distil_batch_size=0)
    with pytest.raises(ValueError, match="epochs must be at least 1, but got 0"):
        DistilSettings(epochs=0)
    with pytest.raises(ValueError, match="learning_rate must be a positive number, but got -1"):
        DistilSettings(learning_rate=-1)
    with pytest.raises(ValueError, match=r"warmup_ratio must be in \[0, 1\), but got 1"):
        DistilSettings(warmup_ratio=1)


def test_cli_quantize_distils_only_for_openvino(tiny_model: Path, tmp_path: Path) -> None:
    from haystack_crossrerank.commands.cli import main

    with pytest.raises(SystemExit, match="--distil makes OpenVINO int8 models only, but --backend is onnx"):
        main(["quantize", "--backend", "onnx", "--distil", "--model", str(tiny_model), "--data-dir", str(tmp_path)])
