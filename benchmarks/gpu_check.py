"""One prepared run on a CUDA machine (prepare its inputs with `benchmarks/prepare_gpu_carry.py`).

0. Probes the machine: the GPU, ONNX Runtime's execution providers, what is cached.
1. Trains the seed recipe (STS-B, BCE, 4 epochs, batch 64, lr 5e-5, 10% warm-up, bf16, seed 42) with
   sentence-transformers' CrossEncoderTrainer, our trainer (defaults, then with tokenizing workers and bf16
   evaluation), and the peer again (so that neither side alone runs on a cold GPU), after a short warm-up run;
   reports the time of each, split into evaluation and training steps, and validation/test Spearman.
1b. With `retrieval.json.gz` carried: the retrieval recipe (listwise softmax cross-entropy over a positive and
   3 mined negatives, batch 8, 2 epochs, evaluation every 50 steps on 100 held-out queries' BM25 top 30)
   from the STS model just trained, with our trainer and with sentence-transformers' trainer (its
   MultipleNegativesRankingLoss over the hard negatives only, no scale, no activation: the same loss).
2. Scores the same 1,000 pairs (~10-word queries, ~100-word texts) with our trained model on the CPU (fp32)
   and on CUDA in fp32, fp16 and bf16: Spearman against the CPU scores, and pairs/s.
3. Reranks BM25 top-100 SciFact candidates with our scorer at its defaults and in each precision, and with
   `sentence_transformers.CrossEncoder.rank` (the engine of Haystack's SentenceTransformersSimilarityRanker,
   with that ranker's default batch size 16, and with 32): pairs/s, ms/query p50/p95, and the rankings,
   written to `$OUT` (the GPU machine has no qrels; score the rankings against SciFact's qrels off the device
   with `haystack_crossrerank.evaluation.retrieval.evaluate_rankings`).
4. Where the onnxruntime on the machine has the CUDA provider (carry `onnxruntime-gpu`, cut into parts like
   the weights below if it is too large for one call): the scorer's `backend="onnx"` on CUDA, pairs/s and
   Spearman against torch fp32 on the same pairs.

    python benchmarks/gpu_check.py --carry .devcarry --out "$OUT"

A base whose weights were cut into parts (`prepare_gpu_carry.py --split-mib`, e.g. MPNet) is joined from the
folder given by `--parts`, and refused unless the join has the recorded sha256:

    python benchmarks/gpu_check.py --carry .devcarry-mpnet --parts /tmp/devparts --out "$OUT" --skip-retrieval
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
ONLY_OURS = False  # --only-ours: one run of our trainer (the base of the retrieval recipe), no comparison
SMOKE = False  # --smoke: the same code on the CPU with tiny sizes, to check the script before a device run


def log(message: str) -> None:
    print(message, flush=True)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def restore_fp32_base(carry: Path, target: Path, parts: Path | None = None) -> Path:
    """The carried base has fp16 weights (for the transfer limit); train from an fp32 copy of them.

    Weights cut into parts (`prepare_gpu_carry.py --split-mib`) are joined from `parts` first, and the join
    must have the size and sha256 recorded in `base/weights.json`.

    :param carry: The carried folder holding `base/`.
    :param target: Where the fp32 copy of the base is written.
    :param parts: The folder holding the weight parts, when the base was cut.
    :returns: `target`.
    :raises ValueError: If the base was cut and `parts` is missing, or the join has another size or sha256.
    :raises FileNotFoundError: If a part is missing from `parts`.
    """
    import hashlib
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(carry / "base", target)
    record_path = target / "weights.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if parts is None:
            raise ValueError(
                f"--parts must name the folder holding the {len(record['parts'])} weight parts of {carry / 'base'}, "
                "but got none"
            )
        missing = [name for name in record["parts"] if not (parts / name).is_file()]
        if missing:
            raise FileNotFoundError(f"weight parts missing from {parts}: {missing} (was the machine kept warm?)")
        digest = hashlib.sha256()
        with (target / record["file"]).open("wb") as joined:
            for name in record["parts"]:
                chunk = (parts / name).read_bytes()
                digest.update(chunk)
                joined.write(chunk)
        size = (target / record["file"]).stat().st_size
        if size != record["size"] or digest.hexdigest() != record["sha256"]:
            raise ValueError(
                f"the joined weights must have {record['size']} bytes and sha256 {record['sha256']}, "
                f"but have {size} bytes and sha256 {digest.hexdigest()}"
            )
        log(f"joined {len(record['parts'])} weight parts ({record['size'] / 2**20:.0f} MiB), sha256 verified")
    weights = {k: v.to(torch.float32) for k, v in load_file(str(target / "model.safetensors")).items()}
    save_file(weights, str(target / "model.safetensors"))
    return target


class Timed:
    """Wraps our evaluator and adds up the seconds spent in it."""

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator
        self.seconds = 0.0
        self.calls = 0
        self.durations: list[float] = []

    @property
    def primary_metric_name(self) -> str:
        return str(self.evaluator.primary_metric_name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.evaluator, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sync()
        start = time.perf_counter()
        result = self.evaluator(*args, **kwargs)
        sync()
        self.durations.append(time.perf_counter() - start)
        self.seconds += self.durations[-1]
        self.calls += 1
        return result


def timed_peer_evaluator(evaluator: Any) -> Any:
    """The same for a sentence-transformers evaluator, which its trainer checks by type: a timing subclass."""
    base = type(evaluator)

    class TimedEvaluator(base):  # type: ignore[misc, valid-type]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            sync()
            start = time.perf_counter()
            result = base.__call__(self, *args, **kwargs)
            sync()
            self.seconds += time.perf_counter() - start
            self.calls += 1
            return result

    evaluator.__class__ = TimedEvaluator
    evaluator.seconds, evaluator.calls = 0.0, 0
    return evaluator


def our_sts_run(base: Path, carry: Path, out: Path, name: str, **settings: Any) -> dict[str, Any]:
    from haystack_crossrerank.evaluation.sts import STSEvaluator
    from haystack_crossrerank.training import TrainConfig
    from haystack_crossrerank.training import sts as sts_module

    timed: list[Timed] = []
    original = STSEvaluator.from_data

    def timed_from_data(*args: Any, **kwargs: Any) -> Any:
        wrapped = Timed(original(*args, **kwargs))
        timed.append(wrapped)
        return wrapped

    # Like the peer below (save_strategy="no"), no resumable checkpoints: the same disk work on both sides.
    config = TrainConfig(
        base_model=str(base),
        output_dir=str(out / name),
        precision="bf16",
        overwrite=True,
        save_checkpoints=False,
        **settings,
    )
    limit = None
    if SMOKE:
        config.epochs, config.eval_steps, limit = 1, 2, 128
    sts_module.STSEvaluator.from_data = timed_from_data  # type: ignore[method-assign]
    try:
        sync()
        start = time.perf_counter()
        result = sts_module.train_sts(config, data=carry, eval_test=True, train_limit=limit)
        wall = time.perf_counter() - start
    finally:
        sts_module.STSEvaluator.from_data = original  # type: ignore[method-assign]
    validation = timed[0]
    # The validation evaluator runs every `eval_steps` inside train() and once more after it.
    in_training = sum(validation.durations[:-1])
    row = {
        "train_seconds": result.train_seconds,
        "eval_seconds_in_training": in_training,
        "step_seconds": result.train_seconds - in_training,
        "eval_calls_in_training": validation.calls - 1,
        "wall_seconds": wall,
        "steps": result.steps,
        "settings": settings,
        **result.final_metrics,
    }
    log(f"ours {name}: {row}")
    return row


def train_both(base: Path, carry: Path, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    # Warm-up: CUDA context, cuBLAS and the kernels for these shapes, so that no timed run pays for them.
    from haystack_crossrerank.training import TrainConfig, train_sts

    warm = TrainConfig(
        base_model=str(base),
        output_dir=str(out / "warm"),
        precision="bf16",
        overwrite=True,
        save_checkpoints=False,
        epochs=1,
    )
    sync()
    start = time.perf_counter()
    train_sts(warm, data=carry, eval_test=False, train_limit=256)
    results["warm_up_seconds"] = time.perf_counter() - start
    runs = [
        ("sentence_transformers", None),
        ("ours", {}),
        ("ours_workers2_bf16eval", {"dataloader_workers": 2, "eval_precision": "bf16"}),
        ("sentence_transformers_again", None),
    ]
    if ONLY_OURS:
        runs = [("ours", {})]
    for name, settings in runs:
        try:
            if settings is None:
                results[name] = train_sentence_transformers(base, carry, out)
            else:
                results[name] = our_sts_run(base, carry, out, "model" if name == "ours" else name, **settings)
        except Exception as error:  # a failure in one run must not lose the others' figures
            results[name] = {"error": repr(error)}
        log(f"{name}: {results[name]}")
    return results


def peer_args(output: Path, epochs: float, batch: int, eval_steps: int) -> Any:
    """sentence-transformers' training arguments for our recipe (lr 5e-5, 10% warm-up, bf16, seed 42)."""
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

    return CrossEncoderTrainingArguments(
        output_dir=str(output),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch,
        learning_rate=5e-5,
        warmup_steps=0.1,
        seed=42,
        bf16=not SMOKE,
        use_cpu=SMOKE,
        max_steps=2 if SMOKE else -1,
        eval_strategy="steps",
        eval_steps=1 if SMOKE else eval_steps,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
    )


