"""Scorer throughput on the CPU: 1,000 pairs of ~10-word queries and ~100-word documents at batch size 32,
for a tiny random 2-layer BERT and for all-MiniLM-L6-v2 (one-logit head), in fp32 and with the default
precision ("auto").

    python benchmarks/scorer_speed.py --json results/scorer_speed.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a of to and in is was for on with as by at from protein cell gene cancer risk patients study results "
    "increase decrease level effect treatment clinical trial data model method analysis expression tumor"
).split()


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(" ".join(rng.choices(WORDS, k=10)), " ".join(rng.choices(WORDS, k=100))) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--json", default="results/scorer_speed.json")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import build_tiny_cross_encoder

    from haystack_crossrerank.offline import offline_base_model
    from haystack_crossrerank.scoring import CrossEncoderScorer

    pairs = make_pairs(args.pairs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models: dict[str, tuple[str, dict]] = {
            "tiny 2-layer BERT": (str(build_tiny_cross_encoder(Path(tmp) / "tiny")), {})
        }
        models["all-MiniLM-L6-v2"] = (offline_base_model(), {"num_labels": 1})
        for name, (path, kwargs) in models.items():
            for precision in ("fp32", "auto"):
                scorer = CrossEncoderScorer(
                    path, device="cpu", precision=precision, batch_size=32, model_kwargs=kwargs, backend="torch"
                )
                scorer.score(pairs[:32])
                start = time.perf_counter()
                scorer.score(pairs)
                seconds = time.perf_counter() - start
                rows.append({"model": name, "precision": scorer.precision, "pairs_per_s": len(pairs) / seconds})
                print(f"{name:20s} {scorer.precision:5s} {len(pairs) / seconds:8.1f} pairs/s", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"pairs": len(pairs), "batch_size": 32, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
