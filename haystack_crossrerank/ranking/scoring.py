"""The one inference path: turn (query, text) pairs into cross-encoder logits.

The ranker, the evaluators, the benchmark and the trainer all score through :class:`CrossEncoderScorer`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from haystack_crossrerank.exported.distil import DistilSettings
from haystack_crossrerank.exported.int8 import Int8Report
from haystack_crossrerank.exported.runtime import EXPORTED_PAD_MULTIPLE, check_backend, resolve_backend
from haystack_crossrerank.ranking.activation import activation_from_config
from haystack_crossrerank.ranking.pair_encoding import PairEncoder, check_pairs
from haystack_crossrerank.utils.checks import CopyableLock, check_int
from haystack_crossrerank.utils.hardware import (
    CPU_BATCH_SIZE,
    default_batch_size,
    model_max_length,
    quantize_int8,
    resolve_device,
    resolve_precision,
)
from haystack_crossrerank.utils.paths import looks_like_local_path
from haystack_crossrerank.utils.progress import progress, transformers_bars_off

logger = logging.getLogger(__name__)


class CrossEncoderScorer:
    """
    Scores (query, text) pairs with a sequence-classification cross-encoder that has one output.

    It owns the tokenizer, the model, the device, the precision and the batching. Each query is tokenized
    once and each text once; the pair inputs are assembled from those tokens, truncating the text (never
    the query, unless the query alone is too long). Pairs are sorted by length so that batches pad little,
    and the scores come back in input order.

    Usage example:

    ```python
    from haystack_crossrerank import CrossEncoderScorer

    scorer = CrossEncoderScorer("path/to/cross-encoder", device="cpu")
    logits = scorer.score([("What is the capital of France?", "Paris is the capital of France."),
                           ("What is the capital of France?", "Berlin is in Germany.")])
    print(logits)
    # [4.71, -9.02]   (raw logits; the exact values depend on the model)
    ```

    :param model: A Hugging Face hub id or a local folder.
    :param device: Where to run: `"cpu"`, `"cuda:0"`, ..., or `None` for CUDA, then MPS, then CPU.
    :param precision: `"auto"`, `"fp32"`, `"fp16"` or `"bf16"` (see :func:`resolve_precision`).
    :param batch_size: The most pairs in one forward pass; `None`: on the CPU 16 with torch, 8 with an exported
        backend and 4 in int8 (see :data:`CPU_BATCH_SIZE`); 128 on a GPU (on an H200, where the CPU's
        tokenizing and kernel launches bound the speed, 128 gave 1.37x the pairs/s of 32).
    :param max_length: The most tokens per pair; `None` takes the model's real limit. A longer value is
        clamped to that limit with a warning.
    :param max_batch_tokens: If set, a batch also holds at most this many (padded) tokens, so that batches
        of short pairs are larger than batches of long ones.
    :param token: A Hugging Face token for private models, or `None`.
    :param model_kwargs: Extra keyword arguments for `AutoModelForSequenceClassification.from_pretrained`
        (for example `{"num_labels": 1}` to put a fresh one-logit head on a base model).
    :param tokenizer_kwargs: Extra keyword arguments for `AutoTokenizer.from_pretrained`.
    :param backend: `"auto"` (OpenVINO on the CPU where it is installed and takes the precision, else torch:
        see :func:`haystack_crossrerank.exported.resolve_backend`), `"torch"`, `"onnx"` for ONNX Runtime (the
        `onnx` extra) or `"openvino"` for OpenVINO: an exported backend exports the model once, into a cache
        (see :mod:`haystack_crossrerank.exported`). ONNX Runtime takes precision `"fp32"` (what `"auto"` means
        there) or `"int8"`; OpenVINO `"fp32"`, `"bf16"` (`"auto"` where the CPU computes bf16) or `"int8"`.
        int8 needs a calibrated copy (:meth:`calibrate_int8`, `crossrerank quantize`).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        batch_size: int | None = None,
        max_length: int | None = None,
        max_batch_tokens: int | None = None,
        token: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        backend: str = "auto",
    ) -> None:
        if not isinstance(model, (str, Path)) or not str(model).strip():
            raise TypeError(f"`model` must be a non-empty hub id or folder path, but got {model!r}")
        check_backend(backend, precision, model_kwargs)
        if batch_size is not None:
            check_int("batch_size", batch_size, minimum=1)
        if max_length is not None:
            check_int("max_length", max_length, minimum=1)
        if max_batch_tokens is not None:
            check_int("max_batch_tokens", max_batch_tokens, minimum=1)
        self.model_name = str(model)
        self.requested_device = device
        self.requested_precision = precision
        self.requested_batch_size = batch_size
        self.batch_size = batch_size if batch_size is not None else CPU_BATCH_SIZE  # see `_attach` for GPUs
        self.requested_max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.token = token
        self.model_kwargs = dict(model_kwargs or {})
        self.tokenizer_kwargs = dict(tokenizer_kwargs or {})
        self.requested_backend = backend
        self.backend = backend  # "auto" is resolved when the model loads
        self.export_folder: Path | None = None
        self.int8_report: Int8Report | None = None
        self._load_weights: Callable[[], Any] | None = None  # the exported backends' fp32 torch loader
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: torch.device | None = None
        self.precision: str | None = None
        self.max_length: int = 0
        self.activation: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid
        self._encoder: PairEncoder | None = None
        self.attention = ""
        self._load_lock = CopyableLock()

    # ------------------------------------------------------------------ loading
    @property
    def is_loaded(self) -> bool:
        """`True` once :meth:`load` has run."""
        return self.model is not None

    def load(self) -> None:
        """
        Load tokenizer and model onto the device, once; later calls do nothing. Threads that call it together
        (for example the first `score` calls of several requests) wait for one load.

        :raises FileNotFoundError: If `model` is a local path that does not exist.
        :raises OSError: If the model or tokenizer cannot be read (not a model folder, corrupt weights,
            unknown hub id, no network).
        :raises ValueError: If the model has more than one output label.
        """
        if self.model is not None:
            return
        with self._load_lock:
            if self.model is None:  # another thread may have loaded it while this one waited
                self._load()

    def _load(self) -> None:
        name = self.model_name
        local = Path(name).expanduser()
        if local.exists():
            name = str(local)
            if not local.is_dir() or not (local / "config.json").is_file():
                raise OSError(
                    f"Cross-encoder folder '{local}' has no config.json: expected a Hugging Face model folder"
                )
        elif looks_like_local_path(name):
            raise FileNotFoundError(f"Cross-encoder folder '{name}' does not exist")
        if local.is_dir() and self._load_light(local):
            return
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        hub_kwargs: dict[str, Any] = {"token": self.token} if self.token else {}
        model_kwargs = dict(self.model_kwargs)
        config_kwargs: dict[str, Any] = {}
        if "num_labels" in model_kwargs:
            config_kwargs["num_labels"] = model_kwargs.pop("num_labels")
            # A new label count means a fresh head: let transformers initialise it instead of failing.
            model_kwargs.setdefault("ignore_mismatched_sizes", True)
        try:
            config = AutoConfig.from_pretrained(name, **hub_kwargs, **config_kwargs)
        except (OSError, ValueError) as error:
            raise OSError(f"Could not read the config of cross-encoder '{self.model_name}': {error}") from error
        if config.num_labels != 1:
            raise ValueError(
                f"Cross-encoder '{self.model_name}' must have exactly one output label, but its config has "
                f"num_labels={config.num_labels}. Pass model_kwargs={{'num_labels': 1}} to put a fresh one-logit "
                "head on a base model."
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, **hub_kwargs, **self.tokenizer_kwargs)
        except (OSError, ValueError) as error:
            raise OSError(f"Could not load the tokenizer of cross-encoder '{self.model_name}': {error}") from error

        def load_weights() -> Any:
            try:
                with transformers_bars_off():
                    return AutoModelForSequenceClassification.from_pretrained(
                        name, config=config, **hub_kwargs, **model_kwargs
                    ).eval()
            except Exception as error:  # safetensors, torch and transformers raise many kinds here
                raise OSError(f"Could not load the weights of cross-encoder '{self.model_name}': {error}") from error

        device = resolve_device(self.requested_device)
        self.backend = resolve_backend(self.requested_backend, device.type, self.requested_precision, self.model_kwargs)
        if self.backend != "torch":
            self._load_exported(name, config, tokenizer, load_weights, device)
            return
        model = load_weights()
        precision = resolve_precision(self.requested_precision, device)
        model.to(device)
        if precision == "bf16" or (precision == "fp16" and device.type != "cpu"):
            # The weights themselves are cast. On the CPU, bf16 weights measured 1.2x the pairs/s of bf16 autocast
            # over fp32 weights (23.2 against 19.3 on SciFact abstracts, score Spearman vs fp32 0.99985);
            # fp16 on the CPU stays autocast, since few CPUs compute fp16 natively.
            model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
        if precision == "int8":
            model = quantize_int8(model)
        self._attach(model, model.config, tokenizer, device, precision)

    def _load_light(self, folder: Path) -> bool:
        """Open a local folder's cached export without transformers (:mod:`~haystack_crossrerank.exported.light`)."""
        from haystack_crossrerank.exported import light

        device = resolve_device(self.requested_device)
        backend = resolve_backend(self.requested_backend, device.type, self.requested_precision, self.model_kwargs)
        opened = None if backend == "torch" or self.tokenizer_kwargs else light.open_cached(folder, backend)
        if opened is None:  # the full load below (it also refuses what it must, with its own messages)
            return False
        self.backend, (export, config, tokenizer) = backend, opened
        self._open_export(export, config, tokenizer, light.weights_loader(folder, self.model_name), device)
        return True

    def _load_exported(
        self, name: str, config: Any, tokenizer: Any, load_weights: Callable[[], Any], device: Any
    ) -> None:
        """Export (or reuse the cached export) and compile it on the backend's runtime."""
        from haystack_crossrerank import exported
        from haystack_crossrerank.exported import light

        exported.require_runtime(self.backend)
        folder = exported.local_model_folder(name, self.token)
        pair = tokenizer(["a query", "another query"], ["a short text", "a longer text of several words"], padding=True)
        example = {
            k: torch.as_tensor(v) for k, v in pair.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        export = exported.export_model(load_weights, folder, backend=self.backend, example=example)
        if not self.tokenizer_kwargs:
            light.record(export, folder, config, tokenizer)
        self._open_export(export, config, tokenizer, load_weights, device)

    def _open_export(
        self, export: Path, config: Any, tokenizer: Any, load_weights: Callable[[], Any], device: Any
    ) -> None:
        """Compile an export on the backend's runtime, at the requested precision, and attach it."""
        from haystack_crossrerank import exported

        self._load_weights, self.export_folder = load_weights, export
        precision = exported.resolve_backend_precision(self.backend, self.requested_precision)
        path = exported.model_file(export, self.backend)
        if precision == "int8":
            path, precision, self.int8_report = exported.int8_model(export, self.backend, self.model_name)
        session = exported.RuntimeSession(self.backend, path, precision=precision, device_type=device.type)
        self._attach(session, config, tokenizer, device, precision)

    def calibrate_int8(
        self,
        calibration_pairs: Sequence[tuple[str, str]],
        held_pairs: Sequence[tuple[str, str]],
        *,
        batch_size: int = 16,
        distil_pairs: Sequence[tuple[str, str]] | None = None,
        distil_settings: DistilSettings | None = None,
        distil_batch_size: int = 8,
        show_progress: bool = True,
    ) -> Int8Report:
        """
        Make the calibrated int8 copy of this exported model, keep it only if it passes the gate, and use it if so.

        :param calibration_pairs: In-domain (query, text) pairs whose activations set the int8 scales (256 by
            default in `crossrerank quantize`).
        :param held_pairs: Other pairs, scored by fp32 and int8: the int8 copy is kept only if the Spearman
            correlation of the two is at least :data:`haystack_crossrerank.exported.INT8_MIN_SPEARMAN`.
        :param batch_size: Pairs per calibration batch.
        :param distil_pairs: OpenVINO only: in-domain pairs (none of the held ones) to train the int8 model on
            against this model's fp32 scores, after calibration (quantization-aware distillation,
            :mod:`haystack_crossrerank.exported.distil`; `crossrerank quantize --distil`). `None`: post-training
            quantization alone.
        :param distil_settings: Epochs, learning rate, warm-up and seed of the distillation.
        :param distil_batch_size: Pairs per distillation step (length-sorted batches, shuffled).
        :param show_progress: Show a bar over the distillation's steps.
        :returns: The report (`passed`, `spearman`, ...), also stored beside the export.
        :raises ValueError: If the scorer's backend is `"torch"`, either pair list is empty, or distillation is
            asked for on a backend other than OpenVINO or with no pairs.
        """
        from haystack_crossrerank.ranking.calibration import calibrate_scorer_int8

        return calibrate_scorer_int8(
            self,
            calibration_pairs,
            held_pairs,
            batch_size=batch_size,
            distil_pairs=distil_pairs,
            distil_settings=distil_settings,
            distil_batch_size=distil_batch_size,
            show_progress=show_progress,
        )

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        precision: str = "fp32",
        batch_size: int = 32,
        max_length: int | None = None,
    ) -> CrossEncoderScorer:
        """
        Wrap a model that is already in memory (for example one being trained), without copying it.

        The model is scored where it is, in its current dtype; `precision` only chooses autocast (on the CPU, and
        on CUDA for fp32 weights, e.g. evaluation during bf16 training).
        The caller puts the model in eval mode (and back in train mode afterwards).

        :param model: A sequence-classification model with one label.
        :param tokenizer: Its fast tokenizer.
        :param precision: `"fp32"`, `"bf16"` or `"fp16"` (autocast).
        :param batch_size: The most pairs in one forward pass.
        :param max_length: The most tokens per pair; `None` takes the model's limit.
        :returns: A loaded scorer.
        """
        scorer = cls(
            getattr(model, "name_or_path", None) or "in-memory model",
            precision=precision,
            batch_size=batch_size,
            max_length=max_length,
            backend="torch",
        )
        if model.config.num_labels != 1:
            raise ValueError(f"the model must have exactly one output label, but has {model.config.num_labels}")
        scorer._attach(
            model,
            model.config,
            tokenizer,
            next(model.parameters()).device,
            resolve_precision(precision, torch.device("cpu")),
        )
        return scorer

    def _attach(self, model: Any, config: Any, tokenizer: Any, device: torch.device, precision: str) -> None:
        """Set everything scoring needs from a loaded model (torch, or an ONNX session), its config and tokenizer."""
        limit = model_max_length(config, tokenizer)
        if self.requested_max_length is None:
            max_length = limit
        elif self.requested_max_length > limit:
            logger.warning(
                "max_length=%d exceeds the %d tokens that cross-encoder '%s' accepts; using %d",
                self.requested_max_length,
                limit,
                self.model_name,
                limit,
            )
            max_length = limit
        else:
            max_length = self.requested_max_length

        encoder = PairEncoder(tokenizer, self.model_name)
        if self.backend != "torch":
            encoder.pad_to_multiple, encoder.width_limit = EXPORTED_PAD_MULTIPLE, limit
        if max_length <= encoder.special_tokens + 1:
            raise ValueError(
                f"`max_length` must be > {encoder.special_tokens + 1} for this model, but got {max_length}"
            )

        self.activation = activation_from_config(config, self.model_name)
        if self.requested_batch_size is None:
            self.batch_size = default_batch_size(device, self.backend, precision)
        self.tokenizer = tokenizer
        self.device = device
        self.precision = precision
        self.max_length = max_length
        self._encoder = encoder
        self.model = model
        # transformers 5 runs BERT-like encoders with scaled-dot-product attention unless told otherwise.
        self.attention = (
            "exported graph" if self.backend != "torch" else str(getattr(config, "_attn_implementation", "?"))
        )
        logger.info(
            "Loaded cross-encoder '%s' on %s (%s %s, attention %s, max_length=%d)",
            self.model_name,
            device,
            self.backend,
            precision,
            self.attention,
            max_length,
        )

    # ------------------------------------------------------------------ scoring
    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        show_progress_bar: bool = False,
    ) -> list[float]:
        """
        Score pairs with the model and return the raw logits, in input order.

        :param pairs: (query, text) pairs of strings.
        :param batch_size: Overrides the scorer's `batch_size` for this call.
        :param max_length: A lower token limit for this call only (the scorer's own stays as it is).
        :param show_progress_bar: Show a tqdm bar over the batches.
        :returns: One Python float per pair.
        :raises TypeError: If a pair is not two strings.
        :raises ValueError: If `batch_size` or `max_length` is not > 0.
        """
        check_pairs(pairs)
        if not pairs:
            return []
        self.load()
        size = batch_size if batch_size is not None else self.batch_size
        check_int("batch_size", size, minimum=1)
        if max_length is not None:
            check_int("max_length", max_length, minimum=1)
        limit = min(self.max_length, max_length) if max_length is not None else self.max_length
        scores = np.empty(len(pairs), dtype=np.float64)
        bar = progress(desc="Scoring pairs", unit="pair", total=len(pairs), enabled=show_progress_bar)
        # On an accelerator the logits stay there until every batch is queued: one copy back at the end, so the
        # CPU pads the next batch while the device runs this one instead of waiting for it.
        pending: list[tuple[np.ndarray, torch.Tensor]] = []
        defer = self.backend == "torch" and self.device is not None and self.device.type != "cpu"
        with torch.inference_mode(), self._autocast():
            for indices, features in self._batches(pairs, size, limit):
                if self.backend != "torch":
                    scores[indices] = self.model(features)
                else:
                    logits = self.model(**self._to_device(features)).logits.reshape(-1)
                    if defer:
                        pending.append((indices, logits))
                    else:
                        scores[indices] = logits.float().numpy()
                bar.update(len(indices))
            if pending:
                values = torch.cat([logits for _, logits in pending]).float().cpu().numpy()
                scores[np.concatenate([indices for indices, _ in pending])] = values
        bar.close()
        return [float(s) for s in scores]

    def predict(self, pairs: Sequence[tuple[str, str]], *, batch_size: int | None = None) -> list[float]:
        """
        Score pairs the way `sentence_transformers.CrossEncoder.predict` does: the logit passed through the
        activation saved in the model's config (`sentence_transformers.activation_fn`), sigmoid by default.

        :param pairs: (query, text) pairs of strings.
        :param batch_size: Overrides the scorer's `batch_size` for this call.
        :returns: One Python float per pair.
        """
        logits = self.score(pairs, batch_size=batch_size)
        return [float(v) for v in self.activation(torch.tensor(logits, dtype=torch.float64)).tolist()]

    def encode(self, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """
        Build the padded model inputs for pairs, exactly as they are sent to the model (for inspection).

        :param pairs: (query, text) pairs of strings.
        :returns: `input_ids`, `attention_mask` and, where the model uses them, `token_type_ids`.
        """
        check_pairs(pairs)
        self.load()
        assert self._encoder is not None
        return self._to_device(self._encoder.collate(self._encoder.encode(pairs, {}, self.max_length)))

    # ------------------------------------------------------------------ internals
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device is None or self.backend != "torch" or self.precision not in ("fp16", "bf16"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        if self.device.type == "cpu":
            # bf16 weights run as they are; autocast covers fp16 on the CPU and models wrapped by `from_model`
            # (which keep their fp32 weights while they train).
            return torch.autocast(device_type="cpu", dtype=dtype)
        if self.device.type == "cuda" and self._weights_dtype() == torch.float32:
            # Weights loaded by `load` are cast already; a model wrapped by `from_model` mid-training is not.
            return torch.autocast(device_type="cuda", dtype=dtype)
        return contextlib.nullcontext()

    def _weights_dtype(self) -> torch.dtype | None:
        parameter = next(iter(self.model.parameters()), None) if hasattr(self.model, "parameters") else None
        return parameter.dtype if parameter is not None else None

    def _batches(
        self, pairs: Sequence[tuple[str, str]], size: int, max_length: int
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(input positions, features) per batch: see :meth:`PairEncoder.batches`."""
        assert self._encoder is not None
        return self._encoder.batches(pairs, size, max_length, self.max_batch_tokens)

    def _to_device(self, features: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        assert self.device is not None
        if self.device.type == "cuda":
            # Pinned host memory lets the copy run asynchronously, behind the work already queued.
            return {
                name: torch.from_numpy(value).pin_memory().to(self.device, non_blocking=True)
                for name, value in features.items()
            }
        return {name: torch.from_numpy(value).to(self.device) for name, value in features.items()}