def peer_train(model: Any, args: Any, rows: Any, loss: Any, evaluator: Any) -> tuple[Any, float]:
    """Train with sentence-transformers' trainer; returns the trainer and the seconds `train()` took."""
    from sentence_transformers.cross_encoder.trainer import CrossEncoderTrainer

    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=rows, loss=loss, evaluator=evaluator)
    sync()
    start = time.perf_counter()
    trainer.train()
    sync()
    return trainer, time.perf_counter() - start


def train_sentence_transformers(base: Path, carry: Path, out: Path) -> dict[str, Any]:
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from haystack_crossrerank.data.sts import load_sts

    train, validation, test = (load_sts(s, carry) for s in ("train", "validation", "test"))
    torch.manual_seed(42)
    model = CrossEncoder(str(base), num_labels=1)
    from datasets import Dataset

    timed = timed_peer_evaluator(
        CrossEncoderCorrelationEvaluator(
            sentence_pairs=[list(p) for p in validation.pairs], scores=validation.score, name="stsb-validation"
        )
    )
    rows = train.to_rows()[: 128 if SMOKE else None]
    trainer, seconds = peer_train(
        model,
        peer_args(out / "st-checkpoints", 4, 64, 80),
        Dataset.from_list(rows),
        BinaryCrossEntropyLoss(model),
        timed,
    )
    model.to(torch.float32)
    metrics: dict[str, Any] = {
        "train_seconds": seconds,
        "eval_seconds_in_training": timed.seconds,
        "step_seconds": seconds - timed.seconds,
        "eval_calls_in_training": timed.calls,
        "steps": trainer.state.global_step,
    }
    for data, name in ((validation, "stsb-validation"), (test, "stsb-test")):
        result = CrossEncoderCorrelationEvaluator(
            sentence_pairs=[list(p) for p in data.pairs], scores=data.score, name=name
        )(model)
        metrics[f"{name}_spearman"] = float(result[f"{name}_spearman"])
    return metrics


