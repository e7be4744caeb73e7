"""BatchingScorer: shared rounds, each caller's own logits, the bounded queue, deadlines, cancelling and closing."""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from haystack import Document

from haystack_crossrerank.ranker import CrossEncoderRanker
from haystack_crossrerank.ranking.scheduler import (
    BatchingScorer,
    DeadlineExceeded,
    RequestCancelled,
    RoundRecord,
    SchedulerBusy,
    SchedulerClosed,
)
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
from tests.conftest import WORDS

# Largest |logit| difference between a call scored alone and the same call scored in a shared round, on the tiny
# model (8 callers x 12 pairs, rounds of 2, 5+3 and 8 callers, batches of 3, 5 and 8 pairs, 3 trials each):
# torch fp32 at most 7.2e-7 (padding to another width changes the float sums a little); OpenVINO bf16 and ONNX
# Runtime fp32 0.0 (exported batches are padded to multiples of 16 tokens, and padding is masked out exactly).
AGREEMENT = {"torch": 1e-6, "openvino": 1e-6}


class EncodingScorer:
    """
    Stands in for the model: the logit of the pair `(q, "r<R> p<P>")` is `R * 1000 + P`, so any pair handed to the
    wrong caller or position shows. Records each call's pairs; with `gate` set, each call first waits for it.
    """

    batch_size = 4

    def __init__(self, gate: threading.Event | None = None, error: Exception | None = None) -> None:
        self.calls: list[list[tuple[str, str]]] = []
        self.gate, self.error = gate, error
        self.started = threading.Event()

    def load(self) -> None:
        pass

    def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int | None = None) -> list[float]:
        self.calls.append(list(pairs))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.error is not None:
            raise self.error
        return [float(encoded(text)) for _, text in pairs]


def encoded(text: str) -> int:
    request, position = text.split()
    return int(request[1:]) * 1000 + int(position[1:])


def pairs_of(request: int, count: int) -> list[tuple[str, str]]:
    return [(f"query {request}", f"r{request} p{p}") for p in range(count)]


def expected(request: int, count: int) -> list[float]:
    return [float(request * 1000 + p) for p in range(count)]


def requests_in(call: list[tuple[str, str]]) -> set[int]:
    return {encoded(text) // 1000 for _, text in call}


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the scheduler"
        time.sleep(0.002)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


def blocked_round(
    pool: ThreadPoolExecutor, **settings: Any
) -> tuple[BatchingScorer, EncodingScorer, threading.Event, Future[list[float]]]:
    """A scheduler whose worker is inside the first round (request 0, 3 pairs) until the returned gate opens."""
    gate = threading.Event()
    stub = EncodingScorer(gate)
    batching = BatchingScorer(stub, **{"max_wait_ms": 0, **settings})  # type: ignore[arg-type]
    first = pool.submit(batching.score, pairs_of(0, 3))
    assert stub.started.wait(5)
    return batching, stub, gate, first


def queue_calls(
    pool: ThreadPoolExecutor, batching: BatchingScorer, sizes: dict[int, int], **kwargs: Any
) -> dict[int, Future[list[float]]]:
    """Submit one call per request id (with `sizes[id]` pairs) and wait until all are queued."""
    before = batching.stats().queued_requests
    futures = {r: pool.submit(batching.score, pairs_of(r, n), **kwargs) for r, n in sizes.items()}
    wait_until(lambda: batching.stats().queued_requests == before + len(sizes))
    return futures


# ---------------------------------------------------------------- each caller's own logits
def test_concurrent_callers_each_get_exactly_their_own_logits_in_order(pool: ThreadPoolExecutor) -> None:
    stub = EncodingScorer()
    sizes = {r: 1 + (r * 7) % 11 for r in range(1, 25)}
    with BatchingScorer(stub, max_wait_ms=20, max_round_pairs=16) as batching:  # type: ignore[arg-type]
        barrier = threading.Barrier(8)

        def call(request: int) -> list[float]:
            if request <= 8:
                barrier.wait()
            return batching.score(pairs_of(request, sizes[request]))

        results = dict(zip(sizes, pool.map(call, sizes), strict=True))
        stats = batching.stats()
    for request, logits in results.items():
        assert logits == expected(request, sizes[request]), f"request {request} got another call's logits"
    assert stats.completed == stats.requests == len(sizes)
    assert stats.pairs_scored == sum(sizes.values()) == sum(len(c) for c in stub.calls)
    assert max(stats.recent_round_requests) > 1, "no round was shared"


def test_the_pair_encoding_stub_would_catch_a_mix_up() -> None:
    """The check above is real: a scorer that swaps two pairs of a round makes a caller's logits wrong."""

    class Swapping(EncodingScorer):
        def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int | None = None) -> list[float]:
            logits = super().score(pairs)
            return [logits[-1], *logits[1:-1], logits[0]] if len(logits) > 1 else logits

    with BatchingScorer(Swapping(), max_wait_ms=0) as batching:  # type: ignore[arg-type]
        assert batching.score(pairs_of(3, 4)) != expected(3, 4)


