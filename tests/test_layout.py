"""The package's shape: imports run one way (no cycle, imports inside functions counted), modules stay short, the
folder shows the layers, and the type strings in users' saved YAML keep loading."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "haystack_crossrerank"
ROOT = "haystack_crossrerank"
MAX_MODULE_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """
    The package's modules that `name` imports anywhere in its file (inside functions too), each counted as the
    module named: `from a.b import c` is an edge to `a.b.c` where that is a module, else to `a.b`. Blocks under
    `if TYPE_CHECKING:` are left out, since they never run.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node):
            skipped.update(id(child) for child in ast.walk(node))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if source.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in known else source)
    # Importing `a.b.c` runs `a.b`'s `__init__` first (unless `a.b` is the importer's own package, already running):
    # a re-exporting `__init__` is part of the edge.
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(2, len(m.split(".")))}
    return {module for module in found | (parents - ancestors) if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported_modules(name, path, known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle_through_an_import_inside_a_function(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from haystack_crossrerank.ranker import CrossEncoderRanker\n"
        "def f():\n    from haystack_crossrerank.ranking import scoring\n    import haystack_crossrerank.utils.paths\n",
        encoding="utf-8",
    )
    known = {"haystack_crossrerank.ranker", "haystack_crossrerank.ranking.scoring", "haystack_crossrerank.utils.paths"}
    assert imported_modules("haystack_crossrerank.m", source, known) == {
        "haystack_crossrerank.ranking.scoring",
        "haystack_crossrerank.utils.paths",
    }
    # the package `__init__` that runs first is an edge too, except the importer's own package
    known |= {"haystack_crossrerank.ranking", "haystack_crossrerank.utils"}
    assert imported_modules("haystack_crossrerank.utils.m", source, known) == {
        "haystack_crossrerank.ranking",
        "haystack_crossrerank.ranking.scoring",
        "haystack_crossrerank.utils.paths",
    }


# The layers, top to bottom; a module may import its own layer and the layers below it, never one above.
LAYERS = [
    ("commands",),
    ("training", "evaluation"),
    ("ranker",),
    ("ranking",),
    ("exported", "retrievers", "data"),
    ("utils",),
]


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None  # the package itself: lazy re-exports only
    for level, names in enumerate(LAYERS):
        if parts[1] in names:
            return level
    raise AssertionError(f"{name} is in no layer: add its folder to LAYERS")


# The one import that runs against the layers, by design: the exported backends' distillation batches pairs
# with the scoring engine's pair encoder... none today; keep the list explicit.
UPWARD_IMPORTS: set[tuple[str, str]] = set()


def test_imports_run_down_the_layers() -> None:
    upward = []
    for name, targets in import_graph().items():
        here = layer_of(name)
        for target in targets:
            there = layer_of(target)
            if here is not None and there is not None and there < here and (name, target) not in UPWARD_IMPORTS:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports against the layers: " + ", ".join(sorted(upward))


def test_no_module_is_over_500_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_the_package_folder_shows_the_layers() -> None:
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name not in ("__init__.py", "__pycache__"))
    assert entries == [
        "commands",
        "data",
        "evaluation",
        "exported",
        "ranker.py",
        "ranking",
        "retrievers",
        "training",
        "utils",
    ]


def test_every_init_only_re_exports() -> None:
    for path in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {t.id for n in tree.body if isinstance(n, ast.Assign | ast.AnnAssign) for t in _targets(n)}
        assert "__all__" in names, f"{path} has no __all__"


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.Name]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t for t in targets if isinstance(t, ast.Name)]


@pytest.mark.parametrize(
    "type_string",
    [
        "haystack_crossrerank.ranker.CrossEncoderRanker",
        "haystack_crossrerank.retrievers.bm25.BM25sRetriever",
        "haystack_crossrerank.retrievers.faiss.FaissEmbeddingRetriever",
    ],
)
def test_saved_type_strings_still_name_their_classes(type_string: str) -> None:
    module, _, name = type_string.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert f"{cls.__module__}.{cls.__qualname__}" == type_string
