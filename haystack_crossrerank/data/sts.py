"""Sentence-pair data with gold scores: STS-B as the seed model used it, or any pair file."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haystack_crossrerank.data.jsonl import iter_jsonl
from haystack_crossrerank.utils.extras import require
from haystack_crossrerank.utils.paths import data_dir

STSB_HUB_ID = "sentence-transformers/stsb"
STSB_FILES = {"train": "sts-train.csv", "validation": "sts-dev.csv", "test": "sts-test.csv"}
SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}


@dataclass(frozen=True)
class PairData:
    """Sentence pairs with gold scores in [0, 1]."""

    sentence1: list[str]
    sentence2: list[str]
    score: list[float]
    source: str

    def __len__(self) -> int:
        return len(self.score)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (sentence1, sentence2) pairs."""
        return list(zip(self.sentence1, self.sentence2, strict=True))

    def head(self, n: int) -> PairData:
        """The first `n` pairs (for quick runs and tests)."""
        return PairData(self.sentence1[:n], self.sentence2[:n], self.score[:n], f"{self.source}[:{n}]")

    def to_rows(self) -> list[dict[str, Any]]:
        """This data as a list of `{"sentence1", "sentence2", "score"}` rows (no `datasets` needed)."""
        return [
            {"sentence1": a, "sentence2": b, "score": s}
            for a, b, s in zip(self.sentence1, self.sentence2, self.score, strict=True)
        ]

    def to_dataset(self) -> Any:
        """This data as a `datasets.Dataset` with columns `sentence1`, `sentence2`, `score`."""
        datasets = require("datasets", "train")
        return datasets.Dataset.from_dict(
            {"sentence1": self.sentence1, "sentence2": self.sentence2, "score": self.score}
        )


def normalise_split(split: str) -> str:
    """Map `dev`/`val` to `validation`; accept `train`, `validation`, `test`."""
    name = SPLIT_ALIASES.get(split, split)
    if name not in STSB_FILES:
        raise ValueError(f"split must be one of {sorted(STSB_FILES)}, but got {split!r}")
    return name


def load_sts(split: str, data: str | Path | None = None) -> PairData:
    """
    STS-B as the seed model was trained on it: `sentence1`, `sentence2`, `score / 5`.

    :param split: `train`, `validation` (or `dev`) or `test`.
    :param data: A folder holding the original STS-B files (`sts-train.csv`, ...; tab-separated, see
        `../shared/data/README.md`), or a folder with an `stsb/` subfolder. `None` reads
        `$CROSSRERANK_DATA_DIR`, and without it loads `sentence-transformers/stsb` from the hub.
    :returns: The pairs, with scores in [0, 1].
    :raises FileNotFoundError: If the folder lacks the split's file.
    :raises ValueError: If a line is malformed (the message gives file and line).
    """
    split = normalise_split(split)
    folder = data_dir(data)
    if folder is None:
        datasets = require("datasets", "train")
        rows = datasets.load_dataset(STSB_HUB_ID, split=split)
        return PairData(
            list(rows["sentence1"]), list(rows["sentence2"]), [float(s) for s in rows["score"]], STSB_HUB_ID
        )
    if (folder / "stsb").is_dir():
        folder = folder / "stsb"
    path = folder / STSB_FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"STS-B file '{path}' does not exist (expected {STSB_FILES[split]} in {folder})")
    return _read_stsb_tsv(path)


def _read_stsb_tsv(path: Path) -> PairData:
    """The original STS-B format: genre, file, year, id, score, sentence1, sentence2 (and 2 optional fields)."""
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) not in (7, 9):
                raise ValueError(f"{path}:{line_number}: expected 7 or 9 tab-separated fields, but got {len(fields)}")
            score = _parse_score(fields[4], path, line_number, 0.0, 5.0)
            first, second = _check_texts(fields[5], fields[6], path, line_number)
            s1.append(first)
            s2.append(second)
            scores.append(score / 5.0)
    if not scores:
        raise ValueError(f"{path}: no pairs found")
    return PairData(s1, s2, scores, str(path))


def load_pair_file(path: str | Path, *, score_range: tuple[float, float] = (0.0, 1.0)) -> PairData:
    """
    Any pair file with the columns `sentence1`, `sentence2`, `score`: CSV or TSV with a header, or JSON lines.

    Scores are rescaled from `score_range` to [0, 1].

    :param path: The file (`.csv`, `.tsv`, `.jsonl`).
    :param score_range: The (low, high) range the file's scores lie in.
    :returns: The pairs.
    :raises FileNotFoundError: If the file does not exist.
    :raises ValueError: On a missing column or text, a non-numeric score, or a score out of range (with file
        and line), or an unknown file type.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pair file '{path}' does not exist")
    low, high = score_range
    if not high > low:
        raise ValueError(f"score_range must be (low, high) with high > low, but got {score_range}")
    rows: list[tuple[int, dict[str, Any]]]
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".json"):
        rows = list(iter_jsonl(path))
    else:
        raise ValueError(f"pair file '{path}' must end in .csv, .tsv or .jsonl, but got '{suffix}'")
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for line_number, row in rows:
        missing = [c for c in ("sentence1", "sentence2", "score") if c not in row]
        if missing:
            raise ValueError(f"{path}:{line_number}: missing column(s) {missing}; expected sentence1, sentence2, score")
        first, second = _check_texts(row["sentence1"], row["sentence2"], path, line_number)
        score = _parse_score(row["score"], path, line_number, low, high)
        s1.append(first)
        s2.append(second)
        scores.append((score - low) / (high - low))
    if not scores:
        raise ValueError(f"{path}: no pairs found")
    return PairData(s1, s2, scores, str(path))


def _read_delimited(path: Path, delimiter: str) -> list[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        return [(reader.line_num, dict(row)) for row in reader]


def _check_texts(first: Any, second: Any, path: Path, line_number: int) -> tuple[str, str]:
    for name, value in (("sentence1", first), ("sentence2", second)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}:{line_number}: `{name}` must be a non-empty text, but got {value!r}")
    return first, second


def _parse_score(value: Any, path: Path, line_number: int, low: float, high: float) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}:{line_number}: score must be a number, but got {value!r}") from None
    if math.isnan(score) or not low <= score <= high:
        raise ValueError(f"{path}:{line_number}: score must be in [{low}, {high}], but got {value!r}")
    return score
