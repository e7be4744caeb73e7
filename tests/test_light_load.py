"""Opening a cached export without transformers: the same tokens and scores as the full load, and the full load
again whenever the recorded tokenizer no longer describes the model folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from haystack_crossrerank.exported import light
from haystack_crossrerank.ranking.pair_encoding import PairEncoder
from haystack_crossrerank.retrievers.embedder import _full_tokenize, _light_tokenize

pytest.importorskip("openvino")

PAIRS = [
    ("what is the capital of france", "paris is the capital of france ."),
    ("the cat", "the dog sat on the mat " * 40),
    ("cancer drug trial " * 30, "patients in the trial show a decrease in risk"),
]
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer
    scorer = CrossEncoderScorer(sys.argv[1], backend=sys.argv[2])
    scores = scorer.score(json.loads(sys.argv[3]))
    print(json.dumps({"scores": [float(s) for s in scores], "transformers": "transformers" in sys.modules}))
    """
)


def _score_in_a_new_process(model: Path, backend: str, cache: Path) -> dict:
    env = {**__import__("os").environ, "CROSSRERANK_EXPORT_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model), backend, json.dumps(PAIRS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_load_skips_transformers_and_scores_the_same(tiny_model: Path, tmp_path: Path) -> None:
    first = _score_in_a_new_process(tiny_model, "openvino", tmp_path / "exported")
    second = _score_in_a_new_process(tiny_model, "openvino", tmp_path / "exported")
    assert first["transformers"] is True  # the export itself needs the torch model
    assert second["transformers"] is False
    assert second["scores"] == first["scores"]
    assert len(set(first["scores"])) == len(PAIRS)


def _record(model: Path, tmp_path: Path) -> tuple[Path, object]:
    from transformers import AutoConfig, AutoTokenizer

    export = tmp_path / "export"
    export.mkdir()
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    light.record(export, model, AutoConfig.from_pretrained(str(model)), tokenizer)
    return export, tokenizer


def test_the_recorded_tokenizer_encodes_pairs_as_transformers_does(minilm_path: Path, tmp_path: Path) -> None:
    export, tokenizer = _record(minilm_path, tmp_path)
    loaded = light.load(export, minilm_path)
    assert loaded is not None
    config, recorded = loaded
    assert config.model_type == "bert" and config.max_position_embeddings == 512
    full, lean = PairEncoder(tokenizer, "full"), PairEncoder(recorded, "light")
    assert (lean._pad_id, lean._use_token_types, lean.special_tokens) == (
        full._pad_id,
        full._use_token_types,
        full.special_tokens,
    )
    for max_length in (512, 24):
        expected = full.encode(PAIRS, {}, max_length)
        found = lean.encode(PAIRS, {}, max_length)
        assert [e.ids for e in found] == [e.ids for e in expected]
        assert [e.type_ids for e in found] == [e.type_ids for e in expected]


def test_the_recorded_tokenizer_embeds_queries_as_transformers_does(minilm_path: Path, tmp_path: Path) -> None:
    export, tokenizer = _record(minilm_path, tmp_path)
    loaded = light.load(export, minilm_path)
    assert loaded is not None
    texts = ["a", "What causes vitamin D deficiency?", "long " * 400]
    expected = _full_tokenize(tokenizer, 256)(texts)
    found = _light_tokenize(loaded[1], 256)(texts)
    assert found.keys() == expected.keys() == {"input_ids", "token_type_ids", "attention_mask"}
    assert all(np.array_equal(found[key], expected[key]) for key in expected)
    assert found["input_ids"].shape == (3, 256)


def test_a_changed_tokenizer_file_takes_the_full_load_again(tiny_model: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    export, _ = _record(model, tmp_path)
    assert light.load(export, model) is not None
    settings = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings["model_max_length"] = 16
    (model / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    assert light.load(export, model) is None
    (export / light.LOAD_FILE).write_text("{not json", encoding="utf-8")
    assert light.load(export, model) is None


def test_a_tokenizer_json_that_transformers_would_build_differently_is_not_trusted(
    tiny_model: Path, tmp_path: Path
) -> None:
    export, _ = _record(tiny_model, tmp_path)
    data = json.loads((export / light.LOAD_FILE).read_text(encoding="utf-8"))
    data["backend_sha256"] = "0" * 64  # as if transformers had changed the pipeline while loading it
    (export / light.LOAD_FILE).write_text(json.dumps(data), encoding="utf-8")
    assert light.load(export, tiny_model) is None
