"""One prepared run on a CUDA machine (prepare its inputs with `benchmarks/prepare_gpu_carry.py`).

1. Trains the seed recipe (STS-B, BCE, 4 epochs, batch 64, lr 5e-5, 10% warm-up, bf16, seed 42) with our
   trainer, then with sentence-transformers' CrossEncoderTrainer, and reports time and validation/test
   Spearman of both.
2. Scores the same 1,000 pairs (~10-word queries, ~100-word texts) with our trained model on the CPU (fp32)
   and on CUDA in fp32, fp16 and bf16: Spearman against the CPU scores, and pairs/s.
3. Reranks BM25 top-100 SciFact candidates with our scorer in each precision and with
   `sentence_transformers.CrossEncoder.rank` (the engine of Haystack's SentenceTransformersSimilarityRanker,
   with that ranker's default batch size 16, and with 32): pairs/s, ms/query p50/p95, and the rankings,
   written to `$OUT` (the GPU machine has no qrels; score the rankings against SciFact's qrels off the device
   with `haystack_crossrerank.evaluation.retrieval.evaluate_rankings`).

    python benchmarks/gpu_check.py --carry .devcarry --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

DEVICE = "cuda"
SMOKE = False  # --smoke: the same code on the CPU with tiny sizes, to check the script before a device run


def log(message: str) -> None:
    print(message, flush=True)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def restore_fp32_base(carry: Path, target: Path) -> Path:
    """The carried base has fp16 weights (for the transfer limit); train from an fp32 copy of them."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(carry / "base", target)
    weights = {k: v.to(torch.float32) for k, v in load_file(str(target / "model.safetensors")).items()}
    save_file(weights, str(target / "model.safetensors"))
    return target


def train_both(base: Path, carry: Path, out: Path) -> dict[str, Any]:
    from haystack_crossrerank.training import TrainConfig, train_sts

    results: dict[str, Any] = {}
    # Like the peer below (save_strategy="no"), no resumable checkpoints: the same disk work on both sides.
    config = TrainConfig(
        base_model=str(base), output_dir=str(out / "model"), precision="bf16", overwrite=True, save_checkpoints=False
    )
    if SMOKE:
        config.epochs, config.eval_steps = 1, 2
    sync()
    start = time.perf_counter()
    result = train_sts(config, data=carry, eval_test=True, train_limit=128 if SMOKE else None)
    results["ours"] = {
        "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - start,
        "steps": result.steps,
        **result.final_metrics,
    }
    log(f"ours: {results['ours']}")
    if SMOKE:
        return results
    try:
        results["sentence_transformers"] = train_sentence_transformers(base, carry, out)
        log(f"sentence-transformers: {results['sentence_transformers']}")
    except Exception as error:  # the comparison is a bonus on the device; never lose our own figures
        results["sentence_transformers"] = {"error": repr(error)}
        log(f"sentence-transformers trainer failed: {error!r}")
    return results


def train_sentence_transformers(base: Path, carry: Path, out: Path) -> dict[str, Any]:
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from sentence_transformers.cross_encoder.trainer import CrossEncoderTrainer
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

    from haystack_crossrerank.data.sts import load_sts

    train, validation, test = (load_sts(s, carry) for s in ("train", "validation", "test"))
    torch.manual_seed(42)
    model = CrossEncoder(str(base), num_labels=1)
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "st-checkpoints"),
        num_train_epochs=4,
        per_device_train_batch_size=64,
        learning_rate=5e-5,
        warmup_steps=0.1,
        seed=42,
        bf16=True,
        eval_strategy="steps",
        eval_steps=80,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
    )
    try:
        from datasets import Dataset

        train_data: Any = Dataset.from_list(train.to_rows())
    except ImportError:
        train_data = train.to_rows()
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        loss=BinaryCrossEntropyLoss(model),
        evaluator=CrossEncoderCorrelationEvaluator(
            sentence_pairs=[list(p) for p in validation.pairs], scores=validation.score, name="stsb-validation"
        ),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.to(torch.float32)
    metrics: dict[str, Any] = {"train_seconds": seconds, "steps": trainer.state.global_step}
    for data, name in ((validation, "stsb-validation"), (test, "stsb-test")):
        result = CrossEncoderCorrelationEvaluator(
            sentence_pairs=[list(p) for p in data.pairs], scores=data.score, name=name
        )(model)
        metrics[f"{name}_spearman"] = float(result[f"{name}_spearman"])
    return metrics


