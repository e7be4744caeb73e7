"""`crossrerank serve` under load, over real HTTP against a real server process (tiny model): readiness, metrics, a
full queue (503), deadlines (504), clients that disconnect, and SIGTERM.

The server scores one request at a time with one waiting (`--max-queue 1 --max-batch-requests 1`) and a deadline of
TIMEOUT_S; marker words in a query slow its scorer call (`zzslow`: 1 s, `zzstall`: 4 s, see tests/serving_server.py).
The SIGTERM test stops the server, so it comes last.
"""

from __future__ import annotations

import random
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import WORDS
from tests.serving_server import Server, start_server, write_corpus

pytest.importorskip("hayhooks")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

QUERIES = [" ".join(random.Random(seed).choices(WORDS, k=4)) for seed in range(8)]
TIMEOUT_S = 2.5


# ---------------------------------------------------------------------------------------------- in process
def _raised_through_a_component(error: Exception) -> Exception:
    """`error` as Haystack hands it on: the cause of the error the pipeline raises."""
    try:
        try:
            raise error
        except Exception as inner:
            raise RuntimeError("Component name: 'ranker'") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    ("name", "extra", "status", "retry_after"),
    [
        ("SchedulerBusy", {"retry_after_s": 2.3}, 503, "3"),
        ("SchedulerBusy", {"retry_after_s": 0.1}, 503, "1"),
        ("SchedulerClosed", {}, 503, "1"),
        ("DeadlineExceeded", {}, 504, None),
        ("RequestCancelled", {}, 499, None),
    ],
)
def test_scheduler_errors_become_http_errors_through_the_pipelines_wrapping(
    name: str, extra: dict, status: int, retry_after: str | None
) -> None:
    from haystack_crossrerank.commands.serving_http import scheduler_http_error
    from haystack_crossrerank.ranking import scheduler

    cause = getattr(scheduler, name)(f"{name} happened", **extra)
    http_error = scheduler_http_error(_raised_through_a_component(cause))
    assert (http_error.status_code, http_error.detail) == (status, f"{name} happened")
    assert (http_error.headers or {}).get("Retry-After") == retry_after
    assert scheduler_http_error(_raised_through_a_component(ValueError("bad"))) is None


def test_serve_settings_check_the_limits_and_travel_as_json() -> None:
    from haystack_crossrerank.commands.serving import ServeSettings

    settings = ServeSettings(corpus="c.jsonl", max_queue=8, timeout_s=2.5, max_batch_requests=1, max_batch_tokens=4096)
    assert ServeSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError, match=r"`max_queue` must be > 0, but got 0"):
        ServeSettings(corpus="c.jsonl", max_queue=0)
    with pytest.raises(ValueError, match=r"`timeout_s` must be a finite number > 0, but got 0"):
        ServeSettings(corpus="c.jsonl", timeout_s=0)
    with pytest.raises(ValueError, match=r"`max_wait_ms` must be a finite number >= 0, but got -1"):
        ServeSettings(corpus="c.jsonl", max_wait_ms=-1)
    with pytest.raises(TypeError, match=r"`max_batch_requests` must be an int, but got float 1.5"):
        ServeSettings(corpus="c.jsonl", max_batch_requests=1.5)  # type: ignore[arg-type]


def test_serve_command_reads_the_load_flags() -> None:
    from haystack_crossrerank.commands.cli_parser import build_parser

    defaults = build_parser().parse_args(["serve", "--corpus", "c.jsonl"])
    assert (defaults.max_queue, defaults.timeout_s, defaults.max_wait_ms) == (64, 30.0, 5.0)
    assert (defaults.max_batch_requests, defaults.max_batch_tokens) == (None, None)
    flags = ["--max-queue", "8", "--timeout-s", "2.5", "--max-wait-ms", "0", "--max-batch-requests", "1"]
    args = build_parser().parse_args(["serve", "--index", "idx", *flags, "--max-batch-tokens", "4096"])
    assert (args.max_queue, args.timeout_s, args.max_wait_ms) == (8, 2.5, 0.0)
    assert (args.max_batch_requests, args.max_batch_tokens) == (1, 4096)


