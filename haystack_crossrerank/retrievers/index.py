"""A persistent first-stage index: the documents, the BM25 index and the FAISS index on disk, with a manifest that
says how they were built, so that a loader can refuse a damaged index or one built for other settings.

An index folder holds:

- `documents.jsonl`: one Document a line (`{"id", "content", "meta"}`); line `i` is row `i` of both indexes.
- `bm25/`: the BM25 index in bm25s' own format (`bm25s.BM25.save`).
- `faiss.index`: the FAISS index (`faiss.write_index`), for the dense first stages (`faiss`, `hybrid`) only.
- `manifest.json`: `format`, `format_version`, `first_stage`, `document_count`, `corpus` and `added_corpora`
  (`{"path", "sha256", "documents"}` each), the settings `bm25`, `embedder` and `faiss` (`None` without a dense
  stage), `files` (`{"path", "size", "sha256"}` for every other file) and `packages` (versions).

:func:`save_index` writes into a temporary folder beside the destination and renames it into place when complete:
a failed or killed build leaves no half index (a killed one leaves `.<name>.partial-<pid>-*`, which the next build
removes). :func:`load_index` checks every file against the manifest (present, size, sha256) before reading it;
:func:`attach_index` also checks the settings against a pipeline's, then gives its retrievers the indexes.

Usage example:

```python
import tempfile

from haystack import Document
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_crossrerank.retrievers import BM25sRetriever
from haystack_crossrerank.retrievers.index import IndexSettings, bm25_settings, load_index, save_index

documents = [Document(id="paris", content="Paris is the capital of France."),
             Document(id="berlin", content="Berlin is the capital of Germany.")]
retriever = BM25sRetriever(document_store=InMemoryDocumentStore(), top_k=1)
settings = IndexSettings(first_stage="bm25", bm25=bm25_settings(retriever))
folder = save_index(f"{tempfile.mkdtemp()}/index", documents, settings, bm25_index=retriever.build_index(documents))
index = load_index(folder)
retriever.use_index(index.bm25, index.documents)
print(retriever.run(query="capital of France")["documents"][0].id)
# paris
```
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from haystack import Document, Pipeline

from haystack_crossrerank.data.jsonl import iter_jsonl
from haystack_crossrerank.retrievers.bm25 import BM25sRetriever
from haystack_crossrerank.retrievers.faiss import FaissEmbeddingRetriever
from haystack_crossrerank.utils.extras import require

logger = logging.getLogger(__name__)

FORMAT = "haystack-crossrerank-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCUMENTS = "documents.jsonl"
BM25_FOLDER = "bm25"
FAISS_FILE = "faiss.index"
FIRST_STAGES = ("bm25", "faiss", "hybrid")
# The distributions whose versions an index records (those installed).
PACKAGES = (
    "haystack-crossrerank haystack-ai bm25s PyStemmer faiss-cpu numpy sentence-transformers "
    "sentence-transformers-haystack transformers torch"
).split()
# The embedder's settings that shape the vector space: the same on the document and the query side.
MODEL_KEYS = ("model", "revision", "truncate_dim", "precision")
DOCUMENT_KEYS = ("prefix", "suffix", "normalize_embeddings", "meta_fields_to_embed", "embedding_separator")
QUERY_KEYS = ("prefix", "suffix", "normalize_embeddings")
BM25_KEYS = ("k1", "b", "stemmer", "stopwords", "meta_fields_to_index")
FILE_KEYS = {"path", "size", "sha256"}
Sides = tuple[str, str]
INDEX_SIDES: Sides = ("the index", "the pipeline")


@dataclass(frozen=True)
class IndexSettings:
    """
    How an index is built: written into its manifest, and compared with a pipeline's settings when it is loaded.

    :param first_stage: `"bm25"`, `"faiss"` or `"hybrid"` (the dense ones have an embedder and a FAISS index).
    :param bm25: The BM25 retriever's settings (:func:`bm25_settings`).
    :param corpus: The corpus it was built from: `{"path", "sha256", "documents"}`.
    :param added_corpora: The corpora added since (`crossrerank index --add`), in order, in the same form.
    :param embedder: The embedder's settings (:func:`embedder_settings`); `None` for `"bm25"`.
    :param faiss: The FAISS retriever's settings (:func:`faiss_settings`); `None` for `"bm25"`.
    """

    first_stage: str
    bm25: dict[str, Any]
    corpus: dict[str, Any] | None = None
    added_corpora: list[dict[str, Any]] = field(default_factory=list)
    embedder: dict[str, Any] | None = None
    faiss: dict[str, Any] | None = None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> IndexSettings:
        """The settings a manifest (:func:`read_manifest`) records."""
        return cls(**{f.name: manifest[f.name] for f in fields(cls)})


@dataclass
class LoadedIndex:
    """
    An index read from disk by :func:`load_index`.

    :param folder: The index folder.
    :param manifest: Its manifest (described above).
    :param documents: Its Documents, in row order (without embeddings).
    :param bm25: The `bm25s.BM25` index.
    :param faiss: The FAISS index, or `None` (a BM25-only index, or not asked for).
    """

    folder: Path
    manifest: dict[str, Any]
    documents: list[Document]
    bm25: Any
    faiss: Any = None


def bm25_settings(retriever: BM25sRetriever) -> dict[str, Any]:
    """A BM25 retriever's settings that its index depends on: `{"method", "k1", "b", "stemmer", "stopwords", ...}`."""
    return {"method": "lucene", **{key: getattr(retriever, key) for key in BM25_KEYS}}


