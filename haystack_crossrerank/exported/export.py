"""Export a cross-encoder once per backend, into a cache: ONNX for ONNX Runtime, OpenVINO IR for OpenVINO.

The export cache is a folder per model, backend and settings under `<home>/exported/`, named by a key made of
the model's own files (config and weights, by content) and the export settings. A folder is written under a
temporary name and renamed when complete, and its `manifest.json` records the sha256 of each exported file, so
a changed model gets a new folder and a half-written or damaged one is rebuilt, with a warning.

OpenVINO converts the torch model itself (`openvino.convert_model`, its PyTorch front end), not the ONNX file:
that keeps transformers' scaled-dot-product attention as one `ScaledDotProductAttention` operation, which
OpenVINO's CPU plugin runs as one fused kernel. Through ONNX, attention arrives as separate MatMul, Add,
Softmax, IsNaN and Select operations; on this project's 2-core AVX-512 CPU (MiniLM, 32 pairs of 340 tokens)
the fused graph gave 39.1 pairs/s in bf16 against 32.4 from ONNX, and 58.3 against 42.1 in calibrated int8.

Both exports compute the encoder's last layer for the first token only (:func:`first_token_last_layer`): the
classification head reads nothing else, so the other tokens' queries, attention outputs and feed-forward
blocks in that layer are skipped (keys and values stay for every token). The logits are unchanged.

ONNX Runtime's exporter is `torch.onnx` with `dynamo=True`. `optimum-onnx` 0.1 would pull transformers 4.57 in place of
the installed 5.x, and the older TorchScript path (`dynamo=False`, 2.5 s against 14 s for MiniLM) traces
transformers 5's attention-mask code into shape-bound constants: its graph gave wrong logits for any input
other than the example it was traced on (MiniLM: 0.327 against torch's -0.737). The graph is saved as
exported (standard operators only), so that both runtimes read the same file; ONNX Runtime applies its own
graph optimisations when it opens it.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from haystack_crossrerank.utils.extras import require
from haystack_crossrerank.utils.paths import export_dir

logger = logging.getLogger(__name__)

OPSET = 18
# Bump when the export steps change, so that old cache folders are not reused.
EXPORT_FORMAT = 4
# The file each backend's runtime opens, and the files its export consists of.
EXPORT_FILES: dict[str, tuple[str, ...]] = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
_MODEL_FILES = ("config.json",)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_EXTRA_MODULES = {"onnx": "onnxruntime", "openvino": "openvino"}
# Loggers that report every pass at INFO during export and quantization ("" is the root logger, which
# onnxruntime.quantization logs to directly; tracing makes transformers warn about an unset `loss_type`).
_CHATTY_LOGGERS = ("", "onnx_ir", "onnxscript", "nncf", "torch.onnx", "transformers")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.ERROR))
    # NNCF draws a bar per calibration pass ("Statistics collection", "Applying Smooth Quant") on rich's console.
    console = _rich_console()
    console_was_quiet = console is not None and console.quiet
    if console is not None:
        console.quiet = True
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if console is not None:
            console.quiet = console_was_quiet


def _rich_console() -> Any:
    try:
        import rich
    except ImportError:  # installed with NNCF (the `openvino` extra); nothing draws on it without
        return None
    return rich.get_console()


def require_runtime(backend: str) -> Any:
    """
    Import the runtime of an exported backend, or say which extra installs it.

    :param backend: `"onnx"` or `"openvino"`.
    :returns: The `onnxruntime` or `openvino` module.
    :raises ImportError: Naming `pip install 'haystack-crossrerank[onnx]'` (or `[openvino]`).
    """
    return require(_EXTRA_MODULES[backend], backend)


def export_cache_root() -> Path:
    """The folder that holds the export cache (see :func:`haystack_crossrerank.utils.paths.export_dir`)."""
    return export_dir()


def model_file(export: Path, backend: str) -> Path:
    """The exact (fp32) model file of an export that a backend's runtime opens."""
    return export / EXPORT_FILES[backend][0]


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
            f"'{folder}' must hold config.json and a weight file (*.safetensors or *.bin) to be exported"
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

    backend: str = "onnx"
    opset: int = OPSET
    format: int = EXPORT_FORMAT
    torch_version: str = ""
    # The converter's version where the runtime converts (OpenVINO), else "".
    converter_version: str = ""

    @classmethod
    def current(cls, backend: str) -> ExportSettings:
        import torch

        converter = require_runtime(backend).__version__ if backend == "openvino" else ""
        return cls(backend=backend, torch_version=torch.__version__, converter_version=converter)


