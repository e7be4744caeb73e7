"""Quantization-aware distillation: an OpenVINO int8 model trained to give its own fp32 model's scores.

Post-training int8 (:func:`haystack_crossrerank.exported.int8.quantize_openvino`) sets each activation's scale
from calibration pairs and leaves the weights as they are. On MiniLM its score error (0.041 in logits on average,
against OpenVINO fp32) is larger than the usual gap between a query's 10th and 11th candidates (0.016), so it
changed the nDCG@10 of 8 and 12 in 50 SciFact train claims (document and passage mode). Here NNCF's PyTorch
backend puts the same kind of quantizers in the same places (the MatMuls with weights; attention, embeddings,
and with the first-token last layer its one-token projections and the head stay in floating point), and the
quantized model is then trained, weights and quantizer ranges together, to give the fp32 model's logits on
in-domain pairs (mean squared error; the fp32 model is the teacher, so no labels are needed). OpenVINO converts
the result with its FakeQuantize operations into the same kind of int8 model as post-training quantization, at
the same speed.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from haystack_crossrerank.exported.export import _quiet, first_token_last_layer, require_runtime
from haystack_crossrerank.utils.extras import require
from haystack_crossrerank.utils.progress import progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistilSettings:
    """
    How the int8 student is trained against its fp32 teacher (the defaults are what `crossrerank quantize` uses).

    ```python
    from haystack_crossrerank.exported.distil import DistilSettings

    print(DistilSettings(epochs=2))
    # DistilSettings(epochs=2, learning_rate=1e-05, warmup_ratio=0.1, seed=42)
    ```
    """

    epochs: int = 1
    learning_rate: float = 1e-5
    warmup_ratio: float = 0.1  # then linear decay to 0
    seed: int = 42

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"DistilSettings.epochs must be at least 1, but got {self.epochs}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"DistilSettings.learning_rate must be a positive number, but got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"DistilSettings.warmup_ratio must be in [0, 1), but got {self.warmup_ratio}")


@dataclass
class DistilStats:
    """What a distillation did: steps, pairs, the loss (mean squared logit error) before and after, time."""

    pairs: int
    steps: int
    loss_first_tenth: float
    loss_last_tenth: float
    seconds: float


def float_node_names(graph: Any, pruned: bool) -> list[str]:
    """
    The NNCF (PyTorch backend) node names of the weight projections that stay in floating point: with the
    first-token last layer, that layer's query, attention output and feed-forward projections and the head.

    NNCF names a node by its module path without list indices (every encoder layer's query is
    `.../attention/self/query/linear/<n>`), and the first-token layer's calls get names of their own, so they are
    found by position: the layer calls query, key, value, attention output, feed-forward in and out, in that
    order (:func:`haystack_crossrerank.exported.export.first_token_last_layer`), and the head's projections follow.

    :param graph: The model's `NNCFGraph`.
    :param pruned: Whether the model's last layer is the first-token layer.
    :returns: The names; none for a model exported whole (it is quantized whole, as post-training int8 does).
    """
    if not pruned:
        return []
    nodes = sorted(graph.get_all_nodes(), key=lambda node: node.node_id)  # ids follow the order of the calls
    linears = [node for node in nodes if node.node_type == "linear"]
    attentions = [node for node in nodes if node.node_type == "scaled_dot_product_attention"]
    head = len(linears) - 6 * len(attentions)
    if not attentions or head < 1:
        raise ValueError(
            f"expected 6 projections per attention layer and a head after them, but found {len(linears)} "
            f"projections and {len(attentions)} attention operations"
        )
    last_layer = linears[-(6 + head) : -head]
    query, _key, _value, *one_token = last_layer
    return [node.node_name for node in [query, *one_token, *linears[-head:]]]


def _torch_batch(features: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in features.items()}


def distil_openvino_int8(
    load_weights: Callable[[], Any],
    target: Path,
    calibration: Sequence[dict[str, np.ndarray]],
    train: Sequence[dict[str, np.ndarray]],
    *,
    settings: DistilSettings | None = None,
    show_progress: bool = True,
) -> DistilStats:
    """
    Quantize a model with NNCF's PyTorch backend, train it against its fp32 self, and write the OpenVINO int8 model.

    :param load_weights: Returns the fp32 `transformers` model (eval mode); called twice (teacher and student).
    :param target: Where to write the int8 model (`.xml`, with its `.bin`).
    :param calibration: Batches of model inputs (numpy) whose activation ranges set the initial scales.
    :param train: Batches of model inputs (numpy) to distil on: in-domain pairs, none of them held out for the
        gate or for measuring.
    :param settings: Epochs, learning rate, warm-up, seed.
    :param show_progress: Show a bar over the training steps.
    :returns: Steps, pairs, the loss at the start and end of training, seconds.
    :raises ImportError: If OpenVINO or NNCF is missing (naming the `openvino` extra).
    :raises ValueError: If there are no calibration or no training batches.
    """
    import torch

    openvino = require_runtime("openvino")
    nncf = require("nncf", "openvino")
    from nncf.torch.function_hook import wrap_model
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import GraphModelWrapper

    settings = settings or DistilSettings()
    if not calibration or not train:
        raise ValueError(
            f"distillation needs calibration and training batches, but got {len(calibration)} and {len(train)}"
        )
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    teacher, student = load_weights(), load_weights()
    pruned = first_token_last_layer(teacher)
    if first_token_last_layer(student) != pruned:  # pragma: no cover - the same model twice
        raise RuntimeError("the teacher and the student got different layouts")
    for model in (teacher, student):
        model.config.return_dict = False  # a plain tuple out, so that output 0 is the logits
        model.eval()  # no dropout: the target is the fp32 model's own scores
    calibration_batches = [_torch_batch(features) for features in calibration]
    graph = GraphModelWrapper(wrap_model(copy.deepcopy(student)), calibration_batches[0]).build_graph()
    floating = float_node_names(graph, pruned)
    with _quiet():
        quantized = nncf.quantize(
            student,
            nncf.Dataset(calibration_batches),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration_batches),
            ignored_scope=nncf.IgnoredScope(
                names=floating, types=["scaled_dot_product_attention", "embedding"], validate=False
            ),
        )
    batches = [_torch_batch(features) for features in train]
    with torch.no_grad():
        targets = [teacher(**batch)[0].reshape(-1).float() for batch in batches]
    del teacher
    steps = settings.epochs * len(batches)
    warmup = max(1, int(settings.warmup_ratio * steps))
    trainable = [p for p in quantized.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    losses: list[float] = []
    order = list(range(len(batches)))
    rng = random.Random(settings.seed)
    bar = progress(total=steps, desc="int8 distillation", unit="step", enabled=show_progress)
    try:
        for _ in range(settings.epochs):
            rng.shuffle(order)
            for index in order:
                logits = quantized(**batches[index])[0].reshape(-1)
                loss = torch.nn.functional.mse_loss(logits.float(), targets[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(mse=f"{np.mean(losses[-50:]):.5f}", refresh=False)
    finally:
        bar.close()
    quantized.eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with _quiet(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracing warns about Python control flow on shapes
        converted = openvino.convert_model(quantized, example_input=dict(calibration_batches[0]))
    openvino.save_model(converted, str(target), compress_to_fp16=False)
    tenth = max(1, len(losses) // 10)
    return DistilStats(
        pairs=sum(len(batch_targets) for batch_targets in targets),
        steps=steps,
        loss_first_tenth=round(float(np.mean(losses[:tenth])), 6),
        loss_last_tenth=round(float(np.mean(losses[-tenth:])), 6),
        seconds=round(time.perf_counter() - started, 1),
    )
