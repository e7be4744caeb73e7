"""Speed on a CUDA GPU: training against sentence-transformers' trainer, reranking against the peer's engine, and
ONNX Runtime's CUDA provider.

Runs on any machine with a CUDA GPU where the project is installed with the `train`, `bench` and `offline`
extras (and `onnxruntime-gpu` for step 3):

    python benchmarks/gpu_speed.py --data-dir ../shared/data

1. Training: the STS-B seed recipe (binary cross-entropy, 4 epochs, batch 64, lr 5e-5, 10% warm-up, bf16, seed 42,
   evaluation every 80 steps, no checkpoints on either side) from the same base, with sentence-transformers'
   `CrossEncoderTrainer` and with ours, after a short warm-up run, in the order peer, ours, ours with 2 tokenizing
   workers and bf16 evaluation, peer again, so that neither side alone meets a cold GPU. Each run's training
   time, split into evaluation and steps, and its validation and test Spearman.
2. Reranking: the shipped BM25 first stage's top --depth SciFact test candidates (title + abstract) for the first
   --queries queries, scored by our `CrossEncoderScorer` at its defaults and in each precision, and by
   sentence-transformers' `CrossEncoder.rank` (the engine of Haystack's `SentenceTransformersSimilarityRanker`)
   at that ranker's default batch size 16, first and last, and at 32. Each engine makes one untimed pass first.
   pairs/s, ms per query p50/p95, nDCG@10, and Spearman against our fp32 scores.
3. ONNX Runtime's CUDA provider, where the installed onnxruntime has it: our scorer's `backend="onnx"` on the
   same pairs (pairs/s, Spearman against torch fp32).

The reranking model is the one our trainer made in step 1, or --model (with --skip-training: the built default
model). Writes `benchmarks/results/gpu_speed.json` (or --json) with the command, commit, versions and machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"

# (query id, query, [(document id, title + "\n" + text)]) for each query, and its judgments.
Work = list[tuple[str, str, list[tuple[str, str]]]]
Qrels = dict[str, dict[str, int]]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _elapsed(start: float, device: str) -> float:
    sync(device)
    return time.perf_counter() - start


class TimedEvaluator:
    """Wraps our STS evaluator and records how long each of its passes takes."""

    def __init__(self, evaluator: Any, device: str) -> None:
        self.evaluator, self.device = evaluator, device
        self.durations: list[float] = []

    @property
    def primary_metric_name(self) -> str:
        return str(self.evaluator.primary_metric_name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.evaluator, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sync(self.device)
        start = time.perf_counter()
        result = self.evaluator(*args, **kwargs)
        self.durations.append(_elapsed(start, self.device))
        return result


def timed_peer_evaluator(evaluator: Any, device: str) -> Any:
    """The same for a sentence-transformers evaluator, which its trainer checks by type: a timing subclass."""
    base = type(evaluator)

    class Timed(base):  # type: ignore[misc, valid-type]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            sync(device)
            start = time.perf_counter()
            result = base.__call__(self, *args, **kwargs)
            self.seconds += _elapsed(start, device)
            self.calls += 1
            return result

    evaluator.__class__ = Timed
    evaluator.seconds, evaluator.calls = 0.0, 0
    return evaluator


def train_ours(
    base: str, data_dir: str, output: Path, device: str, limit: int | None = None, **settings: Any
) -> dict[str, Any]:
    """Our trainer on the seed recipe; `settings` are TrainConfig fields (e.g. `dataloader_workers`)."""
    from haystack_crossrerank.training import TrainConfig
    from haystack_crossrerank.training import sts as sts_module

    timed: list[TimedEvaluator] = []
    original = sts_module.STSEvaluator.from_data

    def timed_from_data(*args: Any, **kwargs: Any) -> Any:
        timed.append(TimedEvaluator(original(*args, **kwargs), device))
        return timed[-1]

    config = TrainConfig(
        base_model=base, output_dir=str(output), precision="bf16", overwrite=True, save_checkpoints=False, **settings
    )
    sts_module.STSEvaluator.from_data = timed_from_data  # type: ignore[method-assign]
    try:
        sync(device)
        start = time.perf_counter()
        result = sts_module.train_sts(config, data=data_dir, eval_test=True, train_limit=limit)
        wall = _elapsed(start, device)
    finally:
        sts_module.STSEvaluator.from_data = original  # type: ignore[method-assign]
    validation = timed[0]  # it runs every `eval_steps` inside train(), and once more after it
    in_training = sum(validation.durations[:-1])
    return {
        "trainer": "haystack-crossrerank"
        + (f" ({', '.join(f'{k}={v}' for k, v in settings.items())})" if settings else ""),
        "train_seconds": result.train_seconds,
        "eval_seconds_in_training": in_training,
        "step_seconds": result.train_seconds - in_training,
        "wall_seconds": wall,
        "steps": result.steps,
        "settings": settings,
        **result.final_metrics,
    }


def train_peer(base: str, data_dir: str, output: Path, device: str, limit: int | None = None) -> dict[str, Any]:
    """sentence-transformers' CrossEncoderTrainer on the same recipe."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from sentence_transformers.cross_encoder.trainer import CrossEncoderTrainer
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

    from haystack_crossrerank.data.sts import load_sts

    train, validation, test = (load_sts(split, data_dir) for split in ("train", "validation", "test"))
    torch.manual_seed(42)
    model = CrossEncoder(base, num_labels=1, device=device)
    timed = timed_peer_evaluator(
        CrossEncoderCorrelationEvaluator(
            sentence_pairs=[list(p) for p in validation.pairs], scores=validation.score, name="stsb-validation"
        ),
        device,
    )
    args = CrossEncoderTrainingArguments(
        output_dir=str(output),
        num_train_epochs=4,
        per_device_train_batch_size=64,
        learning_rate=5e-5,
        warmup_steps=0.1,
        seed=42,
        bf16=device == "cuda",
        use_cpu=device != "cuda",
        eval_strategy="steps",
        eval_steps=80,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
    )
    rows = Dataset.from_list(train.to_rows()[:limit])
    trainer = CrossEncoderTrainer(
        model=model, args=args, train_dataset=rows, loss=BinaryCrossEntropyLoss(model), evaluator=timed
    )
    sync(device)
    start = time.perf_counter()
    trainer.train()
    seconds = _elapsed(start, device)
    model.to(torch.float32)
    metrics: dict[str, Any] = {
        "trainer": "sentence-transformers CrossEncoderTrainer",
        "train_seconds": seconds,
        "eval_seconds_in_training": timed.seconds,
        "step_seconds": seconds - timed.seconds,
        "steps": trainer.state.global_step,
    }
    for data, name in ((validation, "stsb-validation"), (test, "stsb-test")):
        evaluator = CrossEncoderCorrelationEvaluator(
            sentence_pairs=[list(p) for p in data.pairs], scores=data.score, name=name
        )
        result = evaluator(model)
        metrics[f"{name}_pearson"] = float(result[f"{name}_pearson"])
        metrics[f"{name}_spearman"] = float(result[f"{name}_spearman"])
    return metrics


