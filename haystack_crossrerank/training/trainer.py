"""Fine-tuning a cross-encoder with `transformers.Trainer`, evaluated through the shared scorer."""

from __future__ import annotations

import json
import logging
import math
import platform
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from transformers import PrinterCallback, Trainer

from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from haystack_crossrerank.training import reporting
from haystack_crossrerank.training.base_model import load_for_training
from haystack_crossrerank.training.batching import forward_micro_batches, partition_by_length
from haystack_crossrerank.training.card import write_model_card
from haystack_crossrerank.utils.extras import require
from haystack_crossrerank.utils.hardware import TRAINING_PRECISIONS, model_max_length, training_precision
from haystack_crossrerank.utils.progress import on_terminal, transformers_bars_off

logger = logging.getLogger(__name__)

SIGMOID_PATH = "torch.nn.modules.activation.Sigmoid"


class ScoringEvaluator(Protocol):
    """What the trainer evaluates with: metrics from a scorer, one of them the primary (checkpoint selection)."""

    @property
    def primary_metric_name(self) -> str: ...

    def __call__(self, scorer: CrossEncoderScorer, *, extra: dict[str, Any] | None = None) -> dict[str, float]: ...


@dataclass
class TrainConfig:
    """
    Settings of a fine-tuning run. The defaults are the seed model's recipe
    (`tomaarsen/reranker-distilroberta-base-stsb`): 4 epochs, batch 64, lr 5e-5, linear schedule with 10%
    warm-up, no weight decay, seed 42, bf16 where the hardware has it, evaluation every 80 steps.

    :param base_model: Hub id or folder of the model to fine-tune. A base without a classification head gets
        a fresh one-logit head.
    :param output_dir: Where the finished model folder goes (written completely or not at all).
    :param epochs: Passes over the training data.
    :param batch_size: Pairs per optimizer step.
    :param learning_rate: Peak learning rate.
    :param warmup_ratio: Fraction of the steps with a linear warm-up.
    :param weight_decay: AdamW weight decay.
    :param seed: Random seed for the head, the shuffling and dropout.
    :param precision: `"auto"` (bf16 where supported, else fp32), `"bf16"`, `"fp16"` or `"fp32"`.
    :param eval_steps: Evaluate (and checkpoint) every this many steps.
    :param select_best: Keep the checkpoint with the best validation metric instead of the last one.
    :param swap_pairs: Present each pair in a random order each time it is seen (for symmetric tasks such as
        STS): free augmentation, the number of steps is unchanged.
    :param max_length: The most tokens per training pair (`None`: the model's limit).
    :param overwrite: Replace an existing output folder.
    :param resume: Continue from the last checkpoint of an interrupted run with the same output folder.
    :param save_checkpoints: Write a resumable checkpoint (model, optimizer, scheduler) at every evaluation.
        It costs disk time (about 270 MB each for MiniLM); `select_best` needs it.
    :param logging_steps: Log the training loss every this many steps.
    :param dataloader_workers: Processes that tokenize and pad batches beside the training loop (0: in the loop).
    :param eval_precision: Precision of the evaluations during training: `None` is bf16 autocast on a CPU that
        trains in bf16 and fp32 elsewhere; `"fp32"`, `"bf16"` or `"fp16"` choose (autocast over fp32 weights).
    :param task: `"sts"` or `"retrieval"`, recorded in the model card.
    """

    base_model: str
    output_dir: str
    epochs: float = 4.0
    batch_size: int = 64
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 42
    precision: str = "auto"
    eval_steps: int = 80
    select_best: bool = False
    swap_pairs: bool = False
    max_length: int | None = None
    overwrite: bool = False
    resume: bool = False
    save_checkpoints: bool = True
    logging_steps: int = 10
    dataloader_workers: int = 0
    eval_precision: str | None = None
    task: str = "sts"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_task(cls, task: str, *, base_model: str, output_dir: str, **settings: Any) -> TrainConfig:
        """
        A config with a task's preset: STS is the seed's recipe (this class's defaults); retrieval overrides
        them with what measured best on SciFact's held-out training queries (:data:`TASK_PRESETS`).

        :param task: `"sts"` or `"retrieval"`.
        :param base_model: See the class.
        :param output_dir: See the class.
        :param settings: Any other field; a `None` value keeps the preset (so unset command-line flags can be
            passed as they are).
        :returns: The config.
        :raises ValueError: For an unknown task.
        """
        if task not in TASK_PRESETS:
            raise ValueError(f"task must be one of {sorted(TASK_PRESETS)}, but got {task!r}")
        given = {key: value for key, value in settings.items() if value is not None}
        return cls(base_model=base_model, output_dir=output_dir, task=task, **{**TASK_PRESETS[task], **given})

    def validate(self) -> None:
        """
        Check the settings.

        :raises ValueError: On a setting out of range.
        """
        checks = [
            ("epochs", self.epochs > 0),
            ("batch_size", self.batch_size > 0),
            ("learning_rate", self.learning_rate > 0),
            ("eval_steps", self.eval_steps > 0),
            ("logging_steps", self.logging_steps > 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"`{name}` must be > 0, but got {getattr(self, name)}")
        if self.dataloader_workers < 0:
            raise ValueError(f"`dataloader_workers` must be >= 0, but got {self.dataloader_workers}")
        if self.eval_precision not in (None, "fp32", "bf16", "fp16"):
            raise ValueError(
                f"`eval_precision` must be None, 'fp32', 'bf16' or 'fp16', but got {self.eval_precision!r}"
            )
        if self.select_best and not self.save_checkpoints:
            raise ValueError("`select_best` needs `save_checkpoints`, but save_checkpoints is False")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"`warmup_ratio` must be in [0, 1), but got {self.warmup_ratio}")
        if self.precision not in TRAINING_PRECISIONS:
            raise ValueError(f"`precision` must be one of {list(TRAINING_PRECISIONS)}, but got {self.precision!r}")