def synthetic_pairs(carry: Path, n: int = 1000) -> list[tuple[str, str]]:
    """~10-word queries and ~100-word texts made from SciFact words (deterministic)."""
    payload = json.loads((carry / "candidates.json").read_text())
    words = " ".join(d["text"] for docs in payload["candidates"].values() for d in docs[:5]).split()
    rng = random.Random(0)
    return [(" ".join(rng.choices(words, k=10)), " ".join(rng.choices(words, k=100))) for _ in range(n)]


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def agreement(model_dir: Path, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    from haystack_crossrerank.scoring import CrossEncoderScorer

    rows: dict[str, Any] = {}
    cpu = CrossEncoderScorer(model_dir, device="cpu", precision="fp32", batch_size=32)
    start = time.perf_counter()
    reference = cpu.score(pairs)
    rows["cpu_fp32"] = {"pairs_per_s": len(pairs) / (time.perf_counter() - start), "spearman_vs_cpu": 1.0}
    for precision in ("fp32", "fp16", "bf16"):
        scorer = CrossEncoderScorer(model_dir, device=DEVICE, precision=precision, batch_size=32)
        scorer.score(pairs)  # warm-up: one full untimed pass (kernels and autotuning for every batch shape)
        sync()
        start = time.perf_counter()
        scores = scorer.score(pairs)
        sync()
        seconds = time.perf_counter() - start
        rows[f"{DEVICE}_{precision}"] = {
            "pairs_per_s": len(pairs) / seconds,
            "spearman_vs_cpu": spearman(reference, scores),
            "max_abs_diff": max(abs(a - b) for a, b in zip(reference, scores, strict=True)),
        }
        log(f"agreement {precision}: {rows[f'{DEVICE}_{precision}']}")
    return rows


def rerank_speed(model_dir: Path, carry: Path) -> dict[str, Any]:
    from sentence_transformers import CrossEncoder

    from haystack_crossrerank.scoring import CrossEncoderScorer

    payload = json.loads((carry / "candidates.json").read_text())
    queries = payload["queries"]
    if SMOKE:
        queries = dict(list(queries.items())[:2])
    texts = {q: [f"{d['title']}\n{d['text']}" for d in docs] for q, docs in payload["candidates"].items()}
    ids = {q: [d["id"] for d in docs] for q, docs in payload["candidates"].items()}

    def run(name: str, score_one: Any) -> dict[str, Any]:
        for q, text in queries.items():  # warm-up: one full untimed pass over every batch shape
            score_one(text, texts[q])
        latencies, rankings, all_scores, pairs = [], {}, {}, 0
        for q, text in queries.items():
            sync()
            t0 = time.perf_counter()
            scores = score_one(text, texts[q])
            sync()
            latencies.append((time.perf_counter() - t0) * 1000)
            pairs += len(texts[q])
            order = sorted(range(len(scores)), key=lambda i: -scores[i])
            rankings[q] = [ids[q][i] for i in order]
            all_scores[q] = [float(s) for s in scores]
        row = {
            "pairs_per_s": pairs / (sum(latencies) / 1000),
            "ms_p50": statistics.median(latencies),
            "ms_p95": statistics.quantiles(latencies, n=20)[18],
            "rankings": rankings,
            "scores": all_scores,
        }
        log(f"rerank {name}: {row['pairs_per_s']:.0f} pairs/s, p50 {row['ms_p50']:.1f} ms")
        return row

    rows: dict[str, Any] = {}
    for precision in ("auto", "fp32", "fp16", "bf16"):
        scorer = CrossEncoderScorer(model_dir, device=DEVICE, precision=precision, batch_size=64)
        scorer.load()
        rows[f"ours_{precision}_bs64"] = run(precision, lambda q, docs, s=scorer: s.score([(q, d) for d in docs]))
    peer = CrossEncoder(str(model_dir), device=DEVICE)
    for batch in (16, 32):
        rows[f"peer_crossencoder_rank_bs{batch}"] = run(
            f"peer bs{batch}",
            lambda q, docs, b=batch: [
                r["score"] for r in sorted(peer.rank(q, docs, batch_size=b), key=lambda r: r["corpus_id"])
            ],
        )
    return {"qrels": payload["qrels"], "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--carry", default=".devcarry")
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--only-training", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the script")
    args = parser.parse_args()
    global DEVICE, SMOKE
    if args.smoke:
        DEVICE, SMOKE = "cpu", True
    carry, out = Path(args.carry), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import tempfile

    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "none (smoke run on the CPU)",
        "torch": torch.__version__,
    }
    import transformers

    report["transformers"] = transformers.__version__
    log(f"{report}")
    work = Path(tempfile.mkdtemp())
    base = restore_fp32_base(carry, work / "base")
    if not args.skip_training:
        report["training"] = train_both(base, carry, work)
        model_dir = work / "model"
    else:
        model_dir = base
    (out / "gpu_report.json").write_text(json.dumps(report, indent=2))
    if args.only_training:
        log("done")
        return
    report["agreement"] = agreement(model_dir, synthetic_pairs(carry, 40 if SMOKE else 1000))
    (out / "gpu_report.json").write_text(json.dumps(report, indent=2))
    report["rerank"] = rerank_speed(model_dir, carry)
    (out / "gpu_report.json").write_text(json.dumps(report, indent=2))
    log("done")


if __name__ == "__main__":
    main()