def test_calls_that_arrive_together_share_one_round(pool: ThreadPoolExecutor) -> None:
    batching, stub, gate, first = blocked_round(pool)
    futures = queue_calls(pool, batching, {1: 2, 2: 5, 3: 1})
    gate.set()
    assert first.result(5) == expected(0, 3)
    assert {r: f.result(5) for r, f in futures.items()} == {r: expected(r, n) for r, n in {1: 2, 2: 5, 3: 1}.items()}
    stats = batching.stats()
    assert stats.recent_round_requests == (1, 3)
    assert stats.recent_round_pairs == (3, 8)  # more pairs than any one call: a shared batch
    assert requests_in(stub.calls[1]) == {1, 2, 3}
    batching.close()


def test_max_batch_requests_one_never_mixes_calls_in_a_round(pool: ThreadPoolExecutor) -> None:
    batching, stub, gate, _ = blocked_round(pool, max_batch_requests=1)
    futures = queue_calls(pool, batching, {1: 2, 2: 5, 3: 1})
    gate.set()
    assert [f.result(5) for f in futures.values()] == [expected(1, 2), expected(2, 5), expected(3, 1)]
    assert [requests_in(call) for call in stub.calls] == [{0}, {1}, {2}, {3}]
    assert batching.stats().recent_round_requests == (1, 1, 1, 1)
    batching.close()


def test_a_call_larger_than_a_round_is_split_and_put_back_together() -> None:
    stub = EncodingScorer()
    with BatchingScorer(stub, max_wait_ms=0, max_round_pairs=3) as batching:  # type: ignore[arg-type]
        assert batching.score(pairs_of(7, 10)) == expected(7, 10)
    assert [len(call) for call in stub.calls] == [3, 3, 3, 1]


def test_rounds_use_the_scorers_batch_size_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int | None] = []
    stub = EncodingScorer()
    real = stub.score
    monkeypatch.setattr(stub, "score", lambda pairs, batch_size=None: sizes.append(batch_size) or real(pairs))
    for setting in (None, 2):
        with BatchingScorer(stub, max_wait_ms=0, max_batch_pairs=setting) as batching:  # type: ignore[arg-type]
            batching.score(pairs_of(1, 40))
    assert sizes == [None, None, 2, 2, 2]  # rounds of 8 x 4 pairs, then of 8 x 2 pairs
    assert [len(call) for call in stub.calls] == [32, 8, 16, 16, 8]


# ---------------------------------------------------------------- overload, deadlines, cancelling, closing
def test_a_full_queue_raises_busy_at_once(pool: ThreadPoolExecutor) -> None:
    batching, _, gate, _ = blocked_round(pool, max_queue=2)
    queued = queue_calls(pool, batching, {1: 1, 2: 1})
    started = time.monotonic()
    with pytest.raises(SchedulerBusy, match=r"`max_queue`=2") as busy:
        batching.score(pairs_of(3, 1))
    assert time.monotonic() - started < 0.5
    assert busy.value.retry_after_s > 0
    gate.set()
    assert [f.result(5) for f in queued.values()] == [expected(1, 1), expected(2, 1)]
    stats = batching.stats()
    assert (stats.rejected, stats.requests, stats.completed) == (1, 3, 3)
    batching.close()


def test_a_deadline_raises_and_its_pairs_leave_the_queue(pool: ThreadPoolExecutor) -> None:
    batching, stub, gate, first = blocked_round(pool, timeout_s=30)
    late = pool.submit(batching.score, pairs_of(1, 4), timeout_s=0.05)
    with pytest.raises(DeadlineExceeded):
        late.result(5)
    assert batching.stats().queued_requests == 0
    gate.set()
    assert first.result(5) == expected(0, 3)
    assert batching.score(pairs_of(2, 1)) == expected(2, 1)
    assert all(1 not in requests_in(call) for call in stub.calls), "the expired call's pairs were scored"
    assert batching.stats().expired == 1
    batching.close()


def test_a_scope_deadline_holds_for_the_calls_made_inside_it(pool: ThreadPoolExecutor) -> None:
    batching, _, gate, _ = blocked_round(pool)
    scope = batching.scope(timeout_s=0.05)
    with pytest.raises(DeadlineExceeded):
        pool.submit(scope.run, batching.score, pairs_of(1, 2)).result(5)
    gate.set()
    batching.close()


