"""Where data and models live by default."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "CROSSRERANK_DATA_DIR"
HOME_ENV = "CROSSRERANK_HOME"
EXPORT_DIR_ENV = "CROSSRERANK_EXPORT_DIR"


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """
    The local data folder, by one policy everywhere: the argument, else `$CROSSRERANK_DATA_DIR`, else
    `../shared/data` beside the checkout if it exists, else `None` (load from the hub).

    :param explicit: A folder given on the command line or in code.
    :returns: The folder, or `None`.
    :raises FileNotFoundError: If the folder named by the argument or the variable does not exist.
    """
    value = explicit if explicit is not None and str(explicit) != "" else os.environ.get(DATA_DIR_ENV)
    if value is None or str(value) == "":
        nearby = Path(__file__).resolve().parents[3] / "shared" / "data"
        return nearby if nearby.is_dir() else None
    path = Path(value).expanduser()
    if not path.is_dir():
        source = "argument" if explicit is not None and str(explicit) != "" else f"${DATA_DIR_ENV}"
        raise FileNotFoundError(f"data folder '{path}' (from {source}) does not exist")
    return path


def home() -> Path:
    """
    The folder for models this package builds: `$CROSSRERANK_HOME`, else `~/.cache/haystack-crossrerank`.

    :returns: The folder (not created).
    """
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "haystack-crossrerank"


def export_dir() -> Path:
    """
    The folder of the exported backends' cache (ONNX, OpenVINO IR, int8 copies): `$CROSSRERANK_EXPORT_DIR`,
    else `<home>/exported` (see :func:`home`).

    :returns: The folder (not created).
    """
    value = os.environ.get(EXPORT_DIR_ENV)
    return Path(value).expanduser() if value else home() / "exported"


def looks_like_local_path(model: str) -> bool:
    """A model name that can only be a path (not an `org/name` hub id)."""
    return (
        model.startswith((".", "/", "~"))
        or "\\" in model
        or model.count("/") > 1
        or (os.sep != "/" and os.sep in model)
    )
