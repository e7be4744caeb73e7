"""Exported backends: the model goes to ONNX once, into a cache, and runs on ONNX Runtime or OpenVINO.

The export cache is a folder per model and settings under `<home>/onnx/`, named by a key made of the model's
own files (config and weights, by content) and the export settings. A folder is written under a temporary
name and renamed when complete, and its `manifest.json` records the sha256 of the ONNX file, so a changed
model gets a new folder and a half-written or damaged one is rebuilt, with a warning.

The exporter is `torch.onnx` with `dynamo=True`. `optimum-onnx` 0.1 would pull transformers 4.57 in place of
the installed 5.x, and the older TorchScript path (`dynamo=False`, 2.5 s against 14 s for MiniLM) traces
transformers 5's attention-mask code into shape-bound constants: its graph gave wrong logits for any input
other than the example it was traced on (MiniLM: 0.327 against torch's -0.737). The graph is saved as
exported (standard operators only), so that both runtimes read the same file; ONNX Runtime applies its own
graph optimisations when it opens it.

Runtimes, measured on this project's 2-core AVX-512 CPU with MiniLM on SciFact abstracts (pairs/s): torch
fp32 12.4-14.2 and bf16 21.6-23.9; ONNX Runtime fp32 9.7 (slower than torch); OpenVINO bf16 25.1-28.8.

int8 is static and calibrated (:func:`calibrate_int8`): activation ranges come from in-domain pairs, and
the MatMuls with weights are quantized, while the two attention MatMuls between activations (scores and
values) stay in floating point: quantizing those dropped OpenVINO's Spearman against fp32 from 0.9935 to
0.97. A gate scores held-out pairs with both models and refuses the int8 copy when the Spearman
correlation of its scores against fp32 is below :data:`INT8_MIN_SPEARMAN`. OpenVINO quantizes with NNCF
(transformer preset; 35 pairs/s at 0.9935 against fp32); ONNX Runtime with its static quantizer, which
measured 0.85 on the same pairs and so is refused by the gate.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from haystack_crossrerank._extras import require
from haystack_crossrerank.paths import home

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("torch", "onnx", "openvino")
# The precisions each exported backend takes ("auto": fp32 on ONNX Runtime; on OpenVINO bf16 where the CPU
# computes it natively, else fp32).
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("auto", "fp32", "int8"),
    "openvino": ("auto", "fp32", "bf16", "int8"),
}
_EXTRA_MODULES = {"onnx": "onnxruntime", "openvino": "openvino"}
INT8_MIN_SPEARMAN = 0.99
OPSET = 18
# Bump when the export or optimisation steps change, so that old cache folders are not reused.
EXPORT_FORMAT = 1
_MODEL_FILES = ("config.json",)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_INT8_FILES = {"onnx": "model.int8.onnx", "openvino": "model.int8.xml"}


# Loggers that report every pass at INFO during export, fusion and quantization ("" is the root logger, which
# onnxruntime.quantization logs to directly).
_CHATTY_LOGGERS = ("", "onnx_ir", "onnxscript", "nncf", "torch.onnx")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.ERROR))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def require_runtime(backend: str) -> Any:
    """
    Import the runtime of an exported backend, or say which extra installs it.

    :param backend: `"onnx"` or `"openvino"`.
    :returns: The `onnxruntime` or `openvino` module.
    :raises ImportError: Naming `pip install 'haystack-crossrerank[onnx]'` (or `[openvino]`).
    """
    return require(_EXTRA_MODULES[backend], backend)


def onnx_cache_root() -> Path:
    """The folder that holds the export cache: `<home>/onnx` (see :func:`haystack_crossrerank.paths.home`)."""
    return home() / "onnx"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(folder: Path) -> str:
    """
    A digest of what the exported graph depends on: the config and the weight files, by content.

    :param folder: A local model folder.
    :returns: A sha256 hex digest.
    :raises FileNotFoundError: If the folder has no config.json or no weight file.
    """
    files = [folder / name for name in _MODEL_FILES if (folder / name).is_file()]
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files or not weights:
        raise FileNotFoundError(
            f"'{folder}' must hold config.json and a weight file (*.safetensors or *.bin) to be exported to ONNX"
        )
    digest = hashlib.sha256()
    for path in files + weights:
        digest.update(path.name.encode())
        digest.update(_sha256(path).encode())
    return digest.hexdigest()


def local_model_folder(model: str, token: str | None = None) -> Path:
    """
    The local folder of a model: the path itself, or the hub snapshot (downloaded once, as transformers does).

    :param model: A local folder or a hub id.
    :param token: A Hugging Face token for private models.
    :returns: The folder.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    return Path(snapshot_download(model, token=token, allow_patterns=patterns))