def faiss_settings(retriever: FaissEmbeddingRetriever, dimension: int) -> dict[str, Any]:
    """A FAISS retriever's settings that its index depends on: `{"type", "normalize", "dimension"}`."""
    return {"type": "IndexFlatIP", "normalize": retriever.normalize, "dimension": dimension}


def embedder_settings(document_embedder: Any, text_embedder: Any, dimension: int) -> dict[str, Any]:
    """
    The embedder's settings, as the indexing and query pipelines use them.

    :param document_embedder: The indexing pipeline's document embedder (a Haystack component with `to_dict`).
    :param text_embedder: The query pipeline's text embedder.
    :param dimension: The embeddings' dimension.
    :returns: `{"model", "revision", "truncate_dim", "precision", "dimension", "document": {"prefix", "suffix",
        "normalize_embeddings", "meta_fields_to_embed", "embedding_separator"}, "query": {"prefix", "suffix", ...}}`.
    :raises ValueError: If the two embedders differ in model, revision, truncation or precision.
    """
    document = document_embedder.to_dict()["init_parameters"]
    query = text_embedder.to_dict()["init_parameters"]
    sides = ("the document embedder", "the text embedder")
    differences = _differences({k: document.get(k) for k in MODEL_KEYS}, query, "embedder", sides=sides)
    if differences:
        raise ValueError("the indexing and the query pipelines must embed alike, but: " + "; ".join(differences))
    return {
        **{key: document.get(key) for key in MODEL_KEYS},
        "dimension": dimension,
        "document": {key: document.get(key) for key in DOCUMENT_KEYS},
        "query": {key: query.get(key) for key in QUERY_KEYS},
    }


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- writing
def check_destination(out: str | Path, overwrite: bool) -> Path:
    """
    `out` as a Path, if an index may be written there: it does not exist, or `overwrite` is set and it is an index
    (or an empty folder), never any other folder.

    :raises FileExistsError: If `out` exists and may not be replaced.
    """
    out = Path(out).expanduser()
    if not out.exists():
        return out
    if not overwrite:
        raise FileExistsError(f"index folder '{out}' already exists: pass --overwrite (overwrite=True) to replace it")
    if not out.is_dir() or not ((out / MANIFEST).is_file() or not any(out.iterdir())):
        raise FileExistsError(f"'{out}' exists and is not an index (no {MANIFEST}): refusing to replace it")
    return out


