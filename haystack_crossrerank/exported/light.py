"""Open a cached export without importing transformers: what scoring needs from the config and the tokenizer.

Importing `transformers` (its lazy module table scans every model family) took 2.2 s of a `crossrerank serve`
start on a 2-core CPU, and an exported model needs nothing from it once the export exists: the runtime runs the
graph, and tokenization is the `tokenizers` library's. So the first, full load (with transformers) writes
`load.json` into the export folder: the config values scoring reads, the tokenizer's padding id, input names and
length limit, the sha256 of the model folder's tokenizer files, and the sha256 of the tokenizer pipeline
transformers built from them. A later load takes the light path only if every one of those still holds (same
files, and `tokenizers` builds the same pipeline from `tokenizer.json` alone); otherwise it loads as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haystack_crossrerank.exported.export import ExportSettings, _valid_export, cache_folder
from haystack_crossrerank.utils.progress import transformers_bars_off

logger = logging.getLogger(__name__)

LOAD_FILE = "load.json"
LOAD_FORMAT = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# The config values the scorer and the embedder read (see `utils.hardware.model_max_length`, `ranking.activation`).
CONFIG_KEYS = (
    "num_labels",
    "model_type",
    "max_position_embeddings",
    "pad_token_id",
    "sentence_transformers",
    "sbert_ce_default_activation_function",
)


@dataclass
class LightTokenizer:
    """The parts of a `transformers` fast tokenizer that scoring and query embedding use."""

    backend_tokenizer: Any
    pad_token_id: int | None
    pad_token: str | None
    pad_token_type_id: int
    model_input_names: list[str]
    model_max_length: int


@dataclass
class LightConfig:
    """The config values in :data:`CONFIG_KEYS` (missing ones are `None`)."""

    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name in CONFIG_KEYS:
            return self.values.get(name)
        raise AttributeError(name)


def backend_digest(backend: Any) -> str:
    """The sha256 of a `tokenizers.Tokenizer` pipeline, without its truncation and padding settings."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return hashlib.sha256(copy.to_str().encode()).hexdigest()


def _files_digest(folder: Path) -> dict[str, str | None]:
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest() if (folder / name).is_file() else None
        for name in TOKENIZER_FILES
    }


def record(export: Path, folder: Path, config: Any, tokenizer: Any) -> None:
    """
    Write `load.json` into an export folder after a full load, unless it already says the same (written
    atomically; a record that no longer matches the folder's tokenizer files is replaced).

    :param export: The export's cache folder.
    :param folder: The model folder the tokenizer was loaded from.
    :param config: The model's `transformers` config (`None` where nothing is read from it).
    :param tokenizer: Its `transformers` fast tokenizer (as loaded, without extra arguments).
    """
    target = export / LOAD_FILE
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not (folder / "tokenizer.json").is_file():
        return
    limit = getattr(tokenizer, "model_max_length", None)
    data = {
        "format": LOAD_FORMAT,
        "config": {key: getattr(config, key, None) for key in CONFIG_KEYS},
        "tokenizer": {
            "pad_token_id": tokenizer.pad_token_id,
            "pad_token": tokenizer.pad_token if isinstance(tokenizer.pad_token, str) else None,
            "pad_token_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
            "model_input_names": list(tokenizer.model_input_names),
            "model_max_length": int(limit) if isinstance(limit, int) and limit < 2**62 else None,
        },
        "files": _files_digest(folder),
        "backend_sha256": backend_digest(backend),
    }
    try:
        text = json.dumps(data, indent=2)
    except TypeError as error:  # a config value that is not plain JSON: keep loading the full way
        logger.info("Not recording a light load for %s: %s", folder, error)
        return
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return
    handle, temporary = tempfile.mkstemp(prefix=f".{LOAD_FILE}-", dir=export)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, target)


def cached_export(folder: Path, backend: str, variant: str = "") -> Path | None:
    """The complete cached export of a model folder for a backend and the current settings, or `None`."""
    target = cache_folder(folder, ExportSettings.current(backend), variant=variant)
    return target if target.is_dir() and _valid_export(target, backend) is None else None


def load(export: Path, folder: Path) -> tuple[LightConfig, LightTokenizer] | None:
    """
    The config and tokenizer recorded in an export's `load.json`, if they still describe `folder`.

    :param export: The export's cache folder.
    :param folder: The model folder.
    :returns: (config, tokenizer), or `None` when there is no record, a tokenizer file changed, or
        `tokenizers` builds another pipeline from `tokenizer.json` than transformers did.
    """
    try:
        data = json.loads((export / LOAD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != LOAD_FORMAT or data.get("files") != _files_digest(folder):
        return None
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if backend_digest(backend) != data.get("backend_sha256"):
        return None
    backend.no_truncation()
    backend.no_padding()
    recorded = data["tokenizer"]
    tokenizer = LightTokenizer(
        backend_tokenizer=backend,
        pad_token_id=recorded["pad_token_id"],
        pad_token=recorded["pad_token"],
        pad_token_type_id=recorded["pad_token_type_id"],
        model_input_names=list(recorded["model_input_names"]),
        model_max_length=recorded["model_max_length"] or 1_000_000_000,
    )
    return LightConfig(dict(data["config"])), tokenizer


def open_cached(folder: Path, backend: str) -> tuple[Path, LightConfig, LightTokenizer] | None:
    """
    A cross-encoder folder's cached export with its recorded config and tokenizer, if all are there and current.

    :param folder: The local model folder.
    :param backend: `"onnx"` or `"openvino"`.
    :returns: (export folder, config, tokenizer), or `None` when the model must load the full way (no complete
        export, no current record, or not exactly one output label).
    """
    export = cached_export(folder, backend)
    loaded = load(export, folder) if export is not None else None
    if export is None or loaded is None or loaded[0].num_labels != 1:
        return None
    return export, loaded[0], loaded[1]


def weights_loader(folder: Path, model_name: str) -> Callable[[], Any]:
    """The fp32 torch loader of a cross-encoder folder, importing transformers only when it is called."""

    def load_weights() -> Any:
        from transformers import AutoModelForSequenceClassification

        try:
            with transformers_bars_off():
                return AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        except Exception as error:  # safetensors, torch and transformers raise many kinds here
            raise OSError(f"Could not load the weights of cross-encoder '{model_name}': {error}") from error

    return load_weights
