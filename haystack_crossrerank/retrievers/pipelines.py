"""Loading the YAML pipelines that use this package, without weakening Haystack's deserialization checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from haystack import Pipeline

# Haystack 3 imports component classes while loading a pipeline only from allow-listed modules. This
# package is added for one load at a time (the `allowed_modules` argument), never process-wide.
ALLOWED_MODULES: list[str] = ["haystack_crossrerank"]
RANKER_TYPE = "haystack_crossrerank.ranker.CrossEncoderRanker"
_PACKAGE = Path(__file__).resolve().parents[1]
_REPOSITORY_PIPELINES = _PACKAGE.parent / "pipelines"
# In a checkout (or an editable install) the repository's folder; in an installed wheel, the packaged copy.
PIPELINES_DIR = _REPOSITORY_PIPELINES if _REPOSITORY_PIPELINES.is_dir() else _PACKAGE / "_pipelines"


def load_pipeline(
    source: str | Path,
    *,
    model: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    index: str | Path | None = None,
) -> Pipeline:
    """
    Load a Haystack pipeline from YAML, allowing this package's components and nothing else beyond
    Haystack's default allow-list.

    It is the same as `Pipeline.loads(text, allowed_modules=["haystack_crossrerank"])`, plus two ways to
    change the YAML's settings at load time, and a saved first-stage index to answer from.

    :param source: A path to a YAML file, or the YAML text itself.
    :param model: If given, the `model` of every `CrossEncoderRanker` in the pipeline (for example a
        local folder instead of the hub id in the file).
    :param overrides: `{component_name: {init_parameter: value}}` set on the named components.
    :param index: A folder written by `crossrerank index`: the pipeline's retrievers answer from its documents
        and indexes instead of the document store (see :func:`haystack_crossrerank.retrievers.index.attach_index`).
    :returns: The pipeline.
    :raises FileNotFoundError: If `source` looks like a `.yaml`/`.yml` path that does not exist, or a file of
        the index is missing.
    :raises ValueError: If the YAML is not a pipeline, or `overrides` names a component it lacks; if the index's
        files do not match its manifest, or it was built with other settings than the pipeline's.
    """
    text = _read_source(source)
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("components"), dict):
        raise ValueError(f"expected a pipeline YAML with a `components` mapping, but got {type(data).__name__}")
    data = copy.deepcopy(data)
    components: dict[str, Any] = data["components"]
    if model is not None:
        for spec in components.values():
            if spec.get("type") == RANKER_TYPE:
                spec.setdefault("init_parameters", {})["model"] = model
    for name, params in (overrides or {}).items():
        if name not in components:
            raise ValueError(f"override names component {name!r}, but the pipeline has {sorted(components)}")
        components[name].setdefault("init_parameters", {}).update(params)
    pipeline = Pipeline.from_dict(data, allowed_modules=ALLOWED_MODULES)
    if index is not None:
        from haystack_crossrerank.retrievers.index import attach_index

        attach_index(pipeline, index)
    return pipeline


def pipeline_path(name: str) -> Path:
    """
    The path of a pipeline shipped in the repository's `pipelines/` folder.

    :param name: The file name, with or without `.yaml`.
    :returns: The path.
    :raises FileNotFoundError: If there is no such file.
    """
    path = PIPELINES_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if not path.is_file():
        available = sorted(p.name for p in PIPELINES_DIR.glob("*.yaml")) if PIPELINES_DIR.is_dir() else []
        raise FileNotFoundError(f"no pipeline {path.name!r} in {PIPELINES_DIR}; available: {available}")
    return path


def _read_source(source: str | Path) -> str:
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
    ):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"pipeline file '{path}' does not exist")
        return path.read_text(encoding="utf-8")
    if not isinstance(source, str):
        raise TypeError(f"`source` must be a path or YAML text, but got {type(source).__name__}")
    return source
