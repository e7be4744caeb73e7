"""Export a cross-encoder to ONNX once, into a cache shared by the exported runtimes.

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

from haystack_crossrerank._extras import require
from haystack_crossrerank.paths import home

logger = logging.getLogger(__name__)

OPSET = 18
# Bump when the export steps change, so that old cache folders are not reused.
EXPORT_FORMAT = 1
_MODEL_FILES = ("config.json",)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_EXTRA_MODULES = {"onnx": "onnxruntime", "openvino": "openvino"}
# Loggers that report every pass at INFO during export and quantization ("" is the root logger, which
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
