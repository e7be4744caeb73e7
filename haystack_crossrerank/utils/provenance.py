"""Where a benchmark result comes from: the command, the commit, the package versions and the machine.

Every benchmark writes its JSON with :func:`write_result`, so that a figure in the docs can name what produced
it (`benchmarks/tables.py` prints this under each table):

    import json, tempfile

    from haystack_crossrerank.utils.provenance import provenance, write_result

    print(provenance(["crossrerank", "bench", "--depth", "20"])["command"])
    # crossrerank bench --depth 20
    with tempfile.TemporaryDirectory() as folder:
        path = write_result(f"{folder}/bench.json", "bench", {"rows": []})
        print(sorted(json.loads(path.read_text())))
    # ['name', 'provenance', 'results']
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The distributions whose versions a result records (those installed). onnxruntime is one of two names.
PACKAGES = (
    "haystack-crossrerank",
    "haystack-ai",
    "torch",
    "transformers",
    "openvino",
    "onnxruntime",
    "onnxruntime-gpu",
    "sentence-transformers",
    "nncf",
    "ray",
    "hayhooks",
)

# The checkout this module belongs to, when it is one (an installed wheel is not).
_CHECKOUT = Path(__file__).resolve().parents[2]


def provenance(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """
    The facts a benchmark result records about how and where it was produced.

    :param argv: The command line, as a list (e.g. `["crossrerank", "bench", "--depth", "20"]`); `None` takes
        `sys.argv`, written as `python <script> ...` for a script.
    :returns: `{"command": str, "git": {"commit": str, "dirty": bool} or None, "packages": {name: version},
        "machine": {"cpu", "logical_cores", "memory_gib", "gpu", "gpu_count", "os", "python"}, "timestamp": str}`.
        `git` is `None` outside a git checkout; `dirty` counts changes to tracked files only. `timestamp` is
        UTC, ISO 8601.
    """
    return {
        "command": _command(argv),
        "git": git_state(_CHECKOUT),
        "packages": package_versions(),
        "machine": machine(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(path: str | Path, name: str, results: Any, *, argv: Sequence[str] | None = None) -> Path:
    """
    Write a benchmark's results as JSON with their provenance: `{"name", "provenance", "results"}`.

    The file is written to a temporary file beside it and renamed, so a reader never sees half a result.

    :param path: The output file (its folder is created).
    :param name: The benchmark's name, e.g. `"rerank_speed"`.
    :param results: What the benchmark measured (JSON-serialisable; paths and numpy scalars are converted).
    :param argv: The command line, as for :func:`provenance`.
    :returns: The path written.
    :raises TypeError: If `results` holds a value JSON cannot represent.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"name": name, "provenance": provenance(argv), "results": results}, indent=2, default=_jsonable)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def git_state(folder: Path) -> dict[str, Any] | None:
    """
    The commit checked out in `folder` and whether tracked files differ from it.

    :param folder: The root of a checkout.
    :returns: `{"commit": full hash, "dirty": bool}`, or `None` when `folder` is not the root of a git checkout
        (or git is not installed).
    """

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != folder.resolve():
            return None  # e.g. an installed copy inside some other repository
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    """
    The installed versions of the packages that a benchmark's figures depend on.

    :returns: Distribution name -> version, for those of :data:`PACKAGES` that are installed.
    """
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict[str, Any]:
    """
    The machine: CPU model, logical cores, memory, GPU (through torch, when it sees CUDA), OS and Python.

    :returns: `{"cpu", "logical_cores", "memory_gib", "gpu", "gpu_count", "os", "python"}`; `gpu` is `None`
        without CUDA (or without torch), `memory_gib` is `None` where it cannot be read.
    """
    gpu, gpu_count = _gpu()
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpu": gpu,
        "gpu_count": gpu_count,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _command(argv: Sequence[str] | None) -> str:
    if argv is not None:
        return shlex.join(argv)
    program, *rest = sys.argv or [""]
    if program.endswith(".py"):  # a script: written as it is run from the current folder
        script = Path(program)
        if script.is_absolute() and script.is_relative_to(Path.cwd()):
            script = script.relative_to(Path.cwd())
        return shlex.join(["python", script.as_posix(), *rest])
    return shlex.join([Path(program).name or program, *rest])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 2**30, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def _gpu() -> tuple[str | None, int]:
    try:
        import torch
    except ImportError:
        return None, 0
    if not torch.cuda.is_available():
        return None, 0
    return torch.cuda.get_device_name(0), torch.cuda.device_count()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        return value.item()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"a benchmark result must hold JSON values, but got {type(value).__name__}: {value!r}")
