"""The dense pipelines' query embedder: its vectors are sentence-transformers' own, it refuses models and settings it
cannot run, it is safe to share between threads, and a served dense pipeline no longer imports sentence-transformers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from haystack import Pipeline

from haystack_crossrerank.retrievers.embedder import ExportedTextEmbedder, read_modules
from haystack_crossrerank.retrievers.pipelines import load_pipeline, pipeline_path

QUERIES = [
    "What causes vitamin D deficiency?",
    "a",
    "Recombinant proteins " + "with long repeated phrases about cell signalling " * 60,  # past 256 tokens
]


def _sentence_transformers(model: Path, texts: list[str], normalize: bool) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model), device="cpu").encode(texts, normalize_embeddings=normalize)


@pytest.mark.parametrize("backend", ["openvino", "torch"])
def test_minilm_vectors_equal_sentence_transformers(minilm_path: Path, backend: str) -> None:
    embedder = ExportedTextEmbedder(model=str(minilm_path), normalize_embeddings=True, backend=backend)
    ours = np.array([embedder.run(text=q)["embedding"] for q in QUERIES])
    theirs = _sentence_transformers(minilm_path, QUERIES, normalize=True)
    assert ours.shape == theirs.shape == (3, 384)
    assert np.abs(ours - theirs).max() < 1e-5


@pytest.mark.parametrize("normalize", [False, True])
def test_mean_pooling_without_a_normalize_module(tiny_embedder: Path, normalize: bool) -> None:
    queries = ["paris is the capital of france", "cat", "the dog sat on the mat " * 20]
    embedder = ExportedTextEmbedder(model=str(tiny_embedder), normalize_embeddings=normalize)
    ours = np.array([embedder.run(text=q)["embedding"] for q in queries])
    theirs = _sentence_transformers(tiny_embedder, queries, normalize=normalize)
    assert np.abs(ours - theirs).max() < 1e-5
    norms = np.linalg.norm(ours, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize


def test_prefix_and_suffix_are_embedded_with_the_text(tiny_embedder: Path) -> None:
    plain = ExportedTextEmbedder(model=str(tiny_embedder)).run(text="query: cat dog.")["embedding"]
    wrapped = ExportedTextEmbedder(model=str(tiny_embedder), prefix="query: ", suffix=".").run(text="cat dog")
    assert np.allclose(plain, wrapped["embedding"], atol=1e-6)


def _st_folder(
    tiny_embedder: Path, tmp_path: Path, modules: list[dict] | None = None, pooling: dict | None = None
) -> Path:
    import shutil

    folder = Path(shutil.copytree(tiny_embedder, tmp_path / "st"))
    if modules is not None:
        (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    if pooling is not None:
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    return folder


def test_reads_the_folders_own_description(tiny_embedder: Path, minilm_path: Path) -> None:
    assert read_modules(tiny_embedder) == ("mean", False, tiny_embedder)
    assert read_modules(minilm_path) == ("mean", True, minilm_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modules": []}, "has no modules.json"),
        (
            {
                "modules": [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
                ]
            },
            r"has the modules \['Transformer', 'Pooling', 'Dense'\].*use SentenceTransformersTextEmbedder",
        ),
        ({"pooling": {"pooling_mode": ["mean", "max"]}}, r"pools with \['mean', 'max'\]"),
        ({"pooling": {"pooling_mode": "weightedmean"}}, r"pools with \['weightedmean'\]"),
        (
            {"pooling": {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}},
            r"pools with \['mean', 'max'\]",
        ),
        ({"pooling": {"pooling_mode_lasttoken": True}}, r"pools with \['lasttoken'\]"),
    ],
)
def test_models_it_cannot_run_are_refused_by_name(
    tiny_embedder: Path, tmp_path: Path, change: dict, message: str
) -> None:
    folder = _st_folder(tiny_embedder, tmp_path, **change)
    with pytest.raises(ValueError, match=message):
        ExportedTextEmbedder(model=str(folder)).warm_up()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"precision": "int8"}, ValueError, "`precision` must be 'float32'.*but got 'int8'"),
        ({"truncate_dim": 128}, ValueError, "`truncate_dim` must be None.*but got 128"),
        ({"revision": "main"}, ValueError, "`revision` must be None"),
        ({"backend": "gpu"}, ValueError, "backend"),
        ({"model": ""}, TypeError, "`model` must be a non-empty string or path"),
        ({"model": 3}, TypeError, "`model` must be a non-empty string or path, but got 3"),
    ],
)
def test_bad_settings_are_refused_at_init(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ExportedTextEmbedder(**kwargs)


def test_a_list_of_texts_gets_a_type_error(tiny_embedder: Path) -> None:
    with pytest.raises(TypeError, match="expects a string as input, but got list"):
        ExportedTextEmbedder(model=str(tiny_embedder)).run(text=["a", "b"])  # type: ignore[arg-type]


def test_shipped_pipelines_survive_dumps_and_loads(minilm_path: Path, tiny_model: Path) -> None:
    for name in ("faiss_rerank", "hybrid_rerank"):
        pipeline = load_pipeline(
            pipeline_path(name), model=str(tiny_model), overrides={"text_embedder": {"model": str(minilm_path)}}
        )
        embedder = pipeline.get_component("text_embedder")
        assert isinstance(embedder, ExportedTextEmbedder) and embedder.normalize_embeddings
        dumped = pipeline.dumps()
        again = Pipeline.loads(dumped, allowed_modules=["haystack_crossrerank"])
        assert again.get_component("text_embedder").to_dict() == embedder.to_dict()
        assert "HF_TOKEN" in dumped  # the token is kept as the name of its variable, never as a value


def test_a_token_value_is_never_serialised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    embedder = ExportedTextEmbedder()
    data = embedder.to_dict()
    assert "hf_secret_value" not in json.dumps(data)
    assert ExportedTextEmbedder.from_dict(data).token.resolve_value() == "hf_secret_value"


def test_threads_sharing_one_embedder_get_their_own_vectors(tiny_embedder: Path) -> None:
    queries = [f"cat dog {'paris ' * i}river" for i in range(16)]
    embedder = ExportedTextEmbedder(model=str(tiny_embedder))
    alone = [embedder.run(text=q)["embedding"] for q in queries]
    found: dict[int, list[float]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                found[i] = embedder.run(text=queries[i])["embedding"]
        except BaseException as error:  # collected, so that the test fails with it
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(np.allclose(found[i], alone[i], atol=1e-6) for i in range(len(queries)))


def test_serving_a_saved_hybrid_index_imports_neither_sentence_transformers_nor_transformers(
    tiny_embedder: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """The first start exports both models (with transformers); every later start opens the exports alone."""
    from haystack_crossrerank.commands.index import build_index

    corpus = tmp_path / "corpus.jsonl"
    rows = [{"_id": f"d{i}", "title": f"city {i}", "text": f"the river of city {i} is large."} for i in range(8)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    index = tmp_path / "index"
    build_index(corpus, index, first_stage="hybrid", embedder=str(tiny_embedder))
    script = textwrap.dedent(
        f"""
        import json, sys
        from haystack_crossrerank.commands.serving import ServeSettings, ServedPipeline
        settings = ServeSettings(pipeline="hybrid_rerank", index={str(index)!r}, model={str(tiny_model)!r})
        with ServedPipeline(settings) as served:
            documents = served.run("river of city 3")
        heavy = [m for m in ("sentence_transformers", "sklearn", "transformers") if m in sys.modules]
        print(json.dumps({{"documents": [d["id"] for d in documents], "heavy": heavy}}))
        """
    )
    env = {**os.environ, "CROSSRERANK_EXPORT_DIR": str(tmp_path / "exported")}
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False, env=env
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[0]["documents"] and runs[1]["documents"] == runs[0]["documents"]
    assert runs[0]["heavy"] == ["transformers"]
    assert runs[1]["heavy"] == []