def test_metrics_render_requests_and_scorer_calls_in_prometheus_text() -> None:
    from haystack_crossrerank.commands.serving_metrics import ServingMetrics
    from haystack_crossrerank.ranking.scheduler import RoundRecord

    metrics, other = ServingMetrics("bm25_rerank"), ServingMetrics("bm25_rerank")
    metrics.observe_request(200, 0.02)
    metrics.observe_request(503, 0.001)
    metrics.observe_round(RoundRecord(pairs=40, requests=2, seconds=0.1, ok=True))
    metrics.observe_round(RoundRecord(pairs=7, requests=1, seconds=0.1, ok=False))  # a failed call scores nothing
    lines = metrics.render(ready=True).decode().splitlines()
    assert 'crossrerank_requests_total{pipeline="bm25_rerank",status="200"} 1.0' in lines
    assert 'crossrerank_requests_total{pipeline="bm25_rerank",status="503"} 1.0' in lines
    assert 'crossrerank_request_seconds_count{pipeline="bm25_rerank"} 2.0' in lines
    assert 'crossrerank_pairs_scored_total{pipeline="bm25_rerank"} 40.0' in lines
    assert 'crossrerank_batch_pairs_bucket{le="32.0",pipeline="bm25_rerank"} 0.0' in lines
    assert 'crossrerank_batch_pairs_bucket{le="64.0",pipeline="bm25_rerank"} 1.0' in lines
    assert 'crossrerank_batch_requests_sum{pipeline="bm25_rerank"} 2.0' in lines
    assert 'crossrerank_queue_depth{pipeline="bm25_rerank"} 0.0' in lines
    assert 'crossrerank_ready{pipeline="bm25_rerank"} 1.0' in lines
    assert "crossrerank_requests_total{" not in other.render().decode(), "each app counts in a registry of its own"


# ---------------------------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("production")
    corpus = write_corpus(folder / "corpus.jsonl")
    limits = ["--max-queue", "1", "--max-batch-requests", "1", "--timeout-s", str(TIMEOUT_S)]
    limits += ["--set", "batch_size=64"]  # one scorer call per request (a round holds 8 batches)
    started = start_server(folder, corpus, tiny_model, *limits, warm_up_delay_s=2.0)
    yield started
    started.stop()


