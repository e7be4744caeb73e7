"""The documentation: README and docs/ read as today's product, every Python snippet runs, the site builds strictly,
and every public class and function has a reference entry."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA, build_tiny_cross_encoder

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 250

# What user-facing text must not hold: names of runs ("run I"), the word "session", dates. History goes to
# CHANGELOG.md, which is not checked.
FORBIDDEN = (
    (re.compile(r"run [A-Z]\b"), "a run letter"),
    (re.compile(r"session", re.IGNORECASE), "'session'"),
    (re.compile(r"20[0-9][0-9]-[0-9][0-9]-"), "a date"),
)
# The design notes cite commits (a short or full hash); such a line may name what the commit's tree names.
COMMIT_HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
DESIGN_NOTES = DOCS / "design-notes.md"

# What snippets name, and what the tests put there.
MODEL_PLACEHOLDER = "path/to/cross-encoder"
DATA_PLACEHOLDER = "path/to/data"
SKIP_MARKER = "<!-- skip-snippet -->"
# A block that takes seconds (a real embedder, a short training run) runs with the slow tests; a block that talks to
# `crossrerank serve` at SERVER_URL runs against a real server started for it (on a free port, put in its place).
SLOW_MARKER = "<!-- slow-snippet -->"
SERVER_MARKER = "<!-- server-snippet -->"
SERVER_URL = "http://127.0.0.1:1416"
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
DIRECTIVE = re.compile(r"^:::\s+(?P<target>[\w.]+)\s*$", re.MULTILINE)


def markdown_files() -> list[Path]:
    """README.md and every page under docs/ (CHANGELOG.md is history and is never among them)."""
    return [README, *sorted(p for p in DOCS.rglob("*.md") if p.name != "CHANGELOG.md")]


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@dataclass(frozen=True)
class Snippet:
    """One fenced ```python block: where it is, its code, and whether it is marked not to run."""

    path: Path
    line: int
    code: str
    skipped: bool
    marker: str = ""

    @property
    def name(self) -> str:
        return f"{_relative(self.path)}:{self.line}"


def python_snippets(path: Path) -> list[Snippet]:
    """The ```python blocks of a Markdown file, each marked skipped when the line before its fence is the marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if opening["lang"] == "python":
            indent = len(opening["indent"])
            body = "\n".join(line[indent:] for line in lines[index + 1 : end])
            before = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            snippets.append(Snippet(path, index + 1, body + "\n", before == SKIP_MARKER, before))
        index = end + 1
    return snippets


def all_snippets() -> list[Snippet]:
    return [snippet for path in markdown_files() for snippet in python_snippets(path)]


# ---------------------------------------------------------------------------------------------- the text
def test_readme_has_at_most_250_lines() -> None:
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES, f"README.md must have at most {README_MAX_LINES} lines, but has {count}"


def test_readme_keeps_the_quick_start_commands_and_the_headline_markers() -> None:
    text = README.read_text(encoding="utf-8")
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    begin, end = "<!-- BEGIN TABLE headline -->", "<!-- END TABLE headline -->"
    assert text.count(begin) == 1 and text.count(end) == 1, "one pair of headline table markers"
    assert text.index(begin) < text.index(end)
    after = text[text.index(end) + len(end) :].lstrip("\n").splitlines()[0]
    assert "docs/benchmarks.md" in after, f"the line after the table must link to docs/benchmarks.md, got {after!r}"


def test_no_run_letters_sessions_or_dates_in_readme_and_docs() -> None:
    found = []
    for path in markdown_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if path == DESIGN_NOTES and COMMIT_HASH.search(line):
                continue
            for pattern, what in FORBIDDEN:
                if pattern.search(line):
                    found.append(f"{_relative(path)}:{number}: {what}: {line.strip()[:100]}")
    assert not found, "user-facing text holds history (move it to CHANGELOG.md):\n" + "\n".join(found)


def test_the_commit_reference_rule_recognises_hashes_only() -> None:
    assert COMMIT_HASH.search("Command at commit `b5e6f73`:")
    assert COMMIT_HASH.search("git show 26e7a11f0c:benchmarks/int8_fidelity.py")
    assert not COMMIT_HASH.search("measured in 2026 on 1234567 pairs, see deadbeef later")  # digits only, letters only
    assert not COMMIT_HASH.search("a session of the day")