class DeviceRerankEvaluator:
    """Our reranking validation (nDCG@10 of the carried candidates), from texts: no Haystack needed."""

    def __init__(self, validation: dict[str, Any], max_length: int) -> None:
        self.validation = validation
        self.max_length = max_length
        self.durations: list[float] = []

    @property
    def primary_metric_name(self) -> str:
        return "retrieval-validation_ndcg@10"

    def __call__(self, scorer: Any, *, extra: dict[str, Any] | None = None) -> dict[str, float]:
        from haystack_crossrerank.evaluation.retrieval import evaluate_rankings

        sync()
        start = time.perf_counter()
        pairs, owners = [], []
        for q, item in self.validation.items():
            for doc_id, text, _ in item["documents"]:
                pairs.append((item["query"], text))
                owners.append((q, doc_id))
        scores = scorer.score(pairs, max_length=self.max_length)
        per_query: dict[str, list[tuple[str, float]]] = {}
        for (q, doc_id), score in zip(owners, scores, strict=True):
            per_query.setdefault(q, []).append((doc_id, score))
        rankings = {q: [d for d, _ in sorted(v, key=lambda x: -x[1])] for q, v in per_query.items()}
        metrics = evaluate_rankings({q: item["qrels"] for q, item in self.validation.items()}, rankings)
        self.durations.append(time.perf_counter() - start)
        return {"retrieval-validation_ndcg@10": metrics["ndcg@10"], "retrieval-validation_mrr@10": metrics["mrr@10"]}


