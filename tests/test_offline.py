"""Offline models: the split MPNet zip is joined, unpacked atomically and checked against its pinned sha256."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from haystack_crossrerank.commands import offline
from haystack_crossrerank.commands.offline import (
    MPNET_WEIGHTS_SHA256,
    built_model_dir,
    offline_base,
    unpack_split_zip,
    verify_sha256,
)


def split_zip(folder: Path, files: dict[str, bytes], parts: int) -> list[Path]:
    archive = folder / "whole.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name, data in files.items():
            handle.writestr(name, data)
    data = archive.read_bytes()
    size = -(-len(data) // parts)
    paths = []
    for i in range(parts):
        path = folder / f"model.zip.{i + 1:03d}"
        path.write_bytes(data[i * size : (i + 1) * size])
        paths.append(path)
    return paths


def test_split_zip_is_joined_and_its_folder_unpacked(tmp_path: Path) -> None:
    parts = split_zip(
        tmp_path, {"m/config.json": b"{}", "m/model.safetensors": b"weights" * 1000, "other.txt": b"x"}, 5
    )
    target = unpack_split_zip(parts, tmp_path / "out" / "m", member_folder="m")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert (target / "model.safetensors").read_bytes() == b"weights" * 1000
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m"]  # no scratch folder left behind


def test_parts_in_the_wrong_order_are_a_clear_error_and_leave_nothing(tmp_path: Path) -> None:
    parts = split_zip(tmp_path, {"m/model.safetensors": bytes(range(256)) * 400}, 3)
    with pytest.raises(ValueError, match="do not join into a valid zip"):
        unpack_split_zip(list(reversed(parts)), tmp_path / "out" / "m", member_folder="m")
    assert not (tmp_path / "out" / "m").exists()


def test_a_zip_without_the_model_folder_is_refused(tmp_path: Path) -> None:
    parts = split_zip(tmp_path, {"elsewhere/a.txt": b"a"}, 1)
    with pytest.raises(ValueError, match="has no folder 'm'"):
        unpack_split_zip(parts, tmp_path / "out" / "m", member_folder="m")


def test_sha256_mismatch_names_both_digests_and_removes_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"tampered")
    actual = hashlib.sha256(b"tampered").hexdigest()
    verify_sha256(weights, actual)  # the right digest passes
    with pytest.raises(ValueError, match=f"sha256 {actual}, but the pinned value is {MPNET_WEIGHTS_SHA256}"):
        verify_sha256(weights, MPNET_WEIGHTS_SHA256, remove_folder_on_mismatch=folder)
    assert not folder.exists()


def test_missing_mpnet_wheels_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    def missing(name: str) -> None:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ImportError, match="install the `offline-mpnet` extra"):
        offline.mpnet_parts()


def test_built_models_live_under_crossrerank_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSRERANK_HOME", str(tmp_path))
    assert built_model_dir("minilm") == tmp_path / "models" / "minilm-l6-stsb-swap-b16"
    assert built_model_dir("minilm", "seed") == tmp_path / "models" / "minilm-l6-stsb"
    assert built_model_dir("mpnet") == tmp_path / "models" / "mpnet-stsb"
    assert built_model_dir("mpnet", "swap-b16") == tmp_path / "models" / "mpnet-stsb-swap-b16"
    with pytest.raises(ValueError, match=r"the offline base must be one of \['minilm', 'mpnet'\], but got 'bert'"):
        offline_base("bert")
    with pytest.raises(ValueError, match=r"the build recipe must be one of \['seed', 'swap-b16'\], but got 'fast'"):
        built_model_dir("minilm", "fast")


@pytest.mark.parametrize(
    ("base", "recipe", "expected"),
    [
        ("minilm", None, ("minilm-l6-stsb-swap-b16", 16, True, True)),
        ("minilm", "seed", ("minilm-l6-stsb", 64, False, False)),
        ("mpnet", None, ("mpnet-stsb", 64, False, False)),
    ],
)
def test_build_model_trains_the_recipe_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: str, recipe: str | None, expected: tuple
) -> None:
    from haystack_crossrerank import training

    monkeypatch.setenv("CROSSRERANK_HOME", str(tmp_path))
    monkeypatch.setattr(offline, "offline_base_model", lambda name: f"/bases/{name}")
    calls = []
    monkeypatch.setattr(training, "train_sts", lambda config, **kwargs: calls.append((config, kwargs)))
    output = offline.build_default_model(base=base, recipe=recipe, data_dir=str(tmp_path))
    ((config, kwargs),) = calls
    folder, batch, swap, symmetric = expected
    assert output == tmp_path / "models" / folder
    assert (config.output_dir, config.base_model) == (str(output), f"/bases/{base}")
    assert (config.batch_size, config.swap_pairs, kwargs["symmetric_eval"]) == (batch, swap, symmetric)
    # the rest of the seed recipe is unchanged
    assert (config.epochs, config.learning_rate, config.warmup_ratio, config.seed) == (4, 5e-5, 0.1, 42)
    # an existing model is reused, not rebuilt
    output.mkdir(parents=True)
    (output / "config.json").write_text("{}")
    assert offline.build_default_model(base=base, recipe=recipe, data_dir=str(tmp_path)) == output
    assert len(calls) == 1


@pytest.mark.slow
def test_real_mpnet_wheels_unpack_to_a_loadable_verified_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    try:
        offline.mpnet_parts()
    except ImportError:
        pytest.skip("install the `offline-mpnet` extra for the real MPNet wheels")
    monkeypatch.setenv("CROSSRERANK_HOME", str(tmp_path))
    folder = offline.mpnet_base_folder()
    assert folder == tmp_path / "bases" / "all-mpnet-base-v2"
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(str(folder)).model_type == "mpnet"
    # a second call reuses the folder (and checks the weights again)
    assert offline.mpnet_base_folder() == folder


def test_retrieval_training_starts_from_the_seed_recipe_model_and_validates_at_depth_30(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retrieval recipe was chosen from the seed-recipe STS model at BM25 depth 30, whatever the default."""
    from haystack_crossrerank.commands import cli
    from haystack_crossrerank.training import TrainConfig, retrieval
    from haystack_crossrerank.training.retrieval import RetrievalOptions

    built = []

    def fake_build(**kwargs: object) -> Path:
        built.append(kwargs)
        return tmp_path / "seed-model"

    class Stop(Exception):
        pass

    def fake_train(config: TrainConfig, options: RetrievalOptions) -> None:
        raise Stop(config.base_model, options.eval_depth)

    monkeypatch.setattr(cli, "build_default_model", fake_build)
    monkeypatch.setattr(retrieval, "train_retrieval", fake_train)
    argv = ["train", "--task", "retrieval", "--data-dir", str(tmp_path), "--output", str(tmp_path / "out")]
    with pytest.raises(Stop) as stopped:
        cli.main(argv)
    assert [k["recipe"] for k in built] == ["seed"]
    assert stopped.value.args == (str(tmp_path / "seed-model"), 30)