@dataclass(frozen=True)
class ExportSettings:
    """What, besides the model, decides the exported graph (part of the cache key)."""

    opset: int = OPSET
    format: int = EXPORT_FORMAT
    torch_version: str = ""

    @classmethod
    def current(cls) -> ExportSettings:
        import torch

        return cls(torch_version=torch.__version__)


def cache_folder(folder: Path, settings: ExportSettings, root: Path | None = None) -> Path:
    """
    The cache folder for a model folder and export settings.

    :param folder: The local model folder.
    :param settings: The export settings.
    :param root: The cache root; default :func:`onnx_cache_root`.
    :returns: `<root>/<model folder name>-<key>`.
    """
    key = hashlib.sha256(
        (model_fingerprint(folder) + json.dumps(asdict(settings), sort_keys=True)).encode()
    ).hexdigest()[:20]
    return (root or onnx_cache_root()) / f"{folder.name}-{key}"


def _valid_export(target: Path) -> str | None:
    """`None` if `target` holds a complete export, else why not."""
    manifest_path = target / "manifest.json"
    if not manifest_path.is_file():
        return "manifest.json is missing"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = manifest["onnx_sha256"]
    except (ValueError, KeyError, TypeError) as error:
        return f"manifest.json is unreadable ({error})"
    onnx_file = target / "model.onnx"
    if not onnx_file.is_file():
        return "model.onnx is missing"
    if _sha256(onnx_file) != expected:
        return "model.onnx does not match the sha256 in manifest.json"
    return None


