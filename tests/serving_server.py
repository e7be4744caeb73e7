"""A real `crossrerank serve` process for the serving tests, with a scorer that can be slowed on demand.

The server runs the command line in a child process through a small launcher that patches two methods first:
a scorer call whose pairs' query contains a marker word sleeps (:data:`DELAYS`), and the ranker's first warm-up
sleeps `warm_up_delay_s` (so that a test sees the server answer before the pipeline is ready). The marker words are
not in the tiny model's vocabulary or the corpus, so they change neither the candidates nor, beyond [UNK], the
texts scored.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.conftest import WORDS

if TYPE_CHECKING:
    import httpx

# Seconds a scorer call sleeps when a pair's query contains the word.
DELAYS = {"zzslow": 1.0, "zzstall": 4.0}
START_TIMEOUT_S = 180

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

_LAUNCHER = f'''"""`crossrerank` with a scorer slowed by marker words and a slowed first warm-up (tests only)."""
import sys
import time

from haystack_crossrerank.commands.cli import main
from haystack_crossrerank.ranker import CrossEncoderRanker
from haystack_crossrerank.ranking.scoring import CrossEncoderScorer

DELAYS = {DELAYS!r}
WARM_UP_DELAY_S = float(sys.argv.pop(1))
score, warm_up = CrossEncoderScorer.score, CrossEncoderRanker.warm_up


def slow_score(self, pairs, *args, **kwargs):
    time.sleep(max((s for word, s in DELAYS.items() for query, _ in pairs if word in query), default=0.0))
    return score(self, pairs, *args, **kwargs)


def slow_warm_up(self):
    if self.scorer is None:
        time.sleep(WARM_UP_DELAY_S)
    warm_up(self)


CrossEncoderScorer.score = slow_score
CrossEncoderRanker.warm_up = slow_warm_up
sys.exit(main(sys.argv[1:]))
'''


@dataclass
class Server:
    """A started server: its process, address and log, and what it answered while it loaded."""

    process: subprocess.Popen[bytes]
    base: str
    pipeline: str
    log: Path
    health_while_loading: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    run_while_loading: httpx.Response | None = None
    hayhooks_status_while_loading: int | None = None

    @property
    def run_url(self) -> str:
        return f"{self.base}/{self.pipeline}/run"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def metrics(self) -> Samples:
        """Every sample of `GET /metrics`, by name and labels."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        response = httpx.get(f"{self.base}/metrics", timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain"), response.headers
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    def metric(self, samples: Samples, name: str, **labels: str) -> float:
        """One sample's value (0 if absent), with this server's `pipeline` label."""
        return samples.get((name, frozenset({"pipeline": self.pipeline, **labels}.items())), 0.0)

    def change(self, before: Samples, after: Samples, name: str, **labels: str) -> float:
        """How much a sample moved between two scrapes."""
        return self.metric(after, name, **labels) - self.metric(before, name, **labels)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=60)


def write_corpus(path: Path, documents: int = 40) -> Path:
    """A JSON lines corpus of random sentences over the tiny model's vocabulary."""
    rng = random.Random(7)
    rows = [
        {
            "_id": f"d{i}",
            "title": " ".join(rng.choices(WORDS, k=3)),
            "text": ". ".join(" ".join(rng.choices(WORDS, k=8)) for _ in range(4)) + ".",
        }
        for i in range(documents)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    folder: Path, corpus: Path, model: Path, *args: str, warm_up_delay_s: float = 0.0, pipeline: str = "bm25_rerank"
) -> Server:
    """
    Start `crossrerank serve --corpus CORPUS --model MODEL ARGS...` and wait until `GET /health` answers 200,
    recording what the server answered before.
    """
    import httpx

    launcher = folder / "launch_crossrerank.py"
    launcher.write_text(_LAUNCHER, encoding="utf-8")
    port = free_port()
    env = {**os.environ, "CROSSRERANK_HOME": str(folder / "home"), "HAYSTACK_TELEMETRY_ENABLED": "False"}
    command = [sys.executable, str(launcher), str(warm_up_delay_s), "serve", "--corpus", str(corpus)]
    command += ["--model", str(model), "--port", str(port), "--pipeline", pipeline, *args]
    log = folder / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", pipeline, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
            try:
                health = httpx.get(f"{server.base}/health", timeout=10)
            except httpx.TransportError:
                health = None
            if health is not None:
                if health.status_code == 200:
                    return server
                if not server.health_while_loading:  # the first answer: what else answers while loading
                    server.hayhooks_status_while_loading = httpx.get(f"{server.base}/status", timeout=10).status_code
                    server.run_while_loading = httpx.post(server.run_url, json={"query": "paris"}, timeout=10)
                server.health_while_loading.append((health.status_code, health.json()))
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready within {START_TIMEOUT_S} s:\n{server.log_tail()}")
            time.sleep(0.1)
    except BaseException:
        server.stop()
        raise
