"""Reading JSON lines files (plain or gzip), with errors that give the file and line."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """
    Yield (line number, object) for each non-empty line of a `.jsonl` or `.jsonl.gz` file.

    :param path: The file.
    :raises ValueError: On a line that is not JSON, or not a JSON object (with file and line).
    """
    opener: Any = gzip.open if path.suffix == ".gz" else open
    handle: IO[str]
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            yield line_number, json_object(line, f"{path}:{line_number}")


def json_object(line: str, where: str) -> dict[str, Any]:
    """
    One line of JSON that must hold an object.

    :param line: The text.
    :param where: Where it is from, for the error (e.g. `"file.jsonl:3"`).
    :raises ValueError: If it is not JSON, or not a JSON object.
    """
    import json

    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error.msg})") from error
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, but got {type(row).__name__}")
    return row
