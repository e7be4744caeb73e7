"""The main job on toy data: STS-B figures, then the shipped BM25 pipeline on claims, with honest counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from haystack_crossrerank.commands.demo import run_demo
from tests.test_benchmark import QRELS, write_corpus
from tests.test_training import write_small_stsb


def test_demo_runs_the_shipped_pipeline_and_counts_every_claim(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_small_stsb(tmp_path / "data")
    write_corpus(data / "scifact")
    result = run_demo(tiny_model, data_dir=str(data), queries=1, examine=4)
    out = capsys.readouterr().out
    assert set(result) >= {"stsb-test_pearson", "stsb-test_spearman", "queries", "moves"}
    # every toy claim has its relevant document among BM25's candidates, so each is counted once
    assert sum(result["moves"].values()) == len(QRELS)
    assert len(result["queries"]) == min(1, result["moves"]["up"])
    assert f"moved the best relevant abstract up for {result['moves']['up']}," in out
    assert f"Of the first 4 test claims, {len(QRELS)} have a relevant abstract among BM25's" in out
    for shown in result["queries"]:
        assert shown["reranked_rank"] < shown["bm25_rank"]
