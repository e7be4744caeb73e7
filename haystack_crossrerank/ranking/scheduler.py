"""Requests scored together: a bounded queue, deadlines and cancelling, and one worker thread in front of a
:class:`CrossEncoderScorer` (see :class:`BatchingScorer`)."""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from haystack_crossrerank.ranking.pair_encoding import check_pairs
from haystack_crossrerank.utils.checks import check_int, check_number

if TYPE_CHECKING:
    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer

logger = logging.getLogger(__name__)

# A round holds at most this many forward passes' worth of pairs by default: enough to length-sort the pairs of
# several requests together, few enough that a request arriving during a round waits little.
ROUND_BATCHES = 8
# The smallest `retry_after_s` a full queue suggests.
MIN_RETRY_AFTER_S = 0.1
# How many recent rounds `SchedulerStats` lists.
RECENT_ROUNDS = 1024


class PairScorer(Protocol):
    """What the ranker scores through: (query, text) pairs in, one logit per pair out, in input order."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...


class SchedulerError(RuntimeError):
    """Base of the errors a :class:`BatchingScorer` raises instead of logits."""


class SchedulerBusy(SchedulerError):
    """The queue is full: retry in about `retry_after_s` seconds (an HTTP server answers 503 with `Retry-After`)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(SchedulerError, TimeoutError):
    """The call's deadline passed before its logits were ready; its pairs left the queue (HTTP 504)."""


class RequestCancelled(SchedulerError):
    """The call's :class:`RequestScope` was cancelled (its client went away); its pairs left the queue."""


class SchedulerClosed(SchedulerError):
    """The scheduler was closed: it takes no new calls (HTTP 503 while a server shuts down)."""


@dataclass(frozen=True)
class RoundRecord:
    """One round, i.e. one call of the wrapped scorer (what `on_round` receives)."""

    pairs: int  # pairs scored together
    requests: int  # calls whose pairs were in the round
    seconds: float  # wall time of the scorer call
    ok: bool  # False if the scorer raised (the round's calls got its error)


@dataclass(frozen=True)
class SchedulerStats:
    """Counters since the scheduler started (calls are `score` calls: one per ranker run), and its queue now."""

    requests: int  # calls accepted into the queue
    rejected: int  # calls refused with SchedulerBusy
    completed: int  # calls answered with their logits
    expired: int  # calls that raised DeadlineExceeded
    cancelled: int  # calls that raised RequestCancelled
    failed: int  # calls that got the scorer's error, or SchedulerClosed from `close(drain=False)`
    pairs_scored: int  # pairs sent to the scorer (those of calls that expired meanwhile included)
    rounds: int  # calls of the wrapped scorer
    queued_requests: int  # calls with pairs waiting now: the queue depth
    queued_pairs: int  # pairs waiting now
    scoring_requests: int  # calls whose pairs are being scored now
    open_scopes: int  # RequestScopes entered and not yet left: requests in progress (first stage included)
    recent_round_pairs: tuple[int, ...]  # pairs per round, the latest RECENT_ROUNDS rounds, oldest first
    recent_round_requests: tuple[int, ...]  # calls per round, the same rounds


_NEW, _QUEUED, _SCORING, _DONE, _EXPIRED, _CANCELLED, _FAILED = range(7)
_LIVE = (_QUEUED, _SCORING)
_END_COUNTERS = {_DONE: "completed", _EXPIRED: "expired", _CANCELLED: "cancelled", _FAILED: "failed"}
_CURRENT_SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar("crossrerank_scope", default=None)


class _Call:
    """One `score` call in the scheduler: its pairs, how many are handed to rounds, and its logits so far."""

    __slots__ = ("deadline", "done", "enqueued", "error", "event", "logits", "pairs", "scope", "state", "taken")

    def __init__(self, pairs: Sequence[tuple[str, str]], deadline: float | None, scope: RequestScope | None) -> None:
        self.pairs, self.deadline, self.scope = pairs, deadline, scope
        self.logits = [math.nan] * len(pairs)
        self.taken = self.done = 0
        self.state, self.enqueued = _NEW, 0.0
        self.error: BaseException | None = None
        self.event = threading.Event()


