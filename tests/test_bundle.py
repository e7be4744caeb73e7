"""`crossrerank bundle`: cutting and joining files, the manifest, refusing a damaged kit, and installing a kit into
a fresh virtual environment with pip's network disabled."""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from haystack_crossrerank.commands import bundle, bundle_install
from haystack_crossrerank.commands.bundle import (
    FileEntry,
    add_bundle_parser,
    cmd_bundle,
    install_bundle,
    join_parts,
    pip_download_command,
    read_manifest,
    split_file,
    verify_bundle,
    write_bundle,
)

KIB = 1 / 1024  # a part size of one KiB, in MiB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by its relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "sources" / "tiny-model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}\n')
    (folder / "model.safetensors").write_bytes(random_bytes(2560))  # 2.5 KiB: cut into 3 parts of 1 KiB
    (folder / "empty.txt").write_bytes(b"")
    return folder


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    folder = tmp_path / "sources" / "data" / "scifact"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_bytes(random_bytes(1024, seed=1))  # exactly one part size: kept whole
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t31715818\t1\n")
    return folder.parent


@pytest.fixture
def kit(tmp_path: Path, model_folder: Path, data_root: Path) -> Path:
    out = tmp_path / "kit"
    write_bundle(out, models=[str(model_folder)], data=["scifact"], data_dir=data_root, split_mib=KIB)
    return out


# ---------------------------------------------------------------------------------------------- split and join
@pytest.mark.parametrize(("size", "expected_parts"), [(0, [0]), (1, [1]), (9, [9]), (10, [10]), (11, [10, 1])])
def test_split_and_join_round_trip_at_and_around_the_part_size(
    tmp_path: Path, size: int, expected_parts: list[int]
) -> None:
    data = random_bytes(size)
    (tmp_path / "source.bin").write_bytes(data)
    (tmp_path / "kit").mkdir()
    entry = split_file(tmp_path / "source.bin", tmp_path / "kit" / "weights.bin", 10)
    assert [part.size for part in entry.parts] == expected_parts
    assert [part.name for part in entry.parts] == [
        f"weights.bin.part-{i:03d}" for i in range(1, len(expected_parts) + 1)
    ]
    assert (entry.size, entry.sha256) == (size, sha(data))
    assert [part.sha256 for part in entry.parts] == [sha((tmp_path / "kit" / p.name).read_bytes()) for p in entry.parts]
    joined = join_parts(tmp_path / "kit", entry.parts, tmp_path / "out" / "weights.bin", size=size, sha256=sha(data))
    assert joined.read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["weights.bin"]


def test_split_of_25_bytes_into_parts_of_10_gives_10_10_5(tmp_path: Path) -> None:
    (tmp_path / "source.bin").write_bytes(random_bytes(25))
    entry = split_file(tmp_path / "source.bin", tmp_path / "weights.bin", 10)
    assert [part.size for part in entry.parts] == [10, 10, 5]


def test_split_with_part_size_zero_raises(tmp_path: Path) -> None:
    (tmp_path / "source.bin").write_bytes(b"abc")
    with pytest.raises(ValueError, match="`part_bytes` must be >= 1, but got 0"):
        split_file(tmp_path / "source.bin", tmp_path / "weights.bin", 0)


def _split_25(tmp_path: Path) -> tuple[FileEntry, bytes]:
    data = random_bytes(25)
    (tmp_path / "source.bin").write_bytes(data)
    (tmp_path / "parts").mkdir()
    return split_file(tmp_path / "source.bin", tmp_path / "parts" / "weights.bin", 10), data


def test_join_refuses_a_corrupted_part_by_name_and_leaves_nothing(tmp_path: Path) -> None:
    entry, data = _split_25(tmp_path)
    second = tmp_path / "parts" / "weights.bin.part-002"
    second.write_bytes(bytes([second.read_bytes()[0] ^ 1]) + second.read_bytes()[1:])  # same size, one bit flipped
    with pytest.raises(ValueError, match=r"part '.*weights\.bin\.part-002' has sha256 [0-9a-f]{64}, but the manifest"):
        join_parts(tmp_path / "parts", entry.parts, tmp_path / "out" / "weights.bin", size=25, sha256=sha(data))
    assert list((tmp_path / "out").iterdir()) == []


