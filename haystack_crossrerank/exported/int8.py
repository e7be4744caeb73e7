"""Static, calibrated int8 for the exported runtimes, behind an accuracy gate.

Activation ranges come from in-domain pairs, and the MatMuls with weights are quantized, while attention
stays in floating point: the two attention MatMuls between activations (scores and values) in the ONNX graph,
and OpenVINO's fused `ScaledDotProductAttention`. Quantizing the attention MatMuls dropped OpenVINO's
Spearman against fp32 from 0.9935 to 0.97 (ONNX graph); quantizing the fused operation's inputs made it
slower, not faster (35.0 against 58.3 pairs/s, 32 pairs of 340 tokens). A gate scores held-out pairs with both
models and refuses the int8 copy when the Spearman correlation of its scores against fp32 is below
:data:`INT8_MIN_SPEARMAN`. OpenVINO quantizes with NNCF (transformer preset), and can then train the int8 model
against the fp32 one (:mod:`haystack_crossrerank.exported.distil`; `crossrerank quantize` does by default); ONNX
Runtime quantizes with its static quantizer (QOperator, per-channel weights).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from haystack_crossrerank.exported.distil import DistilStats
from haystack_crossrerank.exported.export import FIRST_TOKEN_SCOPE, _quiet, model_file, require_runtime
from haystack_crossrerank.exported.runtime import RuntimeSession
from haystack_crossrerank.utils.extras import require

logger = logging.getLogger(__name__)

INT8_MIN_SPEARMAN = 0.99
# Each backend's int8 files: the first is the model file the runtime opens. One export holds both backends'.
_INT8_FILES = {"onnx": ("model.int8.onnx",), "openvino": ("model.int8.xml", "model.int8.bin")}


@dataclass
class Int8Report:
    """The outcome of a calibration: kept or refused, and on what evidence."""

    passed: bool
    spearman: float
    max_abs_logit_diff: float
    calibration_pairs: int
    held_pairs: int
    calibration_sha256: str
    op_types: list[str]
    seconds: float
    # "calibrated" (post-training quantization) or "distilled" (quantization-aware distillation); reports
    # written before distillation existed have no field and were calibrated.
    method: str = "calibrated"
    distillation: dict[str, float] | None = None  # DistilStats, for a distilled model


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """
    Spearman's rank correlation (average ranks for ties), without scipy.

    :param a: Scores.
    :param b: Scores of the same items.
    :returns: The correlation, or `nan` when either side is constant or there are fewer than two items.
    """
    x, y = _average_ranks(np.asarray(a, dtype=np.float64)), _average_ranks(np.asarray(b, dtype=np.float64))
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def pairs_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """A sha256 of pairs, to record which calibration data made an int8 model."""
    digest = hashlib.sha256()
    for query, text in pairs:
        digest.update(query.encode())
        digest.update(b"\x00")
        digest.update(text.encode())
        digest.update(b"\x01")
    return digest.hexdigest()


def int8_report(export: Path, backend: str) -> Int8Report | None:
    """
    The calibration report stored beside an export for a backend, or `None` if it was never calibrated (or
    the int8 model it describes is gone).

    :param export: The export's cache folder.
    :param backend: `"onnx"` or `"openvino"`.
    :returns: The report.
    """
    path = export / f"int8-{backend}.json"
    if not path.is_file():
        return None
    try:
        report = Int8Report(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:
        logger.warning("Ignoring the unreadable int8 report %s (%s)", path, error)
        return None
    if report.passed and not int8_path(export, backend).is_file():
        return None
    return report


def int8_path(export: Path, backend: str) -> Path:
    """Where the int8 model of an export lives, for a backend."""
    return export / _INT8_FILES[backend][0]


def int8_model(export: Path, backend: str, model_name: str) -> tuple[Path, str, Int8Report]:
    """
    The model file a scorer asked for int8 runs: the calibrated int8 copy, or the exact fp32 export with a
    warning when the gate refused the copy.

    :param export: The export's cache folder.
    :param backend: `"onnx"` or `"openvino"`.
    :param model_name: The model, for messages.
    :returns: (file, precision it runs at, the calibration report).
    :raises ValueError: If the model was never calibrated for this backend.
    """
    report = int8_report(export, backend)
    if report is None:
        raise ValueError(
            f"Cross-encoder '{model_name}' has no calibrated int8 {backend} model yet: calibrate one with "
            f"`crossrerank quantize --backend {backend} --model {model_name}` (or CrossEncoderScorer.calibrate_int8), "
            "which also checks it against fp32"
        )
    if report.passed:
        return int8_path(export, backend), "int8", report
    logger.warning(
        "The int8 %s model of '%s' was refused at calibration: the Spearman correlation of its scores against fp32 "
        "was %.4f, below %.2f; scoring with the exact fp32 model instead",
        backend,
        model_name,
        report.spearman,
        INT8_MIN_SPEARMAN,
    )
    return model_file(export, backend), "fp32", report


def activation_matmuls(onnx_path: Path) -> list[str]:
    """
    The names of the MatMul nodes whose two inputs are both activations (attention scores and values): the
    ones that int8 leaves in floating point.

    :param onnx_path: An ONNX file.
    :returns: Node names.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {tensor.name for tensor in graph.initializer}
    weights |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


