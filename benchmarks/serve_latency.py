"""Serving overhead: `crossrerank serve` over HTTP against the same pipeline in process, at two depths.

For each depth, a server is started on 127.0.0.1 (BM25 pipeline, the offline default model, SciFact corpus) and
the first --queries SciFact test queries are sent one after another over HTTP; then, with the server stopped, the
same queries go to a `ServedPipeline` in this process (the same corpus, model and settings). The table gives
p50/p95 latency of each and the differences; the JSON has every latency.

    python benchmarks/serve_latency.py --data-dir ../shared/data --queries 30

writes `benchmarks/results/serve_latency.json` (or --json) with the command, commit, versions and machine.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), statistics.quantiles(values, n=20)[18]


def measure(corpus: Path, model: str, queries: list[str], depth: int) -> dict[str, Any]:
    import httpx

    from haystack_crossrerank.commands.serving import ServedPipeline, ServeSettings

    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "haystack_crossrerank.commands.cli",
        "serve",
        "--corpus",
        str(corpus),
        "--model",
        model,
    ]
    command += ["--port", str(port), "--depth", str(depth)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/bm25_rerank/run"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.post(url, json={"query": queries[0]}, timeout=60).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(1)
        http_ms: list[float] = []
        with httpx.Client(timeout=60) as client:
            for query in queries:
                start = time.perf_counter()
                response = client.post(url, json={"query": query})
                http_ms.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
    finally:
        server.terminate()
        server.wait(timeout=60)
    # The pipeline in this process is loaded only once the server has stopped: two OpenVINO runtimes on the same
    # cores slow each other down (each keeps its threads busy for a while after a call), which on a 2-core machine
    # made both sides several times slower and the difference meaningless.
    scorer_s: list[float] = []  # the in-process scorer's calls (the model's share of each request)
    with ServedPipeline(
        ServeSettings(corpus=str(corpus), model=model, depth=depth),
        on_round=lambda record: scorer_s.append(record.seconds),
    ) as local:
        local.run(queries[0])  # warm-up, as the server's first request was
        scorer_s.clear()
        local_ms = []
        for query in queries:
            start = time.perf_counter()
            local.run(query)
            local_ms.append((time.perf_counter() - start) * 1000)
    (h50, h95), (l50, l95) = _percentiles(http_ms), _percentiles(local_ms)
    return {
        "depth": depth,
        "http_p50_ms": h50,
        "http_p95_ms": h95,
        "in_process_p50_ms": l50,
        "in_process_p95_ms": l95,
        "overhead_p50_ms": h50 - l50,
        # Each query's own difference (HTTP minus in process), whose median is less noisy than the medians' one.
        "overhead_paired_p50_ms": statistics.median(h - loc for h, loc in zip(http_ms, local_ms, strict=True)),
        # The fraction of the in-process time spent in the scorer (tokenizing and the model): what shared batches
        # and any serving change can work on is the rest.
        "scorer_share": sum(scorer_s) / (sum(local_ms) / 1000),
        "http_ms": http_ms,
        "in_process_ms": local_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--model", default=None, help="default: the project's built offline model")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--depths", default="20,100")
    parser.add_argument("--json", default=str(RESULTS / "serve_latency.json"), help="default: %(default)s")
    args = parser.parse_args()

    from haystack_crossrerank.commands.offline import built_model_dir
    from haystack_crossrerank.data.beir import load_beir, resolve_beir_folder
    from haystack_crossrerank.utils.provenance import write_result

    model = args.model or str(built_model_dir("minilm"))
    corpus = resolve_beir_folder(args.data_dir, "scifact")
    queries = list(load_beir(args.data_dir, "test").queries.values())[: args.queries]
    rows = [measure(corpus, model, queries, int(d)) for d in args.depths.split(",")]
    print(f"\n{len(queries)} SciFact test queries, BM25 pipeline, model {model}, one request at a time")
    print("depth | HTTP p50 / p95 ms | in process p50 / p95 ms | difference of the p50s | p50 of the differences")
    for r in rows:
        print(
            f"{r['depth']} | {r['http_p50_ms']:.1f} / {r['http_p95_ms']:.1f} | "
            f"{r['in_process_p50_ms']:.1f} / {r['in_process_p95_ms']:.1f} | {r['overhead_p50_ms']:+.1f} ms | "
            f"{r['overhead_paired_p50_ms']:+.1f} ms"
        )
    print(f"wrote {write_result(args.json, 'serve_latency', {'model': model, 'rows': rows})}")


if __name__ == "__main__":
    main()
