"""`CrossEncoderRanker`: the Haystack component. It does Haystack work; scoring is `CrossEncoderScorer`'s."""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret, deserialize_secrets_inplace
from haystack.utils.hf import deserialize_hf_model_kwargs, serialize_hf_model_kwargs

from haystack_crossrerank.exported.runtime import check_backend
from haystack_crossrerank.ranking.activation import sigmoid
from haystack_crossrerank.ranking.documents import check_inputs, check_overrides, deduplicate_documents
from haystack_crossrerank.ranking.fusion import FUSION_METHODS, fuse_scores
from haystack_crossrerank.ranking.passages import (
    AGGREGATIONS,
    META_PLACEMENTS,
    PASSAGE_MODES,
    Passage,
    aggregate,
    document_passages,
)
from haystack_crossrerank.ranking.scheduler import PairScorer
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from haystack_crossrerank.utils.checks import CopyableLock, check_choice, check_int, check_number

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "tomaarsen/reranker-distilroberta-base-stsb"
# Keys of the returned Documents' `meta` that hold the best passage and its score (passage modes only).
PASSAGE_META_KEY = "crossrerank_passage"
PASSAGE_SCORE_META_KEY = "crossrerank_passage_score"


@component
class CrossEncoderRanker:
    """
    Reranks Documents by a cross-encoder's score for each (query, document) pair.

    Put it after a retriever (BM25, embeddings, or both joined): it scores every candidate against the
    query with a sequence-classification model that has one output, and returns the Documents sorted by
    that score, highest first. Equal scores keep their input order.

    Usage example (with a model folder on disk; any one-label cross-encoder on the hub works too):

    ```python
    from haystack import Document
    from haystack_crossrerank import CrossEncoderRanker

    ranker = CrossEncoderRanker(model="path/to/cross-encoder", top_k=2)
    docs = [Document(content="Berlin is the capital of Germany."),
            Document(content="A cat sat on the mat."),
            Document(content="Germany's largest city is Berlin.")]
    result = ranker.run(query="What is the capital of Germany?", documents=docs)
    print([(d.content, round(d.score, 3)) for d in result["documents"]])
    # [('Berlin is the capital of Germany.', 0.934), ("Germany's largest city is Berlin.", 0.712)]
    ```

    Scores are `sigmoid(logit * calibration_factor)` when `scale_score` is true, else the raw logit.
    With `fusion` set, the final score combines the cross-encoder score with the retriever's incoming
    score (see :func:`haystack_crossrerank.ranking.fusion.fuse_scores`).

    One ranker may be shared: `run` and `run_async` may be called from many threads and coroutines at once (two
    branches of an `AsyncPipeline`, a web server's requests, a Ray actor with concurrency), on every backend, and
    each call gets exactly the result it would get alone. The first calls made together load the model once.
    What must not overlap with running calls: changing the ranker's attributes, and `calibrate_int8` on its
    scorer.
    """

    def __init__(
        self,
        *,
        model: str | Path = DEFAULT_MODEL,
        device: ComponentDevice | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),  # noqa: B008
        top_k: int = 10,
        query_prefix: str = "",
        query_suffix: str = "",
        document_prefix: str = "",
        document_suffix: str = "",
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        scale_score: bool = True,
        calibration_factor: float = 1.0,
        score_threshold: float | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        precision: str = "auto",
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        fusion: str | None = None,
        fusion_weight: float = 0.5,
        max_batch_tokens: int | None = None,
        passages: str = "document",
        meta_placement: str = "passage",
        aggregation: str = "max",
        aggregation_weight: float = 0.5,
        window_size: int = 3,
        window_stride: int = 2,
        max_passages: int | None = None,
        backend: str = "auto",
    ) -> None:
        """
        Create the ranker. Nothing is loaded until `warm_up()` (or the first `run()`).

        :param model: A hub id or a local folder of a cross-encoder with one output label.
        :param device: The device to run on; `None` picks CUDA, then Apple MPS, then the CPU.
        :param token: A Hugging Face token for private models.
        :param top_k: The most Documents to return; must be > 0.
        :param query_prefix: Text put before the query (some models want an instruction).
        :param query_suffix: Text put after the query.
        :param document_prefix: Text put before each document text.
        :param document_suffix: Text put after each document text.
        :param meta_fields_to_embed: Meta fields whose values are put before the content, in this order.
        :param embedding_separator: The separator between the meta values and the content.
        :param scale_score: Return `sigmoid(logit * calibration_factor)` instead of the raw logit.
        :param calibration_factor: Multiplies the logit before the sigmoid when `scale_score` is true.
        :param score_threshold: Drop Documents whose final score is below this value (before `top_k`).
        :param batch_size: The most pairs in one forward pass; must be > 0. `None`: the scorer's default by
            backend and device (on the CPU 16 with torch, 8 with an exported backend, 4 in int8; 128 on a GPU).
        :param max_length: The most tokens per pair; `None` takes the model's limit (longer is clamped).
        :param precision: `"auto"`, `"fp32"`, `"fp16"`, `"bf16"` or `"int8"` (see `backend`).
        :param model_kwargs: Extra keyword arguments for `AutoModelForSequenceClassification.from_pretrained`.
        :param tokenizer_kwargs: Extra keyword arguments for `AutoTokenizer.from_pretrained`.
        :param fusion: `None` (off), or how to combine the cross-encoder score with each Document's incoming
            retriever score: `"minmax"`, `"zscore"` (normalise both per query, then a weighted sum) or `"rrf"`
            (weighted reciprocal-rank fusion).
        :param fusion_weight: The cross-encoder's weight in [0, 1]; the retriever's is `1 - fusion_weight`.
        :param max_batch_tokens: If set, batches also hold at most this many padded tokens.
        :param passages: What one score is computed on: `"document"` (the whole text, cut at the model's
            limit), `"sentences"` (each sentence) or `"windows"` (`window_size` sentences, moving by
            `window_stride`). Passage scores are combined by `aggregation`; models trained on sentence pairs
            (STS) need `"sentences"`.
        :param meta_placement: In the passage modes, whether the values of `meta_fields_to_embed` (a title) are
            a passage of their own, first (`"passage"`), or put before every passage (`"prefix"`).
        :param aggregation: How passage scores make the document's score: `"max"`, `"first"`, `"mean"`,
            `"max_mean"` or `"max_first"` (see :func:`haystack_crossrerank.ranking.passages.aggregate`).
        :param aggregation_weight: The weight of the mean or of the first passage in the blends, in [0, 1].
        :param window_size: Sentences per window (`passages="windows"`).
        :param window_stride: Sentences the window moves (`passages="windows"`).
        :param max_passages: Score at most the first this many passages of each document (a cost bound).
        :param backend: `"auto"` (OpenVINO on the CPU where it is installed, torch on GPUs and for fp16 or
            `model_kwargs`), `"torch"`, `"onnx"` (ONNX Runtime) or `"openvino"`: the exported backends take
            precision `"fp32"`, a calibrated `"int8"`, and on OpenVINO `"bf16"` (see
            :class:`haystack_crossrerank.ranking.scoring.CrossEncoderScorer`).
        :raises TypeError: If a parameter has the wrong type.
        :raises ValueError: If a parameter has a wrong value.
        """
        for name, number in (("top_k", top_k), ("window_size", window_size)):
            check_int(name, number, minimum=1)
        if batch_size is not None:
            check_int("batch_size", batch_size, minimum=1)
        check_int("window_stride", window_stride, minimum=1)
        for name, limit in (
            ("max_length", max_length),
            ("max_batch_tokens", max_batch_tokens),
            ("max_passages", max_passages),
        ):
            check_int(name, limit, minimum=1, optional=True)
        if not isinstance(model, (str, Path)) or not str(model).strip():
            raise TypeError(f"`model` must be a non-empty hub id or folder path, but got {model!r}")
        if device is not None and not isinstance(device, ComponentDevice):
            raise TypeError(f"`device` must be a ComponentDevice or None, but got {type(device).__name__}")
        check_backend(backend, precision, model_kwargs)
        for name, value in (
            ("query_prefix", query_prefix),
            ("query_suffix", query_suffix),
            ("document_prefix", document_prefix),
            ("document_suffix", document_suffix),
            ("embedding_separator", embedding_separator),
        ):
            if not isinstance(value, str):
                raise TypeError(f"`{name}` must be a str, but got {type(value).__name__} {value!r}")
        if meta_fields_to_embed is not None and (
            not isinstance(meta_fields_to_embed, list) or not all(isinstance(f, str) for f in meta_fields_to_embed)
        ):
            raise TypeError(f"`meta_fields_to_embed` must be a list of str or None, but got {meta_fields_to_embed!r}")
        if not isinstance(scale_score, bool):
            raise TypeError(f"`scale_score` must be a bool, but got {type(scale_score).__name__} {scale_score!r}")
        check_number("calibration_factor", calibration_factor)
        check_number("score_threshold", score_threshold, optional=True)
        if fusion is not None and fusion not in FUSION_METHODS:
            raise ValueError(f"`fusion` must be None or one of {list(FUSION_METHODS)}, but got {fusion!r}")
        check_number("fusion_weight", fusion_weight, unit_interval=True)
        check_choice("passages", passages, PASSAGE_MODES)
        check_choice("meta_placement", meta_placement, META_PLACEMENTS)
        check_choice("aggregation", aggregation, AGGREGATIONS)
        check_number("aggregation_weight", aggregation_weight, unit_interval=True)
        for name, kwargs in (("model_kwargs", model_kwargs), ("tokenizer_kwargs", tokenizer_kwargs)):
            if kwargs is not None and not isinstance(kwargs, dict):
                raise TypeError(f"`{name}` must be a dict or None, but got {type(kwargs).__name__}")

        self.model = str(model)
        self.device = device
        self.token = token
        self.top_k = top_k
        self.query_prefix = query_prefix
        self.query_suffix = query_suffix
        self.document_prefix = document_prefix
        self.document_suffix = document_suffix
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        self.scale_score = scale_score
        self.calibration_factor = float(calibration_factor)
        self.score_threshold = None if score_threshold is None else float(score_threshold)
        self.batch_size = batch_size
        self.max_length = max_length
        self.precision = precision
        self.backend = backend
        self.model_kwargs = model_kwargs
        self.tokenizer_kwargs = tokenizer_kwargs
        self.fusion = fusion
        self.fusion_weight = float(fusion_weight)
        self.max_batch_tokens = max_batch_tokens
        self.passages = passages
        self.meta_placement = meta_placement
        self.aggregation = aggregation
        self.aggregation_weight = float(aggregation_weight)
        self.window_size = window_size
        self.window_stride = window_stride
        self.max_passages = max_passages
        self._scorer: CrossEncoderScorer | None = None
        self._route: PairScorer | None = None
        self._warm_up_lock = CopyableLock()

    def _get_telemetry_data(self) -> dict[str, Any]:
        return {"model": self.model}

    @property
    def scorer(self) -> CrossEncoderScorer | None:
        """The loaded scorer, or `None` before `warm_up()`."""
        return self._scorer

    def use_scorer(self, scorer: PairScorer | None) -> None:
        """
        Send this ranker's pairs through `scorer` instead of straight to its own model, for example a
        :class:`haystack_crossrerank.ranking.scheduler.BatchingScorer` that wraps `self.scorer` and scores the pairs
        of concurrent runs together. `warm_up` still loads the ranker's own scorer; the route is not serialized.

        :param scorer: An object whose `score(pairs)` returns one logit per (query, text) pair, in order; `None`
            scores with the ranker's own scorer again.
        :raises TypeError: If `scorer` has no `score` method.
        """
        if scorer is not None and not callable(getattr(scorer, "score", None)):
            raise TypeError(f"`scorer` must have a `score(pairs)` method or be None, but got {type(scorer).__name__}")
        self._route = scorer

    def warm_up(self) -> None:
        """
        Load the model once. Calling it again does nothing; threads or coroutines that call it (or `run`) together
        before the model is loaded wait for one load.
        """
        if self._scorer is not None:
            return
        with self._warm_up_lock:
            if self._scorer is None:  # another thread may have loaded it while this one waited
                self._scorer = self._load_scorer()

    def _load_scorer(self) -> CrossEncoderScorer:
        scorer = CrossEncoderScorer(
            self.model,
            device=self.device.to_torch_str() if self.device is not None else None,
            precision=self.precision,
            batch_size=self.batch_size,
            max_length=self.max_length,
            max_batch_tokens=self.max_batch_tokens,
            token=self.token.resolve_value() if self.token is not None else None,
            model_kwargs=self.model_kwargs,
            tokenizer_kwargs=self.tokenizer_kwargs,
            backend=self.backend,
        )
        scorer.load()
        return scorer

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """
        Serialize the component, every init parameter included.

        :returns: The dictionary that `from_dict` takes.
        """
        names = [name for name in inspect.signature(type(self).__init__).parameters if name != "self"]
        params = {name: getattr(self, name) for name in names}
        params["device"] = self.device.to_dict() if self.device is not None else None
        params["token"] = self.token.to_dict() if self.token is not None else None
        params["model_kwargs"] = dict(self.model_kwargs) if self.model_kwargs is not None else None
        data = default_to_dict(self, **params)
        if data["init_parameters"]["model_kwargs"] is not None:
            serialize_hf_model_kwargs(data["init_parameters"]["model_kwargs"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrossEncoderRanker:
        """
        Build the component from `to_dict()` output.

        :param data: The serialized component.
        :returns: The component.
        """
        data = copy.deepcopy(data)  # the caller's dictionary is left as it was
        params = data.setdefault("init_parameters", {})
        if params.get("device") is not None:
            params["device"] = ComponentDevice.from_dict(params["device"])
        deserialize_secrets_inplace(params, keys=["token"])
        if params.get("model_kwargs") is not None:
            deserialize_hf_model_kwargs(params["model_kwargs"])
        return default_from_dict(cls, data)

    # ------------------------------------------------------------------ running
    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
        passages: str | None = None,
        aggregation: str | None = None,
        max_passages: int | None = None,
    ) -> dict[str, list[Document]]:
        """
        Rerank `documents` for `query`.

        Documents with the same id are scored once: the one with the highest incoming score is kept. A
        Document without text is scored as an empty text (plus any embedded meta fields). The caller's
        Documents are not changed; the returned ones are copies with the new `score`. In the passage modes,
        each copy's `meta` also holds the best passage (`crossrerank_passage`) and its score
        (`crossrerank_passage_score`, scaled like `score`, before fusion).

        :param query: The query, a non-empty string.
        :param documents: The candidates.
        :param top_k: Overrides `top_k` for this call; must be > 0.
        :param scale_score: Overrides `scale_score` for this call.
        :param score_threshold: Overrides `score_threshold` for this call.
        :param passages: Overrides `passages` for this call.
        :param aggregation: Overrides `aggregation` for this call.
        :param max_passages: Overrides `max_passages` for this call; must be > 0.
        :returns: `{"documents": [...]}`, best first, at most `top_k`.
        :raises TypeError: If `query` is not a string or `documents` is not a list of Documents.
        :raises ValueError: If `query` is empty, `top_k` is not > 0, or an override has a wrong value.
        """
        check_overrides(top_k, scale_score, score_threshold, passages, aggregation, max_passages)
        top_k = top_k if top_k is not None else self.top_k
        scale_score = scale_score if scale_score is not None else self.scale_score
        score_threshold = score_threshold if score_threshold is not None else self.score_threshold
        mode = passages if passages is not None else self.passages
        method = aggregation if aggregation is not None else self.aggregation
        check_inputs(query, documents)
        if not documents:
            return {"documents": []}

        candidates = deduplicate_documents(documents)
        scored = self.score_passages(query, candidates, passages=mode, max_passages=max_passages)
        logits, best = [], []
        for _, passage_logits in scored:
            value, index = aggregate(passage_logits, method, self.aggregation_weight)
            logits.append(value)
            best.append(index)
        scores = [self._scaled(logit, scale_score) for logit in logits]
        if self.fusion is not None:
            scores = fuse_scores(
                scores, [doc.score for doc in candidates], method=self.fusion, weight=self.fusion_weight
            )
        # Python's sort is stable: equal scores keep their input order. NaN sorts last.
        order = sorted(range(len(candidates)), key=lambda i: -scores[i] if not math.isnan(scores[i]) else math.inf)
        ranked = []
        for i in order:
            doc = candidates[i]
            if mode != "document":
                doc_passages, passage_logits = scored[i]
                meta = {
                    **doc.meta,
                    PASSAGE_META_KEY: doc_passages[best[i]].highlight,
                    PASSAGE_SCORE_META_KEY: self._scaled(passage_logits[best[i]], scale_score),
                }
                doc = replace(doc, meta=meta)
            ranked.append(replace(doc, score=float(scores[i])))
        if score_threshold is not None:
            ranked = [doc for doc in ranked if doc.score is not None and doc.score >= score_threshold]
        return {"documents": ranked[:top_k]}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
        passages: str | None = None,
        aggregation: str | None = None,
        max_passages: int | None = None,
    ) -> dict[str, list[Document]]:
        """
        The same as `run` (same parameters, same result), in a worker thread so that the event loop stays free
        while the model computes.
        """
        call = functools.partial(
            self.run,
            query=query,
            documents=documents,
            top_k=top_k,
            scale_score=scale_score,
            score_threshold=score_threshold,
            passages=passages,
            aggregation=aggregation,
            max_passages=max_passages,
        )
        return await asyncio.get_running_loop().run_in_executor(None, call)

    def score_passages(
        self,
        query: str,
        documents: list[Document],
        *,
        passages: str | None = None,
        max_passages: int | None = None,
    ) -> list[tuple[list[Passage], list[float]]]:
        """
        Cut each Document into passages and score them all against the query, as `run` does before it
        aggregates: the passages of all Documents go through the scorer in one call (length-sorted batches,
        the query tokenized once).

        :param query: The query (the ranker's `query_prefix`/`query_suffix` are added here).
        :param documents: The Documents, in the order the results come back.
        :param passages: The passage mode; `None` takes the ranker's.
        :param max_passages: The most passages per Document; `None` takes the ranker's.
        :returns: Per Document, its passages and their raw logits.
        """
        self.warm_up()
        assert self._scorer is not None
        per_document = [
            self.document_passages(
                doc,
                passages=passages if passages is not None else self.passages,
                max_passages=max_passages if max_passages is not None else self.max_passages,
            )
            for doc in documents
        ]
        prepared_query = self.query_prefix + query + self.query_suffix
        flat = [
            (prepared_query, self.document_prefix + p.text + self.document_suffix) for ps in per_document for p in ps
        ]
        logits = (self._route if self._route is not None else self._scorer).score(flat)
        result, position = [], 0
        for doc_passages in per_document:
            result.append((doc_passages, logits[position : position + len(doc_passages)]))
            position += len(doc_passages)
        return result

    def document_passages(
        self, document: Document, *, passages: str | None = None, max_passages: int | None = None
    ) -> list[Passage]:
        """
        The passages a Document is scored as (before `document_prefix`/`document_suffix` are added).

        :param document: The Document.
        :param passages: The passage mode; `None` takes the ranker's.
        :param max_passages: The most passages; `None` takes the ranker's.
        :returns: At least one passage.
        """
        meta_values = [
            str(document.meta[key])
            for key in self.meta_fields_to_embed
            if key in document.meta and document.meta[key] is not None
        ]
        return document_passages(
            document.content or "",
            self.embedding_separator.join(meta_values),
            mode=passages if passages is not None else self.passages,
            meta_placement=self.meta_placement,
            separator=self.embedding_separator,
            window_size=self.window_size,
            window_stride=self.window_stride,
            max_passages=max_passages if max_passages is not None else self.max_passages,
        )

    def document_text(self, document: Document) -> str:
        """
        The text that is paired with the query for a whole Document (`passages="document"`): prefix, embedded
        meta values, content, suffix.

        :param document: The Document.
        :returns: The text sent to the model.
        """
        (whole,) = self.document_passages(document, passages="document")
        return self.document_prefix + whole.text + self.document_suffix

    def _scaled(self, logit: float, scale_score: bool) -> float:
        return sigmoid(logit * self.calibration_factor) if scale_score else float(logit)
