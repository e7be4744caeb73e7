"""Prepare `.devcarry/` for `benchmarks/gpu_check.py` on a GPU machine that cannot download anything.

It holds: the all-MiniLM-L6-v2 base (weights stored in fp16 to fit the 64 MiB transfer limit; they are
cast back to fp32 before training), STS-B, and BM25 top-100 candidates (title + abstract) for the first
N SciFact test queries with their judgments.

    python benchmarks/prepare_gpu_carry.py --data-dir ../shared/data --queries 30
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--out", default=".devcarry")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file, save_file

    from haystack_crossrerank.first_stage import bm25_candidates
    from haystack_crossrerank.offline import offline_base_model

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    base = Path(offline_base_model())
    (out / "base").mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(base / name, out / "base" / name)
    weights = {k: v.to(torch.float16) for k, v in load_file(str(base / "model.safetensors")).items()}
    save_file(weights, str(out / "base" / "model.safetensors"))
    shutil.copytree(Path(args.data_dir) / "stsb", out / "stsb", ignore=shutil.ignore_patterns("LICENSE.txt"))
    data, candidates = bm25_candidates(args.data_dir, queries=args.queries, depth=args.depth)
    payload = {
        "queries": {q: data.queries[q] for q in candidates},
        "qrels": {q: data.qrels[q] for q in candidates},
        "candidates": {
            q: [{"id": d.id, "title": d.meta.get("title", ""), "text": d.content, "score": d.score} for d in docs]
            for q, docs in candidates.items()
        },
    }
    (out / "candidates.json").write_text(json.dumps(payload))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
