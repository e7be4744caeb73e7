"""Data loaders: STS-B files, generic pair files, BEIR folders, and their errors with file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from haystack_crossrerank.data.beir import load_beir
from haystack_crossrerank.data.sts import load_pair_file, load_sts

STS_LINES = [
    "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.",
    "main-forums\tdeft\t2014\t0002\t1.200\tOne sentence\tAnother\tsource-a\tsource-b",
]


def write_stsb(folder: Path, lines: list[str], name: str = "sts-dev.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_stsb_files_are_read_with_scores_divided_by_five(tmp_path: Path) -> None:
    write_stsb(tmp_path / "stsb", STS_LINES)
    data = load_sts("dev", tmp_path)
    assert data.pairs == [("A plane is taking off.", "An air plane is taking off."), ("One sentence", "Another")]
    assert data.score == pytest.approx([1.0, 0.24])


def test_stsb_unbalanced_quotes_are_kept_verbatim(tmp_path: Path) -> None:
    write_stsb(tmp_path, ['a\tb\tc\td\t3.0\tHe said "hi\tShe said hi"'])
    assert load_sts("validation", tmp_path).pairs == [('He said "hi', 'She said hi"')]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a\tb\tc\td\tfive\tx\ty", r"sts-dev.csv:2: score must be a number, but got 'five'"),
        ("a\tb\tc\td\t7.5\tx\ty", r"sts-dev.csv:2: score must be in \[0.0, 5.0\], but got '7.5'"),
        ("a\tb\tc\td\t2.0\t\ty", r"sts-dev.csv:2: `sentence1` must be a non-empty text"),
        ("a\tb\tc\t2.0\tx", r"sts-dev.csv:2: expected 7 or 9 tab-separated fields, but got 5"),
    ],
)
def test_bad_stsb_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    write_stsb(tmp_path, [STS_LINES[0], line])
    with pytest.raises(ValueError, match=message):
        load_sts("validation", tmp_path)


def test_missing_split_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sts-test.csv"):
        load_sts("test", tmp_path)


def test_unknown_split_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        load_sts("holdout", tmp_path)


def test_pair_files_in_csv_tsv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text('sentence1,sentence2,score\n"a, b",c,4\n', encoding="utf-8")
    (tmp_path / "p.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t0\n", encoding="utf-8")
    (tmp_path / "p.jsonl").write_text(json.dumps({"sentence1": "x", "sentence2": "y", "score": 2.5}) + "\n")
    assert load_pair_file(tmp_path / "p.csv", score_range=(0, 5)).score == pytest.approx([0.8])
    assert load_pair_file(tmp_path / "p.csv", score_range=(0, 5)).pairs == [("a, b", "c")]
    assert load_pair_file(tmp_path / "p.tsv").score == [0.0]
    assert load_pair_file(tmp_path / "p.jsonl", score_range=(0, 5)).score == pytest.approx([0.5])


def test_pair_file_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("sentence1,sentence2,score\na,b,0.5\nc,,0.2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv:3: `sentence2` must be a non-empty text"):
        load_pair_file(tmp_path / "bad.csv")
    (tmp_path / "range.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 1.5}\n')
    with pytest.raises(ValueError, match=r"range.jsonl:1: score must be in \[0.0, 1.0\], but got 1.5"):
        load_pair_file(tmp_path / "range.jsonl")
    (tmp_path / "cols.tsv").write_text("text\tscore\nx\t1\n")
    with pytest.raises(ValueError, match=r"cols.tsv:2: missing column\(s\) \['sentence1', 'sentence2'\]"):
        load_pair_file(tmp_path / "cols.tsv")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(ValueError, match="must end in .csv, .tsv or .jsonl"):
        load_pair_file(tmp_path / "p.txt")


def write_beir(folder: Path, *, qrels: str | None = None, gzip_corpus: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = "".join(
        json.dumps({"_id": i, "title": f"title {i}", "text": f"text {i}", "metadata": {}}) + "\n" for i in ("d1", "d2")
    )
    if gzip_corpus:
        with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.write(corpus)
    else:
        (folder / "corpus.jsonl").write_text(corpus)
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": f"query {q}", "metadata": {}}) + "\n" for q in ("q1", "q2", "q3"))
    )
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(qrels or "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td2\t1\r\n")
    return folder


def test_beir_folder_loads_with_crlf_qrels_and_gzip_corpus(tmp_path: Path) -> None:
    write_beir(tmp_path / "scifact")
    data = load_beir(tmp_path, "test")
    assert data.corpus == {
        "d1": {"title": "title d1", "text": "text d1"},
        "d2": {"title": "title d2", "text": "text d2"},
    }
    assert data.queries == {"q1": "query q1", "q2": "query q2"}  # q3 has no judgment in this split
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


@pytest.mark.parametrize(
    ("qrels", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\n", r"test.tsv:2: expected 3 tab-separated fields, but got 2"),
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", r"test.tsv:2: relevance must be a number, but got 'high'"),
        ("query-id\tcorpus-id\tscore\nq1\td9\t1\n", "1 judged documents are not in the corpus, e.g. 'd9'"),
        ("query-id\tcorpus-id\tscore\nq9\td1\t1\n", "1 judged queries are not in queries.jsonl, e.g. 'q9'"),
    ],
)
def test_malformed_qrels_are_clear_errors(tmp_path: Path, qrels: str, message: str) -> None:
    write_beir(tmp_path, qrels=qrels, gzip_corpus=False)
    with pytest.raises(ValueError, match=message):
        load_beir(tmp_path, "test")


def test_malformed_corpus_line_names_file_and_line(tmp_path: Path) -> None:
    write_beir(tmp_path, gzip_corpus=False)
    with (tmp_path / "corpus.jsonl").open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(ValueError, match=r"corpus.jsonl:3: not valid JSON"):
        load_beir(tmp_path, "test")


def test_missing_split_lists_the_available_ones(tmp_path: Path) -> None:
    write_beir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"splits available: \['test'\]"):
        load_beir(tmp_path, "train")


def test_sample_is_seeded_in_file_order_and_refuses_zero() -> None:
    from haystack_crossrerank.data.beir import BeirData

    queries = {f"q{i}": f"text {i}" for i in range(20)}
    data = BeirData("toy", {"d": {"title": "", "text": "x"}}, queries, {q: {"d": 1} for q in queries})
    picked = data.sample(5, seed=1)
    assert len(picked.queries) == 5 and picked.queries == data.sample(5, seed=1).queries
    assert list(picked.queries) == [q for q in queries if q in picked.queries]  # file order kept
    assert set(picked.qrels) == set(picked.queries) and picked.corpus is data.corpus
    assert list(picked.queries) != list(data.head(5).queries)  # not simply the first five
    assert data.sample(50).queries == data.queries
    with pytest.raises(ValueError, match="a sample needs at least 1 query, but got 0"):
        data.sample(0)
