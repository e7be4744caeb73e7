"""Prepare `.devcarry/` for `benchmarks/gpu_check.py` on a GPU machine that cannot download anything.

It holds: the base model (all-MiniLM-L6-v2, or all-mpnet-base-v2 with `--base mpnet`; weights stored in
fp16 to fit the 64 MiB transfer limit, cast back to fp32 before training), STS-B, and BM25 top-100 candidates
(title + abstract) for the first N SciFact test queries with their judgments. With `--retrieval`, also
`retrieval.json.gz`: the retrieval recipe's training examples (SciFact train with MedQuAD mixed in, negatives
mined from BM25, as `crossrerank train --task retrieval` mines them) and its validation candidates (held-out
training queries, BM25 at the recipe's validation depth), as the texts the ranker sends, so that the GPU
machine needs neither Haystack nor BM25.

    python benchmarks/prepare_gpu_carry.py --data-dir ../shared/data --queries 30 --retrieval --mix medquad=2.0

A base whose fp16 weights are larger than what one call carries (MPNet: 209 MiB) is cut with `--split-mib N`
into parts `.devparts/1/`, `.devparts/2/`, ... of at most N MiB each, and `base/weights.json` records the
joined file's size and sha256. Each part travels in its own call (`carry: [".devparts/K"]`, the command
copying it to `/tmp/devparts`) while the machine stays warm; `gpu_check.py --parts /tmp/devparts` joins them
and refuses a join whose sha256 differs.

    python benchmarks/prepare_gpu_carry.py --base mpnet --split-mib 60 --queries 30
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
    parser.add_argument("--retrieval", action="store_true", help="also the retrieval recipe's data")
    parser.add_argument("--mix", default="medquad=2.0", help="data sets mixed into retrieval training")
    parser.add_argument("--base", choices=("minilm", "mpnet"), default="minilm", help="the offline base to carry")
    parser.add_argument("--split-mib", type=int, default=0, help="cut the weights into parts of at most N MiB")
    parser.add_argument("--parts-dir", default=".devparts")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file, save_file

    from haystack_crossrerank.first_stage import bm25_candidates
    from haystack_crossrerank.offline import offline_base_model

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    base = Path(offline_base_model(args.base))
    (out / "base").mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(base / name, out / "base" / name)
    weights = {k: v.to(torch.float16) for k, v in load_file(str(base / "model.safetensors")).items()}
    save_file(weights, str(out / "base" / "model.safetensors"))
    if args.split_mib:
        split_weights(out / "base", Path(args.parts_dir), args.split_mib * 2**20)
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
    if args.retrieval:
        write_retrieval(args.data_dir, args.mix, out / "retrieval.json.gz")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 2**20:.1f} MiB)")


def split_weights(base: Path, parts_dir: Path, part_bytes: int) -> None:
    """
    Move `base/model.safetensors` into parts of at most `part_bytes`; record size and sha256 for the join.

    :param base: The carried base folder; its weights file is replaced by `weights.json`.
    :param parts_dir: Where the parts go, one folder per part (`1/`, `2/`, ...), each carried by its own call.
    :param part_bytes: The most bytes in one part.
    """
    import hashlib

    weights = base / "model.safetensors"
    if parts_dir.exists():
        shutil.rmtree(parts_dir)
    digest = hashlib.sha256()
    names = []
    with weights.open("rb") as handle:
        index = 0
        while chunk := handle.read(part_bytes):
            index += 1
            digest.update(chunk)
            folder = parts_dir / str(index)
            folder.mkdir(parents=True)
            name = f"model.safetensors.{index:03d}"
            (folder / name).write_bytes(chunk)
            names.append(name)
    sha256 = digest.hexdigest()
    record = {"file": "model.safetensors", "size": weights.stat().st_size, "sha256": sha256, "parts": names}
    (base / "weights.json").write_text(json.dumps(record, indent=2))
    weights.unlink()
    print(f"weights cut into {len(names)} parts under {parts_dir}/1..{len(names)} (sha256 {sha256[:12]}...)")


def write_retrieval(data_dir: str, mix: str, path: Path) -> None:
    """The examples and validation candidates of `crossrerank train --task retrieval --mix ...`, as texts."""
    import gzip

    from haystack_crossrerank.data.beir import load_beir
    from haystack_crossrerank.evaluation.rerank import document_text, text_ranker
    from haystack_crossrerank.training.mining import bm25_candidates_for, mine_examples, mix_examples, split_queries
    from haystack_crossrerank.training.retrieval import RetrievalOptions
    from haystack_crossrerank.training.trainer import TASK_PRESETS

    ratios = {name: float(value) for name, value in (item.split("=") for item in mix.split(",") if item)}
    options = RetrievalOptions(data_dir=data_dir, mix=ratios)
    seed = 42
    data = load_beir(data_dir, "train")
    train_ids, validation_ids = split_queries(data, options.validation_queries, seed)
    examples, stats = mine_examples(data, train_ids, options, seed)
    mixed, mix_stats = mix_examples(options, len(examples), seed)
    depth = options.eval_depth
    candidates = bm25_candidates_for(data, validation_ids, depth)
    texts = text_ranker()
    validation = {
        q: {
            "query": data.queries[q],
            "qrels": data.qrels[q],
            "documents": [[d, document_text(data.corpus[d], texts), score] for d, score in candidates[q]],
        }
        for q in validation_ids
    }
    payload = {
        "preset": TASK_PRESETS["retrieval"],
        "max_length": options.max_length,
        "loss": options.loss,
        "depth": depth,
        "stats": {"scifact": stats, **mix_stats},
        "examples": examples + mixed,
        "validation": validation,
    }
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(payload, handle)
    print(f"retrieval: {len(examples)} + {len(mixed)} examples, {len(validation)} validation queries (depth {depth})")


if __name__ == "__main__":
    main()