def cache_folder(folder: Path, settings: ExportSettings, root: Path | None = None, variant: str = "") -> Path:
    """
    The cache folder for a model folder and export settings.

    :param folder: The local model folder.
    :param settings: The export settings.
    :param root: The cache root; default :func:`export_cache_root`.
    :param variant: `""` for a cross-encoder's logits, or another graph of the same folder (e.g. `"tokens"`).
    :returns: `<root>/<model folder name>-<backend>-<key>` (`<name>-<variant>-<backend>-<key>` for a variant).
    """
    text = model_fingerprint(folder) + json.dumps(asdict(settings), sort_keys=True) + variant
    key = hashlib.sha256(text.encode()).hexdigest()[:20]
    name = f"{folder.name}-{variant}" if variant else folder.name
    return (root or export_cache_root()) / f"{name}-{settings.backend}-{key}"


def _valid_export(target: Path, backend: str) -> str | None:
    """`None` if `target` holds a complete export for a backend, else why not."""
    manifest_path = target / "manifest.json"
    if not manifest_path.is_file():
        return "manifest.json is missing"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = {name: manifest["sha256"][name] for name in EXPORT_FILES[backend]}
    except (ValueError, KeyError, TypeError) as error:
        return f"manifest.json is unreadable ({error})"
    for name, digest in expected.items():
        if not (target / name).is_file():
            return f"{name} is missing"
        if _sha256(target / name) != digest:
            return f"{name} does not match the sha256 in manifest.json"
    return None