def test_cancelling_a_scope_removes_its_queued_pairs(pool: ThreadPoolExecutor) -> None:
    batching, stub, gate, _ = blocked_round(pool)
    scope = batching.scope()
    cancelled = pool.submit(scope.run, batching.score, pairs_of(1, 4))
    wait_until(lambda: batching.stats().queued_requests == 1)
    other = queue_calls(pool, batching, {2: 2})[2]
    scope.cancel()  # e.g. the HTTP client went away
    with pytest.raises(RequestCancelled):
        cancelled.result(5)
    assert batching.stats().queued_pairs == 2
    with pytest.raises(RequestCancelled):
        batching.score(pairs_of(3, 1), scope=scope)  # a cancelled scope takes no new calls
    gate.set()
    assert other.result(5) == expected(2, 2)
    assert all(1 not in requests_in(call) for call in stub.calls)
    batching.close()


def test_close_with_drain_finishes_the_queued_calls(pool: ThreadPoolExecutor) -> None:
    batching, _, gate, first = blocked_round(pool)
    queued = queue_calls(pool, batching, {1: 2, 2: 3})
    closing = pool.submit(batching.close, drain=True)
    wait_until(lambda: batching._closing)
    with pytest.raises(SchedulerClosed):
        batching.score(pairs_of(3, 1))
    gate.set()
    assert closing.result(5) is True
    assert [first.result(5), *(f.result(5) for f in queued.values())] == [
        expected(0, 3),
        expected(1, 2),
        expected(2, 3),
    ]
    assert not batching._worker.is_alive()


def test_close_without_drain_fails_the_queued_calls_and_finishes_the_round(pool: ThreadPoolExecutor) -> None:
    batching, _, gate, first = blocked_round(pool)
    queued = queue_calls(pool, batching, {1: 2})
    batching.close(drain=False, timeout_s=0)
    with pytest.raises(SchedulerClosed):
        queued[1].result(5)
    gate.set()
    assert first.result(5) == expected(0, 3)
    assert batching.close() is True


def test_a_scorer_error_reaches_each_caller_of_its_round_and_the_worker_goes_on(pool: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    stub = EncodingScorer(gate, error=OSError("device lost"))
    rounds: list[RoundRecord] = []
    batching = BatchingScorer(stub, max_wait_ms=0, on_round=rounds.append)  # type: ignore[arg-type]
    first = pool.submit(batching.score, pairs_of(0, 1))
    assert stub.started.wait(5)
    queued = queue_calls(pool, batching, {1: 1, 2: 1})
    gate.set()
    for future in (first, *queued.values()):
        with pytest.raises(OSError, match="device lost"):
            future.result(5)
    stub.error = None
    assert batching.score(pairs_of(3, 2)) == expected(3, 2)
    assert [(r.pairs, r.requests, r.ok) for r in rounds] == [(1, 1, False), (2, 2, False), (2, 1, True)]
    assert batching.stats().failed == 3
    batching.close()


def test_the_wait_for_more_calls_is_bounded_and_ends_once_every_open_scope_is_queued() -> None:
    with BatchingScorer(EncodingScorer(), max_wait_ms=600) as batching:  # type: ignore[arg-type]
        started = time.monotonic()
        batching.score(pairs_of(1, 1))
        assert 0.55 < time.monotonic() - started < 5  # no scope: nobody can tell whether more calls come
        started = time.monotonic()
        with batching.scope():
            assert batching.stats().open_scopes == 1
            batching.score(pairs_of(2, 1))
        assert batching.stats().open_scopes == 0
        assert time.monotonic() - started < 0.5  # the one open request is queued: nobody else to wait for


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"max_queue": 0}, ValueError, r"`max_queue` must be > 0, but got 0"),
        ({"max_batch_requests": 1.5}, TypeError, r"`max_batch_requests` must be an int"),
        ({"max_wait_ms": -1}, ValueError, r"`max_wait_ms` must be a finite number >= 0, but got -1"),
        ({"timeout_s": "1"}, TypeError, r"`timeout_s` must be a number"),
    ],
)
def test_bad_settings_raise(settings: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        BatchingScorer(EncodingScorer(), **settings)  # type: ignore[arg-type]


def test_bad_pairs_raise_in_the_callers_thread_and_an_empty_call_returns_at_once() -> None:
    with BatchingScorer(EncodingScorer()) as batching:  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="pair 0 must be a"):
            batching.score([("only one",)])  # type: ignore[list-item]
        assert batching.score([]) == []
        assert batching.stats().requests == 0