def _post(server: Server, query: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(server.run_url, json={"query": query}, timeout=timeout)


def _wait_for_rounds(server: Server, before: dict, rounds: int, timeout_s: float = 10) -> dict:
    """Scrape until `rounds` more scorer calls have ended since `before`; return that scrape."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = server.metrics()
        if server.change(before, now, "crossrerank_batch_pairs_count") >= rounds or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def test_health_answers_503_until_the_pipeline_is_ready_then_200(server: Server) -> None:
    assert server.health_while_loading, "the server answered before the index and model were ready"
    assert server.health_while_loading[0] == (503, {"status": "loading", "pipeline": "bm25_rerank"})
    assert {status for status, _ in server.health_while_loading} == {503}
    loading = server.run_while_loading
    assert loading is not None and loading.status_code == 503, loading
    assert loading.headers["retry-after"] == "1"
    assert loading.json()["detail"] == "the pipeline is loading"
    assert server.hayhooks_status_while_loading == 200, "hayhooks' own routes answer meanwhile"
    ready = httpx.get(f"{server.base}/health", timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "pipeline": "bm25_rerank", "documents": 40})


def test_metrics_count_the_requests_sent(server: Server) -> None:
    before = server.metrics()
    answers = [_post(server, query) for query in QUERIES[:3]]
    blank = _post(server, " ")
    after = server.metrics()
    assert [a.status_code for a in answers] == [200, 200, 200] and blank.status_code == 422
    assert server.change(before, after, "crossrerank_requests_total", status="200") == 3
    assert server.change(before, after, "crossrerank_requests_total", status="422") == 1
    assert server.change(before, after, "crossrerank_request_seconds_count") == 4
    pairs = server.change(before, after, "crossrerank_pairs_scored_total")
    assert pairs >= 3 * 10, "each answer's 10 documents were scored"
    assert server.change(before, after, "crossrerank_batch_pairs_sum") == pairs
    assert server.change(before, after, "crossrerank_batch_requests_sum") == 3, "one request per call here"
    assert server.metric(after, "crossrerank_queue_depth") == 0
    assert server.metric(after, "crossrerank_requests_in_progress") == 0
    assert server.metric(after, "crossrerank_ready") == 1


def test_a_full_queue_answers_503_with_retry_after_and_the_server_keeps_serving(server: Server) -> None:
    before = server.metrics()
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda q: _post(server, "zzslow " + q), QUERIES[:4]))
    after = server.metrics()
    statuses = sorted(r.status_code for r in responses)
    # One is scored (1 s), one waits behind it (--max-queue 1), the others are refused at once.
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
    for refused in (r for r in responses if r.status_code == 503):
        assert int(refused.headers["retry-after"]) >= 1
        assert "`max_queue`=1" in refused.json()["detail"]
    assert server.change(before, after, "crossrerank_requests_total", status="503") == statuses.count(503)
    assert _post(server, QUERIES[5]).status_code == 200


def test_a_request_past_its_deadline_gets_504_and_its_queued_pairs_leave_the_queue(server: Server) -> None:
    before = server.metrics()
    with ThreadPoolExecutor(max_workers=2) as pool:
        stalled = pool.submit(_post, server, "zzstall " + QUERIES[0])  # holds the scorer 4 s, past its deadline
        time.sleep(0.5)
        queued = pool.submit(_post, server, QUERIES[1])  # waits behind it until its own deadline passes
        time.sleep(0.5)
        waiting = server.metrics()
        answers = [stalled.result(), queued.result()]
    expired = server.metrics()
    assert server.metric(waiting, "crossrerank_queue_depth") == 1
    assert [a.status_code for a in answers] == [504, 504], [a.text for a in answers]
    assert all("deadline" in a.json()["detail"] for a in answers)
    assert server.metric(expired, "crossrerank_queue_depth") == 0, "the expired request left the queue"
    assert server.change(before, expired, "crossrerank_requests_total", status="504") == 2
    # The stalled call ends (one round); the expired request's pairs are never scored after it.
    ended = _wait_for_rounds(server, before, 1)
    time.sleep(0.5)
    later = server.metrics()
    assert server.change(before, ended, "crossrerank_batch_pairs_count") == 1
    assert server.change(before, later, "crossrerank_batch_pairs_count") == 1
    assert _post(server, QUERIES[2]).status_code == 200


def test_a_client_that_disconnects_cancels_its_queued_pairs(server: Server) -> None:
    before = server.metrics()
    with ThreadPoolExecutor(max_workers=1) as pool:
        stalled = pool.submit(_post, server, "zzstall " + QUERIES[3])
        time.sleep(0.5)
        with pytest.raises(httpx.ReadTimeout):
            _post(server, QUERIES[4], timeout=0.5)  # queued behind the stalled call; the client gives up
        deadline = time.monotonic() + 3
        while True:
            gone = server.metrics()
            if server.change(before, gone, "crossrerank_requests_total", status="499") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert stalled.result().status_code == 504
    assert server.change(before, gone, "crossrerank_requests_total", status="499") == 1
    assert server.metric(gone, "crossrerank_queue_depth") == 0, "the cancelled request left the queue at once"
    ended = _wait_for_rounds(server, before, 1)
    time.sleep(0.5)
    assert server.change(before, ended, "crossrerank_batch_pairs_count") == 1
    assert server.change(before, server.metrics(), "crossrerank_batch_pairs_count") == 1, "its pairs were not scored"


def test_sigterm_stops_accepting_finishes_the_request_in_flight_and_exits_0(server: Server) -> None:
    address = urlsplit(server.base)
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(_post, server, "zzslow " + QUERIES[6])
        time.sleep(0.4)
        server.process.send_signal(signal.SIGTERM)
        refused, deadline = False, time.monotonic() + 5
        while not refused and time.monotonic() < deadline:
            try:
                socket.create_connection((address.hostname, address.port), timeout=1).close()
                time.sleep(0.05)
            except ConnectionRefusedError:
                refused = True
        answer = in_flight.result()
    assert refused, "the server stopped accepting connections"
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["result"]) == 10
    assert server.process.wait(timeout=30) == 0, server.log_tail()
