"""`crossrerank serve --ray --replicas 2` over real HTTP against a real server process on a local Ray (tiny model,
saved BM25 index): the replicas answer as the single-process pipeline does, a replica killed under load is replaced
while every request gets its answer or a 5xx within the deadline, and SIGTERM stops Serve and Ray, leaving no Ray
process behind. One Ray starts for the module; the stop test comes last.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORDS
from tests.serving_server import free_port, write_corpus

pytest.importorskip("hayhooks")
pytest.importorskip("prometheus_client")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'haystack-crossrerank[ray]'")
httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")

QUERIES = [" ".join(random.Random(seed).choices(WORDS, k=4)) for seed in range(6)]
TIMEOUT_S = 10.0  # the server's request deadline
CLIENT_TIMEOUT_S = TIMEOUT_S + 10  # no request may take longer than this
START_TIMEOUT_S = 150
REPLACED_WITHIN_S = 60
REPLICA = "ray::ServeReplica:crossrerank:bm25_rerank"
HEALTHY = "RUNNING 2 (HEALTHY)"  # the replicas' states as the command logs them


@dataclass
class RayServer:
    process: subprocess.Popen[bytes]
    base: str
    log: Path
    statuses_while_starting: set[int | str]

    @property
    def run_url(self) -> str:
        return f"{self.base}/bm25_rerank/run"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def ray_processes(self) -> list[Any]:
        """The server's Ray processes (GCS, raylet, agents, workers, replicas): its descendants."""
        try:
            return list(psutil.Process(self.process.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def replica_pids(self) -> set[int]:
        """
        The replicas' processes. A replica's short-lived fork (a library's subprocess before its exec) shows the
        replica's command line too; it is a child of a replica, so it is not counted.
        """
        parents = {}
        for child in self.ray_processes():
            try:
                if child.cmdline()[0].startswith(REPLICA):  # Ray adds the method it runs, if any
                    parents[child.pid] = child.ppid()
            except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                pass
        return {pid for pid, parent in parents.items() if parent not in parents}


def _start(folder: Path, index: Path, model: Path) -> RayServer:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(CROSSRERANK_HOME=str(folder / "home"), HAYSTACK_TELEMETRY_ENABLED="False", RAY_DEDUP_LOGS="0")
    command = [sys.executable, "-m", "haystack_crossrerank.commands.cli", "serve", "--index", str(index)]
    command += ["--model", str(model), "--port", str(port), "--timeout-s", str(TIMEOUT_S), "--ray", "--replicas", "2"]
    log = folder / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = RayServer(process, f"http://127.0.0.1:{port}", log, set())
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log_text()[-4000:]}")
        try:
            status: int | str = httpx.get(f"{server.base}/health", timeout=5).status_code
        except httpx.TransportError as error:
            status = type(error).__name__
        if status == 200:
            return server
        server.statuses_while_starting.add(status)
        if time.monotonic() > deadline:
            _stop(server)
            raise RuntimeError(f"not ready within {START_TIMEOUT_S} s:\n{server.log_text()[-4000:]}")
        time.sleep(0.25)


def _stop(server: RayServer) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from haystack_crossrerank.commands.index import build_index

    folder = tmp_path_factory.mktemp("ray-index")
    build_index(write_corpus(folder / "corpus.jsonl"), folder / "index")
    return folder / "index"


@pytest.fixture(scope="module")
def server_and_expected(
    tiny_model: Path, index: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RayServer, dict[str, list[dict[str, Any]]]]]:
    """The Ray server, and each query's answer from the single-process pipeline (computed while Ray starts)."""
    from haystack_crossrerank.commands.serving import ServedPipeline, ServeSettings

    def expected() -> dict[str, list[dict[str, Any]]]:
        with ServedPipeline(ServeSettings(index=str(index), model=str(tiny_model))) as served:
            return {query: served.run(query) for query in QUERIES}

    with ThreadPoolExecutor(max_workers=1) as pool:
        answers = pool.submit(expected)
        server = _start(tmp_path_factory.mktemp("ray-serve"), index, tiny_model)
        try:
            yield server, answers.result()
        finally:
            leftover = server.ray_processes()
            _stop(server)
            for pid in _alive(leftover, wait_s=5):  # never leave Ray behind, even when a test fails
                os.kill(pid, signal.SIGKILL)