def test_join_refuses_a_part_of_the_wrong_size_by_name(tmp_path: Path) -> None:
    entry, data = _split_25(tmp_path)
    (tmp_path / "parts" / "weights.bin.part-003").write_bytes(b"1234")
    with pytest.raises(ValueError, match=r"part '.*weights\.bin\.part-003' has 4 bytes, but the manifest expects 5"):
        join_parts(tmp_path / "parts", entry.parts, tmp_path / "out" / "weights.bin", size=25, sha256=sha(data))
    assert list((tmp_path / "out").iterdir()) == []


def test_join_refuses_a_missing_part_by_name(tmp_path: Path) -> None:
    entry, data = _split_25(tmp_path)
    (tmp_path / "parts" / "weights.bin.part-001").unlink()
    with pytest.raises(FileNotFoundError, match=r"part '.*weights\.bin\.part-001' is missing \(.* 10 bytes\)"):
        join_parts(tmp_path / "parts", entry.parts, tmp_path / "out" / "weights.bin", size=25, sha256=sha(data))
    assert list((tmp_path / "out").iterdir()) == []


def test_join_refuses_a_whole_file_whose_sha256_differs_and_keeps_the_old_file(tmp_path: Path) -> None:
    entry, _ = _split_25(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "weights.bin").write_bytes(b"old")
    with pytest.raises(ValueError, match=r"joined file '.*weights\.bin' has sha256 .*, but the manifest expects 0+$"):
        join_parts(tmp_path / "parts", entry.parts, tmp_path / "out" / "weights.bin", size=25, sha256="0" * 64)
    assert tree(tmp_path / "out") == {"weights.bin": b"old"}


def test_join_without_parts_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs at least one part, but got none"):
        join_parts(tmp_path, [], tmp_path / "weights.bin", size=0, sha256=sha(b""))


# ---------------------------------------------------------------------------------------------- writing a kit
def test_manifest_lists_every_file_and_part_with_size_and_sha256(
    kit: Path, model_folder: Path, data_root: Path
) -> None:
    manifest = json.loads((kit / "manifest.json").read_text())
    weights = (model_folder / "model.safetensors").read_bytes()
    corpus = (data_root / "scifact" / "corpus.jsonl").read_bytes()
    qrels = (data_root / "scifact" / "qrels" / "test.tsv").read_bytes()
    config = (model_folder / "config.json").read_bytes()
    parts = [
        {"name": f"model.safetensors.part-00{i + 1}", "size": len(chunk), "sha256": sha(chunk)}
        for i, chunk in enumerate([weights[:1024], weights[1024:2048], weights[2048:]])
    ]
    assert manifest == {
        "format": "crossrerank-bundle",
        "format_version": 1,
        "split_mib": KIB,
        "models": [{"name": "tiny-model", "source": str(model_folder.resolve())}],
        "data": [{"name": "scifact", "source": str((data_root / "scifact").resolve())}],
        "wheels": None,
        "files": [
            {"path": "models/tiny-model/config.json", "size": len(config), "sha256": sha(config)},
            {"path": "models/tiny-model/empty.txt", "size": 0, "sha256": sha(b"")},
            {"path": "models/tiny-model/model.safetensors", "size": 2560, "sha256": sha(weights), "parts": parts},
            {"path": "data/scifact/corpus.jsonl", "size": 1024, "sha256": sha(corpus)},
            {"path": "data/scifact/qrels/test.tsv", "size": len(qrels), "sha256": sha(qrels)},
        ],
    }
    assert sorted(tree(kit / "models" / "tiny-model")) == [
        "config.json",
        "empty.txt",
        "model.safetensors.part-001",
        "model.safetensors.part-002",
        "model.safetensors.part-003",
    ]
    assert (kit / "install.py").read_bytes() == Path(bundle_install.__file__).read_bytes()
    assert verify_bundle(kit) == {
        "kit": str(kit),
        "files": 5,
        "parts": 3,
        "bytes": 2560 + 1024 + len(config) + len(qrels),
    }