# ---------------------------------------------------------------- the real model, through the ranker
def _backends() -> list[Any]:
    cases: list[Any] = [pytest.param("torch", "fp32", id="torch-fp32")]
    if importlib.util.find_spec("openvino") is not None:
        cases.append(pytest.param("openvino", "auto", id="openvino-auto"))  # bf16 where the CPU computes it
    return cases


def asked(count: int = 8) -> list[tuple[str, list[Document]]]:
    """Each caller asks its own query about its own documents, so that mixed-up results would show."""
    rng = random.Random(7)
    out = []
    for seed in range(count):
        docs = random.Random(seed)
        out.append(
            (
                " ".join(rng.choices(WORDS, k=4)),
                [
                    Document(id=f"d{seed}-{i}", content=" ".join(docs.choices(WORDS, k=docs.randint(4, 40))))
                    for i in range(12)
                ],
            )
        )
    return out


def logits_and_ids(ranker: CrossEncoderRanker, query: str, docs: list[Document]) -> tuple[list[str], list[float]]:
    ranked = ranker.run(query=query, documents=docs, scale_score=False)["documents"]
    return [d.id for d in ranked], [float(d.score or 0.0) for d in ranked]


@pytest.mark.parametrize(("backend", "precision"), _backends())
def test_threads_through_a_batching_ranker_get_the_sequential_rankings(
    tiny_model: Path, pool: ThreadPoolExecutor, backend: str, precision: str
) -> None:
    ranker = CrossEncoderRanker(model=tiny_model, backend=backend, precision=precision, top_k=12, batch_size=3)
    ranker.warm_up()
    questions = asked()
    alone = [logits_and_ids(ranker, q, docs) for q, docs in questions]
    assert ranker.scorer is not None
    with BatchingScorer(ranker.scorer, max_wait_ms=50) as batching:
        ranker.use_scorer(batching)
        barrier = threading.Barrier(len(questions))

        def call(i: int) -> tuple[list[str], list[float]]:
            barrier.wait()
            return logits_and_ids(ranker, *questions[i])

        together = list(pool.map(call, range(len(questions))))
        stats = batching.stats()
    assert max(stats.recent_round_requests) > 1, "no round was shared"
    for (ids, logits), (shared_ids, shared_logits) in zip(alone, together, strict=True):
        assert shared_ids == ids
        assert max(abs(a - b) for a, b in zip(logits, shared_logits, strict=True)) <= AGREEMENT[backend]


def test_asyncio_callers_through_run_in_executor_get_the_sequential_results(tiny_model: Path) -> None:
    scorer = CrossEncoderScorer(tiny_model, backend="torch", precision="fp32", batch_size=3)
    calls = [[(q, doc.content or "") for doc in docs] for q, docs in asked()]
    alone = [scorer.score(pairs) for pairs in calls]

    async def all_at_once(batching: BatchingScorer) -> list[list[float]]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(None, batching.score, pairs) for pairs in calls))

    with BatchingScorer(scorer, max_wait_ms=50) as batching:
        together = asyncio.run(all_at_once(batching))
    for logits, shared in zip(alone, together, strict=True):
        assert sorted(range(12), key=lambda i: -logits[i]) == sorted(range(12), key=lambda i: -shared[i])
        assert max(abs(a - b) for a, b in zip(logits, shared, strict=True)) <= AGREEMENT["torch"]


def test_use_scorer_routes_the_rankers_pairs_and_none_routes_them_back(tiny_model: Path) -> None:
    ranker = CrossEncoderRanker(model=tiny_model, backend="torch", top_k=2)
    ranker.warm_up()
    docs = [Document(content="the cat sat on the mat"), Document(content="paris is a city")]
    direct = ranker.run(query="the cat", documents=docs)["documents"]
    stub = EncodingScorer()
    ranker.use_scorer(stub)
    with pytest.raises(ValueError):  # the stub gets the ranker's own pairs, which it cannot decode
        ranker.run(query="the cat", documents=docs)
    assert stub.calls == [[("the cat", "the cat sat on the mat"), ("the cat", "paris is a city")]]
    assert ranker.scorer is not None
    with BatchingScorer(ranker.scorer, max_wait_ms=0) as batching:
        ranker.use_scorer(batching)
        clone = copy.deepcopy(ranker)  # a copy scores through the same scheduler
        for each in (ranker, clone):
            assert each.run(query="the cat", documents=docs)["documents"] == direct
        assert batching.stats().completed == 2
    ranker.use_scorer(None)
    assert ranker.run(query="the cat", documents=docs)["documents"] == direct
    with pytest.raises(TypeError, match="must have a `score\\(pairs\\)` method or be None, but got int"):
        ranker.use_scorer(3)  # type: ignore[arg-type]
