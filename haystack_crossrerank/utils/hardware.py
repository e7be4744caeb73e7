"""Device and precision policy, in one place: which device, which numeric precision, how many tokens.

torch is imported inside the functions, so that the command line can read the choices without loading it.

The scorer (inference) and the trainer read their choices from here, and the command line takes its
precision choices from :data:`PRECISIONS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16", "int8")
TRAINING_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")  # int8 is for inference only
# Layers left in floating point by the int8 path: the score comes straight out of them.
_INT8_SKIP = ("classifier", "pooler")

# Architectures whose position ids start after the padding index (RoBERTa and its kin): a config with
# 514 position embeddings takes at most 512 tokens.
_PADDING_OFFSET_MODEL_TYPES = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer", "ibert", "markuplm"}
)
# Tokenizers report a huge sentinel when they know no limit.
_NO_LIMIT = 1_000_000


def resolve_device(device: str | torch.device | None) -> torch.device:
    """
    Pick the device to score on: the caller's, else CUDA, else Apple MPS, else the CPU.

    :param device: A device such as `"cuda:1"` or `"cpu"`, or `None` to choose automatically.
    :returns: The resolved `torch.device`.
    :raises ValueError: If `device` is not a device string torch understands.
    """
    import torch

    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(
                f"`device` must be a torch device such as 'cpu' or 'cuda:0', but got {device!r}"
            ) from error
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """
    Say whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where bf16 autocast pays off.

    :returns: `True` if oneDNN reports native bf16 support.
    """
    import torch

    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if checker is None:  # pragma: no cover - very old torch
        return False
    try:
        if not bool(checker()):
            return False
    except RuntimeError:  # pragma: no cover
        return False
    # oneDNN also says "supported" for AVX-512 CPUs that only emulate bf16 (slower than fp32). Ask the
    # kernel for the instruction set flags where it can tell us.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:  # not Linux: trust oneDNN
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """
    Turn a requested precision into the concrete one for a device.

    `"auto"` gives bf16 on CUDA devices that support it, else fp16; fp16 on MPS; and on the CPU bf16
    autocast where the CPU computes bf16 natively, else fp32.

    :param precision: One of `"auto"`, `"fp32"`, `"fp16"`, `"bf16"`, `"int8"` (CPU only).
    :param device: The device the model runs on.
    :returns: `"fp32"`, `"fp16"`, `"bf16"` or `"int8"`.
    :raises ValueError: If `precision` is not one of the accepted values, or int8 is asked for off the CPU.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {list(PRECISIONS)}, but got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision 'int8' runs on the CPU only, but the device is {device}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def quantize_int8(model: Any) -> Any:
    """
    Dynamic int8 quantization (int8 weights, activations quantized per batch) of the encoder's linear layers;
    the pooler and the classification head stay in fp32.

    :param model: A model on the CPU, in eval mode.
    :returns: The quantized model (the layers are replaced in place).
    """
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    targets = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(part in name for part in _INT8_SKIP)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # torch marks quantized tensors as deprecated
        warnings.simplefilter("ignore", category=DeprecationWarning)
        return quantize_dynamic(model, targets, dtype=torch.qint8)


def model_max_length(config: Any, tokenizer: Any) -> int:
    """
    The longest input, in tokens, that a model really accepts.

    RoBERTa-style models report `max_position_embeddings = 514` but their positions start after the
    padding index, so they take 512. The tokenizer's own limit counts too, unless it is a placeholder.

    :param config: The model's `PretrainedConfig`.
    :param tokenizer: The model's tokenizer.
    :returns: The limit in tokens.
    """
    limits: list[int] = []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(config, "model_type", None) in _PADDING_OFFSET_MODEL_TYPES:
            pad = getattr(config, "pad_token_id", None)
            positions -= (pad if isinstance(pad, int) else 1) + 1
        limits.append(positions)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _NO_LIMIT:
        limits.append(tokenizer_limit)
    return min(limits) if limits else 512


def training_precision(requested: str) -> str:
    """
    The precision a training run uses, by the same policy as inference (:func:`resolve_precision`) on the
    device `transformers.Trainer` picks (CUDA if present, else the CPU).

    :param requested: One of :data:`TRAINING_PRECISIONS`.
    :returns: The concrete precision: `"auto"` is bf16 on a CUDA GPU with bf16 (else fp16), and on a CPU bf16
        where it computes bf16 natively, else fp32.
    :raises ValueError: For a precision that is not one of :data:`TRAINING_PRECISIONS`.
    """
    import torch

    if requested not in TRAINING_PRECISIONS:
        raise ValueError(f"training `precision` must be one of {list(TRAINING_PRECISIONS)}, but got {requested!r}")
    return resolve_precision(requested, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


# Default pairs per forward pass. On a GPU the speed is bound by the CPU (tokenizing, kernel launches), so
# fewer, larger batches win: on an H200 (gpu_speed.py, SciFact BM25 top 100, bf16, one run) batch 128 scored
# 2,792 pairs/s, 64 2,748 and 32 2,034. On the CPU smaller batches win, their activations staying in the
# cores' caches. MiniLM on the project's 2-core AVX-512 CPU, 12 SciFact test queries' BM25 top 100 (title and
# abstract, 386 tokens a pair on average), each setting timed twice, interleaved, pairs/s at batch 4 / 8 / 16 /
# 32: torch bf16 - / 20.6 / 20.0 / 16.7; OpenVINO bf16 29.9 / 31.1 / 29.5 / 29.2, int8 46.0 / 43.3 / 41.2 /
# 39.8; and their sentences (57 tokens), OpenVINO bf16 201 / 203 / 196 / 181.
CPU_BATCH_SIZE = 16
EXPORTED_CPU_BATCH_SIZE = 8
EXPORTED_CPU_INT8_BATCH_SIZE = 4
ACCELERATOR_BATCH_SIZE = 128


def default_batch_size(device: torch.device, backend: str = "torch", precision: str = "fp32") -> int:
    """Pairs per forward pass when none is asked for: see :data:`CPU_BATCH_SIZE`."""
    if device.type != "cpu":
        return ACCELERATOR_BATCH_SIZE
    if backend == "torch":
        return CPU_BATCH_SIZE
    return EXPORTED_CPU_INT8_BATCH_SIZE if precision == "int8" else EXPORTED_CPU_BATCH_SIZE