# Per-task presets over TrainConfig's defaults. Retrieval: measured on SciFact's held-out training queries
# (nDCG@10 0.7109 from the STS-B model with these settings, against 0.4997 from the MiniLM base with 1 epoch at
# lr 3e-5). A setting becomes a preset only after it won on validation data.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    "sts": {},
    "retrieval": {"epochs": 2.0, "batch_size": 8, "eval_steps": 50, "select_best": True},
}


class PairCollator:
    """
    Tokenizes a batch of (sentence1, sentence2, score) rows, optionally swapping each pair's order at random.

    With `micro_batches` (the default on the CPU) the batch is cut into length-sorted micro-batches (see
    :mod:`haystack_crossrerank.training.batching`); without it (the default on a GPU, where padding costs
    little and every extra forward call costs launch overhead) it is one padded batch.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int,
        *,
        swap_pairs: bool = False,
        seed: int = 42,
        micro_batches: bool | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.swap_pairs = swap_pairs
        self.micro_batches = (not torch.cuda.is_available()) if micro_batches is None else micro_batches
        self.seed = seed
        self.random = random.Random(seed)
        self._worker: int | None = None

    def _rng(self) -> random.Random:
        """The swap draws: with dataloader workers, each worker its own stream (copies would repeat one)."""
        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker != info.id:
            self._worker = info.id
            self.random = random.Random(f"{self.seed}-worker-{info.id}")
        return self.random

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        first = [r["sentence1"] for r in rows]
        second = [r["sentence2"] for r in rows]
        if self.swap_pairs:
            draws = self._rng()
            for i in range(len(rows)):
                if draws.random() < 0.5:
                    first[i], second[i] = second[i], first[i]
        labels = [float(r["score"]) for r in rows]
        if not self.micro_batches:
            features = self.tokenizer(
                first, second, padding=True, truncation="longest_first", max_length=self.max_length, return_tensors="pt"
            )
            return {"chunks": [dict(features)], "labels": torch.tensor(labels, dtype=torch.float32)}
        encoded = self.tokenizer(first, second, truncation="longest_first", max_length=self.max_length)
        return collate_micro_batches(self.tokenizer, encoded, labels)


def collate_micro_batches(
    tokenizer: Any, encoded: Any, labels: Sequence[Any], *, micro_batches: bool = True
) -> dict[str, Any]:
    """
    Sort unpadded encodings by length, cut them into micro-batches and pad each one.

    :param tokenizer: Pads the micro-batches.
    :param encoded: The tokenizer's unpadded output for the batch.
    :param labels: One label per row (a number, or a list of numbers).
    :param micro_batches: `False` pads the whole batch as one.
    :returns: `{"chunks": [inputs, ...], "labels": tensor}`, labels in chunk order.
    """
    keys = list(encoded.keys())
    count = len(encoded["input_ids"])
    order = sorted(range(count), key=lambda i: len(encoded["input_ids"][i]))
    lengths = [len(encoded["input_ids"][i]) for i in order]
    ends = partition_by_length(lengths) if micro_batches else [count]
    chunks = []
    start = 0
    for end in ends:
        rows = [{k: encoded[k][i] for k in keys} for i in order[start:end]]
        chunks.append(dict(tokenizer.pad(rows, return_tensors="pt")))
        start = end
    return {"chunks": chunks, "labels": torch.tensor([labels[i] for i in order], dtype=torch.float32)}


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on the single logit, against soft labels in [0, 1] (the seed's loss)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.view(-1).float(), labels.view(-1).float())


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: Path
    train_seconds: float
    steps: int
    precision: str
    log: list[dict[str, Any]]
    final_metrics: dict[str, float]


def train_cross_encoder(
    config: TrainConfig,
    train_dataset: Any,
    *,
    evaluator: ScoringEvaluator,
    final_evaluators: Sequence[ScoringEvaluator] = (),
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]] | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = bce_loss,
    card_facts: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
    final_precision: str = "fp32",
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """
    Fine-tune a cross-encoder and write a model folder that Hugging Face and sentence-transformers load.

    :param config: The run's settings.
    :param train_dataset: A `datasets.Dataset` (or a list of dicts) whose rows the collator understands.
    :param evaluator: Called with a `CrossEncoderScorer` every `eval_steps` and at the end; its
        `primary_metric_name` selects the best checkpoint.
    :param final_evaluators: Called once on the final model (e.g. the test split), for the model card.
    :param collator: Turns rows into model inputs with `labels`; default: :class:`PairCollator`.
    :param loss: `loss(logits, labels)`; default: binary cross-entropy on the logit.
    :param card_facts: What the model card says besides the run's own facts: `data`, `loss`, `evaluation`, and
        `details` (see :func:`haystack_crossrerank.training.card.write_model_card`).
    :param extra_files: More files for the model folder: name to text.
    :param final_precision: The precision of the final evaluation (`"fp32"`, or `"auto"` for speed on long texts).
    :param callbacks: More `transformers.TrainerCallback`s, e.g. a time budget that stops training.
    :returns: The output folder, timings, the training log and the final metrics.
    :raises FileExistsError: If the output folder exists and neither `overwrite` nor `resume` is set.
    """
    config.validate()
    transformers = require("transformers", "train")
    require("accelerate", "train")
    output = Path(config.output_dir).expanduser()
    work = output.parent / f".{output.name}.work"
    if output.exists() and not config.overwrite:
        raise FileExistsError(f"output folder '{output}' exists; pass overwrite=True (--overwrite) to replace it")
    if work.exists() and not config.resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    precision = training_precision(config.precision)
    transformers.set_seed(config.seed)
    model, tokenizer = load_for_training(config.base_model)
    max_length = config.max_length or model_max_length(model.config, tokenizer)
    collate = collator or PairCollator(tokenizer, max_length, swap_pairs=config.swap_pairs, seed=config.seed)
    use_cuda = torch.cuda.is_available()
    steps_per_epoch = math.ceil(len(train_dataset) / config.batch_size)
    total_steps = math.ceil(steps_per_epoch * config.epochs)
    args = transformers.TrainingArguments(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not use_cuda,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        save_strategy="steps" if config.save_checkpoints else "no",
        save_steps=config.eval_steps,
        save_total_limit=1,
        save_only_model=False,
        load_best_model_at_end=config.select_best,
        metric_for_best_model=evaluator.primary_metric_name if config.select_best else None,
        greater_is_better=True,
        logging_steps=config.logging_steps,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=config.dataloader_workers,
        dataloader_persistent_workers=config.dataloader_workers > 0,
        disable_tqdm=True,  # its dict printer is replaced by TrainingProgress, which draws the bar itself
    )
    eval_precision = config.eval_precision or ("bf16" if (precision == "bf16" and not use_cuda) else "fp32")
    trainer = _CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=[train_dataset[0]],  # unused: evaluation goes through `evaluator`
        data_collator=collate,
        scoring_evaluator=evaluator,
        eval_tokenizer=tokenizer,
        eval_precision=eval_precision,
        loss=loss,
        callbacks=[reporting.TrainingProgress(evaluator.primary_metric_name, show_bar=on_terminal()), *callbacks],
    )
    logger.info(
        "Training %s on %d rows: %d steps (%s, batch %d, lr %g)",
        config.base_model,
        len(train_dataset),
        total_steps,
        precision,
        config.batch_size,
        config.learning_rate,
    )
    start = time.perf_counter()
    checkpoint = _last_checkpoint(work / "checkpoints") if config.resume else None
    with transformers_bars_off(), reporting.log_lines_above_the_bar(on_terminal()):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - start

    model = cast(Any, trainer.model).eval().to(torch.float32)
    with reporting.evaluation_lines_folded(evaluator, *final_evaluators):
        scorer = CrossEncoderScorer.from_model(model, tokenizer, precision=final_precision, batch_size=64)
        final_metrics = dict(evaluator(scorer))
        for extra_evaluator in final_evaluators:
            final_metrics.update(extra_evaluator(scorer))
    logger.info("final model: %s", reporting.metrics_line(final_metrics, evaluator.primary_metric_name))
    log = [dict(entry) for entry in trainer.state.log_history]

    staging = output.parent / f".{output.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    _save_model_folder(model, tokenizer, staging)
    facts = {
        "name": output.name,  # the card is written in the staging folder, but names the final one
        "config": asdict(config),
        "precision": precision,
        "train_seconds": train_seconds,
        "steps": trainer.state.global_step,
        "train_rows": len(train_dataset),
        "log": log,
        "final_metrics": final_metrics,
        "final_precision": scorer.precision,
        "hardware": _hardware(),
        "versions": _versions(),
    }
    (staging / "training_log.json").write_text(json.dumps(facts, indent=2, default=str) + "\n", encoding="utf-8")
    write_model_card(staging, {**facts, **(card_facts or {})})
    for name, text in (extra_files or {}).items():
        (staging / name).write_text(text, encoding="utf-8")
    _replace_folder(staging, output)
    shutil.rmtree(work, ignore_errors=True)
    logger.info("Wrote %s (%.0fs of training)", output, train_seconds)
    return TrainResult(output, train_seconds, trainer.state.global_step, precision, log, final_metrics)


class _CrossEncoderTrainer(Trainer):  # type: ignore[misc]
    """`transformers.Trainer` with a loss on the single logit and evaluation through the shared scorer."""

    def __init__(
        self,
        *args: Any,
        scoring_evaluator: ScoringEvaluator,
        eval_tokenizer: Any,
        eval_precision: str,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.remove_callback(PrinterCallback)
        self.scoring_evaluator = scoring_evaluator
        self.eval_tokenizer = eval_tokenizer
        self.eval_precision = eval_precision
        self.loss = loss

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        labels = inputs.pop("labels")
        logits = forward_micro_batches(model, inputs["chunks"])
        value = self.loss(logits, labels)
        return (value, {"logits": logits}) if return_outputs else value

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        model: Any = self.model
        was_training = model.training
        model.eval()
        with reporting.evaluation_lines_folded(self.scoring_evaluator):  # TrainingProgress says it in one line
            scorer = reporting.EvaluationScorer.from_model(
                model, self.eval_tokenizer, precision=self.eval_precision, batch_size=64
            )
            raw = self.scoring_evaluator(scorer, extra={"step": self.state.global_step, "epoch": self.state.epoch})
        model.train(was_training)
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in raw.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def _last_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def _save_model_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """Weights (safetensors), config with one label and the sentence-transformers activation, tokenizer."""
    config = model.config
    config.num_labels = 1
    config.id2label = {0: "LABEL_0"}
    config.label2id = {"LABEL_0": 0}
    config.sentence_transformers = {"activation_fn": SIGMOID_PATH}
    folder.mkdir(parents=True)
    with transformers_bars_off():
        model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def _replace_folder(staging: Path, output: Path) -> None:
    """Move the finished folder into place; an old folder is removed only once the new one is complete."""
    if output.exists():
        retired = output.parent / f".{output.name}.old"
        if retired.exists():
            shutil.rmtree(retired)
        output.rename(retired)
        staging.rename(output)
        shutil.rmtree(retired)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(output)


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads (CPU)"


def _versions() -> dict[str, str]:
    import transformers

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    for name in ("haystack", "datasets", "accelerate", "sentence_transformers", "tokenizers"):
        try:
            versions[name.replace("_", "-")] = str(getattr(__import__(name), "__version__", "unknown"))
        except ImportError:
            continue
    return versions