def train_retrieval_both(sts_model: Path, carry: Path, out: Path) -> dict[str, Any]:
    import gzip

    with gzip.open(carry / "retrieval.json.gz", "rt", encoding="utf-8") as handle:
        payload = json.load(handle)
    examples, validation = payload["examples"], payload["validation"]
    if SMOKE:
        examples, validation = examples[:32], dict(list(validation.items())[:3])
    results: dict[str, Any] = {
        "examples": len(examples),
        "validation_queries": len(validation),
        "depth": payload["depth"],
        "preset": payload["preset"],
    }
    for name in ("ours", "sentence_transformers"):
        try:
            if name == "ours":
                results[name] = our_retrieval_run(sts_model, payload, examples, validation, out)
            else:
                results[name] = st_retrieval_run(sts_model, payload, examples, validation, out)
        except Exception as error:
            results[name] = {"error": repr(error)}
        log(f"retrieval {name}: {results[name]}")
    return results


def our_retrieval_run(
    base: Path, payload: dict[str, Any], examples: list[Any], validation: dict[str, Any], out: Path
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from haystack_crossrerank.training.losses import listwise_loss
    from haystack_crossrerank.training.retrieval import RetrievalCollator
    from haystack_crossrerank.training.trainer import TrainConfig, train_cross_encoder

    preset = {**payload["preset"], "select_best": False}  # no checkpoints on either side (the peer saves none)
    config = TrainConfig.for_task(
        "retrieval",
        base_model=str(base),
        output_dir=str(out / "retrieval"),
        precision="bf16",
        overwrite=True,
        save_checkpoints=False,
        **preset,
    )
    if SMOKE:
        config.eval_steps = 2
    evaluator = DeviceRerankEvaluator(validation, payload["max_length"])
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    sync()
    start = time.perf_counter()
    result = train_cross_encoder(
        config,
        examples,
        evaluator=evaluator,
        collator=RetrievalCollator(tokenizer, payload["max_length"], payload["loss"]),
        loss=listwise_loss,
        final_precision="auto",
    )
    wall = time.perf_counter() - start
    in_training = sum(evaluator.durations[:-1])  # the last pass is the final evaluation, after train()
    history = [e for e in result.log if "eval_retrieval-validation_ndcg@10" in e]
    return {
        "train_seconds": result.train_seconds,
        "eval_seconds_in_training": in_training,
        "step_seconds": result.train_seconds - in_training,
        "eval_calls_in_training": len(evaluator.durations) - 1,
        "wall_seconds": wall,
        "steps": result.steps,
        "validation_history": [(e.get("step"), e["eval_retrieval-validation_ndcg@10"]) for e in history],
        **result.final_metrics,
    }


def st_retrieval_run(
    base: Path, payload: dict[str, Any], examples: list[Any], validation: dict[str, Any], out: Path
) -> dict[str, Any]:
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    class HardNegativesOnly(MultipleNegativesRankingLoss):  # type: ignore[misc]
        """Softmax cross-entropy over the positive and the mined negatives only: our listwise loss."""

        def get_in_batch_negatives(self, anchors: Any, candidates: Any) -> Any:
            return iter(())

    preset = payload["preset"]
    torch.manual_seed(42)
    model = CrossEncoder(str(base), num_labels=1, max_length=payload["max_length"])
    negatives = len(examples[0]["documents"]) - 1
    rows = [
        {
            "query": e["query"],
            "positive": e["documents"][0],
            **{f"negative_{i}": e["documents"][i] for i in range(1, negatives + 1)},
        }
        for e in examples
    ]
    samples = [
        {
            "query": item["query"],
            "positive": [text for d, text, _ in item["documents"] if item["qrels"].get(d, 0) > 0],
            "documents": [text for _, text, _ in item["documents"]],
        }
        for item in validation.values()
    ]
    timed = timed_peer_evaluator(
        CrossEncoderRerankingEvaluator(
            samples=samples, at_k=10, always_rerank_positives=False, name="retrieval-validation", batch_size=64
        )
    )
    args = peer_args(out / "st-retrieval", preset["epochs"], preset["batch_size"], preset["eval_steps"])
    loss = HardNegativesOnly(model, scale=1, activation_fn=None)
    trainer, seconds = peer_train(model, args, Dataset.from_list(rows), loss, timed)
    row = {
        "train_seconds": seconds,
        "eval_seconds_in_training": timed.seconds,
        "step_seconds": seconds - timed.seconds,
        "eval_calls_in_training": timed.calls,
        "steps": trainer.state.global_step,
    }
    row["final"] = {k: float(v) for k, v in timed(model).items()}
    return row


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
    texts = {
        q: [f"{d['title']}\n{d['text']}" for d in docs][: 8 if SMOKE else None]
        for q, docs in payload["candidates"].items()
    }
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
    peer = CrossEncoder(str(model_dir), device=DEVICE)

    def peer_run(batch: int) -> dict[str, Any]:
        return run(
            f"peer bs{batch}",
            lambda q, docs, b=batch: [
                r["score"] for r in sorted(peer.rank(q, docs, batch_size=b), key=lambda r: r["corpus_id"])
            ],
        )

    # The peer first and last, ours between: neither side alone meets a cold GPU.
    rows["peer_crossencoder_rank_bs16"] = peer_run(16)
    defaults = CrossEncoderScorer(model_dir, device=DEVICE)  # the ranker's defaults: auto precision and batch
    defaults.load()
    rows["ours_defaults"] = run("ours defaults", lambda q, docs: defaults.score([(q, d) for d in docs]))
    rows["ours_defaults"]["precision"] = defaults.precision
    rows["ours_defaults"]["batch_size"] = defaults.batch_size
    for precision, batch in (("auto", 32), ("auto", 64), ("fp32", 64), ("fp16", 64), ("bf16", 64)):
        scorer = CrossEncoderScorer(model_dir, device=DEVICE, precision=precision, batch_size=batch)
        scorer.load()
        rows[f"ours_{precision}_bs{batch}"] = run(
            f"{precision} bs{batch}", lambda q, docs, s=scorer: s.score([(q, d) for d in docs])
        )
    rows["peer_crossencoder_rank_bs32"] = peer_run(32)
    rows["peer_crossencoder_rank_bs16_again"] = peer_run(16)
    return {"qrels": payload["qrels"], "rows": rows}


def probe(carry: Path) -> dict[str, Any]:
    """What the machine offers: ONNX Runtime's providers (is the CUDA one there?), cached models."""
    import subprocess

    facts: dict[str, Any] = {}
    try:
        facts["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except Exception as error:
        facts["nvidia_smi"] = repr(error)
    try:
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
        facts["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception as error:
        facts["onnxruntime"] = repr(error)
    hub = Path.home() / ".cache" / "huggingface" / "hub"
    facts["hub_cache"] = sorted(p.name for p in hub.iterdir()) if hub.is_dir() else []
    for name in ("datasets", "sentence_transformers", "accelerate"):
        try:
            module = __import__(name)
            facts[name] = getattr(module, "__version__", "?")
        except Exception as error:
            facts[name] = repr(error)
    log(f"probe: {facts}")
    return facts


def onnx_cuda(model_dir: Path, carry: Path) -> dict[str, Any]:
    """ONNX Runtime's CUDA provider on the rerank workload, where the installed onnxruntime has it."""
    import onnxruntime

    if hasattr(onnxruntime, "preload_dlls"):  # onnxruntime-gpu: load CUDA and cuDNN from the nvidia-* packages
        try:
            onnxruntime.preload_dlls()
        except Exception as error:
            log(f"onnxruntime.preload_dlls: {error!r}")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return {
            "skipped": f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider here "
            f"(providers: {onnxruntime.get_available_providers()})"
        }
    from haystack_crossrerank.scoring import CrossEncoderScorer

    payload = json.loads((carry / "candidates.json").read_text())
    pairs = [
        (payload["queries"][q], f"{d['title']}\n{d['text']}") for q, docs in payload["candidates"].items() for d in docs
    ]
    start = time.perf_counter()
    scorer = CrossEncoderScorer(model_dir, device=DEVICE, backend="onnx", batch_size=64)
    scorer.score(pairs[:500])
    first = time.perf_counter() - start  # export, session and the first 500 pairs
    providers = scorer.model._session.get_providers()  # the session in use, after any fallback
    if "CUDAExecutionProvider" not in providers:
        return {"error": f"the session fell back to {providers}"}
    start = time.perf_counter()
    scores = scorer.score(pairs)
    seconds = time.perf_counter() - start
    exact = CrossEncoderScorer(model_dir, device=DEVICE, precision="fp32", batch_size=64).score(pairs[:1000])
    return {
        "onnxruntime": onnxruntime.__version__,
        "pairs_per_s": len(pairs) / seconds,
        "export_and_first_500_s": first,
        "spearman_vs_torch_fp32": spearman(list(scores[:1000]), list(exact)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--carry", default=".devcarry")
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--only-training", action="store_true")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--only-ours", action="store_true", help="STS: our trainer once, no peer, no variant")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the script")
    parser.add_argument("--parts", default=None, help="folder of the weight parts, when the base was cut")
    args = parser.parse_args()
    global DEVICE, SMOKE, ONLY_OURS
    ONLY_OURS = args.only_ours
    if args.smoke:
        DEVICE, SMOKE = "cpu", True
    carry, out = Path(args.carry), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import tempfile

    import transformers

    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "none (smoke run on the CPU)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    log(f"{report}")

    def save() -> None:
        (out / "gpu_report.json").write_text(json.dumps(report, indent=2))

    def phase(name: str, function: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            report[name] = function(*args)
        except Exception as error:  # later phases still run; the failure is in the report
            import traceback

            traceback.print_exc()
            report[name] = {"error": repr(error)}
        log(f"phase {name}: {time.perf_counter() - start:.1f} s")
        save()
        return report[name]

    phase("probe", probe, carry)
    work = Path(tempfile.mkdtemp())
    try:
        base = restore_fp32_base(carry, work / "base", Path(args.parts) if args.parts else None)
    except (OSError, ValueError) as error:
        report["base"] = {"error": repr(error)}
        save()
        raise SystemExit(f"no base model: {error}") from error
    model_dir = base
    if not args.skip_training:
        phase("training", train_both, base, carry, work)
        if (work / "model" / "config.json").is_file():
            model_dir = work / "model"
        if not args.skip_retrieval and (carry / "retrieval.json.gz").is_file():
            phase("retrieval_training", train_retrieval_both, model_dir, carry, work)
    if args.only_training:
        log("done")
        return
    if not args.skip_agreement:
        phase("agreement", agreement, model_dir, synthetic_pairs(carry, 40 if SMOKE else 1000))
    phase("rerank", rerank_speed, model_dir, carry)
    phase("onnx_cuda", onnx_cuda, model_dir, carry)
    log("done")


if __name__ == "__main__":
    main()