def training(base: str, data_dir: str, work: Path, device: str, limit: int | None = None) -> dict[str, Any]:
    """The warm-up run, then peer, ours, ours with workers and bf16 evaluation, peer again; a failed run is
    recorded as its error, so that the others' figures are kept."""
    from haystack_crossrerank.training import TrainConfig, train_sts

    warm = TrainConfig(
        base_model=base,
        output_dir=str(work / "warm"),
        precision="bf16",
        overwrite=True,
        save_checkpoints=False,
        epochs=1,
    )
    sync(device)
    start = time.perf_counter()
    train_sts(warm, data=data_dir, eval_test=False, train_limit=256)
    result: dict[str, Any] = {"warm_up_seconds": _elapsed(start, device), "runs": {}}
    runs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("peer", lambda: train_peer(base, data_dir, work / "peer", device, limit)),
        ("ours", lambda: train_ours(base, data_dir, work / "ours", device, limit)),
        (
            "ours_workers2_bf16eval",
            lambda: train_ours(
                base, data_dir, work / "ours2", device, limit, dataloader_workers=2, eval_precision="bf16"
            ),
        ),
        ("peer_again", lambda: train_peer(base, data_dir, work / "peer2", device, limit)),
    ]
    for name, run in runs:
        try:
            result["runs"][name] = run()
        except Exception as error:  # one failed run must not lose the others' figures
            result["runs"][name] = {"error": repr(error)}
        print(f"training {name}: {result['runs'][name]}", flush=True)
    return result


