"""Ray overhead: `crossrerank rerank-run` on a local Ray against one process, on the same BM25 run.

The first --queries SciFact test queries get a BM25 run (the shipped first stage, top --depth), written as a TREC
file; it is reranked with the shipped BM25 pipeline's ranker settings once in this process and once on a local
Ray with --workers actors (one model each). The table gives documents/s of each and the ratio, and checks that
both outputs are identical.

    python benchmarks/ray_speed.py --data-dir ../shared/data --queries 100

writes `benchmarks/results/ray_speed.json` (or --json) with the command, commit, versions and machine.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--model", default=None, help="default: the project's built offline model")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=str(RESULTS / "ray_speed.json"), help="default: %(default)s")
    args = parser.parse_args()

    from haystack_crossrerank.commands.offline import built_model_dir
    from haystack_crossrerank.commands.rerank_run import RerankRunOptions, rerank_run
    from haystack_crossrerank.data.beir import resolve_beir_folder
    from haystack_crossrerank.retrievers.stages import bm25_candidates
    from haystack_crossrerank.utils.provenance import write_result

    model = args.model or str(built_model_dir("minilm"))
    folder = resolve_beir_folder(args.data_dir, "scifact")
    _, found = bm25_candidates(args.data_dir, queries=args.queries, depth=args.depth)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "bm25.trec"
        run.write_text(
            "".join(
                f"{q} Q0 {d.id} {r} {d.score or 0.0:.6f} bm25\n"
                for q, docs in found.items()
                for r, d in enumerate(docs, start=1)
            )
        )
        results = {}
        for name, ray in (("one process", None), (f"Ray, {args.workers} local workers", "local")):
            options = RerankRunOptions(
                run=str(run),
                corpus=str(folder),
                queries=str(folder / "queries.jsonl"),
                model=model,
                output=str(Path(tmp) / f"{'ray' if ray else 'single'}.trec"),
                qrels=str(folder / "qrels" / "test.tsv"),
                depth=args.depth,
                ray=ray,
                workers=args.workers,
            )
            results[name] = rerank_run(options)
        identical = (Path(tmp) / "ray.trec").read_text() == (Path(tmp) / "single.trec").read_text()
    single, on_ray = results.values()
    ratio = on_ray["pairs_per_s"] / single["pairs_per_s"]
    print(f"\n{args.queries} SciFact test queries, BM25 top {args.depth}, model {model}")
    print("engine | documents/s | seconds | reranked nDCG@10")
    for name, r in results.items():
        print(f"{name} | {r['pairs_per_s']:.1f} | {r['seconds']:.1f} | {r['reranked_ndcg@10']:.4f}")
    print(f"Ray / one process: {ratio:.2f}x; outputs identical: {identical}")
    report = {"model": model, "results": results, "ratio": ratio, "identical": identical}
    print(f"wrote {write_result(args.json, 'ray_speed', report)}")


if __name__ == "__main__":
    main()
