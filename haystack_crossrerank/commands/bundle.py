"""
`crossrerank bundle`: an offline kit for machines without network access. On a connected machine it writes models
(local folders or Hugging Face hub ids), data sets, wheels for a named platform, and a manifest of every file's size
and sha256, cutting large files into parts; on the offline machine, the kit's own `install.py` (a copy of
:mod:`haystack_crossrerank.commands.bundle_install`) or `crossrerank bundle --install` checks and installs it.

    crossrerank bundle --out kit --models FOLDER_OR_HUB_ID --data scifact --wheels --split-mib 1024
    python kit/install.py

Like the installer, this module uses the standard library only (`huggingface_hub` is imported only to fetch a hub
model), so that the installer it copies needs nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from haystack_crossrerank.commands import bundle_install
from haystack_crossrerank.commands.bundle_install import (
    CHUNK,
    DATA_DIR_ENV,
    FORMAT,
    FORMAT_VERSION,
    INSTALLER,
    MANIFEST,
    MIB,
    FileEntry,
    Part,
    add_install_options,
    install_bundle,
    join_parts,
    print_summary,
    read_manifest,
    verify_bundle,
)

__all__ = [
    "FileEntry",
    "Part",
    "add_bundle_parser",
    "cmd_bundle",
    "install_bundle",
    "join_parts",
    "pip_download_command",
    "read_manifest",
    "split_file",
    "verify_bundle",
    "write_bundle",
]

logger = logging.getLogger(__name__)

PROJECT = "haystack-crossrerank"
SKIPPED_FOLDERS = {".git", ".cache"}  # git metadata, and huggingface_hub's download bookkeeping
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
# The options of one mode, refused in the others.
WRITE_OPTIONS = ("models", "data", "wheels", "packages", "platform", "python_version", "pip_arg", "split_mib")
INSTALL_OPTIONS = ("models_dir", "python", "no_wheels")


# ---------------------------------------------------------------------------------------------- cutting files
def split_file(source: str | Path, target: str | Path, part_bytes: int) -> FileEntry:
    """
    Cut a file into parts `<target>.part-001`, `<target>.part-002`, ... of at most `part_bytes` bytes each.

    :param source: The file to cut.
    :param target: Where the whole file would be; the parts are written beside it.
    :param part_bytes: The largest part, in bytes. An empty file gives one empty part.
    :returns: The whole file's size and sha256 (its `path` is `target`) and its parts.
    :raises ValueError: If `part_bytes` is below 1, or the file changed size while it was read.
    :raises FileExistsError: If a part's name is taken.
    """
    if part_bytes < 1:
        raise ValueError(f"`part_bytes` must be >= 1, but got {part_bytes}")
    source, target = Path(source), Path(target)
    size = source.stat().st_size
    count = max(1, -(-size // part_bytes))
    whole = hashlib.sha256()
    parts = []
    with source.open("rb") as reader:
        for index in range(1, count + 1):
            path = target.with_name(f"{target.name}.part-{index:03d}")
            if path.exists():
                raise FileExistsError(f"part '{path}' already exists")
            digest, written = hashlib.sha256(), 0
            with path.open("wb") as writer:
                while chunk := reader.read(min(CHUNK, part_bytes - written)):
                    writer.write(chunk)
                    digest.update(chunk)
                    whole.update(chunk)
                    written += len(chunk)
            parts.append(Part(path.name, written, digest.hexdigest()))
        if sum(part.size for part in parts) != size or reader.read(1):
            raise ValueError(f"'{source}' changed size while it was being cut (it had {size} bytes)")
    return FileEntry(target.as_posix(), size, whole.hexdigest(), tuple(parts))


def _copy_file(source: Path, target: Path) -> FileEntry:
    if target.exists():
        raise FileExistsError(f"two files of the kit would be written to '{target}'")
    digest = hashlib.sha256()
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
            digest.update(chunk)
    return FileEntry(target.as_posix(), target.stat().st_size, digest.hexdigest())


def _add_folder(source: Path, out: Path, prefix: str, part_bytes: int | None) -> list[FileEntry]:
    entries = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if not path.is_file() or SKIPPED_FOLDERS.intersection(relative.parts[:-1]):
            continue
        name = f"{prefix}/{relative.as_posix()}"
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if part_bytes is not None and path.stat().st_size > part_bytes:
            entry = split_file(path, target, part_bytes)
            logger.debug("Cut %s into %d parts", name, len(entry.parts))
        else:
            entry = _copy_file(path, target)
        entries.append(replace(entry, path=name))
    if not entries:
        raise ValueError(f"'{source}' must hold at least one file, but it is empty")
    logger.info("Added %s: %d files, %.1f MiB", prefix, len(entries), sum(e.size for e in entries) / MIB)
    return entries


# ---------------------------------------------------------------------------------------------- writing a kit
def write_bundle(
    out: str | Path,
    *,
    models: Sequence[str] = (),
    data: Sequence[str] = (),
    data_dir: str | Path | None = None,
    wheels: bool = False,
    packages: Sequence[str] | None = None,
    platforms: Sequence[str] = (),
    python_version: str | None = None,
    pip_args: Sequence[str] = (),
    split_mib: float = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """
    Write an offline kit: models, data sets and wheels, a manifest of sizes and sha256, and the installer.

    :param out: The kit folder to write. It must be absent or empty, or a kit when `overwrite` is set.
    :param models: Model folders or Hugging Face hub ids (fetched with `huggingface_hub.snapshot_download`),
        each optionally as `NAME=FOLDER_OR_ID`. The name is the folder's under the models folder on the offline
        machine (default: the folder's name, or the last part of the hub id).
    :param data: Data set folders, or names of folders under `data_dir`, each optionally as `NAME=FOLDER`.
    :param data_dir: Where bare data set names are looked up (default: `$CROSSRERANK_DATA_DIR`).
    :param wheels: Also fetch wheels with `pip download`, for the platform and Python version given.
    :param packages: What to fetch, as pip requirements or wheel files, with their dependencies (default: this
        project at its installed version).
    :param platforms: Wheel platform tags, e.g. `manylinux2014_x86_64` (default: this machine's).
    :param python_version: The offline machine's Python, e.g. `3.11` (default: this interpreter's).
    :param pip_args: More arguments for `pip download`, e.g. `--extra-index-url=URL`.
    :param split_mib: Cut files larger than this many MiB into parts of at most this size; 0 keeps them whole.
    :param overwrite: Replace an existing kit at `out`.
    :returns: The manifest.
    :raises ValueError: For a negative `split_mib`, a bad or repeated name, or an empty folder.
    :raises FileNotFoundError: For a data set folder that does not exist.
    :raises FileExistsError: If `out` holds something other than a kit, or a kit and `overwrite` is not set.
    :raises ImportError: If a hub model is asked for and `huggingface_hub` is not installed.
    :raises RuntimeError: If `pip download` fails.
    """
    if split_mib < 0:
        raise ValueError(f"`split_mib` must be >= 0 (0: keep files whole), but got {split_mib}")
    part_bytes = int(split_mib * MIB) if split_mib else None
    if part_bytes is not None and part_bytes < 1:
        raise ValueError(f"`split_mib` must be 0 or at least one byte's worth, but got {split_mib}")
    model_sources = [(name, spec, _model_folder(spec)) for name, spec in _named(models, "model", _model_name)]
    data_folder = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    data_sources = [
        (name, _data_folder(spec, data_folder).resolve())
        for name, spec in _named(data, "data set", lambda spec: _data_folder(spec, data_folder).resolve().name)
    ]
    out = _prepare_out(Path(out), overwrite)
    shutil.copyfile(bundle_install.__file__, out / INSTALLER)
    files: list[FileEntry] = []
    for name, _, folder in model_sources:
        files += _add_folder(folder, out, f"models/{name}", part_bytes)
    for name, folder in data_sources:
        files += _add_folder(folder, out, f"data/{name}", part_bytes)
    wheel_info = None
    if wheels:
        chosen = list(packages) if packages else [_project_spec()]
        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        with tempfile.TemporaryDirectory(dir=out, prefix=".download-") as download:
            _pip_download(chosen, Path(download), list(platforms), version, list(pip_args))
            files += _add_folder(Path(download), out, "wheels", part_bytes)
        wheel_info = {
            "python_version": version,
            "platforms": list(platforms),
            "packages": chosen,
            "requirements": [_requirement_in_kit(spec) for spec in chosen],
        }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "split_mib": split_mib,
        "models": [{"name": name, "source": _model_source(spec)} for name, spec, _ in model_sources],
        "data": [{"name": name, "source": str(folder)} for name, folder in data_sources],
        "wheels": wheel_info,
        "files": [_entry_json(entry) for entry in files],
    }
    temp = out / f".{MANIFEST}.partial"
    temp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, out / MANIFEST)
    logger.info("Wrote the kit %s: %d files, %.1f MiB", out, len(files), sum(e.size for e in files) / MIB)
    return manifest


def _named(specs: Sequence[str], kind: str, default_name: Callable[[str], str]) -> list[tuple[str, str]]:
    named: dict[str, str] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or Path(spec).expanduser().exists():
            name, rest = default_name(spec), spec
        if not NAME_PATTERN.match(name) or name in named:
            reason = "is used twice" if name in named else "must be letters, digits, '_', '.', '+' or '-'"
            raise ValueError(f"{kind} name {name!r} (from {spec!r}) {reason}; give another as NAME={rest}")
        named[name] = rest
    return list(named.items())


def _model_name(spec: str) -> str:
    path = Path(spec).expanduser()
    return path.resolve().name if path.exists() else spec.rstrip("/").rsplit("/", 1)[-1]


def _model_source(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _model_folder(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"a model must be a folder or a hub id, but '{spec}' is a file")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise ImportError(f"'{spec}' is not a folder here; fetching it from the hub needs huggingface_hub") from error
    logger.info("'%s' is not a folder here: fetching it from the Hugging Face hub", spec)
    return Path(str(snapshot_download(repo_id=spec)))


def _data_folder(spec: str, data_dir: str | Path | None) -> Path:
    candidates = [Path(spec).expanduser()]
    if data_dir is not None and not candidates[0].is_absolute():
        candidates.append(Path(data_dir).expanduser() / spec)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = " or ".join(f"'{c}'" for c in candidates)
    raise FileNotFoundError(f"data set {spec!r} must be a folder, but there is no folder {tried}")


def _prepare_out(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()):
        is_kit = (out / MANIFEST).is_file() or (out / INSTALLER).is_file()
        if not is_kit:
            raise FileExistsError(f"'{out}' must be empty or absent to write a kit, but it holds other files")
        if not overwrite:
            raise FileExistsError(f"'{out}' already holds a kit; pass overwrite (--overwrite) to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _project_spec() -> str:
    try:
        return f"{PROJECT}=={metadata.version(PROJECT)}"
    except metadata.PackageNotFoundError:
        return PROJECT


def _split_extras(spec: str) -> tuple[str, str]:
    if spec.endswith("]") and "[" in spec:
        cut = spec.rindex("[")
        return spec[:cut], spec[cut:]
    return spec, ""


def _requirement_in_kit(spec: str) -> str:
    base, extras = _split_extras(spec)
    return f"wheels/{Path(base).name}{extras}" if Path(base).expanduser().is_file() else spec


def pip_download_command(
    packages: Sequence[str], dest: Path, platforms: Sequence[str], python_version: str, pip_args: Sequence[str]
) -> list[str]:
    """
    The `pip download` command that fetches wheels (only wheels) of `packages` and their dependencies.

    :param packages: pip requirements or wheel files.
    :param dest: The folder to write the wheels to.
    :param platforms: Wheel platform tags; none for this machine's.
    :param python_version: The target Python, e.g. `3.11`.
    :param pip_args: More arguments for pip.
    :returns: The command, run with this interpreter's pip.
    """
    command = [sys.executable, "-m", "pip", "download", "--dest", str(dest), "--only-binary=:all:"]
    command += ["--python-version", python_version]
    for platform in platforms:
        command += ["--platform", platform]
    return [*command, *pip_args, *packages]


def _pip_download(
    packages: list[str], dest: Path, platforms: list[str], python_version: str, pip_args: list[str]
) -> None:
    command = pip_download_command(packages, dest, platforms, python_version, pip_args)
    logger.info("Fetching wheels: %s", " ".join(command))
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"pip download exited with status {completed.returncode}: {' '.join(command)}")
    for spec in packages:  # a wheel named by its path is in the kit whether or not pip copied it
        base = Path(_split_extras(spec)[0]).expanduser()
        if base.is_file() and not (dest / base.name).exists():
            shutil.copyfile(base, dest / base.name)


def _entry_json(entry: FileEntry) -> dict[str, Any]:
    record = asdict(entry)
    if not entry.parts:
        del record["parts"]
    return record


# ---------------------------------------------------------------------------------------------- command line
def add_bundle_parser(subparsers: Any) -> argparse.ArgumentParser:
    """
    Add the `bundle` sub-command to an argparse sub-parsers object.

    :param subparsers: What `ArgumentParser.add_subparsers()` returned.
    :returns: The new sub-parser; its handler is :func:`cmd_bundle`.
    """
    parser = subparsers.add_parser(
        "bundle",
        help="write an offline kit (models, data, wheels) or install one",
        description="Write an offline kit on a connected machine (--out), check one (--check) or install one on "
        "a machine without network access (--install; the kit's own install.py does the same).",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", metavar="DIR", help="write a kit into this folder")
    mode.add_argument("--install", metavar="DIR", help="check and install the kit in this folder")
    mode.add_argument("--check", metavar="DIR", help="check every file and part of the kit, install nothing")
    write = parser.add_argument_group("writing a kit (--out)")
    write.add_argument(
        "--models", nargs="+", action="extend", metavar="[NAME=]FOLDER_OR_HUB_ID", help="model folders or hub ids"
    )
    write.add_argument("--data", nargs="+", action="extend", metavar="[NAME=]FOLDER", help="data set folders or names")
    write.add_argument("--wheels", action="store_true", help="also fetch wheels with pip download")
    write.add_argument(
        "--packages", nargs="+", metavar="SPEC", help=f"requirements or wheel files to fetch (default: {PROJECT})"
    )
    write.add_argument("--platform", action="append", metavar="TAG", help="wheel platform tag (repeatable)")
    write.add_argument("--python-version", metavar="X.Y", help="the offline machine's Python (default: this one)")
    write.add_argument("--pip-arg", action="append", metavar="ARG", help="more for pip download: --pip-arg=--pre")
    write.add_argument("--split-mib", type=float, metavar="N", help="cut files over N MiB into parts (default: 0)")
    add_install_options(parser.add_argument_group("installing a kit (--install)"))
    parser.add_argument(
        "--data-dir",
        help=f"--out: where bare data set names are found; --install: where data sets go (default: ${DATA_DIR_ENV}, "
        "else <home>/data)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing kit, or installed folders")
    parser.add_argument("--json", help="write the summary to this JSON file")
    return parser


def cmd_bundle(args: argparse.Namespace) -> dict[str, Any]:
    """
    Run `crossrerank bundle`: write (`--out`), check (`--check`) or install (`--install`) a kit, and print a
    summary.

    :param args: The parsed arguments of :func:`add_bundle_parser`.
    :returns: The summary (JSON-able).
    :raises ValueError: If options of another mode are given, or as :func:`write_bundle` and
        :func:`install_bundle` raise.
    """
    mode = "out" if args.out else "install" if args.install else "check"
    wrong = {"out": INSTALL_OPTIONS, "install": WRITE_OPTIONS, "check": (*WRITE_OPTIONS, *INSTALL_OPTIONS)}[mode]
    misplaced = [name for name in wrong if getattr(args, name, None) not in (None, False, [])]
    if misplaced:
        shown = ", ".join("--" + name.replace("_", "-") for name in misplaced)
        raise ValueError(f"{shown} cannot be used with --{mode}")
    if mode == "install":
        summary = install_bundle(
            args.install,
            models_dir=args.models_dir,
            data_dir=args.data_dir,
            python=args.python,
            wheels=not args.no_wheels,
            overwrite=args.overwrite,
        )
    elif mode == "check":
        summary = verify_bundle(args.check)
    else:
        manifest = write_bundle(
            args.out,
            models=args.models or (),
            data=args.data or (),
            data_dir=args.data_dir,
            wheels=args.wheels,
            packages=args.packages,
            platforms=args.platform or (),
            python_version=args.python_version,
            pip_args=args.pip_arg or (),
            split_mib=args.split_mib or 0,
            overwrite=args.overwrite,
        )
        summary = _write_summary(Path(args.out), manifest)
    print_summary(summary)
    return summary


def _write_summary(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    files = manifest["files"]
    return {
        "kit": str(out),
        "files": len(files),
        "parts": sum(len(f.get("parts", ())) for f in files),
        "bytes": sum(f["size"] for f in files),
        "models": [m["name"] for m in manifest["models"]],
        "data": [d["name"] for d in manifest["data"]],
        "wheels": sum(f["path"].startswith("wheels/") for f in files),
        "installer": str(out / INSTALLER),
    }