def candidates(data_dir: str, queries: int, depth: int) -> tuple[Work, Qrels]:
    """The shipped BM25 first stage's candidates, as the texts our ranker scores (title, newline, abstract)."""
    from haystack_crossrerank.retrievers.stages import bm25_candidates

    data, found = bm25_candidates(data_dir, queries=queries, depth=depth)
    work = [
        (q, text, [(d.id, f"{d.meta.get('title', '')}\n{d.content}") for d in found[q]])
        for q, text in data.queries.items()
    ]
    return work, {q: data.qrels[q] for q in data.queries}


def timed_rerank(
    work: Work, qrels: Qrels, device: str, score: Callable[[str, list[str]], Sequence[float]]
) -> dict[str, Any]:
    """One untimed pass over every query (kernels for every batch shape), then one timed pass."""
    from haystack_crossrerank.evaluation.retrieval import evaluate_rankings

    for _, query, docs in work:
        score(query, [text for _, text in docs])
    latencies: list[float] = []
    scores: dict[str, dict[str, float]] = {}
    for query_id, query, docs in work:
        sync(device)
        start = time.perf_counter()
        values = score(query, [text for _, text in docs])
        latencies.append(_elapsed(start, device) * 1000)
        scores[query_id] = {doc_id: float(v) for (doc_id, _), v in zip(docs, values, strict=True)}
    rankings = {q: sorted(s, key=lambda d: -s[d]) for q, s in scores.items()}
    pairs = sum(len(docs) for _, _, docs in work)
    return {
        "pairs_per_s": pairs / (sum(latencies) / 1000),
        "ms_p50": statistics.median(latencies),
        "ms_p95": statistics.quantiles(latencies, n=20)[18] if len(latencies) > 1 else latencies[0],
        "ndcg@10": evaluate_rankings(qrels, rankings)["ndcg@10"],
        "scores": scores,
    }


def spearman(reference: dict[str, dict[str, float]], scores: dict[str, dict[str, float]]) -> float:
    from scipy.stats import spearmanr

    keys = [(q, d) for q in reference for d in reference[q]]
    return float(spearmanr([reference[q][d] for q, d in keys], [scores[q][d] for q, d in keys])[0])


def rerank(model: str, work: Work, qrels: Qrels, device: str) -> dict[str, dict[str, Any]]:
    """Our scorer at its defaults and in each precision, between the peer's runs (first and last)."""
    from sentence_transformers import CrossEncoder

    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer

    peer = CrossEncoder(model, device=device)

    def peer_row(batch: int) -> dict[str, Any]:
        def score(query: str, texts: list[str]) -> list[float]:
            ranked = sorted(peer.rank(query, texts, batch_size=batch), key=lambda r: r["corpus_id"])
            return [float(r["score"]) for r in ranked]

        return {
            "engine": f"sentence-transformers CrossEncoder.rank, batch {batch}",
            **timed_rerank(work, qrels, device, score),
        }

    def our_row(scorer: CrossEncoderScorer, label: str) -> dict[str, Any]:
        scorer.load()
        row = timed_rerank(work, qrels, device, lambda q, texts: scorer.score([(q, t) for t in texts]))
        engine = f"CrossEncoderScorer, {label} ({scorer.backend} {scorer.precision}, batch {scorer.batch_size})"
        return {"engine": engine, "precision": scorer.precision, "batch_size": scorer.batch_size, **row}

    rows: dict[str, dict[str, Any]] = {"peer_bs16": peer_row(16)}
    rows["ours_defaults"] = our_row(CrossEncoderScorer(model, device=device), "defaults")
    for precision, batch in (("auto", 32), ("auto", 64), ("fp32", 64), ("fp16", 64), ("bf16", 64)):
        scorer = CrossEncoderScorer(model, device=device, precision=precision, batch_size=batch)
        rows[f"ours_{precision}_bs{batch}"] = our_row(scorer, precision)
    rows["peer_bs32"] = peer_row(32)
    rows["peer_bs16_again"] = peer_row(16)
    return rows