def test_names_are_given_with_name_equals_and_repeated_names_raise(tmp_path: Path, model_folder: Path) -> None:
    manifest = write_bundle(tmp_path / "kit", models=[f"reranker={model_folder}"])
    assert manifest["models"] == [{"name": "reranker", "source": str(model_folder)}]
    assert manifest["files"][0]["path"] == "models/reranker/config.json"
    with pytest.raises(ValueError, match=r"model name 'tiny-model' .* is used twice; give another as NAME="):
        write_bundle(tmp_path / "kit2", models=[str(model_folder), str(model_folder)])


def test_a_hub_id_is_fetched_with_snapshot_download(
    tmp_path: Path, model_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def snapshot_download(repo_id: str) -> str:  # stands in for the hub, which the tests never reach
        asked.append(repo_id)
        return str(model_folder)

    hub = types.ModuleType("huggingface_hub")
    hub.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    manifest = write_bundle(tmp_path / "kit", models=["cross-encoder/ms-marco-MiniLM-L6-v2"])
    assert asked == ["cross-encoder/ms-marco-MiniLM-L6-v2"]
    assert manifest["models"] == [{"name": "ms-marco-MiniLM-L6-v2", "source": "cross-encoder/ms-marco-MiniLM-L6-v2"}]
    assert tree(tmp_path / "kit" / "models" / "ms-marco-MiniLM-L6-v2") == tree(model_folder)


def test_a_missing_data_set_raises_naming_the_folders_tried(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data set 'nfcorpus' must be a folder, but there is no folder 'nfc"):
        write_bundle(tmp_path / "kit", data=["nfcorpus"], data_dir=data_root)
    assert not (tmp_path / "kit").exists()


def test_writing_over_a_folder_that_is_not_a_kit_raises(tmp_path: Path, model_folder: Path) -> None:
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="must be empty or absent to write a kit, but it holds other files"):
        write_bundle(tmp_path / "kit", models=[str(model_folder)], overwrite=True)
    assert tree(tmp_path / "kit") == {"notes.txt": b"mine"}


def test_writing_over_a_kit_needs_overwrite(kit: Path, model_folder: Path) -> None:
    with pytest.raises(FileExistsError, match="already holds a kit; pass overwrite"):
        write_bundle(kit, models=[str(model_folder)])
    write_bundle(kit, models=[str(model_folder)], overwrite=True)
    assert not (kit / "data").exists()


def test_negative_split_mib_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`split_mib` must be >= 0 \(0: keep files whole\), but got -1"):
        write_bundle(tmp_path / "kit", split_mib=-1)


def test_pip_download_command_fetches_only_wheels_for_the_named_platform(tmp_path: Path) -> None:
    command = pip_download_command(
        ["haystack-crossrerank[onnx]==0.1.0"],
        tmp_path,
        ["manylinux2014_x86_64", "manylinux_2_28_x86_64"],
        "3.11",
        ["--extra-index-url=https://example.invalid/simple"],
    )
    assert command == [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--dest",
        str(tmp_path),
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
        "--extra-index-url=https://example.invalid/simple",
        "haystack-crossrerank[onnx]==0.1.0",
    ]


# ---------------------------------------------------------------------------------------------- installing a kit
def test_install_puts_models_under_home_and_data_in_the_data_folder_byte_identical(
    kit: Path, model_folder: Path, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROSSRERANK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CROSSRERANK_DATA_DIR", raising=False)
    summary = install_bundle(kit)
    assert summary == {
        "kit": str(kit),
        "models": {"tiny-model": str(tmp_path / "home" / "models" / "tiny-model")},
        "data": {"scifact": str(tmp_path / "home" / "data" / "scifact")},
        "data_dir": str(tmp_path / "home" / "data"),
        "requirements": [],
        "python": sys.executable,
    }
    assert tree(tmp_path / "home" / "models" / "tiny-model") == tree(model_folder)
    assert tree(tmp_path / "home" / "data" / "scifact") == tree(data_root / "scifact")
    assert sorted(p.name for p in (tmp_path / "home" / "models").iterdir()) == ["tiny-model"]  # no temporary left


def test_default_home_is_the_package_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        from haystack_crossrerank.utils import paths
    except ImportError:  # the layout before the package's folders
        from haystack_crossrerank.utils import paths  # type: ignore[no-redef]
    for value in (str(tmp_path / "home"), None):
        if value is None:
            monkeypatch.delenv("CROSSRERANK_HOME", raising=False)
        else:
            monkeypatch.setenv("CROSSRERANK_HOME", value)
        assert bundle_install.default_home() == paths.home()
    assert (bundle_install.HOME_ENV, bundle_install.DATA_DIR_ENV) == (paths.HOME_ENV, paths.DATA_DIR_ENV)


def test_install_refuses_a_corrupted_part_by_name_and_installs_nothing(kit: Path, tmp_path: Path) -> None:
    part = kit / "models" / "tiny-model" / "model.safetensors.part-002"
    part.write_bytes(bytes(1024))
    with pytest.raises(ValueError, match=r"part '.*/kit/models/tiny-model/model\.safetensors\.part-002' has sha256"):
        install_bundle(kit, models_dir=tmp_path / "models", data_dir=tmp_path / "data")
    assert list((tmp_path / "models").iterdir()) == []
    assert list((tmp_path / "data").iterdir()) == []
    with pytest.raises(ValueError, match=r"model\.safetensors\.part-002' has sha256"):
        verify_bundle(kit)


def test_install_refuses_a_part_of_the_wrong_size_before_writing_anything(kit: Path, tmp_path: Path) -> None:
    (kit / "models" / "tiny-model" / "model.safetensors.part-003").write_bytes(bytes(100))
    with pytest.raises(
        ValueError, match=r"part '.*model\.safetensors\.part-003' has 100 bytes, but the manifest expects 512"
    ):
        install_bundle(kit, models_dir=tmp_path / "models", data_dir=tmp_path / "data")
    assert not (tmp_path / "models").exists()


def test_install_refuses_a_missing_file_by_name(kit: Path, tmp_path: Path) -> None:
    (kit / "data" / "scifact" / "qrels" / "test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"file '.*/data/scifact/qrels/test\.tsv' is missing"):
        install_bundle(kit, models_dir=tmp_path / "models", data_dir=tmp_path / "data")


def test_install_over_existing_folders_needs_overwrite_and_then_replaces_them(kit: Path, tmp_path: Path) -> None:
    (tmp_path / "models" / "tiny-model").mkdir(parents=True)
    (tmp_path / "models" / "tiny-model" / "stale.bin").write_bytes(b"stale")
    with pytest.raises(FileExistsError, match=r"these folders exist already .*tiny-model"):
        install_bundle(kit, models_dir=tmp_path / "models", data_dir=tmp_path / "data")
    assert tree(tmp_path / "models") == {"tiny-model/stale.bin": b"stale"}
    install_bundle(kit, models_dir=tmp_path / "models", data_dir=tmp_path / "data", overwrite=True)
    assert "stale.bin" not in tree(tmp_path / "models" / "tiny-model")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-model"]


def test_a_manifest_naming_a_path_outside_the_kit_is_refused(kit: Path) -> None:
    manifest = json.loads((kit / "manifest.json").read_text())
    manifest["files"][0]["path"] = "models/tiny-model/../../../outside.txt"
    (kit / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"lists 'models/tiny-model/\.\./\.\./\.\./outside\.txt', but a kit's files"):
        read_manifest(kit)


def test_a_manifest_naming_a_model_folder_outside_the_models_folder_is_refused(kit: Path) -> None:
    manifest = json.loads((kit / "manifest.json").read_text())
    manifest["models"][0]["name"] = ".."
    (kit / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"with plain folder names, but got \['models/\.\.'\]"):
        read_manifest(kit)


def test_a_folder_without_a_manifest_is_not_a_kit(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"a kit folder must hold manifest\.json, but '.*' does not exist"):
        install_bundle(tmp_path)


# ---------------------------------------------------------------------------------------------- command line
def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="crossrerank")
    add_bundle_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_command_line_writes_checks_and_installs_a_kit(
    tmp_path: Path, model_folder: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kit"
    args = parse(["bundle", "--out", str(out), "--models", str(model_folder), "--data", "scifact"])
    args.data_dir, args.split_mib = str(data_root), KIB
    written = cmd_bundle(args)
    assert written == {
        "kit": str(out),
        "files": 5,
        "parts": 3,
        "bytes": sum(len(b) for b in [*tree(model_folder).values(), *tree(data_root).values()]),
        "models": ["tiny-model"],
        "data": ["scifact"],
        "wheels": 0,
        "installer": str(out / "install.py"),
    }
    assert f"python {out / 'install.py'}" in capsys.readouterr().out
    assert cmd_bundle(parse(["bundle", "--check", str(out)]))["parts"] == 3
    argv = ["bundle", "--install", str(out), "--models-dir", str(tmp_path / "m"), "--data-dir", str(tmp_path / "d")]
    installed = cmd_bundle(parse(argv))
    assert installed["data"] == {"scifact": str(tmp_path / "d" / "scifact")}
    assert f"export CROSSRERANK_DATA_DIR={tmp_path / 'd'}" in capsys.readouterr().out


def test_command_line_refuses_options_of_the_other_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--models, --split-mib cannot be used with --install"):
        cmd_bundle(parse(["bundle", "--install", str(tmp_path), "--models", "x", "--split-mib", "10"]))
    with pytest.raises(ValueError, match="--models-dir cannot be used with --out"):
        cmd_bundle(parse(["bundle", "--out", str(tmp_path), "--models-dir", "x"]))


def test_the_installer_uses_the_standard_library_only() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    for module, extra in ((bundle_install, set()), (bundle, {"haystack_crossrerank", "huggingface_hub"})):
        tree_ = ast.parse(Path(module.__file__ or "").read_text())
        imported = {
            alias.name.split(".")[0] for node in ast.walk(tree_) if isinstance(node, ast.Import) for alias in node.names
        }
        imported |= {
            node.module.split(".")[0] for node in ast.walk(tree_) if isinstance(node, ast.ImportFrom) and node.module
        }
        assert imported <= allowed | extra, module.__name__


# ---------------------------------------------------------------------------------------------- a fresh machine
def write_tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel made by hand (module, METADATA, WHEEL, RECORD), so that nothing is downloaded."""
    dist_info = "tinykit-1.0.dist-info"
    files = {
        "tinykit/__init__.py": b'VALUE = "from the kit"\n',
        "tinykit/payload.bin": random_bytes(3000, seed=2),  # stored, not compressed: the wheel is cut into parts
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: tinykit\nVersion: 1.0\n",
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test_bundle\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    path = folder / "tinykit-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.mark.slow
def test_a_fresh_venv_installs_from_the_kit_alone_with_pip_offline(
    tmp_path: Path, tiny_model: Path, data_root: Path
) -> None:
    wheel = write_tiny_wheel(tmp_path)
    kit = tmp_path / "kit"
    write_bundle(
        kit,
        models=[f"tiny={tiny_model}"],
        data=["scifact"],
        data_dir=data_root,
        wheels=True,
        packages=[str(wheel)],
        pip_args=["--no-index"],  # the wheel is a local file: pip download fetches nothing
        split_mib=KIB,
    )
    manifest = json.loads((kit / "manifest.json").read_text())
    assert manifest["wheels"]["requirements"] == ["wheels/tinykit-1.0-py3-none-any.whl"]
    assert any(entry["path"] == "models/tiny/model.safetensors" and entry.get("parts") for entry in manifest["files"])
    assert any(entry["path"].startswith("wheels/") and entry.get("parts") for entry in manifest["files"])

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    offline = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "user"),
        "CROSSRERANK_HOME": str(tmp_path / "user" / "crossrerank"),
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [str(python), str(kit / "install.py"), "--data-dir", str(tmp_path / "server-data")],
        env=offline,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"export CROSSRERANK_DATA_DIR={tmp_path / 'server-data'}" in result.stdout
    check = "import pathlib, tinykit; print(tinykit.VALUE, pathlib.Path(tinykit.__file__).with_name('payload.bin')"
    check += ".stat().st_size)"
    imported = subprocess.run([str(python), "-c", check], env=offline, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "from the kit 3000"
    assert tree(tmp_path / "user" / "crossrerank" / "models" / "tiny") == tree(tiny_model)
    assert tree(tmp_path / "server-data" / "scifact") == tree(data_root / "scifact")