def _alive(processes: list[Any], wait_s: float) -> list[int]:
    """The processes still running (not zombies) after waiting at most `wait_s` for them to end."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process.pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(server_and_expected: tuple[RayServer, dict]) -> RayServer:
    return server_and_expected[0]


def _post(url: str, query: str, client: Any = httpx) -> Any:
    return client.post(url, json={"query": query}, timeout=CLIENT_TIMEOUT_S)


def _same_answer(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [d["id"] for d in got] == [d["id"] for d in expected]
    assert [(d["content"], d["meta"]) for d in got] == [(d["content"], d["meta"]) for d in expected]
    assert got[0]["score"] == pytest.approx(expected[0]["score"], abs=1e-5)
    assert [d["score"] for d in got] == pytest.approx([d["score"] for d in expected], abs=1e-5)


# ---------------------------------------------------------------------------------------------- without Ray
def test_replicas_without_ray_or_below_one_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    from haystack_crossrerank.commands.cli import main
    from haystack_crossrerank.commands.cli_parser import build_parser

    assert main(["serve", "--index", "idx", "--replicas", "2"]) == 2
    assert "`--replicas` needs `--ray` (replicas run on Ray Serve), but got --replicas 2" in capsys.readouterr().err
    assert main(["serve", "--index", "idx", "--ray", "--replicas", "0"]) == 2
    assert "`--replicas` must be >= 1, but got 0" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--index", "idx", "--ray", "--replicas", "3"])
    assert (args.ray, args.replicas) == ("", 3)
    args = build_parser().parse_args(["serve", "--index", "idx", "--ray", "auto"])
    assert (args.ray, args.replicas) == ("auto", None)
    assert build_parser().parse_args(["serve", "--index", "idx"]).ray is None


def test_build_application_checks_its_counts_and_a_replica_is_unhealthy_until_loaded() -> None:
    from haystack_crossrerank.commands.serving import ServeSettings
    from haystack_crossrerank.commands.serving_ray import ServeReplica, build_application

    settings = ServeSettings(index="idx")
    with pytest.raises(ValueError, match=r"`replicas` must be > 0, but got 0"):
        build_application(settings, replicas=0)
    with pytest.raises(ValueError, match=r"`num_cpus` must be a finite number > 0, but got 0"):
        build_application(settings, num_cpus=0)
    with pytest.raises(RuntimeError, match=r"the pipeline bm25_rerank is not loaded"):
        ServeReplica(settings.to_json()).check_health()


def test_a_replicas_short_lived_fork_is_not_counted_as_a_replica(tmp_path: Path) -> None:
    @dataclass
    class Fake:
        pid: int
        parent: int
        name: str

        def cmdline(self) -> list[str]:
            return [self.name]

        def ppid(self) -> int:
            return self.parent

    raylet, replica = 10, f"{REPLICA}.handle_request"
    tree = [Fake(11, raylet, replica), Fake(12, raylet, REPLICA), Fake(13, 12, REPLICA), Fake(14, raylet, "raylet")]
    server = RayServer(process=None, base="", log=tmp_path / "log", statuses_while_starting=set())  # type: ignore[arg-type]
    server.ray_processes = lambda: tree  # type: ignore[method-assign]
    assert server.replica_pids() == {11, 12}


# ---------------------------------------------------------------------------------------------- on Ray Serve
@pytest.mark.slow
def test_two_replicas_answer_as_the_single_process_pipeline(
    server_and_expected: tuple[RayServer, dict[str, list[dict[str, Any]]]],
) -> None:
    server, expected = server_and_expected
    # Before Serve's proxy listens: refused; before the application is deployed: 404; then Serve holds requests
    # until a replica is ready (the client here gives up after 5 s).
    assert server.statuses_while_starting <= {"ConnectError", 404, "ReadTimeout"}, server.statuses_while_starting
    assert len(server.replica_pids()) == 2
    health = httpx.get(f"{server.base}/health", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ready", "pipeline": "bm25_rerank", "documents": 40})
    with httpx.Client() as client:
        for query in QUERIES:
            response = _post(server.run_url, query, client)
            assert response.status_code == 200, response.text
            _same_answer(response.json()["result"], expected[query])
        blank = _post(server.run_url, " ", client)
    assert (blank.status_code, blank.json()) == (422, {"detail": "`query` must be a non-empty string, but got ' '"})
    metrics = httpx.get(f"{server.base}/metrics", timeout=10)
    assert metrics.status_code == 200 and "crossrerank_requests_total" in metrics.text


@pytest.mark.slow
def test_a_replica_killed_under_load_is_replaced_and_no_request_hangs(
    server_and_expected: tuple[RayServer, dict[str, list[dict[str, Any]]]],
) -> None:
    server, expected = server_and_expected
    replicas = server.replica_pids()
    assert len(replicas) == 2
    victim = min(replicas)
    done = threading.Event()
    records: list[tuple[float, int | str, float]] = []  # sent at, status (or the client's error), seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client() as http:
            while not done.is_set():
                query, sent = rng.choice(QUERIES), time.monotonic()
                try:
                    status: int | str = _post(server.run_url, query, http).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                records.append((sent, status, time.monotonic() - sent))
                time.sleep(0.05)  # leave the cores some time for the replacement to load

    started = time.monotonic()
    while f"Replicas of bm25_rerank: {HEALTHY}" not in server.log_text() and time.monotonic() < started + 10:
        time.sleep(0.2)  # the command's first report of the replicas' states, before the kill
    with ThreadPoolExecutor(max_workers=2) as pool:
        clients = [pool.submit(client, seed) for seed in range(2)]
        time.sleep(1.0)
        log_start = len(server.log_text())
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        deadline, replaced = killed_at + REPLACED_WITHIN_S, False
        while not replaced and time.monotonic() < deadline:
            time.sleep(0.5)
            now = server.replica_pids()
            states = re.findall(r"Replicas of bm25_rerank: (.*)", server.log_text()[log_start:])
            seen_death = any(state != HEALTHY for state in states)
            replaced = len(now) == 2 and victim not in now and seen_death and states[-1] == HEALTHY
        replaced_after = time.monotonic() - killed_at
        done.set()
        for finished in clients:
            finished.result()
    assert replaced, f"no healthy replacement within {REPLACED_WITHIN_S} s:\n{server.log_text()[-4000:]}"
    statuses = [status for _, status, _ in records]
    assert all(isinstance(s, int) and (s == 200 or 500 <= s < 600) for s in statuses), statuses
    assert max(seconds for _, _, seconds in records) < CLIENT_TIMEOUT_S
    assert any(s == 200 and sent > killed_at for sent, s, _ in records), "the other replica kept answering"
    print(f"\nreplaced in {replaced_after:.1f} s; {len(records)} requests: {sorted(set(statuses), key=str)}")
    with httpx.Client() as http:
        for query in QUERIES:
            response = _post(server.run_url, query, http)
            assert response.status_code == 200, response.text
            _same_answer(response.json()["result"], expected[query])


@pytest.mark.slow
def test_sigterm_stops_serve_and_ray_and_leaves_no_ray_process(server: RayServer) -> None:
    processes = server.ray_processes()
    assert len(processes) > 2, "GCS, raylet, the Serve controller and proxy, the replicas"
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(_post, server.run_url, QUERIES[0])
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        answer = in_flight.result()
    assert answer.status_code == 200 or answer.status_code >= 500, answer.text
    assert server.process.wait(timeout=60) == 0, server.log_text()[-4000:]
    assert "serving_ray: Stopped" in server.log_text()
    assert _alive(processes, wait_s=10) == [], "Ray processes were left running"