def onnx_cuda(model: str, work: Work, qrels: Qrels) -> dict[str, Any]:
    """Our scorer's ONNX backend on ONNX Runtime's CUDA provider, where the installed onnxruntime has it."""
    try:
        import onnxruntime
    except ImportError:
        return {"skipped": "onnxruntime is not installed (install onnxruntime-gpu and the `onnx` extra)"}
    if hasattr(onnxruntime, "preload_dlls"):  # onnxruntime-gpu: CUDA and cuDNN from the nvidia-* packages
        try:
            onnxruntime.preload_dlls()
        except Exception as error:
            print(f"onnxruntime.preload_dlls: {error!r}", flush=True)
    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return {"skipped": f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider ({providers})"}
    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer

    start = time.perf_counter()
    scorer = CrossEncoderScorer(model, device="cuda", backend="onnx", batch_size=64)
    scorer.load()
    load_seconds = time.perf_counter() - start  # the export and the session
    used: list[str] = getattr(getattr(scorer.model, "_session", None), "get_providers", list)()
    if "CUDAExecutionProvider" not in used:
        return {"error": f"the ONNX Runtime session fell back to {used}"}
    row = timed_rerank(work, qrels, "cuda", lambda q, texts: scorer.score([(q, t) for t in texts]))
    row.update(engine="CrossEncoderScorer, backend onnx (CUDA provider, fp32, batch 64)", load_seconds=load_seconds)
    row["onnxruntime"] = onnxruntime.__version__
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data", help="holding stsb/ and scifact/")
    parser.add_argument("--base-model", default=None, help="the base to train (default: the offline MiniLM)")
    parser.add_argument("--model", default=None, help="the model to rerank with (default: the one trained here)")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--json", default=str(RESULTS / "gpu_speed.json"), help="default: %(default)s")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_speed.py measures on a CUDA GPU, but torch sees none here "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
            "for the CPU, run benchmarks/rerank_speed.py and benchmarks/train_speed.py",
            file=sys.stderr,
        )
        return 2
    if args.queries < 2:
        parser.error(f"--queries must be at least 2 (for the p95), but got {args.queries}")

    from haystack_crossrerank.commands.offline import built_model_dir, offline_base_model
    from haystack_crossrerank.utils.provenance import write_result

    report: dict[str, Any] = {"queries": args.queries, "depth": args.depth}

    def save() -> None:  # after each phase, so that a late failure keeps the earlier figures
        write_result(args.json, "gpu_speed", report)

    model = args.model
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_training:
            report["base_model"] = args.base_model or offline_base_model()
            report["training"] = training(report["base_model"], args.data_dir, Path(folder), "cuda")
            save()
            if model is None and (Path(folder) / "ours" / "config.json").is_file():
                model = str(Path(folder) / "ours")
        model = model or str(built_model_dir("minilm"))
        if not Path(model).exists():
            print(f"model {model} not found: run `crossrerank build-model` or pass --model", file=sys.stderr)
            return 2
        report["model"] = model if args.model else f"{Path(model).name} (trained here)"
        work, qrels = candidates(args.data_dir, args.queries, args.depth)
        rows = rerank(model, work, qrels, "cuda")
        reference = rows["ours_fp32_bs64"]["scores"]
        onnx: dict[str, Any] = {"skipped": "--skip-onnx"}
        if not args.skip_onnx:
            try:
                onnx = onnx_cuda(model, work, qrels)
            except Exception as error:  # an optional phase: its failure is recorded, the figures above are kept
                onnx = {"error": repr(error)}
    for row in [*rows.values(), onnx]:
        if "scores" in row:
            row["spearman_vs_fp32"] = spearman(reference, row.pop("scores"))
    report["rerank"], report["onnx_cuda"] = rows, onnx
    path = write_result(args.json, "gpu_speed", report)

    print(f"\n{len(work)} SciFact test queries, BM25 top {args.depth}, model {model}, {torch.cuda.get_device_name(0)}")
    print("engine | pairs/s | ms p50 / p95 | nDCG@10 | Spearman vs fp32")
    for row in [*rows.values(), *([onnx] if "pairs_per_s" in onnx else [])]:
        print(
            f"{row['engine']} | {row['pairs_per_s']:.0f} | {row['ms_p50']:.1f} / {row['ms_p95']:.1f} | "
            f"{row['ndcg@10']:.4f} | {row['spearman_vs_fp32']:.6f}"
        )
    if "training" in report:
        print("\ntrainer | training s | of which evaluation | validation / test Spearman")
        for run in report["training"]["runs"].values():
            if "error" not in run:
                print(
                    f"{run['trainer']} | {run['train_seconds']:.1f} | {run['eval_seconds_in_training']:.1f} | "
                    f"{run['stsb-validation_spearman']:.4f} / {run['stsb-test_spearman']:.4f}"
                )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