# ---------------------------------------------------------------------------------------------- the snippets
def test_snippet_extraction_reads_fences_and_the_skip_marker(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nprint(1)\n```\n\n<!-- skip-snippet -->\n```python\nprint(2)\n```\n"
        "```bash\necho 3\n```\n- item:\n\n    ```python\n    print(4)\n    ```\n",
        encoding="utf-8",
    )
    found = [(s.line, s.code, s.skipped) for s in python_snippets(page)]
    assert found == [(3, "print(1)\n", False), (8, "print(2)\n", True), (16, "print(4)\n", False)]


def test_every_python_snippet_compiles() -> None:
    """Skipped snippets too: a block that is not run must at least be valid Python."""
    snippets = all_snippets()
    assert snippets, "no ```python blocks found in README.md or docs/"
    for snippet in snippets:
        compile(snippet.code, snippet.name, "exec")


@pytest.fixture
def snippet_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working folder, as a user's checkout looks to a snippet: `pipelines/` is there, outputs land here."""
    (tmp_path / "pipelines").symlink_to(REPO / "pipelines", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
    monkeypatch.setenv("CROSSRERANK_HOME", str(tmp_path / "home"))
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    # The shipped pipelines share one in-memory store by name: each snippet starts with it empty.
    InMemoryDocumentStore(index="crossrerank-corpus").delete_all_documents()
    yield tmp_path
    InMemoryDocumentStore(index="crossrerank-corpus").delete_all_documents()


def _snippet_params() -> list[Any]:
    return [
        pytest.param(s, id=s.name, marks=[pytest.mark.slow] if s.marker in (SLOW_MARKER, SERVER_MARKER) else [])
        for s in all_snippets()
        if not s.skipped
    ]


@pytest.fixture(scope="module")
def snippet_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random cross-encoder, with 512 positions like the real ones (training examples use 192 tokens)."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("snippet-model"), max_positions=512)


@pytest.mark.parametrize("snippet", _snippet_params())
def test_python_snippet_runs(snippet: Snippet, snippet_folder: Path, snippet_model: Path) -> None:
    tiny_model = snippet_model
    code = snippet.code.replace(MODEL_PLACEHOLDER, str(tiny_model))
    if DATA_PLACEHOLDER in code:
        if not SHARED_DATA.is_dir():
            pytest.skip(f"{snippet.name} reads {DATA_PLACEHOLDER}, and {SHARED_DATA} is not beside the checkout")
        code = code.replace(DATA_PLACEHOLDER, str(SHARED_DATA))
    namespace: dict[str, Any] = {"__name__": "__snippet__"}
    if snippet.marker != SERVER_MARKER:
        exec(compile(code, snippet.name, "exec"), namespace)
        return
    from tests.serving_server import start_server, write_corpus

    assert SERVER_URL in code, f"{snippet.name} is marked {SERVER_MARKER} but does not call {SERVER_URL}"
    server = start_server(snippet_folder, write_corpus(snippet_folder / "corpus.jsonl"), tiny_model)
    try:
        exec(compile(code.replace(SERVER_URL, server.base), snippet.name, "exec"), namespace)
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------- the site
@pytest.mark.slow
def test_mkdocs_build_strict_passes(tmp_path: Path) -> None:
    for module, extra in (("mkdocs", "mkdocs"), ("material", "mkdocs-material"), ("mkdocstrings", "mkdocstrings")):
        pytest.importorskip(module, reason=f"{extra} is not installed: install the `docs` extra to build the site")
    pytest.importorskip("mkdocstrings_handlers.python", reason="install the `docs` extra (mkdocstrings-python)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml")]
    result = subprocess.run(
        [*command, "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert (tmp_path / "site" / "reference" / "ranker" / "index.html").is_file()


# ---------------------------------------------------------------------------------------------- the reference
def _public_objects() -> dict[str, Any]:
    """Every class and function named in `haystack_crossrerank.__all__` or a sub-package's `__all__`."""
    import haystack_crossrerank

    packages = ["haystack_crossrerank"] + [
        f"haystack_crossrerank.{info.name}"
        for info in pkgutil.iter_modules(haystack_crossrerank.__path__)
        if info.ispkg
    ]
    found: dict[str, Any] = {}
    for package_name in packages:
        package = importlib.import_module(package_name)
        for name in getattr(package, "__all__", ()):
            value = getattr(package, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                found[f"{package_name}.{name}"] = value
    return found


def _resolve(target: str) -> Any:
    """The module or object a `::: a.b.c` directive names."""
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            value: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not module_name.startswith(error.name):
                raise  # the module exists, but something it imports does not
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        return value
    raise ModuleNotFoundError(target)


def _directives() -> list[tuple[str, str]]:
    return [
        (_relative(page), match["target"])
        for page in sorted((DOCS / "reference").glob("*.md"))
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8"))
    ]


def test_every_reference_directive_resolves() -> None:
    broken = []
    for page, target in _directives():
        try:
            _resolve(target)
        except (ImportError, AttributeError) as error:
            broken.append(f"{page}: ::: {target} ({type(error).__name__}: {error})")
    assert not broken, "reference directives that name nothing:\n" + "\n".join(broken)


def test_every_public_class_and_function_has_a_reference_entry() -> None:
    documented: list[Any] = []
    for _, target in _directives():
        try:
            value = _resolve(target)
        except (ImportError, AttributeError):
            continue  # reported by test_every_reference_directive_resolves
        if inspect.ismodule(value):
            documented += [
                member
                for member in vars(value).values()
                if (inspect.isclass(member) or inspect.isfunction(member)) and member.__module__ == value.__name__
            ]
        else:
            documented.append(value)
    missing = [name for name, value in _public_objects().items() if not any(value is d for d in documented)]
    assert not missing, "public names without a `:::` entry in docs/reference/*.md:\n" + "\n".join(sorted(missing))


def test_every_public_class_and_function_has_a_docstring() -> None:
    """mkdocstrings leaves out members without a docstring: a public name needs one to appear in the reference."""
    missing = [name for name, value in _public_objects().items() if not inspect.getdoc(value)]
    assert not missing, "public names without a docstring:\n" + "\n".join(sorted(missing))
