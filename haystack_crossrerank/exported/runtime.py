"""The exported runtimes: ONNX Runtime and OpenVINO, compiled on an exported model, scoring numpy batches.

Measured on this project's 2-core AVX-512 CPU with MiniLM on SciFact abstracts (pairs/s): torch fp32
12.4-14.2 and bf16 21.6-23.9; ONNX Runtime fp32 9.7 (slower than torch); OpenVINO bf16 25.1-28.8.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from haystack_crossrerank.exported.export import require_runtime
from haystack_crossrerank.utils.checks import check_choice
from haystack_crossrerank.utils.hardware import PRECISIONS

# "auto" (the default): OpenVINO on the CPU where it is installed and takes the precision and settings, else
# torch. Measured on this project's 2-core AVX-512 CPU (benchmarks/rerank_speed.py, 30 SciFact queries' BM25
# top 100, MiniLM): OpenVINO bf16 29.3 documents/s against torch bf16 21.1, in the same run.
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx", "openvino")
# The exported runtimes prepare kernels per input shape, and each batch of length-sorted pairs has its own
# width: padding widths to a multiple of 16 tokens bounds the shapes they meet. OpenVINO int8, MiniLM, 20
# queries' batches of 32 pairs of ~340 tokens: 39.6 pairs/s at exact widths, 42.2 / 46.2 / 46.8 / 45.8 at
# multiples of 8 / 16 / 32 / 64 (padding costs compute, fewer shapes save preparation).
EXPORTED_PAD_MULTIPLE = 16
# The precisions each exported backend takes ("auto": fp32 on ONNX Runtime; on OpenVINO bf16 where the CPU
# computes it natively, else fp32).
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("auto", "fp32", "int8"),
    "openvino": ("auto", "fp32", "bf16", "int8"),
}


class RuntimeSession:
    """
    A compiled exported model that maps model inputs (numpy int64 arrays) to logits: ONNX Runtime on the CPU
    (or CUDA where `onnxruntime-gpu` is installed), or OpenVINO on the CPU.

    One session may be called from many threads at once, and each caller gets exactly the logits it would get
    alone. ONNX Runtime's `InferenceSession.run` is thread-safe as it is. An OpenVINO infer request runs one
    inference at a time (a second caller gets "Infer Request is busy"), so the session keeps a pool of requests
    on the one compiled model: a caller takes an idle request, or creates one when all are busy, and gives it
    back when its logits are copied out. The pool grows to the largest number of concurrent callers.

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
            self._compiled = compiled
            self._idle_requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
            self._idle_requests.put(compiled.create_infer_request())
            self._requests_created = 1
            self._pool_lock = threading.Lock()
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
        """Run one batch and return the logits as a flat float64 array (safe to call from several threads)."""
        return self.output(features, dtype=np.float64).reshape(-1)

    def output(self, features: dict[str, np.ndarray], dtype: Any = np.float32) -> np.ndarray:
        """Run one batch and return the model's first output in its own shape (safe to call from several threads)."""
        feed = {name: value for name, value in features.items() if name in self.input_names}
        if self.backend != "openvino":
            return np.asarray(self._session.run(None, feed)[0], dtype=dtype)
        request = self._take_request()
        try:
            # The request's output tensor is reused by its next inference: copy it out before giving it back.
            return np.array(request.infer(feed)[self._output], dtype=dtype, copy=True)
        finally:
            self._idle_requests.put(request)

    @property
    def infer_requests(self) -> int:
        """OpenVINO: how many infer requests the pool holds (the most callers that ran at once); else 0."""
        return self._requests_created if self.backend == "openvino" else 0

    def _take_request(self) -> Any:
        """An idle OpenVINO infer request, or a new one on the same compiled model when every request is busy."""
        try:
            return self._idle_requests.get_nowait()
        except queue.Empty:
            with self._pool_lock:
                self._requests_created += 1
                return self._compiled.create_infer_request()


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
        from haystack_crossrerank.utils.hardware import cpu_has_native_bf16

        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def resolve_backend(backend: str, device_type: str, precision: str, model_kwargs: dict[str, Any] | None) -> str:
    """
    The concrete backend of a scorer: `"auto"` is OpenVINO on the CPU when `openvino` is installed and the
    precision is one it takes (`"auto"`, `"fp32"`, `"bf16"`, `"int8"`) and no `model_kwargs` are given (an
    export takes the saved files as they are); torch otherwise (GPUs, fp16, model arguments).

    :param backend: One of :data:`BACKENDS`.
    :param device_type: The torch device type the scorer runs on (`"cpu"`, `"cuda"`, `"mps"`).
    :param precision: The requested precision.
    :param model_kwargs: The requested model arguments.
    :returns: `"torch"`, `"onnx"` or `"openvino"`.
    """
    if backend != "auto":
        return backend
    if device_type != "cpu" or model_kwargs or precision not in BACKEND_PRECISIONS["openvino"]:
        return "torch"
    import importlib.util

    return "openvino" if importlib.util.find_spec("openvino") is not None else "torch"


def check_backend(backend: str, precision: str, model_kwargs: dict[str, Any] | None) -> None:
    """
    Check a backend and precision pair (shared by the scorer and the ranker).

    :raises ValueError: For an unknown backend or precision, a precision the backend lacks, or `model_kwargs`
        with the ONNX backend (it exports the model's saved files as they are).
    """
    check_choice("backend", backend, BACKENDS)
    check_choice("precision", precision, PRECISIONS)
    if backend in BACKEND_PRECISIONS and precision not in BACKEND_PRECISIONS[backend]:
        raise ValueError(
            f"backend {backend!r} takes precision {list(BACKEND_PRECISIONS[backend])}, but got {precision!r}; "
            "backend 'torch' takes every precision"
        )
    if backend not in ("torch", "auto") and model_kwargs:
        raise ValueError(
            f"backend {backend!r} exports the model's saved files as they are and takes no `model_kwargs`, but "
            f"got {sorted(model_kwargs)}; backend 'auto' takes them and runs torch"
        )