def save_index(
    out: str | Path,
    documents: list[Document],
    settings: IndexSettings,
    *,
    bm25_index: Any,
    faiss_index: Any = None,
    overwrite: bool = False,
) -> Path:
    """
    Write an index folder, all or nothing: into a temporary folder beside `out`, renamed to `out` once complete
    (with `overwrite`, an existing index is replaced only then). The manifest is described above.

    :param out: The index folder to write.
    :param documents: The Documents, in row order (only id, content and meta are saved).
    :param settings: How the index was built.
    :param bm25_index: The `bm25s.BM25` index over `documents` (`BM25sRetriever.build_index`).
    :param faiss_index: The FAISS index over `documents`; required exactly when `settings.faiss` is given.
    :param overwrite: Replace an existing index.
    :returns: The index folder.
    :raises FileExistsError: As :func:`check_destination`.
    :raises ValueError: If there are no Documents, an id appears twice, a meta value is not JSON, an index's
        rows differ from the Documents, or the first stage and the FAISS index disagree.
    """
    _check_contents(documents, settings, bm25_index, faiss_index)
    out = check_destination(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out)
    temporary = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-{os.getpid()}-"))
    try:
        _write_documents(temporary / DOCUMENTS, documents)
        bm25_index.save(str(temporary / BM25_FOLDER), show_progress=False)
        if faiss_index is not None:
            require("faiss", "faiss").write_index(faiss_index, str(temporary / FAISS_FILE))
        files = [_file_record(temporary, path) for path in sorted(temporary.rglob("*")) if path.is_file()]
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "first_stage": settings.first_stage}
        manifest["document_count"] = len(documents)
        manifest.update({**asdict(settings), "files": files, "packages": _package_versions()})
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _sync(temporary)
        _move_into_place(temporary, out, overwrite)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("Wrote a %s index of %d documents to %s", settings.first_stage, len(documents), out)
    return out


def _check_contents(documents: list[Document], settings: IndexSettings, bm25_index: Any, faiss_index: Any) -> None:
    if settings.first_stage not in FIRST_STAGES:
        raise ValueError(f"first stage must be one of {list(FIRST_STAGES)}, but got {settings.first_stage!r}")
    if not documents:
        raise ValueError("an index needs at least one Document, but got none")
    repeated = [doc_id for doc_id, n in Counter(d.id for d in documents).items() if n > 1]
    if repeated:
        raise ValueError(f"document id {repeated[0]!r} appears twice: ids in an index must be unique")
    if int(bm25_index.scores["num_docs"]) != len(documents):
        raise ValueError(f"the BM25 index must have {len(documents)} rows, but has {bm25_index.scores['num_docs']}")
    dense = settings.first_stage != "bm25"
    if dense != (faiss_index is not None) or dense != (settings.faiss is not None) or dense != bool(settings.embedder):
        raise ValueError(f"first stage {settings.first_stage!r} needs {'a' if dense else 'no'} FAISS index")
    if faiss_index is not None and int(faiss_index.ntotal) != len(documents):
        raise ValueError(f"the FAISS index must have {len(documents)} rows, but has {faiss_index.ntotal}")


def _write_documents(path: Path, documents: list[Document]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for document in documents:
            row = {"id": document.id, "content": document.content, "meta": document.meta}
            try:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            except TypeError as error:
                raise ValueError(f"document {document.id!r}: its meta must be JSON values ({error})") from error


def _file_record(folder: Path, path: Path) -> dict[str, Any]:
    return {"path": path.relative_to(folder).as_posix(), "size": path.stat().st_size, "sha256": file_sha256(path)}


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def _sync(folder: Path) -> None:
    """Flush the files and folders to disk before the rename, so that a crash cannot leave a named, empty file."""
    for path in [*sorted(folder.rglob("*")), folder]:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _move_into_place(temporary: Path, out: Path, overwrite: bool) -> None:
    if not out.exists():
        os.rename(temporary, out)
        return
    check_destination(out, overwrite)  # again: another build may have written it meanwhile
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-{os.getpid()}-"))
    os.rename(out, old / "index")
    try:
        os.rename(temporary, out)
    except BaseException:
        os.rename(old / "index", out)
        raise
    finally:
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)


