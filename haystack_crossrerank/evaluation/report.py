"""One place that writes results to JSON and CSV, for every evaluator and benchmark."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_report(path: str | Path, data: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Path:
    """
    Write results atomically: `.json` gets the data as is, `.csv` gets one row per mapping (appending to an
    existing file with the same columns, as evaluators that run during training do).

    :param path: The output file, ending in `.json` or `.csv`.
    :param data: A mapping, or a list of mappings (rows).
    :returns: The path written.
    :raises ValueError: If the file type is neither `.json` nor `.csv`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        _atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")
        return path
    if path.suffix.lower() == ".csv":
        rows = [dict(data)] if isinstance(data, Mapping) else [dict(r) for r in data]
        columns = list(rows[0]) if rows else []
        append = path.is_file() and path.stat().st_size > 0
        with path.open("a" if append else "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            if not append:
                writer.writeheader()
            writer.writerows(rows)
        return path
    raise ValueError(f"report path must end in .json or .csv, but got '{path.name}'")


def _atomic_write(path: Path, text: str) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
