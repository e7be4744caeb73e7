"""BEIR-format retrieval data: `corpus.jsonl[.gz]`, `queries.jsonl`, `qrels/<split>.tsv`."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haystack_crossrerank.data.jsonl import iter_jsonl
from haystack_crossrerank.utils.extras import require


@dataclass(frozen=True)
class BeirData:
    """A BEIR data set split: the corpus, the queries that have judgments, and the judgments."""

    name: str
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text (only queries with judgments in this split)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}

    def head(self, n: int) -> BeirData:
        """The first `n` queries (in file order) with their judgments; the corpus is unchanged."""
        keep = list(self.queries)[:n]
        return BeirData(self.name, self.corpus, {q: self.queries[q] for q in keep}, {q: self.qrels[q] for q in keep})

    def sample(self, n: int, seed: int = 42) -> BeirData:
        """
        `n` queries drawn at random (seeded), kept in file order; all of them if `n` is not smaller.

        For sets whose file order is grouped (MedQuAD lists its sources one after another), where the first
        `n` would not be representative.

        :raises ValueError: If `n` < 1.
        """
        if n < 1:
            raise ValueError(f"a sample needs at least 1 query, but got {n}")
        ids = list(self.queries)
        chosen = set(random.Random(seed).sample(ids, n)) if n < len(ids) else set(ids)
        keep = [q for q in ids if q in chosen]
        return BeirData(self.name, self.corpus, {q: self.queries[q] for q in keep}, {q: self.qrels[q] for q in keep})


def resolve_beir_folder(data_dir: str | Path, dataset: str = "scifact") -> Path:
    """
    Accept either the BEIR folder itself or a folder that holds it (e.g. `../shared/data` with `scifact/`).

    :param data_dir: The folder.
    :param dataset: The data set's subfolder name.
    :returns: The folder that holds `queries.jsonl`.
    :raises FileNotFoundError: If neither holds a BEIR data set.
    """
    base = Path(data_dir).expanduser()
    for candidate in (base, base / dataset):
        if (candidate / "queries.jsonl").is_file():
            return candidate
    raise FileNotFoundError(f"no BEIR data set in '{base}' or '{base / dataset}' (expected queries.jsonl there)")


def load_beir(data_dir: str | Path, split: str = "test", *, dataset: str = "scifact") -> BeirData:
    """
    Load a BEIR data set split from a local folder, or from the hub (`BeIR/<dataset>`) when `data_dir` is
    `"hub"`.

    :param data_dir: The BEIR folder (or one holding `<dataset>/`), or `"hub"`.
    :param split: The qrels split: `train`, `dev` or `test`.
    :param dataset: The data set name.
    :returns: The data.
    :raises FileNotFoundError: If a file is missing.
    :raises ValueError: On a malformed line (the message gives file and line), or judgments naming unknown
        queries or documents.
    """
    if str(data_dir) == "hub":
        return _load_beir_hub(dataset, split)
    folder = resolve_beir_folder(data_dir, dataset)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"'{qrels_path}' does not exist; splits available: {available}")
    corpus = read_corpus(folder)
    all_queries = read_queries(folder / "queries.jsonl")
    qrels = read_qrels(qrels_path)
    unknown_q = [q for q in qrels if q not in all_queries]
    if unknown_q:
        raise ValueError(
            f"{qrels_path}: {len(unknown_q)} judged queries are not in queries.jsonl, e.g. {unknown_q[0]!r}"
        )
    unknown_d = sorted({d for judged in qrels.values() for d in judged if d not in corpus})
    if unknown_d:
        raise ValueError(
            f"{qrels_path}: {len(unknown_d)} judged documents are not in the corpus, e.g. {unknown_d[0]!r}"
        )
    queries = {q: all_queries[q] for q in all_queries if q in qrels}
    return BeirData(folder.name, corpus, queries, {q: qrels[q] for q in queries})


def read_corpus(source: str | Path) -> dict[str, dict[str, str]]:
    """
    Read a corpus: a BEIR folder's `corpus.jsonl[.gz]`, or any JSON lines file of documents with `_id` (or
    `id`), `text` and an optional `title`.

    :param source: The folder or the file.
    :returns: doc id -> `{"title", "text"}`, in file order.
    :raises FileNotFoundError: If there is no such file, or the folder has no corpus file.
    :raises ValueError: On a malformed line, a document without id or text, or a repeated id (with file and line).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        found = next((path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"'{path}' has no corpus.jsonl or corpus.jsonl.gz")
        path = found
    elif not path.is_file():
        raise FileNotFoundError(f"corpus '{path}' does not exist: expected a BEIR folder or a .jsonl file")
    corpus: dict[str, dict[str, str]] = {}
    for line_number, row in iter_jsonl(path):
        doc_id = _field({"_id": row.get("_id", row.get("id"))}, "_id", path, line_number)
        if doc_id in corpus:
            raise ValueError(f"{path}:{line_number}: document id {doc_id!r} appears twice")
        corpus[doc_id] = {"title": str(row.get("title") or ""), "text": _field(row, "text", path, line_number)}
    if not corpus:
        raise ValueError(f"{path}: no documents found")
    return corpus


def read_queries(source: str | Path) -> dict[str, str]:
    """
    Read queries: a BEIR `queries.jsonl` (rows with `_id` and `text`), or the BEIR folder that holds it.

    :param source: The file or folder.
    :returns: query id -> text, in file order.
    :raises FileNotFoundError: If there is no such file.
    :raises ValueError: On a malformed line (with file and line).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "queries.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"queries '{path}' do not exist: expected a BEIR queries.jsonl or its folder")
    return {_field(row, "_id", path, n): _field(row, "text", path, n) for n, row in iter_jsonl(path)}


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """
    Read a BEIR qrels file: a header `query-id corpus-id score`, then tab-separated rows (CRLF accepted).

    :param path: The file.
    :returns: query id -> {doc id: relevance}.
    :raises ValueError: On a malformed row, with file and line.
    """
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for line_number, row in enumerate(reader, start=1):
            if line_number == 1 and row and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{line_number}: expected 3 tab-separated fields, but got {len(row)}: {row!r}")
            query_id, doc_id, score = (cell.strip() for cell in row)
            try:
                relevance = int(float(score))
            except ValueError:
                raise ValueError(f"{path}:{line_number}: relevance must be a number, but got {score!r}") from None
            qrels.setdefault(query_id, {})[doc_id] = relevance
    if not qrels:
        raise ValueError(f"{path}: no judgments found")
    return qrels


def _field(row: dict[str, Any], name: str, path: Path, line_number: int) -> str:
    value = row.get(name)
    if value is None or (name == "_id" and str(value).strip() == ""):
        raise ValueError(f"{path}:{line_number}: missing field {name!r}")
    return str(value)


def _load_beir_hub(dataset: str, split: str) -> BeirData:  # pragma: no cover - needs the hub
    datasets = require("datasets", "train")
    corpus_rows = datasets.load_dataset(f"BeIR/{dataset}", "corpus", split="corpus")
    query_rows = datasets.load_dataset(f"BeIR/{dataset}", "queries", split="queries")
    qrel_rows = datasets.load_dataset(f"BeIR/{dataset}-qrels", split=split)
    corpus = {str(r["_id"]): {"title": r.get("title") or "", "text": r["text"]} for r in corpus_rows}
    qrels: dict[str, dict[str, int]] = {}
    for r in qrel_rows:
        qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
    queries = {str(r["_id"]): r["text"] for r in query_rows if str(r["_id"]) in qrels}
    return BeirData(dataset, corpus, queries, {q: qrels[q] for q in queries})