class RequestScope:
    """
    One request to a server: a deadline and a cancel switch shared by every `score` call made under it.

    Made by :meth:`BatchingScorer.scope`. Inside `with scope:` (or `scope.run(fn, ...)`), the scheduler's `score`
    calls of this thread, and of tasks and threads that copy its context (`asyncio.to_thread`, asyncio tasks),
    use the scope's deadline and are cancelled by :meth:`cancel`, which any thread may call (for example the event
    loop, when the HTTP client disconnects). A scope is entered once.
    """

    def __init__(self, scheduler: BatchingScorer, deadline: float | None) -> None:
        self.deadline = deadline
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._calls: set[_Call] = set()
        self.cancelled = False  # set by `cancel`
        self._open = False  # entered and not yet left
        self._token: contextvars.Token[RequestScope | None] | None = None

    def cancel(self) -> None:
        """Cancel the scope: its queued pairs leave the queue, its waiting calls and later ones raise."""
        with self._lock:
            self.cancelled = True
            calls = list(self._calls)
        for call in calls:
            self._scheduler._end(call, _CANCELLED, RequestCancelled("the request was cancelled"))

    def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call `function(*args, **kwargs)` inside the scope and return its result."""
        with self:
            return function(*args, **kwargs)

    def __enter__(self) -> RequestScope:
        if self._token is not None:
            raise RuntimeError("a RequestScope is entered once")
        self._token = _CURRENT_SCOPE.set(self)
        self._scheduler._open_scope(self, True)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _CURRENT_SCOPE.reset(self._token)
        self._scheduler._open_scope(self, False)

    def _attach(self, call: _Call) -> None:
        with self._lock:
            if self.cancelled:
                raise RequestCancelled("the request was cancelled")
            self._calls.add(call)

    def _detach(self, call: _Call) -> None:
        with self._lock:
            self._calls.discard(call)


class BatchingScorer:
    """
    Scores the pairs of concurrent callers together, through one loaded :class:`CrossEncoderScorer`.

    `score(pairs)` puts the pairs in one queue and waits. A worker thread takes what has arrived, waits at most
    `max_wait_ms` (counted from the oldest queued call) for more, and scores a round: the queued calls' pairs, in
    arrival order, up to `max_round_pairs` pairs and `max_batch_requests` calls, in one call of the wrapped
    scorer's `score` (length-sorted batches of at most `max_batch_pairs` pairs and the scorer's
    `max_batch_tokens`). A call larger than a round is split over several. It stops waiting early when a round
    is full, when closing, and when every open :class:`RequestScope` has its call queued (nobody else can be
    about to arrive). Rankings equal those of calls scored alone; logits agree within the backend's precision
    (padding differs with the batch's other pairs).

    Usage example:

    ```python
    from concurrent.futures import ThreadPoolExecutor
    from haystack import Document
    from haystack_crossrerank import CrossEncoderRanker
    from haystack_crossrerank.ranking.scheduler import BatchingScorer

    ranker = CrossEncoderRanker(model="path/to/cross-encoder")
    ranker.warm_up()
    docs = [Document(content="Paris is the capital of France."), Document(content="Berlin is in Germany.")]
    with BatchingScorer(ranker.scorer, max_wait_ms=20) as batching:
        ranker.use_scorer(batching)
        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda q: ranker.run(query=q, documents=docs), ["capital of France?"] * 4))
        print(batching.stats().recent_round_requests)
    # (4,)   (the four runs' pairs in one round; how they group depends on timing)
    ```

    :param scorer: The loaded (or loadable) scorer; other code may still call it directly.
    :param max_wait_ms: The longest the worker waits for more calls before scoring, in milliseconds.
    :param max_batch_pairs: The most pairs per forward pass; `None` takes the scorer's `batch_size`.
    :param max_round_pairs: The most pairs per round; `None`: :data:`ROUND_BATCHES` forward passes' worth.
    :param max_batch_requests: The most calls per round; `None`: no limit; 1 scores one call at a time.
    :param max_queue: The most calls waiting; beyond it `score` raises :class:`SchedulerBusy` at once.
    :param timeout_s: The default deadline of a call, in seconds; `None`: none.
    :param on_round: Called by the worker after each round with its :class:`RoundRecord` (for metrics).
    :raises TypeError: If a parameter has the wrong type.
    :raises ValueError: If a count is not > 0, or `max_wait_ms` or `timeout_s` is negative.
    """

    def __init__(
        self,
        scorer: CrossEncoderScorer,
        *,
        max_wait_ms: float = 5.0,
        max_batch_pairs: int | None = None,
        max_round_pairs: int | None = None,
        max_batch_requests: int | None = None,
        max_queue: int = 64,
        timeout_s: float | None = None,
        on_round: Callable[[RoundRecord], None] | None = None,
    ) -> None:
        if not callable(getattr(scorer, "score", None)):
            raise TypeError(f"`scorer` must have a `score` method, but got {type(scorer).__name__}")
        _check_seconds("max_wait_ms", max_wait_ms)
        _check_seconds("timeout_s", timeout_s, optional=True)
        check_int("max_batch_pairs", max_batch_pairs, minimum=1, optional=True)
        check_int("max_round_pairs", max_round_pairs, minimum=1, optional=True)
        check_int("max_batch_requests", max_batch_requests, minimum=1, optional=True)
        check_int("max_queue", max_queue, minimum=1)
        self.scorer = scorer
        self.max_wait_ms = float(max_wait_ms)
        self.max_batch_pairs = max_batch_pairs
        self.max_round_pairs = max_round_pairs
        self.max_batch_requests = max_batch_requests
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.on_round = on_round
        self._cond = threading.Condition()
        self._queue: deque[_Call] = deque()
        self._scoring = 0
        self._open_scopes = 0
        self._closing = False
        self._pairs_per_s: float | None = None
        self._counts: dict[str, Any] = dict.fromkeys(("requests", "rejected", *_END_COUNTERS.values()), 0)
        self._pairs_scored = self._rounds = 0
        self._recent: deque[tuple[int, int]] = deque(maxlen=RECENT_ROUNDS)
        self._worker = threading.Thread(target=self._work, name="crossrerank-scheduler", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ callers
    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        timeout_s: float | None = None,
        scope: RequestScope | None = None,
    ) -> list[float]:
        """
        Score pairs together with whatever else is queued; return their logits, in input order.

        :param pairs: (query, text) pairs of strings.
        :param timeout_s: This call's deadline, in seconds; `None` takes the scheduler's `timeout_s`. Under a
            scope, the earlier of the two deadlines holds.
        :param scope: The request the call belongs to; `None` takes the scope entered in this context, if any.
        :returns: One float per pair.
        :raises TypeError: If a pair is not two strings.
        :raises SchedulerBusy: At once, if `max_queue` calls are waiting.
        :raises DeadlineExceeded: If the deadline passes first; the call's pairs not yet in a round leave the queue.
        :raises RequestCancelled: If the scope is (or gets) cancelled; its pairs not yet in a round leave the queue.
        :raises SchedulerClosed: If the scheduler is closed, or closes without draining.
        """
        check_pairs(pairs)
        _check_seconds("timeout_s", timeout_s, optional=True)
        if not pairs:
            return []
        scope = scope if scope is not None else _CURRENT_SCOPE.get()
        now = time.monotonic()
        limit = timeout_s if timeout_s is not None else self.timeout_s
        deadlines = [d for d in (now + limit if limit is not None else None, getattr(scope, "deadline", None)) if d]
        call = _Call(pairs, min(deadlines) if deadlines else None, scope)
        if scope is not None:
            scope._attach(call)
        try:
            self._enqueue(call, now)
            while True:
                wait = None if call.deadline is None else call.deadline - time.monotonic()
                if call.event.wait(wait if wait is None else max(wait, 0.0)):
                    break
                self._end(call, _EXPIRED, DeadlineExceeded("the call's deadline passed before its pairs were scored"))
        finally:
            if call.state in _LIVE:  # interrupted while waiting
                self._end(call, _CANCELLED, RequestCancelled("the caller stopped waiting"))
            if scope is not None:
                scope._detach(call)
        if call.state == _DONE:
            return call.logits
        assert call.error is not None
        raise call.error

    def scope(self, timeout_s: float | None = None) -> RequestScope:
        """
        A :class:`RequestScope` for one request: enter it around the work that scores (`with`, or `scope.run`).

        :param timeout_s: The request's deadline in seconds from now; `None` takes the scheduler's `timeout_s`.
        :returns: The scope, not yet entered.
        """
        _check_seconds("timeout_s", timeout_s, optional=True)
        limit = timeout_s if timeout_s is not None else self.timeout_s
        return RequestScope(self, time.monotonic() + limit if limit is not None else None)

    def stats(self) -> SchedulerStats:
        """The counters and the queue now (a consistent snapshot)."""
        with self._cond:
            recent = tuple(self._recent)
            return SchedulerStats(
                **self._counts,
                pairs_scored=self._pairs_scored,
                rounds=self._rounds,
                queued_requests=len(self._queue),
                queued_pairs=sum(len(c.pairs) - c.taken for c in self._queue),
                scoring_requests=self._scoring,
                open_scopes=self._open_scopes,
                recent_round_pairs=tuple(pairs for pairs, _ in recent),
                recent_round_requests=tuple(requests for _, requests in recent),
            )

    def close(self, *, drain: bool = True, timeout_s: float | None = None) -> bool:
        """
        Stop taking calls (new ones raise :class:`SchedulerClosed`) and stop the worker; calling it again is safe.

        :param drain: Score every queued call first; `False`: queued calls raise :class:`SchedulerClosed` (the
            round being scored still finishes).
        :param timeout_s: The longest to wait for the worker; `None`: until it stops.
        :returns: `True` if the worker has stopped.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            queued = [] if drain else list(self._queue)
        for call in queued:
            self._end(call, _FAILED, SchedulerClosed("the scheduler closed before scoring the call"))
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout_s)
        return not self._worker.is_alive()

    def __enter__(self) -> BatchingScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(drain=True)

    def __deepcopy__(self, memo: dict[int, Any]) -> BatchingScorer:
        return self  # a shared service: a copied ranker scores through the same queue

    # ------------------------------------------------------------------ queue
    def _enqueue(self, call: _Call, now: float) -> None:
        with self._cond:
            if call.state != _NEW:  # the scope was cancelled in between
                raise call.error or RequestCancelled("the request was cancelled")
            if self._closing:
                raise SchedulerClosed("the scheduler is closed and takes no new calls")
            if len(self._queue) >= self.max_queue:
                self._counts["rejected"] += 1
                retry = self._retry_after()
                raise SchedulerBusy(
                    f"the queue must hold at most `max_queue`={self.max_queue} calls, and it is full: retry in "
                    f"about {retry:.1f} s",
                    retry,
                )
            call.state, call.enqueued = _QUEUED, now
            self._queue.append(call)
            self._counts["requests"] += 1
            self._cond.notify_all()

    def _end(self, call: _Call, state: int, error: BaseException | None = None) -> None:
        with self._cond:
            self._end_locked(call, state, error)

    def _end_locked(self, call: _Call, state: int, error: BaseException | None) -> None:
        """Finish a live call: out of the queue, its state and error set, its caller woken. Safe to repeat."""
        if call.state not in (_NEW, *_LIVE):
            return
        if call.taken < len(call.pairs) and call.state == _QUEUED:
            self._queue.remove(call)
        call.state, call.error = state, error
        self._counts[_END_COUNTERS[state]] += 1
        call.event.set()

    def _open_scope(self, scope: RequestScope, opened: bool) -> None:
        with self._cond:
            scope._open = opened
            self._open_scopes += 1 if opened else -1
            self._cond.notify_all()

    def _retry_after(self) -> float:
        if self._pairs_per_s is None:
            return 1.0
        pending = sum(len(c.pairs) - c.taken for c in self._queue)
        return max(MIN_RETRY_AFTER_S, pending / self._pairs_per_s)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._cond:
                parts = self._next_round()
            if parts is None:
                return
            self._score(parts)

    def _next_round(self) -> list[tuple[_Call, int, int]] | None:
        """Wait for calls (at most `max_wait_ms` for more) and take a round: (call, start, stop) per call."""
        while True:
            now = time.monotonic()
            for call in [c for c in self._queue if c.deadline is not None and c.deadline <= now]:
                self._end_locked(call, _EXPIRED, DeadlineExceeded("the deadline passed while the call was queued"))
            if not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
                continue
            wait = self._queue[0].enqueued + self.max_wait_ms / 1000 - now
            if wait > 0 and not self._closing and not self._round_full() and not self._everyone_queued():
                self._cond.wait(wait)
                continue
            return self._take_round()

    def _round_pairs(self) -> int:
        return self.max_round_pairs or ROUND_BATCHES * (self.max_batch_pairs or self.scorer.batch_size)

    def _round_full(self) -> bool:
        requests = self.max_batch_requests or math.inf
        return len(self._queue) >= requests or sum(len(c.pairs) - c.taken for c in self._queue) >= self._round_pairs()

    def _everyone_queued(self) -> bool:
        """Every open scope has a call queued: no scoped caller can be about to arrive."""
        if self._open_scopes == 0:
            return False
        entered = {id(c.scope) for c in self._queue if c.scope is not None and c.scope._open}
        return len(entered) >= self._open_scopes

    def _take_round(self) -> list[tuple[_Call, int, int]]:
        room, parts = self._round_pairs(), list[tuple[_Call, int, int]]()
        while self._queue and len(parts) < (self.max_batch_requests or math.inf) and room > 0:
            call = self._queue[0]
            count = min(len(call.pairs) - call.taken, room)
            parts.append((call, call.taken, call.taken + count))
            call.taken += count
            room -= count
            if call.taken < len(call.pairs):
                break  # the rest of this call goes in the next round
            self._queue.popleft()
            call.state = _SCORING
        self._scoring = len(parts)
        return parts

    def _score(self, parts: list[tuple[_Call, int, int]]) -> None:
        """Score one round outside the lock, then hand each call its logits (or the error)."""
        flat = [pair for call, start, stop in parts for pair in call.pairs[start:stop]]
        started = time.monotonic()
        try:
            logits = self.scorer.score(flat, batch_size=self.max_batch_pairs)
            error: Exception | None = None
        except Exception as caught:  # the callers get it; the worker keeps serving
            logits, error = [], caught
        seconds = time.monotonic() - started
        with self._cond:
            position = 0
            for call, start, stop in parts:
                if error is not None:
                    self._end_locked(call, _FAILED, error)
                elif call.state in _LIVE:
                    call.logits[start:stop] = logits[position : position + stop - start]
                    call.done += stop - start
                    if call.done == len(call.pairs):
                        self._end_locked(call, _DONE, None)
                position += stop - start
            self._scoring = 0
            self._rounds += 1
            self._pairs_scored += len(flat) if error is None else 0
            self._recent.append((len(flat), len(parts)))
            if error is None and seconds > 0:
                rate = len(flat) / seconds
                self._pairs_per_s = rate if self._pairs_per_s is None else 0.8 * self._pairs_per_s + 0.2 * rate
        if self.on_round is not None:
            try:
                self.on_round(RoundRecord(len(flat), len(parts), seconds, error is None))
            except Exception:
                logger.exception("the scheduler's on_round callback raised")


def _check_seconds(name: str, value: Any, *, optional: bool = False) -> None:
    """:raises TypeError: If `value` is not a number. :raises ValueError: If it is negative or not finite."""
    check_number(name, value, optional=optional)
    if value is not None and not 0 <= value < math.inf:
        raise ValueError(f"`{name}` must be a finite number >= 0, but got {value}")
