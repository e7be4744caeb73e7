"""haystack_crossrerank.utils.provenance: what a benchmark result records about its command, commit and machine."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest

from haystack_crossrerank.utils import provenance as module
from haystack_crossrerank.utils.provenance import git_state, provenance, write_result

REPO = Path(__file__).resolve().parents[1]


def test_provenance_records_command_git_packages_machine_and_a_utc_timestamp() -> None:
    facts = provenance(["crossrerank", "bench", "--data-dir", "../shared data"])
    assert sorted(facts) == ["command", "git", "machine", "packages", "timestamp"]
    assert facts["command"] == "crossrerank bench --data-dir '../shared data'"
    assert {"haystack-crossrerank", "haystack-ai", "torch", "transformers"} <= set(facts["packages"])
    assert set(facts["packages"]) <= set(module.PACKAGES)
    machine = facts["machine"]
    assert sorted(machine) == ["cpu", "gpu", "gpu_count", "logical_cores", "memory_gib", "os", "python"]
    assert machine["cpu"] and machine["logical_cores"] == os.cpu_count() and machine["memory_gib"] > 0
    assert (machine["gpu"] is None) == (machine["gpu_count"] == 0)
    stamp = datetime.datetime.fromisoformat(facts["timestamp"])
    assert stamp.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - stamp) < datetime.timedelta(minutes=5)


def test_provenance_names_the_commit_of_this_checkout_and_whether_tracked_files_changed() -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout

    assert provenance([])["git"] == {
        "commit": git("rev-parse", "HEAD").strip(),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip()),
    }


def test_git_state_is_none_outside_a_checkout_and_inside_another_repositorys_subfolder(tmp_path: Path) -> None:
    assert git_state(tmp_path) is None
    assert git_state(REPO / "haystack_crossrerank") is None  # only the root of a checkout counts


def test_the_command_defaults_to_sys_argv_written_as_it_is_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("sys.argv", [str(REPO / "benchmarks" / "rerank_speed.py"), "--rows", "a b"])
    assert provenance()["command"] == "python benchmarks/rerank_speed.py --rows 'a b'"
    monkeypatch.setattr("sys.argv", ["/venv/bin/crossrerank", "bench", "--depth", "20"])
    assert provenance()["command"] == "crossrerank bench --depth 20"


def test_write_result_writes_name_provenance_and_results(tmp_path: Path) -> None:
    import numpy as np

    path = write_result(tmp_path / "new" / "x.json", "x", {"a": np.float32(0.5), "where": Path("/m")}, argv=["x"])
    assert path == tmp_path / "new" / "x.json"
    written = json.loads(path.read_text(encoding="utf-8"))
    assert list(written) == ["name", "provenance", "results"]
    assert written["name"] == "x" and written["provenance"]["command"] == "x"
    assert written["results"] == {"a": 0.5, "where": "/m"}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_write_result_is_atomic_an_old_result_survives_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_result(tmp_path / "x.json", "x", {"run": 1}, argv=["x"])
    old = path.read_bytes()

    with pytest.raises(TypeError, match="must hold JSON values, but got object"):
        write_result(path, "x", {"run": object()}, argv=["x"])
    assert path.read_bytes() == old

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_result(path, "x", {"run": 2}, argv=["x"])
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind
