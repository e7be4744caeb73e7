"""Exported backends: the model is exported once per backend, into a cache, and runs on ONNX Runtime or OpenVINO.

- :mod:`.export`: the exports (ONNX; OpenVINO IR) and their cache;
- :mod:`.runtime`: the two runtimes and their precisions;
- :mod:`.int8`: calibrated int8 and its accuracy gate;
- :mod:`.distil`: int8 trained against the fp32 model's scores (quantization-aware distillation).
"""

from haystack_crossrerank.exported.export import (
    EXPORT_FILES,
    export_model,
    local_model_folder,
    model_file,
    model_fingerprint,
    require_runtime,
)
from haystack_crossrerank.exported.int8 import (
    INT8_MIN_SPEARMAN,
    Int8Report,
    activation_matmuls,
    calibrate_int8,
    int8_model,
    int8_path,
    int8_report,
    pairs_digest,
    quantize_openvino,
    spearman,
)
from haystack_crossrerank.exported.runtime import (
    BACKEND_PRECISIONS,
    BACKENDS,
    RuntimeSession,
    check_backend,
    resolve_backend,
    resolve_backend_precision,
)

__all__ = [
    "BACKENDS",
    "BACKEND_PRECISIONS",
    "EXPORT_FILES",
    "INT8_MIN_SPEARMAN",
    "Int8Report",
    "RuntimeSession",
    "activation_matmuls",
    "calibrate_int8",
    "check_backend",
    "export_model",
    "int8_model",
    "int8_path",
    "int8_report",
    "local_model_folder",
    "model_file",
    "model_fingerprint",
    "pairs_digest",
    "quantize_openvino",
    "require_runtime",
    "resolve_backend",
    "resolve_backend_precision",
    "spearman",
]