def export_model(
    load_model: Callable[[], Any],
    folder: Path,
    *,
    backend: str,
    example: dict[str, Any],
    root: Path | None = None,
    variant: str = "",
) -> Path:
    """
    Export a loaded model for a backend into the cache, or reuse a complete export of the same files and
    settings.

    :param load_model: Returns the `transformers` model (fp32, eval mode) of `folder`; called only when there is
        no usable export, so that a cache hit never loads the torch weights.
    :param folder: The local model folder (for the cache key).
    :param backend: `"onnx"` (an ONNX file, by `torch.onnx`) or `"openvino"` (OpenVINO IR, by OpenVINO's
        PyTorch front end).
    :param example: Example inputs (`input_ids`, `attention_mask`, maybe `token_type_ids`) as torch tensors.
    :param root: The cache root; default :func:`export_cache_root`.
    :param variant: `""` for a cross-encoder (its last layer is cut to the first token, see
        :func:`first_token_last_layer`); any other name exports the model whole, under its own cache key (the
        query embedder's token states are `"tokens"`).
    :returns: The cache folder, holding the backend's :data:`EXPORT_FILES` and `manifest.json`.
    """
    settings = ExportSettings.current(backend)
    target = cache_folder(folder, settings, root, variant)
    problem = _valid_export(target, backend) if target.exists() else "absent"
    if problem is None:
        logger.info("Reusing the %s export in %s", backend, target)
        return target
    if problem != "absent":
        logger.warning("The %s export in %s is damaged (%s); exporting again", backend, target, problem)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        started = time.perf_counter()
        model = load_model()
        pruned = first_token_last_layer(model) if not variant else False
        if backend == "openvino":
            _convert_openvino(model, example, model_file(work, backend))
        else:
            _export_to(model, example, model_file(work, backend))
        manifest = {
            "model": str(folder),
            "variant": variant,
            "settings": asdict(settings),
            "first_token_last_layer": pruned,
            "inputs": list(example),
            "sha256": {name: _sha256(work / name) for name in EXPORT_FILES[backend]},
            "export_seconds": round(time.perf_counter() - started, 2),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    logger.info("Exported '%s' for %s in %s (%.1f s)", folder, backend, target, manifest["export_seconds"])
    return target


# Post-LayerNorm encoders with BERT's layer structure whose classification head reads the first token only.
# (Names alone do not tell: MegatronBERT has the same module names but normalises before attention.)
FIRST_TOKEN_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")

# The name of the replaced last layer's inner module: it appears in the exported operations' names, which is how
# int8 finds the operations that run on the first token only (see `int8.first_token_matmuls`).
FIRST_TOKEN_SCOPE = "first_token_layer"


class _FirstTokenLastLayer:
    """Marker base, so that :func:`first_token_last_layer` can tell a replaced layer (set in that function)."""


def first_token_last_layer(model: Any) -> bool:
    """
    Make the encoder's last layer compute the first token's output only, in place, for the architectures in
    :data:`FIRST_TOKEN_MODEL_TYPES` (BERT's layer structure and a head on the first token).

    A sequence-classification head reads the first token's final hidden state and nothing else, so the last
    layer needs every token's keys and values but only the first token's query, attention output and
    feed-forward block: the other tokens' share of that layer (5/6 of its arithmetic for MiniLM at 340 tokens,
    about 14% of the model's) is work whose result is thrown away. The logits are the same up to rounding.

    :param model: A `transformers` sequence-classification model (eval mode); changed in place, so pass a copy
        that is not used for anything else (the exports load their own).
    :returns: `True` if the layer was replaced, `False` for other architectures (the model is then left as it
        was and exported whole).
    """
    import torch

    if getattr(model.config, "model_type", None) not in FIRST_TOKEN_MODEL_TYPES:
        return False
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not layers or not hasattr(base, "embeddings"):
        return False
    last = layers[-1]
    if isinstance(last, _FirstTokenLastLayer):
        return True
    attention = getattr(last, "attention", None)
    projections = getattr(attention, "self", None)
    if (
        not all(hasattr(projections, name) for name in ("query", "key", "value", "attention_head_size", "scaling"))
        or not hasattr(attention, "output")
        or not hasattr(last, "feed_forward_chunk")
        or getattr(last, "add_cross_attention", False)
    ):
        return False

    class FirstTokenLayer(torch.nn.Module, _FirstTokenLastLayer):
        def __init__(self, layer: Any) -> None:
            super().__init__()
            setattr(self, FIRST_TOKEN_SCOPE, layer)

        def forward(self, hidden_states: Any, attention_mask: Any = None, *args: Any, **kwargs: Any) -> Any:
            layer = getattr(self, FIRST_TOKEN_SCOPE)
            own = layer.attention.self
            batch, length, _ = hidden_states.shape
            first = hidden_states[:, :1]

            def heads(states: Any, rows: int) -> Any:
                return states.view(batch, rows, -1, own.attention_head_size).transpose(1, 2)

            query = heads(own.query(first), 1)
            key, value = heads(own.key(hidden_states), length), heads(own.value(hidden_states), length)
            # The model prepares a 4-D mask (batch, 1, query rows or 1, keys), or none when nothing is padded:
            # keep the first query row.
            mask = attention_mask
            if mask is not None and mask.dim() == 2:
                mask = mask.bool()[:, None, None, :]
            elif mask is not None:
                mask = mask[:, :, :1]
            mixed = torch.nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, scale=own.scaling
            )
            attended = layer.attention.output(mixed.transpose(1, 2).reshape(batch, 1, -1), first)
            return layer.feed_forward_chunk(attended)

    layers[-1] = FirstTokenLayer(last)
    return True


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


def _convert_openvino(model: Any, example: dict[str, Any], path: Path) -> None:
    """
    Write the OpenVINO IR of a model to `path` (`.xml`, with its `.bin` beside it), converted from torch with
    dynamic batch and sequence axes and fp32 weights (the runtime picks bf16 or int8 at compile time).
    """
    import warnings

    import torch

    openvino = require_runtime("openvino")
    model.config.return_dict = False  # a plain tuple out, so that output 0 is the logits
    with _quiet(), warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracing warns about Python control flow on shapes
        converted = openvino.convert_model(model, example_input=dict(example))
    openvino.save_model(converted, str(path), compress_to_fp16=False)