def calibrate_int8(
    export: Path,
    backend: str,
    calibration: list[dict[str, np.ndarray]],
    held: list[tuple[np.ndarray, dict[str, np.ndarray]]],
    *,
    counts: tuple[int, int, str],
    threads: int | None = None,
    distil: Callable[[Path, list[dict[str, np.ndarray]]], DistilStats] | None = None,
) -> Int8Report:
    """
    Quantize an export statically to int8 for a backend and gate it against that backend's fp32 model.

    :param export: The export's cache folder (from :func:`export_model` for the same backend).
    :param backend: `"onnx"` (ONNX Runtime's static quantizer, QOperator format, per-channel weights) or
        `"openvino"` (NNCF, transformer preset).
    :param calibration: Batches of model inputs whose activation ranges set the quantization scales.
    :param held: (positions, inputs) batches of other pairs, scored by both models for the gate.
    :param counts: (calibration pairs, held pairs, calibration sha256), recorded in the report.
    :param threads: Threads for the gate's sessions.
    :param distil: OpenVINO only: instead of post-training quantization, this makes the int8 model (given the
        target `.xml` and the calibration batches), by quantization-aware distillation
        (:func:`haystack_crossrerank.exported.distil.distil_openvino_int8`). The same gate applies.
    :returns: The report, also written to `int8-<backend>.json`; the int8 model is kept only if it passed.
    :raises ValueError: If `distil` is given for a backend other than OpenVINO.
    """
    if distil is not None and backend != "openvino":
        raise ValueError(f"int8 distillation makes OpenVINO models only, but the backend is {backend!r}")
    started = time.perf_counter()
    source = model_file(export, backend)
    work = export / f".int8-{backend}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    if backend == "openvino":
        require("nncf", "openvino")  # imported before logging is quietened, since it sets its own level on import
    try:
        candidate = work / _INT8_FILES[backend][0]
        stats = None
        with _quiet():
            if distil is not None:
                stats = distil(candidate, calibration)
            elif backend == "openvino":
                quantize_openvino(source, candidate, calibration)
            else:
                _quantize_onnxruntime(source, candidate, calibration, activation_matmuls(source))
        size = sum(len(positions) for positions, _ in held)
        exact, quantized = np.empty(size), np.empty(size)
        for path, precision, out in ((source, "fp32", exact), (candidate, "int8", quantized)):
            session = RuntimeSession(backend, path, precision=precision, threads=threads)
            for positions, features in held:
                out[positions] = session(features)
        rho = spearman(exact, quantized)
        report = Int8Report(
            passed=bool(rho >= INT8_MIN_SPEARMAN),
            spearman=round(rho, 6),
            max_abs_logit_diff=round(float(np.abs(exact - quantized).max()), 6),
            calibration_pairs=counts[0],
            held_pairs=counts[1],
            calibration_sha256=counts[2],
            op_types=["MatMul (weights)"],
            seconds=round(time.perf_counter() - started, 2),
            method="calibrated" if stats is None else "distilled",
            distillation=None if stats is None else asdict(stats),
        )
        for name in _INT8_FILES[backend]:  # this backend's old copy only: the other backend's stays
            (export / name).unlink(missing_ok=True)
        if report.passed:
            for produced in work.iterdir():
                os.replace(produced, export / produced.name)
        (export / f"int8-{backend}.json").write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _quantize_onnxruntime(
    source: Path, target: Path, calibration: list[dict[str, np.ndarray]], keep_float: list[str]
) -> None:
    require("onnx", "onnx")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    quantize_static(
        str(source),
        str(target),
        _Reader(),
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=keep_float,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def openvino_activation_matmuls(model: object) -> list[str]:
    """
    The names of the MatMuls of an OpenVINO model whose two inputs are both activations (attention written
    out as MatMuls, in models whose attention did not convert to one `ScaledDotProductAttention`).

    :param model: An `openvino.Model`.
    :returns: Friendly names of those MatMuls.
    """

    def constant(node: object) -> bool:  # a Constant, or computed from Constants only (e.g. Convert of one)
        kind = node.get_type_name()  # type: ignore[attr-defined]
        inputs = [port.get_node() for port in node.input_values()]  # type: ignore[attr-defined]
        return bool(kind == "Constant" or (kind != "Parameter" and inputs and all(constant(i) for i in inputs)))

    return [
        op.get_friendly_name()
        for op in model.get_ops()  # type: ignore[attr-defined]
        if op.get_type_name() == "MatMul" and not any(constant(port.get_node()) for port in op.input_values())
    ]


def first_token_matmuls(names: list[str]) -> list[str]:
    """
    Of the weight MatMuls' names of an export whose last layer runs on the first token only
    (:func:`haystack_crossrerank.exported.export.first_token_last_layer`), the ones that process one token per
    pair: that layer's query, attention output and feed-forward projections, and the head after the encoder.
    int8 leaves them in floating point: they cost next to nothing (one token), and quantizing them, calibrated on
    first tokens alone, cost nDCG@10 (MiniLM, 30 SciFact queries' windows: 0.3333 against fp32's 0.3582).

    :param names: Operation names (OpenVINO friendly names).
    :returns: The names to keep in floating point; none if the export has no first-token layer.
    """
    if not any(FIRST_TOKEN_SCOPE in name for name in names):
        return []
    keys_values = (".attention.self.key", ".attention.self.value")
    return [
        name
        for name in names
        if (FIRST_TOKEN_SCOPE in name and not any(part in name for part in keys_values)) or ".encoder." not in name
    ]


def quantize_openvino(
    source: Path,
    target: Path,
    calibration: list[dict[str, np.ndarray]],
    *,
    keep_float: Callable[[str], bool] | None = None,
    smooth_quant_alpha: float | None = None,
) -> list[str]:
    """
    Quantize an OpenVINO export to int8 with NNCF (transformer preset), without a gate: what
    :func:`calibrate_int8` runs for OpenVINO, with the knobs that `benchmarks/int8_fidelity.py` compares.
    Attention always stays in floating point, and so do, in an export with the first-token last layer, that
    layer's one-token projections and the head (:func:`first_token_matmuls`). What stays in floating point runs
    at the runtime's inference precision (for int8 models bf16, where the CPU has it: :class:`RuntimeSession`).

    :param source: The fp32 model (`.xml`).
    :param target: Where to write the int8 model (`.xml`, with its `.bin`).
    :param calibration: Batches of model inputs whose activation ranges set the scales.
    :param keep_float: Also keeps in floating point the MatMuls with weights whose OpenVINO names it accepts.
    :param smooth_quant_alpha: NNCF's SmoothQuant strength for MatMuls (negative: off); `None`: NNCF's default
        (0.95). On SciFact train claims, 0.5 and off both changed the rankings more; 1.0 no less.
    :returns: The names of the MatMuls with weights left in floating point.
    :raises ImportError: If OpenVINO or NNCF is missing (naming the `openvino` extra).
    """
    openvino = require_runtime("openvino")
    nncf = require("nncf", "openvino")
    model = openvino.Core().read_model(str(source))
    between_activations = set(openvino_activation_matmuls(model))
    matmuls = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "MatMul"]
    weight_matmuls = [name for name in matmuls if name not in between_activations]
    floating = set(first_token_matmuls(weight_matmuls))
    if keep_float is not None:
        floating |= {name for name in weight_matmuls if keep_float(name)}
    advanced = None
    if smooth_quant_alpha is not None:
        advanced = nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=smooth_quant_alpha)
        )
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),  # batches, all of them
        ignored_scope=nncf.IgnoredScope(
            names=sorted(floating | between_activations),
            types=["ScaledDotProductAttention"],
            validate=False,
        ),
        advanced_parameters=advanced,
    )
    openvino.save_model(quantized, str(target), compress_to_fp16=False)
    return sorted(floating)