def export_onnx(
    load_model: Callable[[], Any],
    folder: Path,
    *,
    example: dict[str, Any],
    root: Path | None = None,
) -> Path:
    """
    Export a loaded model to ONNX into the cache, or reuse a complete export of the same files and settings.

    :param load_model: Returns the `transformers` model (fp32, eval mode) of `folder`; called only when there is
        no usable export, so that a cache hit never loads the torch weights.
    :param folder: The local model folder (for the cache key).
    :param example: Example inputs (`input_ids`, `attention_mask`, maybe `token_type_ids`) as torch tensors.
    :param root: The cache root; default :func:`onnx_cache_root`.
    :returns: The cache folder, holding `model.onnx` and `manifest.json`.
    """
    settings = ExportSettings.current()
    target = cache_folder(folder, settings, root)
    problem = _valid_export(target) if target.exists() else "absent"
    if problem is None:
        logger.info("Reusing the ONNX export in %s", target)
        return target
    if problem != "absent":
        logger.warning("The ONNX export in %s is damaged (%s); exporting again", target, problem)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        started = time.perf_counter()
        _export_to(load_model(), example, work / "model.onnx")
        manifest = {
            "model": str(folder),
            "settings": asdict(settings),
            "inputs": list(example),
            "onnx_sha256": _sha256(work / "model.onnx"),
            "export_seconds": round(time.perf_counter() - started, 2),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    logger.info("Exported '%s' to ONNX in %s (%.1f s)", folder, target, manifest["export_seconds"])
    return target


def _max_positions(config: Any) -> int:
    positions = getattr(config, "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 2 else 512


def _export_to(model: Any, example: dict[str, Any], path: Path) -> None:
    """Write the ONNX graph of a model to `path`, with dynamic batch and sequence axes."""
    import warnings

    import torch

    names = list(example)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=_max_positions(model.config))
    with _quiet(), warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter warns about renamed dynamic axes
        program = torch.onnx.export(
            model,
            (),
            kwargs=dict(example),
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
        if program is None:  # pragma: no cover - only when exporting to a path, which is not done here
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(path))


class RuntimeSession:
    """
    A compiled exported model that maps model inputs (numpy int64 arrays) to logits: ONNX Runtime on the CPU
    (or CUDA where `onnxruntime-gpu` is installed), or OpenVINO on the CPU.

    :param backend: `"onnx"` or `"openvino"`.
    :param path: The model file (`.onnx`, or OpenVINO's `.xml`).
    :param precision: `"fp32"`, `"int8"` (the file is already quantized), or on OpenVINO `"bf16"` (its
        inference precision for everything that is not int8).
    :param device_type: `"cpu"`, or `"cuda"` for ONNX Runtime's CUDA provider.
    :param threads: Threads; `None` lets the runtime choose (one per core).
    """

    def __init__(
        self,
        backend: str,
        path: Path,
        *,
        precision: str = "fp32",
        device_type: str = "cpu",
        threads: int | None = None,
    ) -> None:
        runtime = require_runtime(backend)
        self.backend, self.path, self.precision = backend, path, precision
        if backend == "openvino":
            if device_type != "cpu":
                raise ValueError(f"The OpenVINO backend runs on the CPU here, but the device is {device_type!r}")
            config: dict[str, Any] = {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "bf16" if precision in ("bf16", "int8") else "f32",
            }
            if threads is not None:
                config["INFERENCE_NUM_THREADS"] = threads
            compiled = runtime.Core().compile_model(str(path), "CPU", config)
            self._request = compiled.create_infer_request()
            self._output = compiled.output(0)
            self.input_names = {name for port in compiled.inputs for name in port.get_names()}
            return
        options = runtime.SessionOptions()
        options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device_type == "cuda":
            if "CUDAExecutionProvider" not in runtime.get_available_providers():
                raise ValueError(
                    "The ONNX backend on a CUDA device needs onnxruntime-gpu (CUDAExecutionProvider), but this "
                    f"onnxruntime offers {runtime.get_available_providers()}"
                )
            providers.insert(0, "CUDAExecutionProvider")
        elif device_type != "cpu":
            raise ValueError(f"The ONNX backend runs on 'cpu' or 'cuda', but the device is {device_type!r}")
        self._session = runtime.InferenceSession(str(path), options, providers=providers)
        self.input_names = {i.name for i in self._session.get_inputs()}

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch and return the logits as a flat float64 array."""
        feed = {name: value for name, value in features.items() if name in self.input_names}
        if self.backend == "openvino":
            out = self._request.infer(feed)[self._output]
        else:
            out = self._session.run(None, feed)[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)


def resolve_backend_precision(backend: str, precision: str) -> str:
    """
    The concrete precision of an exported backend: `"auto"` is fp32 on ONNX Runtime, and bf16 on OpenVINO
    where the CPU computes bf16 natively (else fp32).

    :param backend: `"onnx"` or `"openvino"`.
    :param precision: One of :data:`BACKEND_PRECISIONS` for it.
    :returns: `"fp32"`, `"bf16"` or `"int8"`.
    """
    if precision != "auto":
        return precision
    if backend == "openvino":
        from haystack_crossrerank.hardware import cpu_has_native_bf16

        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


# ---------------------------------------------------------------------- int8
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
    return export / _INT8_FILES[backend]


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
) -> Int8Report:
    """
    Quantize an export statically to int8 for a backend and gate it against that backend's fp32 model.

    :param export: The export's cache folder (from :func:`export_onnx`).
    :param backend: `"onnx"` (ONNX Runtime's static quantizer, QOperator format, per-channel weights) or
        `"openvino"` (NNCF, transformer preset).
    :param calibration: Batches of model inputs whose activation ranges set the quantization scales.
    :param held: (positions, inputs) batches of other pairs, scored by both models for the gate.
    :param counts: (calibration pairs, held pairs, calibration sha256), recorded in the report.
    :param threads: Threads for the gate's sessions.
    :returns: The report, also written to `int8-<backend>.json`; the int8 model is kept only if it passed.
    """
    started = time.perf_counter()
    source = export / "model.onnx"
    keep_float = activation_matmuls(source)
    work = export / f".int8-{backend}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        candidate = work / _INT8_FILES[backend]
        with _quiet():
            if backend == "openvino":
                _quantize_openvino(source, candidate, calibration, keep_float)
            else:
                _quantize_onnxruntime(source, candidate, calibration, keep_float)
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
        )
        for old in export.glob(Path(_INT8_FILES[backend]).stem + ".*"):
            old.unlink()
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


def _quantize_openvino(
    source: Path, target: Path, calibration: list[dict[str, np.ndarray]], keep_float: list[str]
) -> None:
    openvino = require_runtime("openvino")
    nncf = require("nncf", "openvino")
    model = openvino.Core().read_model(str(source))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=sum(len(batch["input_ids"]) for batch in calibration),
        ignored_scope=nncf.IgnoredScope(names=keep_float, validate=False),
    )
    openvino.save_model(quantized, str(target), compress_to_fp16=False)


def beir_calibration_pairs(
    data_dir: str | Path, *, dataset: str = "scifact", count: int = 256, depth: int = 10, seed: int = 42
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """
    In-domain calibration and held-out pairs from a BEIR set's *train* queries: each query with its BM25
    candidates, both as whole documents (title and text) and as the sentence windows the shipped pipelines
    score, so that int8 is calibrated and checked on what it will see. The two lists come from disjoint
    queries.

    :param data_dir: The BEIR folder (or one holding `<dataset>/`).
    :param dataset: The data set name.
    :param count: Pairs in each list.
    :param depth: BM25 candidates per query.
    :param seed: Shuffles the queries and the pairs.
    :returns: (calibration pairs, held-out pairs).
    :raises ValueError: If the train split has too few queries for two lists of `count` pairs.
    """
    import random

    from haystack import Document

    from haystack_crossrerank.data.beir import load_beir
    from haystack_crossrerank.evaluation.rerank import text_ranker
    from haystack_crossrerank.training.mining import bm25_candidates_for

    data = load_beir(data_dir, "train", dataset=dataset)
    query_ids = sorted(data.queries)
    rng = random.Random(seed)
    rng.shuffle(query_ids)
    # A document gives one whole-text pair and about four window pairs: 2 * count / 5 queries at depth 10 is
    # enough, with room to spare.
    wanted = min(len(query_ids), max(4, (2 * count) // max(depth, 1) + 8))
    chosen = query_ids[:wanted]
    ranker = text_ranker()
    ranker.passages = "windows"
    candidates = bm25_candidates_for(data, chosen, depth)
    halves: list[list[tuple[str, str]]] = [[], []]
    for position, query_id in enumerate(chosen):
        query = data.queries[query_id]
        for doc_id, _ in candidates[query_id]:
            doc = data.corpus[doc_id]
            document = Document(content=doc["text"], meta={"title": doc["title"]})
            texts = [ranker.document_text(document)] + [p.text for p in ranker.document_passages(document)]
            halves[position % 2].extend((query, text) for text in texts)
    if min(len(h) for h in halves) < count:
        raise ValueError(
            f"{dataset} train gives {len(halves[0])} and {len(halves[1])} pairs from {len(chosen)} queries, "
            f"but {count} are needed in each list: pass a smaller count"
        )
    return rng.sample(halves[0], count), rng.sample(halves[1], count)
