"""Load on `crossrerank serve`: 1, 4, 16 and 64 concurrent clients, requests batched together against one at a time.

For each mode, a server is started on 127.0.0.1 (the BM25 pipeline over SciFact's corpus by default, or a saved
--index; the offline default model):

- `batched`: the default scheduler, the pairs of requests that arrive together scored in shared batches;
- `one_at_a_time`: `--max-batch-requests 1`, one request's pairs per scorer call (the first stage still runs
  concurrently);
- `overload` (unless --no-overload): the batched server with `--max-queue` --overload-queue, at the largest client
  count only: every request must get 200 or 503 within the deadline, and the server must answer afterwards;
- `ray_N_replicas` (with --ray-replicas N,...): the batched server as N replicas on Ray Serve on a local Ray
  (`--ray --replicas N`), one mode per count; --ray-only runs these modes alone.

Each client is a thread with its own HTTP connection that sends SciFact test queries one after another (the first
--queries, cycled) until the level's requests are sent (--requests-per-client each, at least --min-requests in all).
A 503 is counted and not retried. A row gives throughput (answers 200 per second of wall time), p50/p95/p99
latency of all requests, the count of each status, and whether each 200's ranking equals the one the same server
gave the query alone, before the load (and the largest score difference).

    python benchmarks/serve_load.py --data-dir ../shared/data
    python benchmarks/serve_load.py --data-dir ../shared/data --ray-replicas 1,2 --ray-only --no-overload

writes `benchmarks/results/serve_load.json` (or --json) with the command, commit, versions and machine. On a GPU,
add `--set device=cuda` (passed to the server as ranker settings) for the GPU rows.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-m", "haystack_crossrerank.commands.cli"]
MODES: dict[str, list[str]] = {"batched": [], "one_at_a_time": ["--max-batch-requests", "1"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: int) -> float:
    """The q-th percentile (statistics' inclusive method); the value itself for a single one."""
    return values[0] if len(values) == 1 else statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class Server:
    """A `crossrerank serve` process, ready once `/health` answers 200."""

    def __init__(self, source: list[str], args: argparse.Namespace, extra: list[str], log: Any) -> None:
        import httpx

        port = _free_port()
        command = [*CLI, "serve", *source, "--pipeline", args.pipeline, "--model", args.model, "--port", str(port)]
        command += ["--timeout-s", str(args.timeout_s), *extra]
        for setting in args.set or []:
            command += ["--set", setting]
        self.command = command
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/{args.pipeline}/run"
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + args.start_timeout
        while True:
            try:
                if httpx.get(f"{self.base}/health", timeout=10).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log.seek(0)
                raise SystemExit(f"`{' '.join(command)}` did not get ready:\n{log.read()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=120)


def ask_alone(url: str, queries: list[str]) -> dict[str, list[tuple[str, float]]]:
    """Each query's ranking (ids and scores), sent one after another."""
    import httpx

    with httpx.Client(timeout=120) as client:
        answers = {}
        for query in queries:
            response = client.post(url, json={"query": query})
            response.raise_for_status()
            answers[query] = [(d["id"], d["score"]) for d in response.json()["result"]]
    return answers


def _answers(url: str, query: str) -> bool:
    """Whether the server answers a query with 200."""
    import httpx

    return httpx.post(url, json={"query": query}, timeout=120).status_code == 200


def load(
    url: str, queries: list[str], clients: int, total: int, alone: dict[str, list[tuple[str, float]]]
) -> dict[str, Any]:
    """`clients` threads send `total` requests in all, as fast as they get answers."""
    import httpx

    order = itertools.count()
    lock = threading.Lock()
    records: list[tuple[int, float, bool | None, float | None]] = []  # status, seconds, same ranking, score diff

    def client() -> None:
        with httpx.Client(timeout=None) as http:
            while (i := next(order)) < total:
                query = queries[i % len(queries)]
                started = time.perf_counter()
                try:
                    response = http.post(url, json={"query": query})
                    status = response.status_code
                except httpx.TransportError:
                    status, response = 0, None  # the connection failed: counted as status 0
                seconds = time.perf_counter() - started
                same, diff = None, None
                if response is not None and status == 200:
                    got = [(d["id"], d["score"]) for d in response.json()["result"]]
                    same = [d for d, _ in got] == [d for d, _ in alone[query]]
                    diff = max((abs(a - b) for (_, a), (_, b) in zip(got, alone[query], strict=False)), default=0.0)
                with lock:
                    records.append((status, seconds, same, diff))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies = sorted(r[1] for r in records)
    checked = [r for r in records if r[2] is not None]
    return {
        "clients": clients,
        "requests": len(records),
        "wall_s": wall,
        "throughput_per_s": sum(r[0] == 200 for r in records) / wall,
        "p50_ms": 1000 * _percentile(latencies, 50),
        "p95_ms": 1000 * _percentile(latencies, 95),
        "p99_ms": 1000 * _percentile(latencies, 99),
        "max_ms": 1000 * latencies[-1],
        "statuses": {str(k): v for k, v in sorted(Counter(r[0] for r in records).items())},
        "rankings_equal": all(r[2] for r in checked),
        "max_score_diff": max((r[3] for r in checked if r[3] is not None), default=None),
    }


def run_mode(
    name: str, extra: list[str], source: list[str], args: argparse.Namespace, queries: list[str]
) -> dict[str, Any]:
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryFile("w+") as log:
        server = Server(source, args, extra, log)
        try:
            alone = ask_alone(server.url, queries)
            rows = []
            for clients in levels if name != "overload" else [max(levels)]:
                total = max(args.min_requests, clients * args.requests_per_client)
                row = load(server.url, queries, clients, total, alone)
                if name == "overload":
                    row["answers_afterwards"] = _answers(server.url, queries[0])
                    row["all_answered_in_time"] = set(row["statuses"]) <= {"200", "503"} and (
                        row["max_ms"] <= 1000 * args.timeout_s
                    )
                rows.append({"mode": name, **row})
                print(
                    f"{name} | {clients} | {row['throughput_per_s']:.2f} | {row['p50_ms']:.0f} / {row['p95_ms']:.0f} / "
                    f"{row['p99_ms']:.0f} | {row['statuses']} | {row['rankings_equal']}",
                    flush=True,
                )
        finally:
            server.stop()
    return {"mode": name, "command": server.command, "rows": rows}


def _counts(value: str) -> list[int]:
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated counts such as 1,2, but got {value!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected counts >= 1, but got {value!r}")
    return counts


def _ratios(by_mode: dict[str, dict[int, dict[str, Any]]], mode: str, base: str) -> dict[str, float]:
    """Throughput of `mode` over `base`, per client count measured in both."""
    return {
        str(clients): row["throughput_per_s"] / by_mode[base][clients]["throughput_per_s"]
        for clients, row in by_mode.get(mode, {}).items()
        if by_mode.get(base, {}).get(clients, {}).get("throughput_per_s")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--index", help="serve a saved index (`crossrerank index`) instead of indexing the corpus")
    parser.add_argument("--pipeline", default="bm25_rerank", choices=["bm25_rerank", "faiss_rerank", "hybrid_rerank"])
    parser.add_argument("--model", default=None, help="default: the project's built offline model")
    parser.add_argument("--clients", default="1,4,16,64", help="concurrent clients per level, comma-separated")
    parser.add_argument("--queries", type=int, default=64, help="distinct SciFact test queries, cycled")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--min-requests", type=int, default=32, help="the fewest requests per level")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="the servers' request deadline")
    parser.add_argument("--overload-queue", type=int, default=8, help="--max-queue of the overload mode")
    parser.add_argument("--no-overload", action="store_true", help="skip the overload mode")
    parser.add_argument(
        "--ray-replicas", type=_counts, default=[], help="Ray Serve replica counts to measure too, e.g. 1,2"
    )
    parser.add_argument("--ray-only", action="store_true", help="measure only the Ray Serve modes")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a ranker setting for the servers")
    parser.add_argument("--start-timeout", type=float, default=1800, help="seconds a server may take to get ready")
    parser.add_argument("--json", default=str(RESULTS / "serve_load.json"), help="default: %(default)s")
    args = parser.parse_args()

    from haystack_crossrerank.commands.offline import built_model_dir
    from haystack_crossrerank.data.beir import load_beir, resolve_beir_folder
    from haystack_crossrerank.utils.provenance import write_result

    args.model = args.model or str(built_model_dir("minilm"))
    if not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"no model in {args.model}: run `crossrerank build-model` or pass --model")
    source = ["--index", args.index] if args.index else ["--corpus", str(resolve_beir_folder(args.data_dir))]
    queries = list(load_beir(args.data_dir, "test").queries.values())[: args.queries]
    modes = {} if args.ray_only else dict(MODES)
    if not args.no_overload and not args.ray_only:
        modes["overload"] = ["--max-queue", str(args.overload_queue)]
    for replicas in args.ray_replicas:
        modes[f"ray_{replicas}_replicas"] = ["--ray", "local", "--replicas", str(replicas)]
    print(f"\n{args.pipeline}, model {args.model}, {len(queries)} SciFact test queries")
    print("mode | clients | answers/s | p50 / p95 / p99 ms | statuses | rankings equal")
    results = [run_mode(name, extra, source, args, queries) for name, extra in modes.items()]
    by_mode = {r["mode"]: {row["clients"]: row for row in r["rows"]} for r in results}
    speedups = _ratios(by_mode, "batched", "one_at_a_time")
    if speedups:
        print("batched / one at a time, throughput: " + ", ".join(f"{c} clients {s:.2f}x" for c, s in speedups.items()))
    fewest = f"ray_{min(args.ray_replicas)}_replicas" if args.ray_replicas else None
    ray_speedups = {
        f"{mode}/{fewest}": _ratios(by_mode, mode, fewest)
        for mode in by_mode
        if fewest is not None and mode.startswith("ray_") and mode != fewest
    }
    for name, ratios in ray_speedups.items():
        print(f"{name}, throughput: " + ", ".join(f"{c} clients {s:.2f}x" for c, s in ratios.items()))
    report = {
        "pipeline": args.pipeline,
        "model": args.model,
        "source": source,
        "queries": len(queries),
        "settings": args.set or [],
        "modes": results,
        "batched_speedup": speedups,
        "ray_replicas_speedup": ray_speedups,
    }
    print(f"wrote {write_result(args.json, 'serve_load', report)}")


if __name__ == "__main__":
    main()
