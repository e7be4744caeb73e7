"""One ranker shared by threads and coroutines, on every backend: each call equals the sequential result."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from haystack import Document

from haystack_crossrerank.ranker import CrossEncoderRanker
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from tests.conftest import WORDS

THREADS = 8
RUNS_PER_THREAD = 5


def _backends() -> list[Any]:
    """(backend, precision) pairs to test; the exported ones only where their runtime is installed."""
    import importlib.util

    cases: list[Any] = [pytest.param("torch", "fp32", id="torch")]
    if importlib.util.find_spec("openvino") is not None:
        cases.append(pytest.param("openvino", "auto", id="openvino"))
        cases.append(pytest.param("openvino", "int8", id="openvino-int8"))
    if importlib.util.find_spec("onnxruntime") is not None:
        cases.append(pytest.param("onnx", "fp32", id="onnx"))
        cases.append(pytest.param("onnx", "int8", id="onnx-int8"))
    return cases


BACKENDS = _backends()


def documents(seed: int, count: int = 12) -> list[Document]:
    rng = random.Random(seed)
    return [
        Document(id=f"d{seed}-{i}", content=" ".join(rng.choices(WORDS, k=rng.randint(4, 40)))) for i in range(count)
    ]


def queries() -> list[tuple[str, list[Document]]]:
    """Each thread asks its own query about its own documents, so that mixed-up results would show."""
    rng = random.Random(7)
    return [(" ".join(rng.choices(WORDS, k=4)), documents(seed)) for seed in range(THREADS)]


def ranking(result: dict[str, list[Document]]) -> list[tuple[str, float | None]]:
    return [(doc.id, doc.score) for doc in result["documents"]]


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This module's own export cache: each backend exports (and calibrates int8) once for all its tests."""
    folder = tmp_path_factory.mktemp("concurrency-exports")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CROSSRERANK_EXPORT_DIR", str(folder))
        yield folder


_CALIBRATED: set[str] = set()


def make_ranker(model: Path, backend: str, precision: str) -> CrossEncoderRanker:
    """A ranker on `backend`; for int8, the tiny model's export is calibrated first (once per backend)."""
    if precision == "int8" and backend not in _CALIBRATED:
        _CALIBRATED.add(backend)
        rng = random.Random(3)

        def pairs(count: int) -> list[tuple[str, str]]:
            return [
                (" ".join(rng.choices(WORDS, k=3)), " ".join(rng.choices(WORDS, k=rng.randint(4, 40))))
                for _ in range(count)
            ]

        report = CrossEncoderScorer(model, backend=backend, precision="fp32").calibrate_int8(pairs(64), pairs(64))
        assert report.passed, f"the tiny model's int8 copy must pass its gate for this test, got {report}"
    # Batches of 3 pairs: each run makes four inference calls, so that concurrent runs overlap.
    return CrossEncoderRanker(model=model, backend=backend, precision=precision, top_k=10, batch_size=3)


def run_in_threads(call: Callable[[int], Any], workers: int = THREADS) -> list[Any]:
    """Run `call(i)` for i in range(workers) in as many threads, started together; re-raise the first error."""
    barrier = threading.Barrier(workers)

    def start(i: int) -> Any:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(start, range(workers)))


def warm_ranker_and_sequential_results(
    model: Path, backend: str, precision: str
) -> tuple[CrossEncoderRanker, list[tuple[str, list[Document]]], list[list[tuple[str, float | None]]]]:
    """A warmed-up ranker, the queries, and each query's ranking scored alone, one after another."""
    ranker = make_ranker(model, backend, precision)
    ranker.warm_up()
    asked = queries()
    return ranker, asked, [ranking(ranker.run(query=q, documents=docs)) for q, docs in asked]


