"""Start-up of `crossrerank serve`: loading a saved index (`--index`) against indexing the corpus (`--corpus`).

For each data set, the index is built once with `crossrerank index` (timed apart; an index already in --work,
by default `~/.cache/haystack-crossrerank/indexes`, built from the same corpus for the same first stage and embedder
is reused). After one untimed start (it fills the model's export cache and the file cache), `crossrerank serve` is
started --repeats times with `--corpus` and with `--index`, in turn.
Start-up is the time from launching the server process to its first answer (HTTP 200) to a query: imports,
indexing or loading, and the models' warm-up. Both servers must then give the same documents for the first
--queries queries of the set.

    python benchmarks/serve_startup.py --data-dir ../shared/data --datasets scifact,medquad --pipeline hybrid_rerank

writes `benchmarks/results/serve_startup.json` (or --json) with the command, commit, versions and machine. With the
hybrid pipeline on 2 CPU cores, `--corpus` embeds every document at each start (minutes for SciFact's 5,183
abstracts, several times that for MedQuAD's 15,803 answers), and so does the one index build per data set.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-m", "haystack_crossrerank.commands.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_index(corpus: Path, out: Path, first_stage: str) -> float | None:
    """Build the index (seconds taken), or reuse one built from the same corpus for the same stage (`None`)."""
    from haystack_crossrerank.retrievers.index import file_sha256, read_manifest
    from haystack_crossrerank.retrievers.stages import offline_embedder

    corpus_file = next(corpus / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (corpus / n).is_file())
    try:
        manifest = read_manifest(out)
        embedder = (manifest["embedder"] or {}).get("model")
        same = manifest["first_stage"] == first_stage and not manifest["added_corpora"]
        same = same and manifest["corpus"]["sha256"] == file_sha256(corpus_file)
        if same and embedder in (None, offline_embedder()):
            return None
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    started = time.perf_counter()
    command = [*CLI, "index", "--corpus", str(corpus), "--out", str(out), "--first-stage", first_stage, "--overwrite"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def start_and_ask(source: list[str], pipeline: str, model: str, queries: list[str], timeout: float) -> dict[str, Any]:
    """Start a server, time it to its first answer, ask the queries, stop it."""
    import httpx

    port = _free_port()
    command = [*CLI, "serve", *source, "--pipeline", pipeline, "--model", model, "--port", str(port)]
    url = f"http://127.0.0.1:{port}/{pipeline}/run"
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    if httpx.post(url, json={"query": queries[0]}, timeout=timeout).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.perf_counter() - started > timeout:
                    log.seek(0)
                    raise SystemExit(f"`{' '.join(command)}` did not start:\n{log.read()[-3000:]}")
                time.sleep(0.2)
            seconds = time.perf_counter() - started
            answers = [
                [d["id"] for d in httpx.post(url, json={"query": q}, timeout=60).json()["result"]] for q in queries
            ]
        finally:
            server.terminate()
            server.wait(timeout=60)
    return {"seconds": seconds, "answers": answers}


def measure(name: str, corpus: Path, args: argparse.Namespace, model: str) -> dict[str, Any]:
    from haystack_crossrerank.data.beir import read_corpus, read_queries

    stage = args.pipeline.removesuffix("_rerank")
    index = Path(args.work) / f"{name}-{stage}"
    build_seconds = ensure_index(corpus, index, stage)
    queries = list(read_queries(corpus).values())[: args.queries]
    # One untimed start first, so that neither timed server pays alone for the model's one-off export (the
    # exported-backend cache) or for a cold file cache.
    warmup = start_and_ask(["--index", str(index)], args.pipeline, model, queries, args.timeout)
    corpus_runs, index_runs = [], []
    for _ in range(args.repeats):  # in turn, so that the machine's noise falls on both alike
        corpus_runs.append(start_and_ask(["--corpus", str(corpus)], args.pipeline, model, queries, args.timeout))
        index_runs.append(start_and_ask(["--index", str(index)], args.pipeline, model, queries, args.timeout))
    corpus_s = statistics.median(r["seconds"] for r in corpus_runs)
    index_s = statistics.median(r["seconds"] for r in index_runs)
    return {
        "dataset": name,
        "documents": len(read_corpus(corpus)),
        "pipeline": args.pipeline,
        "index": str(index),
        "index_build_s": build_seconds,
        "warmup_start_s": warmup["seconds"],
        "corpus_startup_s": corpus_s,
        "index_startup_s": index_s,
        "speedup": corpus_s / index_s,
        "answers_agree": all(c["answers"] == i["answers"] for c, i in zip(corpus_runs, index_runs, strict=True)),
        "corpus_runs_s": [r["seconds"] for r in corpus_runs],
        "index_runs_s": [r["seconds"] for r in index_runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--datasets", default="scifact,medquad", help="BEIR folders under --data-dir, comma-separated")
    parser.add_argument("--pipeline", default="hybrid_rerank", choices=["bm25_rerank", "faiss_rerank", "hybrid_rerank"])
    parser.add_argument("--model", default=None, help="default: the project's built offline model")
    parser.add_argument("--work", help="where the indexes are built and reused (default: <home>/indexes)")
    parser.add_argument("--repeats", type=int, default=1, help="starts per server and data set (the median is kept)")
    parser.add_argument("--queries", type=int, default=3, help="queries whose answers are compared")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a server may take to start")
    parser.add_argument("--json", default=str(RESULTS / "serve_startup.json"))
    args = parser.parse_args()

    from haystack_crossrerank.commands.offline import built_model_dir
    from haystack_crossrerank.data.beir import resolve_beir_folder
    from haystack_crossrerank.utils.paths import home
    from haystack_crossrerank.utils.provenance import write_result

    args.work = args.work or str(home() / "indexes")
    model = args.model or str(built_model_dir("minilm"))
    if not (Path(model) / "config.json").is_file() and args.model is None:
        raise SystemExit(f"no built default model in {model}: run `crossrerank build-model` or pass --model")
    rows = [measure(n, resolve_beir_folder(args.data_dir, n), args, model) for n in args.datasets.split(",")]
    print(
        f"\n`crossrerank serve` start-up to the first answer, {args.pipeline}, model {model}, {args.repeats} start(s)"
    )
    print("data set | documents | index build s | serve --corpus s | serve --index s | speed-up | answers agree")
    for r in rows:
        build = "reused" if r["index_build_s"] is None else f"{r['index_build_s']:.1f}"
        print(
            f"{r['dataset']} | {r['documents']} | {build} | {r['corpus_startup_s']:.1f} | {r['index_startup_s']:.1f} | "
            f"{r['speedup']:.1f}x | {r['answers_agree']}"
        )
    report = {"pipeline": args.pipeline, "model": model, "repeats": args.repeats, "rows": rows}
    print(f"wrote {write_result(args.json, 'serve_startup', report)}")


if __name__ == "__main__":
    main()