def _remove_abandoned(out: Path) -> None:
    """Remove what builds of `out` killed mid-way left (their process is gone); put back an index they had moved."""
    for kind in ("partial", "old"):
        for path in out.parent.glob(f".{out.name}.{kind}-*"):
            pid = path.name[len(f".{out.name}.{kind}-") :].split("-", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
            if kind == "old" and not out.exists() and (path / "index" / MANIFEST).is_file():
                logger.warning("Putting back the index %s that an interrupted build had moved aside", out)
                os.rename(path / "index", out)
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as error:
        return isinstance(error, PermissionError)  # another user's process
    return True


# ---------------------------------------------------------------------------------------------- reading
def read_manifest(folder: str | Path) -> dict[str, Any]:
    """
    Read an index's manifest (the files are not checked: see :func:`verify_index`).

    :param folder: The index folder.
    :returns: The manifest.
    :raises FileNotFoundError: If the folder or its manifest does not exist.
    :raises ValueError: If the manifest is not JSON, or not of this format and version.
    """
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        what = "does not exist" if not folder.exists() else f"has no {MANIFEST}"
        raise FileNotFoundError(f"index '{folder}' {what}: build one with `crossrerank index`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"index '{folder}': {MANIFEST} is not valid JSON ({error})") from error
    found = (manifest.get("format"), manifest.get("format_version")) if isinstance(manifest, dict) else None
    if found != (FORMAT, FORMAT_VERSION):
        raise ValueError(f"index '{folder}': {MANIFEST} must be {FORMAT} version {FORMAT_VERSION}, but got {found}")
    return dict(manifest)


def verify_index(folder: str | Path) -> dict[str, Any]:
    """
    Check every file of an index against its manifest: present, of its size, of its sha256.

    :param folder: The index folder.
    :returns: The manifest.
    :raises FileNotFoundError: If the manifest or a file it lists is missing (naming the file).
    :raises ValueError: If a file's size or sha256 differs from the manifest's (naming the file, what was
        expected and what was found), or the manifest lacks a file the index needs.
    """
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    entries = manifest.get("files")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and set(e) >= FILE_KEYS for e in entries):
        raise ValueError(f"index '{folder}': {MANIFEST} must list files as {sorted(FILE_KEYS)}, but got {entries!r}")
    files = {entry["path"]: entry for entry in entries}
    needed = [DOCUMENTS, f"{BM25_FOLDER}/params.index.json"] + ([FAISS_FILE] if manifest.get("faiss") else [])
    unlisted = [name for name in needed if name not in files]
    if unlisted:
        raise ValueError(f"index '{folder}': {MANIFEST} must list {unlisted}, but lists {sorted(files)}")
    for name, entry in files.items():
        path, problem = folder / name, f"index '{folder}': file '{name}'"
        if not path.is_file():
            raise FileNotFoundError(f"{problem} is missing ({MANIFEST} lists {entry['size']} bytes)")
        if (size := path.stat().st_size) != entry["size"]:
            raise ValueError(
                f"{problem} must have {entry['size']} bytes as {MANIFEST} says, but has {size} (truncated?)"
            )
        if (digest := file_sha256(path)) != entry["sha256"]:
            raise ValueError(f"{problem} must have sha256 {entry['sha256']} as {MANIFEST} says, but has {digest}")
    return manifest


def load_index(folder: str | Path, *, dense: bool = True) -> LoadedIndex:
    """
    Read an index after checking its files (:func:`verify_index`).

    :param folder: The index folder.
    :param dense: Also read the FAISS index, if the index has one.
    :returns: The documents and indexes.
    :raises FileNotFoundError: As :func:`verify_index`.
    :raises ValueError: As :func:`verify_index`, or if a file's rows disagree with the manifest.
    """
    folder = Path(folder).expanduser()
    return _read(folder, verify_index(folder), dense=dense)


def _read(folder: Path, manifest: dict[str, Any], *, dense: bool) -> LoadedIndex:
    count = manifest["document_count"]
    documents = [
        Document(id=row["id"], content=row.get("content"), meta=row.get("meta") or {})
        for _, row in iter_jsonl(folder / DOCUMENTS)
    ]
    bm25 = require("bm25s", "bench").BM25.load(str(folder / BM25_FOLDER), show_progress=False)
    rows = {DOCUMENTS: len(documents), f"{BM25_FOLDER}/": int(bm25.scores["num_docs"])}
    faiss_index = None
    if dense and manifest.get("faiss"):
        faiss_index = require("faiss", "faiss").read_index(str(folder / FAISS_FILE))
        rows[FAISS_FILE] = int(faiss_index.ntotal)
        if faiss_index.d != manifest["faiss"]["dimension"]:
            raise ValueError(
                f"index '{folder}': '{FAISS_FILE}' must have dimension {manifest['faiss']['dimension']}, "
                f"but has {faiss_index.d}"
            )
    for name, found in rows.items():
        if found != count:
            raise ValueError(f"index '{folder}': '{name}' must have {count} rows as {MANIFEST} says, but has {found}")
    logger.info("Loaded a %s index of %d documents from %s", manifest["first_stage"], count, folder)
    return LoadedIndex(folder, manifest, documents, bm25, faiss_index)


# ---------------------------------------------------------------------------------------------- pipelines
def attach_index(pipeline: Pipeline, folder: str | Path) -> LoadedIndex:
    """
    Give a pipeline's retrievers a saved index instead of the store's documents (every `BM25sRetriever` the BM25
    index, every `FaissEmbeddingRetriever` the FAISS index), once its settings match the pipeline's (BM25, FAISS
    normalisation, and the text embedder's `MODEL_KEYS` and `QUERY_KEYS`) and its files the manifest.

    :param pipeline: The pipeline.
    :param folder: The index folder.
    :returns: The loaded index.
    :raises ValueError: If the pipeline has no retriever, needs a FAISS index the index lacks, or differs from it
        in a setting (naming component, setting, the index's value and the pipeline's); or as :func:`verify_index`.
    :raises FileNotFoundError: As :func:`verify_index`.
    """
    folder = Path(folder).expanduser()
    components = dict(pipeline.walk())
    retrievers = {n: c for n, c in components.items() if isinstance(c, BM25sRetriever | FaissEmbeddingRetriever)}
    if not retrievers:
        raise ValueError(
            f"index '{folder}': the pipeline needs a BM25sRetriever or FaissEmbeddingRetriever to load it into, "
            f"but has {sorted(components)}"
        )
    manifest = read_manifest(folder)
    problems = _mismatches(manifest, components)
    if problems:
        raise ValueError(f"index '{folder}' does not fit the pipeline: " + "; ".join(problems))
    manifest = verify_index(folder)
    loaded = _read(folder, manifest, dense=any(isinstance(c, FaissEmbeddingRetriever) for c in retrievers.values()))
    for retriever in retrievers.values():
        retriever.use_index(
            loaded.faiss if isinstance(retriever, FaissEmbeddingRetriever) else loaded.bm25, loaded.documents
        )
    return loaded


def _mismatches(manifest: dict[str, Any], components: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    dense = {n: c for n, c in components.items() if isinstance(c, FaissEmbeddingRetriever)}
    for name, component in components.items():
        if isinstance(component, BM25sRetriever):
            problems += _differences(manifest["bm25"], bm25_settings(component), f"'{name}'")
    if not dense:
        return problems
    if not manifest.get("faiss") or not manifest.get("embedder"):
        return [
            *problems,
            f"{sorted(dense)} need a FAISS index, but the index was built for first stage "
            f"{manifest['first_stage']!r} without one (build it with --first-stage faiss or hybrid)",
        ]
    for name, component in dense.items():
        problems += _differences({"normalize": manifest["faiss"]["normalize"]}, vars(component), f"'{name}'")
    embedders = {n: c for n, c in components.items() if type(c).__name__.endswith("TextEmbedder")}
    for name, component in embedders.items():
        found = component.to_dict()["init_parameters"]
        expected = {**{k: manifest["embedder"][k] for k in MODEL_KEYS}, **manifest["embedder"]["query"]}
        problems += _differences(expected, found, f"'{name}'")
    return problems


def _differences(
    expected: dict[str, Any], found: dict[str, Any], where: str, *, sides: Sides = INDEX_SIDES
) -> list[str]:
    return [
        f"{where} `{key}`: {sides[0]} has {value!r}, but {sides[1]} has {found.get(key)!r}"
        for key, value in expected.items()
        if key in found and _normal(found.get(key)) != _normal(value)
    ]


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