@pytest.mark.parametrize(("backend", "precision"), BACKENDS)
def test_threads_sharing_one_ranker_get_the_sequential_results(
    tiny_model: Path, cache_home: Path, backend: str, precision: str
) -> None:
    ranker, asked, expected = warm_ranker_and_sequential_results(tiny_model, backend, precision)

    def several_runs(i: int) -> list[list[tuple[str, float | None]]]:
        query, docs = asked[i]
        return [ranking(ranker.run(query=query, documents=docs)) for _ in range(RUNS_PER_THREAD)]

    results = run_in_threads(several_runs)
    for i, runs in enumerate(results):
        assert runs == [expected[i]] * RUNS_PER_THREAD, f"thread {i} got another ranking than alone"


@pytest.mark.parametrize(("backend", "precision"), BACKENDS)
def test_concurrent_run_async_calls_get_the_sequential_results(
    tiny_model: Path, cache_home: Path, backend: str, precision: str
) -> None:
    ranker, asked, expected = warm_ranker_and_sequential_results(tiny_model, backend, precision)

    async def all_at_once() -> list[dict[str, list[Document]]]:
        return await asyncio.gather(*(ranker.run_async(query=q, documents=docs) for q, docs in asked))

    assert [ranking(result) for result in asyncio.run(all_at_once())] == expected


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each real model load (the scorer's `_attach`), made slow so that the other first callers arrive."""
    calls: list[int] = []
    real_attach = CrossEncoderScorer._attach

    def slow_attach(self: CrossEncoderScorer, *args: Any, **kwargs: Any) -> None:
        calls.append(threading.get_ident())
        threading.Event().wait(0.2)
        real_attach(self, *args, **kwargs)

    monkeypatch.setattr(CrossEncoderScorer, "_attach", slow_attach)
    return calls


@pytest.mark.parametrize(("backend", "precision"), BACKENDS)
def test_first_calls_made_together_load_the_model_once(
    tiny_model: Path, cache_home: Path, backend: str, precision: str, loads: list[int]
) -> None:
    reference = make_ranker(tiny_model, backend, precision)
    asked = queries()
    expected = [ranking(reference.run(query=q, documents=docs)) for q, docs in asked]
    loads.clear()  # the reference ranker's own load

    cold = CrossEncoderRanker(**{k: v for k, v in reference.to_dict()["init_parameters"].items() if k != "token"})
    assert cold.scorer is None
    results = run_in_threads(lambda i: ranking(cold.run(query=asked[i][0], documents=asked[i][1])))
    assert len(loads) == 1, f"expected one load for {THREADS} first calls made together, got {len(loads)}"
    assert results == expected


def test_cold_run_async_calls_load_the_model_once(tiny_model: Path, cache_home: Path, loads: list[int]) -> None:
    ranker = CrossEncoderRanker(model=tiny_model, backend="torch", top_k=3)
    asked = queries()

    async def all_at_once() -> list[dict[str, list[Document]]]:
        return await asyncio.gather(*(ranker.run_async(query=q, documents=docs) for q, docs in asked))

    results = asyncio.run(all_at_once())
    assert len(loads) == 1
    assert [len(r["documents"]) for r in results] == [3] * THREADS


def test_the_scorer_alone_loads_once_when_first_scored_from_threads(
    tiny_model: Path, cache_home: Path, loads: list[int]
) -> None:
    scorer = CrossEncoderScorer(tiny_model, backend="torch")
    pairs = [("the cat", "the cat sat on the mat"), ("red car", "a blue train")]
    results = run_in_threads(lambda i: scorer.score(pairs))
    assert len(loads) == 1
    assert all(r == results[0] for r in results)


def test_rankers_and_scorers_can_still_be_copied_and_pickled(tiny_model: Path) -> None:
    import copy
    import pickle

    ranker = CrossEncoderRanker(model=tiny_model, backend="torch", top_k=2)
    for clone in (copy.deepcopy(ranker), pickle.loads(pickle.dumps(ranker))):
        assert clone.to_dict() == ranker.to_dict()
        clone.warm_up()  # the copy has a lock of its own
        assert clone.scorer is not None
    scorer = copy.deepcopy(CrossEncoderScorer(tiny_model, backend="torch"))
    assert scorer.score([("the cat", "the mat")])
