"""Throughput of one CrossEncoderRanker shared by threads: documents/s with 1 thread against 4, on the same work.

One ranker (backend "auto" by default: OpenVINO on the CPU, torch on a GPU) is warmed up once and then shared.
The first --queries SciFact test queries get the shipped BM25 first stage's top --depth candidates (title +
abstract, as in rerank_speed.py). In each setting of --threads, that many threads take the queries from one
queue and rerank them; the settings alternate over --rounds rounds (the order reversed every other round), so
that the machine's noise falls on all of them alike. Documents/s per setting is over all its rounds, and the
speed-up is against the one-thread setting. Every ranking a thread returns must equal the one-thread ranking
(document ids and scores); the script exits with status 1 if one does not.

    python benchmarks/thread_speed.py --data-dir ../shared/data

writes `benchmarks/results/thread_speed.json` (or --json) with the command, commit, versions and machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

Ranking = list[tuple[str, float | None]]


def rerank_all(ranker: Any, work: list[tuple[str, list[Any]]], threads: int) -> tuple[float, list[Ranking]]:
    """
    Rerank every (query, documents) item of `work` with `threads` threads sharing `ranker`.

    :returns: The wall-clock seconds, and each item's ranking as (document id, score), in the order of `work`.
    """

    def rank(item: tuple[str, list[Any]]) -> Ranking:
        query, documents = item
        return [(d.id, d.score) for d in ranker.run(query=query, documents=documents)["documents"]]

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        rankings = list(pool.map(rank, work))
    return time.perf_counter() - start, rankings


def measure(ranker: Any, work: list[tuple[str, list[Any]]], settings: list[int], rounds: int) -> dict[str, Any]:
    """
    Time each thread count of `settings` over `rounds` alternating rounds, after one untimed one-thread pass
    that gives the reference rankings.

    :param ranker: A warmed-up ranker (anything with `run(query=..., documents=...)`).
    :param work: The (query, candidate Documents) items every setting reranks.
    :param settings: Thread counts; must hold 1.
    :param rounds: Timed passes per setting.
    :returns: `{"documents_per_pass", "rounds", "rows": [{"threads", "seconds", "seconds_per_round",
        "docs_per_s", "speedup", "identical"}], "identical"}`; `speedup` is against the one-thread row.
    :raises ValueError: If `settings` has no 1, or `rounds` < 1.
    """
    if 1 not in settings:
        raise ValueError(f"the thread counts must include 1 (the reference), but got {settings}")
    if rounds < 1:
        raise ValueError(f"`rounds` must be > 0, but got {rounds}")
    _, reference = rerank_all(ranker, work, 1)
    seconds: dict[int, list[float]] = {t: [] for t in settings}
    identical = dict.fromkeys(settings, True)
    for round_number in range(rounds):
        for threads in settings if round_number % 2 == 0 else settings[::-1]:
            elapsed, rankings = rerank_all(ranker, work, threads)
            seconds[threads].append(elapsed)
            identical[threads] = identical[threads] and rankings == reference
    documents = sum(len(docs) for _, docs in work)
    rows: list[dict[str, Any]] = [
        {
            "threads": threads,
            "seconds": sum(seconds[threads]),
            "seconds_per_round": seconds[threads],
            "docs_per_s": documents * rounds / sum(seconds[threads]),
            "identical": identical[threads],
        }
        for threads in settings
    ]
    single = next(row for row in rows if row["threads"] == 1)
    for row in rows:
        row["speedup"] = row["docs_per_s"] / single["docs_per_s"]
    return {"documents_per_pass": documents, "rounds": rounds, "rows": rows, "identical": all(identical.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--model", default=None, help="default: the project's built offline model")
    parser.add_argument("--backend", default="auto", help="the ranker's backend (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--threads", default="1,4", help="comma-separated thread counts, with 1 (default: 1,4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(RESULTS / "thread_speed.json"), help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        settings = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, but got {args.threads!r}")
    if 1 not in settings or min(settings) < 1 or args.rounds < 1:
        parser.error(f"--threads must hold 1 and only counts > 0, and --rounds must be > 0; got {args.threads!r}")

    from haystack_crossrerank import CrossEncoderRanker
    from haystack_crossrerank.commands.offline import built_model_dir
    from haystack_crossrerank.retrievers.stages import bm25_candidates
    from haystack_crossrerank.utils.provenance import write_result

    model = args.model or str(built_model_dir("minilm"))
    if not Path(model).exists():
        sys.exit(f"model {model} not found: run `crossrerank build-model` or pass --model")
    data, found = bm25_candidates(args.data_dir, queries=args.queries, depth=args.depth)
    work = [(text, found[q]) for q, text in data.queries.items()]
    ranker = CrossEncoderRanker(model=model, backend=args.backend, top_k=args.depth, meta_fields_to_embed=["title"])
    ranker.warm_up()
    measured = measure(ranker, work, settings, args.rounds)
    scorer = ranker.scorer
    engine = f"{scorer.backend} {scorer.precision}, batch {scorer.batch_size}" if scorer is not None else args.backend

    print(
        f"\n{len(work)} SciFact test queries, BM25 top {args.depth} ({measured['documents_per_pass']} documents per "
        f"pass), {args.rounds} rounds, one CrossEncoderRanker ({engine}), model {model}"
    )
    print("threads | documents/s | x 1 thread | seconds per round | rankings equal to one thread")
    for row in measured["rows"]:
        per_round = " ".join(f"{s:.1f}" for s in row["seconds_per_round"])
        print(
            f"{row['threads']} | {row['docs_per_s']:.1f} | {row['speedup']:.2f} | {per_round} | "
            f"{'yes' if row['identical'] else 'NO'}"
        )
    report = {"model": model, "backend": args.backend, "engine": engine, "queries": len(work), "depth": args.depth}
    print(f"wrote {write_result(args.json, 'thread_speed', {**report, **measured})}")
    if not measured["identical"]:
        print("a threaded ranking differs from the one-thread ranking", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
